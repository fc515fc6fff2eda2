"""`multi_digits`: 64x64 images of 1-3 digits, multi-hot labels (JFT stand-in).

Each image holds 1 to 3 digits (16x16, one of 10 classes each, tinted) at random
places on a noisy background; the label is the multi-hot set of digits present.
Test images use digit images never seen in training. Generated offline from
scikit-learn's digits.
"""

import numpy as np
import tensorflow_datasets as tfds

from tokenlearner_jax.data.datasets import digits_source

SIZE, DIGIT, NUM_CLASSES = 64, 16, 10


def render_image(digits, rng: np.random.Generator) -> np.ndarray:
  """One `[64, 64, 3]` uint8 image holding the given 16x16 digit images."""
  image = rng.integers(0, 96, size=(SIZE, SIZE, 3)).astype(np.float32)
  for digit in digits:
    y, x = rng.integers(0, SIZE - DIGIT + 1, size=2)
    color = rng.uniform(0.6, 1.0, size=3)
    region = image[y:y + DIGIT, x:x + DIGIT]
    image[y:y + DIGIT, x:x + DIGIT] = np.maximum(
        region, digit[..., None].astype(np.float32) * color)
  return image.round().astype(np.uint8)



class MultiDigits(tfds.core.GeneratorBasedBuilder):
  """Multi-label digits: which of 10 digits appear in the image."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = digits_source.split_size_configs(
      (12_000, 2_000), (256, 128), 'The demo dataset.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(SIZE, SIZE, 3)),
            'labels': tfds.features.Tensor(shape=(NUM_CLASSES,),
                                           dtype=np.float32),
            'source_indices': tfds.features.Tensor(shape=(None,),
                                                   dtype=np.int64),
        }),
        supervised_keys=('image', 'labels'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return digits_source.split_generators(self)

  def _generate_examples(self, split: str, size: int, seed: int):
    images, labels = digits_source.digit_images(split)
    sources = digits_source.source_indices(split)
    rng = np.random.default_rng(seed)
    for i in range(size):
      picks = rng.integers(len(images), size=rng.integers(1, 4))
      multi_hot = np.zeros(NUM_CLASSES, np.float32)
      multi_hot[labels[picks]] = 1.0
      yield i, {'image': render_image(images[picks], rng), 'labels': multi_hot,
                'source_indices': sources[picks]}
