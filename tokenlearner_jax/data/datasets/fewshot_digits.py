"""`fewshot_digits`: one digit per 64x64 image, the offline few-shot target.

The stand-in for the paper's few-shot transfer datasets
(`tokenlearner_jax.fewshot`): each image holds one tinted 16x16 digit at a
random place on a noisy background, rendered as `multi_digits` renders its
digits; the label is the digit (10 classes, as many examples each). Its digit
images are none of those `multi_digits` trains on: they are the images
`digits_source` holds out for test splits (every fifth of scikit-learn's
1,797), and within them the few-shot pool ('train') and the 'test' split use
different images (source index % 10 == 0 and == 5), so test accuracy measures
images the linear classifier never saw either. Generated offline from
scikit-learn's digits.
"""

from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds

from tokenlearner_jax.data.datasets import digits_source
from tokenlearner_jax.data.datasets import multi_digits

NUM_CLASSES = 10
# Held-out source images (index % 5 == 0) go to one split by index % 10.
SPLIT_REMAINDERS = {'train': 0, 'test': 5}


def split_images(split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(images [N, 16, 16] uint8, labels [N], source indices [N])` of a
  split: `digits_source`'s held-out images with source index % 10 equal to
  `SPLIT_REMAINDERS[split]`."""
  images, labels = digits_source.digit_images('test')
  sources = digits_source.source_indices('test')
  keep = sources % 10 == SPLIT_REMAINDERS[split]
  return images[keep], labels[keep], sources[keep]


class FewshotDigits(tfds.core.GeneratorBasedBuilder):
  """One digit per image, 10 classes, from digit images no pre-training saw."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = digits_source.split_size_configs(
      (1_000, 1_000), (200, 100),
      'The few-shot target of the demo and the study.')

  def _info(self) -> tfds.core.DatasetInfo:
    size = multi_digits.SIZE
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            'source_index': np.int64,
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return digits_source.split_generators(self)

  def _generate_examples(self, split: str, size: int, seed: int):
    images, labels, sources = split_images(split)
    rng = np.random.default_rng(seed + 10)  # Not multi_digits' draws.
    for i in range(size):
      k = rng.choice(np.flatnonzero(labels == i % NUM_CLASSES))  # Balanced.
      yield i, {'image': multi_digits.render_image(images[k:k + 1], rng),
                'label': int(labels[k]), 'source_index': int(sources[k])}
