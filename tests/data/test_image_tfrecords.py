"""JFT-style multi-label image TFRecords, and ImageNet ReaL labels via tfds."""

import os

from absl.testing import absltest
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.testing import image_example
from tests.testing import write_records
from tokenlearner_jax.data import image_tfrecords
from tokenlearner_jax.data import input_pipeline


LABELS = [[0], [1, 3], [2, 3, 4], [4], [0, 1]]


class ImageTfrecordsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.base_dir = self.create_tempdir().full_path
    for split, count in (('train', 4), ('validation', 5)):
      write_records(os.path.join(self.base_dir, f'{split}-00000-of-00001'),
                    [image_example(i, LABELS[i]) for i in range(count)])

  def config(self, **overrides):
    dc = ml_collections.ConfigDict(dict(
        base_dir=self.base_dir,
        tables=dict(train='train@1', validation='validation@1'),
        num_classes=5, image_size=16, shuffle_buffer_size=4))
    dc.update(overrides)
    return ml_collections.ConfigDict(dict(
        dataset_name='multilabel_image_tfrecords', dataset_configs=dc,
        batch_size=2, eval_batch_size=3, rng_seed=0))

  def test_multi_hot_labels_and_padded_eval(self):
    data = input_pipeline.get_data(self.config())
    train = next(data.train_iter)
    self.assertEqual(train['inputs'].shape, (2, 16, 16, 3))
    batches = list(data.eval_batches())
    masks = np.concatenate([b['batch_mask'] for b in batches])
    labels = np.concatenate([b['label'] for b in batches])
    self.assertEqual(masks.tolist(), [1, 1, 1, 1, 1, 0])
    for row, ids in zip(labels, LABELS):
      self.assertEqual(np.flatnonzero(row).tolist(), ids)

  def test_the_eval_side_alone_needs_no_train_table(self):
    os.remove(os.path.join(self.base_dir, 'train-00000-of-00001'))
    with self.assertRaisesRegex(FileNotFoundError, r'tables.train'):
      input_pipeline.get_data(self.config())
    data = input_pipeline.get_data(
        self.config(tables=dict(validation='validation@1')), train=False)
    self.assertIsNone(data.train_iter)
    batches = list(data.test_batches('validation'))
    self.assertEqual(batches[0]['inputs'].shape, (3, 1, 16, 16, 3))
    self.assertEqual(
        np.concatenate([b['batch_mask'] for b in batches]).tolist(),
        [1, 1, 1, 1, 1, 0])

  def test_label_out_of_range_is_named(self):
    data = input_pipeline.get_data(self.config(num_classes=4))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r'num_classes=4'):
      list(data.eval_batches())

  def test_image_size_is_required(self):
    with self.assertRaisesRegex(ValueError, r'dataset_configs.image_size'):
      image_tfrecords.get_data(self.config(image_size=None))


class RealLabelsTest(absltest.TestCase):

  def test_imagenet_real_labels_are_multi_hot_and_unlabeled_are_masked(self):
    config = ml_collections.ConfigDict(dict(
        dataset_name='imagenet2012_real', rng_seed=0, batch_size=2,
        eval_batch_size=8, dataset_configs=dict(
            num_classes=1000, image_size=16, label_key='real_label',
            eval_split='validation')))
    with tfds.testing.mock_data(num_examples=8):
      builder = tfds.builder('imagenet2012_real')
      expected = [len(e['real_label']) > 0 for e in tfds.as_numpy(
          builder.as_dataset(split='validation'))]
      data = input_pipeline.get_data(config)
      batch = next(data.eval_batches())
    np.testing.assert_array_equal(batch['batch_mask'], expected)
    self.assertTrue(np.all(batch['label'].sum(-1)[batch['batch_mask'] > 0]
                           >= 1))

  def test_train_on_imagenet_evaluate_on_real_labels(self):
    config = ml_collections.ConfigDict(dict(
        dataset_name='imagenet2012', rng_seed=0, batch_size=2,
        eval_batch_size=8, dataset_configs=dict(
            num_classes=1000, image_size=16,
            eval_dataset_name='imagenet2012_real', eval_label_key='real_label',
            eval_split='validation')))
    with tfds.testing.mock_data(num_examples=8):
      real = list(tfds.as_numpy(tfds.builder('imagenet2012_real').as_dataset(
          split='validation')))
      data = input_pipeline.get_data(config)
      train_batch = next(data.train_iter)
      batch = next(data.eval_batches())
    self.assertEqual(train_batch['label'].shape, (2, 1000))
    np.testing.assert_array_equal(train_batch['label'].sum(-1), [1, 1])
    np.testing.assert_array_equal(batch['batch_mask'],
                                  [len(e['real_label']) > 0 for e in real])
    for row, example in zip(batch['label'], real):
      self.assertEqual(np.flatnonzero(row).tolist(),
                       sorted(set(example['real_label'].tolist())))


if __name__ == '__main__':
  absltest.main()
