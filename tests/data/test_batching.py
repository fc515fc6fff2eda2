"""Eval batching: padding, masks, batch sizes on any device count."""

from unittest import mock

from absl.testing import absltest
import jax
import numpy as np
import tensorflow as tf

from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import batching


def dataset(n: int) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices({
      'inputs': np.arange(n * 2, dtype=np.float32).reshape(n, 2),
      'label': np.eye(n, 3, dtype=np.float32)})


class BatchingTest(absltest.TestCase):

  def test_autotune_option(self):
    ds = tf.data.Dataset.range(4)
    on = batching.with_options(ds, DataConfig())
    off = batching.with_options(ds, DataConfig(autotune=False))
    self.assertTrue(on.options().autotune.enabled)
    self.assertFalse(off.options().autotune.enabled)
    self.assertEqual(list(off.as_numpy_iterator()), [0, 1, 2, 3])

  def test_padded_counts_every_example_once(self):
    for n, size in ((7, 3), (6, 3), (1, 4)):
      batches = list(batching.padded(dataset(n), size))
      self.assertLen(batches, -(-n // size))
      masks = np.concatenate([b['batch_mask'] for b in batches])
      self.assertEqual(masks.sum(), n)
      inputs = np.concatenate([b['inputs'] for b in batches])
      np.testing.assert_array_equal(inputs[:n], np.arange(n * 2).reshape(n, 2))
      np.testing.assert_array_equal(inputs[n:], 0)

  def test_empty_split_gives_one_masked_batch(self):
    batches = list(batching.padded(dataset(3).take(0), 4))
    self.assertLen(batches, 1)
    self.assertEqual(batches[0]['inputs'].shape, (4, 2))
    self.assertEqual(batches[0]['batch_mask'].sum(), 0)

  def test_example_mask_leaves_examples_out(self):
    ds = dataset(3).map(lambda e: {**e, 'example_mask': tf.reduce_sum(
        e['label'][:2])})  # The third example has no label among the first 2.
    batch = next(batching.padded(ds, 4))
    self.assertNotIn('example_mask', batch)
    np.testing.assert_array_equal(batch['batch_mask'], [1, 1, 0, 0])

  def test_eval_batch_rounds_up_to_the_local_devices(self):
    with mock.patch.object(jax, 'local_device_count', return_value=8):
      self.assertEqual(batching.padded_eval_batch_size(3, 'eval_batch_size'),
                       8)
      self.assertEqual(batching.padded_eval_batch_size(16, 'eval_batch_size'),
                       16)
    with mock.patch.object(jax, 'process_count', return_value=2):
      with self.assertRaisesRegex(ValueError, r'eval_batch_size=3 .* 2'):
        batching.padded_eval_batch_size(3, 'eval_batch_size')

  def test_example_seeds_differ_per_process(self):
    seeds = set()
    for process in range(2):
      with mock.patch.object(jax, 'process_count', return_value=2), \
          mock.patch.object(jax, 'process_index', return_value=process):
        seeds |= {tuple(batching.example_seed(5, tf.constant(i, tf.int64))
                        .numpy()) for i in range(3)}
    self.assertLen(seeds, 6)


if __name__ == '__main__':
  absltest.main()
