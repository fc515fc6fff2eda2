"""`moving_digits`: 8-frame clips of one moving digit (the Kinetics stand-in).

Each clip is 8 frames of 32x32 RGB: a 16x16 digit (tinted at random) moves 1
or 2 pixels per frame in one of 4 directions over a noisy background, starting
anywhere it stays in frame. The label is `digit * 4 + direction` (40 classes),
so a model needs both appearance and motion. Test clips use digit images never
seen in training.
Generated offline from scikit-learn's digits; `tfds.load('moving_digits')`
prepares it on first use (about a minute).
"""

import numpy as np
import tensorflow_datasets as tfds

from tokenlearner_jax.data.datasets import digits_source

NUM_FRAMES, SIZE, DIGIT = 8, 32, 16
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # right, left, down, up
DIRECTION_NAMES = ('right', 'left', 'down', 'up')
NUM_CLASSES = 10 * len(DIRECTIONS)


def render_clip(digit: np.ndarray, direction: int, speed: int,
                rng: np.random.Generator) -> np.ndarray:
  """One `[8, 32, 32, 3]` uint8 clip of `digit` moving in `direction`."""
  dy, dx = DIRECTIONS[direction]
  travel = speed * (NUM_FRAMES - 1)
  span = SIZE - DIGIT  # top-left positions that keep the digit in frame
  lo_y, hi_y = max(0, -dy * travel), span - max(0, dy * travel)
  lo_x, hi_x = max(0, -dx * travel), span - max(0, dx * travel)
  y0, x0 = rng.integers(lo_y, hi_y + 1), rng.integers(lo_x, hi_x + 1)
  color = rng.uniform(0.6, 1.0, size=3)
  shape = (NUM_FRAMES, SIZE, SIZE, 3)
  clip = rng.integers(0, 96, size=shape).astype(np.float32)
  for t in range(NUM_FRAMES):
    y, x = y0 + dy * speed * t, x0 + dx * speed * t
    patch = clip[t, y:y + DIGIT, x:x + DIGIT]
    clip[t, y:y + DIGIT, x:x + DIGIT] = np.maximum(
        patch, digit[..., None].astype(np.float32) * color)
  return clip.round().astype(np.uint8)



class MovingDigits(tfds.core.GeneratorBasedBuilder):
  """Moving digits, 40 classes of digit x direction."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = digits_source.split_size_configs(
      (16_000, 2_000), (256, 128), 'The demo dataset.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(
                shape=(NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            'digit': tfds.features.ClassLabel(num_classes=10),
            'direction': tfds.features.ClassLabel(names=DIRECTION_NAMES),
            'source_index': np.int64,
        }),
        supervised_keys=('video', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return digits_source.split_generators(self)

  def _generate_examples(self, split: str, size: int, seed: int):
    images, labels = digits_source.digit_images(split)
    sources = digits_source.source_indices(split)
    rng = np.random.default_rng(seed)
    for i in range(size):
      k = rng.integers(len(images))
      direction, speed = rng.integers(len(DIRECTIONS)), rng.integers(1, 3)
      yield i, {
          'video': render_clip(images[k], direction, speed, rng),
          'label': int(labels[k]) * len(DIRECTIONS) + int(direction),
          'digit': int(labels[k]), 'direction': int(direction),
          'source_index': int(sources[k]),
      }
