"""The offline demo builders: prepared from scikit-learn, disjoint sources."""

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from tests.testing import DATA_DIR
from tokenlearner_jax.data.datasets import digits_source
from tokenlearner_jax.data.datasets import event_digits
from tokenlearner_jax.data.datasets import fewshot_digits  # pylint: disable=unused-import
from tokenlearner_jax.data.datasets import moving_digits
from tokenlearner_jax.data.datasets import multi_digits  # pylint: disable=unused-import


def load(name):
  builder = tfds.builder(f'{name}/small', data_dir=DATA_DIR)
  builder.download_and_prepare()
  return {split: list(tfds.as_numpy(builder.as_dataset(split=split)))
          for split in ('train', 'test')}


class MovingDigitsTest(absltest.TestCase):

  def test_clips_labels_and_disjoint_sources(self):
    splits = load('moving_digits')
    self.assertLen(splits['train'], 256)
    self.assertLen(splits['test'], 128)
    for example in splits['train'][:32]:
      self.assertEqual(example['video'].shape, (8, 32, 32, 3))
      self.assertEqual(example['label'],
                       example['digit'] * 4 + example['direction'])
      # The bright digit's centre of mass moves steadily along the direction.
      mask = example['video'].max(-1) > 140
      ys, xs = [], []
      for frame in mask:
        y, x = np.nonzero(frame)
        ys.append(y.mean())
        xs.append(x.mean())
      dy, dx = moving_digits.DIRECTIONS[example['direction']]
      moved = (ys[-1] - ys[0]) * dy + (xs[-1] - xs[0]) * dx
      self.assertGreater(moved, 4.0)
    train = {int(e['source_index']) for e in splits['train']}
    test = {int(e['source_index']) for e in splits['test']}
    self.assertEmpty(train & test)
    self.assertLen({int(e['label']) for e in splits['train']}, 40)


class MultiDigitsTest(absltest.TestCase):

  def test_images_multi_hot_and_disjoint_sources(self):
    splits = load('multi_digits')
    for example in splits['train'][:32]:
      self.assertEqual(example['image'].shape, (64, 64, 3))
      self.assertBetween(example['labels'].sum(), 1, 3)
    train = {int(i) for e in splits['train'] for i in e['source_indices']}
    test = {int(i) for e in splits['test'] for i in e['source_indices']}
    self.assertEmpty(train & test)


class EventDigitsTest(absltest.TestCase):

  def test_an_event_appears_moves_its_way_and_vanishes(self):
    images, _ = digits_source.digit_images('train')
    rng = np.random.default_rng(3)
    for direction in (0, 1):
      clip = event_digits.render_clip(images[:1], np.array([direction]), rng)
      self.assertEqual(clip.shape, (32, 32, 32, 3))
      mask = clip.max(-1) > 140  # The background stays below 96.
      shown = np.flatnonzero(mask.any((1, 2)))
      self.assertBetween(len(shown), event_digits.MIN_LENGTH,
                         event_digits.MAX_LENGTH)
      np.testing.assert_array_equal(shown, np.arange(shown[0],
                                                     shown[-1] + 1))
      xs = [np.nonzero(mask[t])[1].mean() for t in shown]
      moved = (xs[-1] - xs[0]) * (1 if direction == 0 else -1)
      self.assertAlmostEqual(moved, len(shown) - 1, delta=1.0)

  def test_multi_hot_digit_x_direction_and_disjoint_sources(self):
    splits = load('event_digits')
    self.assertLen(splits['train'], 32)
    for example in splits['train']:
      self.assertEqual(example['video'].shape, (32, 32, 32, 3))
      self.assertEqual(example['labels'].shape, (20,))
      # One class per event; two events can share a class.
      self.assertBetween(example['labels'].sum(), 1,
                         len(example['source_indices']))
    train = {int(i) for e in splits['train'] for i in e['source_indices']}
    test = {int(i) for e in splits['test'] for i in e['source_indices']}
    self.assertEmpty(train & test)


class FewshotDigitsTest(absltest.TestCase):

  def test_balanced_classes_from_images_pre_training_never_sees(self):
    splits = load('fewshot_digits')
    self.assertLen(splits['train'], 200)
    self.assertLen(splits['test'], 100)
    for split, examples in splits.items():
      self.assertEqual(examples[0]['image'].shape, (64, 64, 3))
      counts = np.bincount([e['label'] for e in examples], minlength=10)
      self.assertEqual(set(counts), {len(examples) // 10}, split)
    pool = {int(e['source_index']) for e in splits['train']}
    test = {int(e['source_index']) for e in splits['test']}
    self.assertEmpty(pool & test)
    # None of the digit images multi_digits (or moving_digits) trains on.
    self.assertEmpty((pool | test) & set(
        digits_source.source_indices('train').tolist()))
    # The label is the digit of the source image.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    target = datasets.load_digits().target
    for e in splits['train'][:20]:
      self.assertEqual(e['label'], target[e['source_index']])


if __name__ == '__main__':
  absltest.main()
