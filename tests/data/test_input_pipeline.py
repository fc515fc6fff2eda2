"""Input pipelines: deterministic, seeded train augmentation; eval padding."""

from absl.testing import absltest
import numpy as np

from tests.testing import demo_config
from tokenlearner_jax.data import input_pipeline


def first_batches(config, n=3):
  data = input_pipeline.get_data(config)
  return [next(data.train_iter) for _ in range(n)]


class TfdsPipelineTest(absltest.TestCase):

  def test_train_stream_depends_only_on_the_seed(self):
    a = first_batches(demo_config())
    b = first_batches(demo_config())
    c = first_batches(demo_config(rng_seed=1))
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x['inputs'], y['inputs'])
      np.testing.assert_array_equal(x['label'], y['label'])
    self.assertFalse(np.array_equal(a[0]['inputs'], c[0]['inputs']))

  def test_translation_moves_every_frame_alike(self):
    config = demo_config()
    config.dataset_configs.shuffle_buffer_size = 1  # Keep the file order.
    augmented = first_batches(config, 1)[0]['inputs']
    config.dataset_configs.crop_padding = 0
    plain = first_batches(config, 1)[0]['inputs']
    self.assertEqual(augmented.shape, plain.shape)
    shifted = 0
    for aug, orig in zip(augmented, plain):  # (frames, height, width, 3)
      pad = 4
      padded = np.pad(orig, [(0, 0), (pad, pad), (pad, pad), (0, 0)],
                      mode='reflect')
      offsets = [(dy, dx) for dy in range(2 * pad + 1)
                 for dx in range(2 * pad + 1)
                 if np.array_equal(padded[:, dy:dy + 32, dx:dx + 32], aug)]
      self.assertNotEmpty(offsets)  # One shift explains all frames at once.
      shifted += (pad, pad) not in offsets
    self.assertGreater(shifted, len(augmented) // 2)

  def test_resumed_stream_continues_where_the_run_stopped(self):
    config = demo_config()
    straight = first_batches(config, 3)
    resumed = next(input_pipeline.get_data(config, start_step=2).train_iter)
    np.testing.assert_array_equal(resumed['inputs'], straight[2]['inputs'])
    np.testing.assert_array_equal(resumed['label'], straight[2]['label'])

  def test_global_order_gives_the_same_stream_on_one_process(self):
    config = demo_config()
    local = first_batches(config, 2)
    config.dataset_configs.global_order = True
    for x, y in zip(local, first_batches(config, 2)):
      np.testing.assert_array_equal(x['inputs'], y['inputs'])

  def test_num_classes_that_disagrees_with_the_labels_is_named(self):
    config = demo_config()
    config.dataset_configs.num_classes = 10
    with self.assertRaisesRegex(
        ValueError, r"num_classes=10 but moving_digits 'label' has 40"):
      input_pipeline.get_data(config)

  def test_eval_batches_are_padded_and_masked(self):
    config = demo_config(eval_batch_size=50)
    data = input_pipeline.get_data(config)
    batches = list(data.eval_batches())
    self.assertLen(batches, 3)  # 128 test clips: 50 + 50 + 28 real.
    masks = np.concatenate([b['batch_mask'] for b in batches])
    self.assertEqual(masks.sum(), 128)
    self.assertTrue(np.all(batches[-1]['inputs'][28:] == 0))
    self.assertEqual(data.num_eval_examples, 128)

  def test_the_eval_side_alone_needs_no_train_dataset(self):
    # Trained on ImageNet (not here), evaluated on another dataset: the eval
    # side does not build the train dataset.
    config = demo_config(dataset_name='imagenet', eval_batch_size=50)
    config.dataset_configs.eval_dataset_name = 'moving_digits'
    with self.assertRaisesRegex(ValueError, 'imagenet2012'):
      input_pipeline.get_data(config)
    data = input_pipeline.get_data(config, train=False)
    self.assertIsNone(data.train_iter)
    self.assertEqual((data.num_classes, data.input_shape), (40, (8, 32, 32, 3)))
    masks = np.concatenate([b['batch_mask'] for b in data.test_batches('test')])
    self.assertEqual(masks.sum(), 128)


if __name__ == '__main__':
  absltest.main()
