"""The digit images both demo datasets are drawn from, split by image.

scikit-learn ships the UCI handwritten digits (1,797 images of 8x8, values
0-16) inside its package, so the demo datasets need no download. Every fifth
image is held out for the test split: test clips and images show digit images
that no training example contains.
"""

from typing import List, Tuple

import numpy as np
import tensorflow_datasets as tfds

TEST_EVERY = 5


def digit_images(split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Returns `(images [N, 16, 16] uint8 in 0..255, labels [N])` of a split."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  index = np.arange(len(digits.target))
  keep = (index % TEST_EVERY == 0) if split == 'test' else (
      index % TEST_EVERY != 0)
  images = digits.images[keep] * (255.0 / 16.0)
  images = np.kron(images, np.ones((1, 2, 2)))  # [N, 16, 16], nearest 2x
  return images.round().astype(np.uint8), digits.target[keep].astype(np.int64)


def source_indices(split: str) -> np.ndarray:
  """Indices into scikit-learn's digits of the images a split draws from."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  index = np.arange(len(datasets.load_digits().target))
  return index[index % TEST_EVERY == 0] if split == 'test' else index[
      index % TEST_EVERY != 0]


class SplitSizesConfig(tfds.core.BuilderConfig):
  """A builder variant: how many train and test examples to generate."""

  def __init__(self, *, train_size: int, test_size: int, **kwargs):
    super().__init__(**kwargs)
    self.train_size, self.test_size = train_size, test_size


def split_size_configs(default: Tuple[int, int], small: Tuple[int, int],
                       description: str) -> List[SplitSizesConfig]:
  """A builder's two variants: 'default' ((train, test) examples, what
  `description` says it is for) and 'small' (for tests)."""
  return [SplitSizesConfig(name='default', train_size=default[0],
                           test_size=default[1], description=description),
          SplitSizesConfig(name='small', train_size=small[0],
                           test_size=small[1], description='For tests.')]


def split_generators(builder: tfds.core.GeneratorBasedBuilder):
  """Both splits of a builder with `_generate_examples(split, size, seed)`."""
  sizes = builder.builder_config
  generate = builder._generate_examples  # pylint: disable=protected-access
  return {'train': generate('train', sizes.train_size, 0),
          'test': generate('test', sizes.test_size, 1)}
