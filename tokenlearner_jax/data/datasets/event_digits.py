"""`event_digits`: 32-frame clips of digit events, multi-hot (Charades
stand-in).

Each clip is 32 frames of 32x32 RGB over a noisy background in which 1 to 3
events happen at random times: a 16x16 digit (tinted) appears at a random
frame, moves 1 pixel per frame left or right for 8 to 14 frames, and
vanishes. Events may overlap in time. The label is the multi-hot set of
`digit * 2 + direction` (20 classes) of the clip's events, so, as in
Charades, a clip holds several short actions at unknown times and each must
be found, recognised and told by its motion. Test clips use digit images
never seen in training. Generated offline from scikit-learn's digits;
`tfds.load('event_digits')` prepares it on first use.
"""

import numpy as np
import tensorflow_datasets as tfds

from tokenlearner_jax.data.datasets import digits_source

NUM_FRAMES, SIZE, DIGIT = 32, 32, 16
MIN_LENGTH, MAX_LENGTH = 8, 14  # Frames an event lasts.
MAX_EVENTS = 3
DIRECTION_NAMES = ('right', 'left')
NUM_CLASSES = 10 * len(DIRECTION_NAMES)


def render_clip(digits: np.ndarray, directions: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
  """One `[32, 32, 32, 3]` uint8 clip with one event per digit image."""
  clip = rng.integers(0, 96, size=(NUM_FRAMES, SIZE, SIZE, 3)).astype(
      np.float32)
  for digit, direction in zip(digits, directions):
    length = rng.integers(MIN_LENGTH, MAX_LENGTH + 1)
    start = rng.integers(0, NUM_FRAMES - length + 1)
    y = rng.integers(0, SIZE - DIGIT + 1)
    travel = length - 1
    x0 = rng.integers(0, SIZE - DIGIT - travel + 1)
    step = 1 if direction == 0 else -1
    if step < 0:
      x0 += travel
    color = rng.uniform(0.6, 1.0, size=3)
    for t in range(length):
      x = x0 + step * t
      frame = clip[start + t]
      frame[y:y + DIGIT, x:x + DIGIT] = np.maximum(
          frame[y:y + DIGIT, x:x + DIGIT],
          digit[..., None].astype(np.float32) * color)
  return clip.round().astype(np.uint8)


class EventDigits(tfds.core.GeneratorBasedBuilder):
  """Digit events in time: which digit moved which way (20 classes)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = digits_source.split_size_configs(
      (2_000, 400), (32, 16), 'The miniature study of docs/results.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(
                shape=(NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
            'labels': tfds.features.Tensor(shape=(NUM_CLASSES,),
                                           dtype=np.float32),
            'source_indices': tfds.features.Tensor(shape=(None,),
                                                   dtype=np.int64),
        }),
        supervised_keys=('video', 'labels'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return digits_source.split_generators(self)

  def _generate_examples(self, split: str, size: int, seed: int):
    images, labels = digits_source.digit_images(split)
    sources = digits_source.source_indices(split)
    rng = np.random.default_rng(seed)
    for i in range(size):
      picks = rng.integers(len(images), size=rng.integers(1, MAX_EVENTS + 1))
      directions = rng.integers(len(DIRECTION_NAMES), size=len(picks))
      multi_hot = np.zeros(NUM_CLASSES, np.float32)
      multi_hot[labels[picks] * len(DIRECTION_NAMES) + directions] = 1.0
      yield i, {'video': render_clip(images[picks], directions, rng),
                'labels': multi_hot, 'source_indices': sources[picks]}
