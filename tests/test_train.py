"""End-to-end tests of `tokenlearner_jax.train` on offline and generated data."""

import glob
import io
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.test_configs import load
from tokenlearner_jax import evaluate
from tokenlearner_jax import optim
from tokenlearner_jax import pretrained
from tokenlearner_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One directory per pytest-xdist worker: two processes preparing the same tfds
# dataset at once would race.
DATA_DIR = os.path.join(tempfile.gettempdir(), 'tokenlearner_jax_test_tfds',
                        os.environ.get('PYTEST_XDIST_WORKER', 'main'))


def config_for(name: str, arg: str = 'runlocal'):
  return load(os.path.join(ROOT, 'configs', f'{name}.py')).get_config(arg)


def write_video_tfrecords(base_dir: str, split: str, count: int,
                          num_classes: int) -> None:
  """Kinetics-style SequenceExamples: JPEG frames and a 0-based label."""
  rng = np.random.default_rng(0)
  path = os.path.join(base_dir, f'{split}-00000-of-00001')
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(count):
      example = tf.train.SequenceExample()
      example.context.feature['clip/label/index'].int64_list.value.append(
          i % num_classes)
      frames = example.feature_lists.feature_list['image/encoded']
      for _ in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(
            buffer, format='JPEG')
        frames.feature.add().bytes_list.value.append(buffer.getvalue())
      writer.write(example.SerializeToString())


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


class ConfigsTrainTest(parameterized.TestCase):
  """Every config in configs/ runs 2 train steps and an eval (runlocal)."""

  def run_config(self, config, workdir=None):
    workdir = workdir or self.create_tempdir().full_path
    final = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'final_metrics.json')) as f:
      self.assertEqual(json.load(f), final)
    self.assertEqual(final['step'], 2)
    self.assertNotEmpty(glob.glob(os.path.join(workdir, 'events.out.*')))
    return final

  def test_all_configs_covered(self):
    names = {os.path.basename(p)[:-3]
             for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))}
    self.assertEqual(names, {'demo_moving_digits', 'demo_multi_digits',
                             'im1k_token_learner', 'jft_pretrain',
                             'vit_imagenet', 'vivit_k400', 'vivit_k600'})

  def test_demo_moving_digits_with_mixup_and_label_smoothing(self):
    config = config_for('demo_moving_digits')
    config.dataset_configs.data_dir = DATA_DIR
    config.mixup.alpha = 0.2
    config.label_smoothing = 0.1
    final = self.run_config(config)
    self.assertSameElements(final, ['step', 'loss', 'accuracy',
                                    'top_5_accuracy', 'num_examples'])

  def test_demo_multi_digits(self):
    config = config_for('demo_multi_digits')
    config.dataset_configs.data_dir = DATA_DIR
    final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mAP', 'num_examples'])
    self.assertBetween(final['mAP'], 0.0, 1.0)

  def test_im1k_on_mock_data(self):
    config = config_for('im1k_token_learner')
    with tfds.testing.mock_data(num_examples=16):
      final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mAP', 'num_examples'])

  def test_vivit_k400_on_generated_tfrecords(self):
    config = config_for('vivit_k400')
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    config.dataset_configs.num_classes = 5
    write_video_tfrecords(base_dir, 'train.tfrecord', 8, 5)
    write_video_tfrecords(base_dir, 'validation', 4, 5)
    final = self.run_config(config)
    self.assertSameElements(final,
                            ['step', 'loss', 'accuracy', 'num_examples'])

  def test_vivit_k600_on_generated_tfrecords_with_the_4x3_test(self):
    config = config_for('vivit_k600')
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    config.dataset_configs.num_classes = 5
    write_video_tfrecords(base_dir, 'train.tfrecord', 8, 5)
    write_video_tfrecords(base_dir, 'validation', 4, 5)
    write_video_tfrecords(base_dir, 'test', 3, 5)
    workdir = self.create_tempdir().full_path
    self.run_config(config, workdir)
    results = evaluate.evaluate_checkpoint(config, workdir)
    self.assertEqual(results['views_per_example'], 12)
    self.assertEqual(results['num_examples'], 3)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'eval_test.json')))

  def test_vit_imagenet_on_mock_data(self):
    config = config_for('vit_imagenet')
    with tfds.testing.mock_data(num_examples=16):
      final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'accuracy', 'top_5_accuracy', 'num_examples'])

  def test_jft_pretrain_on_generated_tfrecords(self):
    config = config_for('jft_pretrain')
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    num_classes = config.dataset_configs.num_classes
    rng = np.random.default_rng(0)
    for split, count in (('train', 8), ('validation', 5)):
      with tf.io.TFRecordWriter(
          os.path.join(base_dir, f'{split}-00000-of-00001')) as writer:
        for i in range(count):
          buffer = io.BytesIO()
          Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(
              buffer, format='JPEG')
          labels = sorted({i % num_classes, (3 * i + 1) % num_classes})
          writer.write(tf.train.Example(features=tf.train.Features(feature={
              'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                  value=[buffer.getvalue()])),
              'image/class/label': tf.train.Feature(
                  int64_list=tf.train.Int64List(value=labels)),
          })).SerializeToString())
    final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mAP', 'num_examples'])
    self.assertEqual(final['num_examples'], 5)


class ResumeTest(absltest.TestCase):

  def test_resume_continues_from_the_saved_state(self):
    config = config_for('demo_moving_digits')
    config.dataset_configs.data_dir = DATA_DIR
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    # The saved state equals the state restored into a fresh initialisation.
    data_shape = (8, 32, 32, 3)
    model = train.build_model(config, 40)
    tx, _ = optim.make_optimizer(config, 2)
    mesh = train.sharding.make_mesh(config)
    fresh, shardings = train.create_train_state(config, model, tx, data_shape,
                                                mesh)
    manager = train.checkpoint_manager(workdir, config)
    self.assertEqual(manager.latest_step(), 2)
    restored = train.restore(manager, fresh, shardings)
    self.assertEqual(int(restored.step), 2)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                     restored.params, fresh.params)
    self.assertTrue(any(jax.tree_util.tree_leaves(changed)))
    raw = manager.restore(2)
    np.testing.assert_array_equal(
        raw['params']['output_projection']['kernel'],
        restored.params['output_projection']['kernel'])
    # Running again with more steps resumes at step 3.
    config.num_training_steps = 4
    final = train.train_and_evaluate(config, workdir)
    self.assertEqual(final['step'], 4)
    steps = [r['step'] for r in read_jsonl(workdir) if r['kind'] == 'train']
    self.assertEqual(steps, [1, 2, 3, 4])


class InitFromTest(absltest.TestCase):

  def test_fine_tune_from_a_run_keeps_the_new_head(self):
    config = config_for('demo_moving_digits')
    config.dataset_configs.data_dir = DATA_DIR
    pretrained_dir = self.create_tempdir().full_path
    train.train_and_evaluate(config, pretrained_dir)
    source = pretrained.load_params(
        ml_collections.ConfigDict({'checkpoint_path': pretrained_dir}))
    config.init_from.checkpoint_path = pretrained_dir
    config.rng_seed = 7
    config.num_training_steps = 1
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    tuned = pretrained.load_params(
        ml_collections.ConfigDict({'checkpoint_path': workdir}))
    # The warmup's first learning rate is 0, so the one step changes nothing:
    # the body is the pretrained one, the head the new zero-initialised one.
    np.testing.assert_array_equal(tuned['embedding']['kernel'],
                                  source['embedding']['kernel'])
    self.assertTrue(np.any(source['output_projection']['kernel'] != 0))
    np.testing.assert_array_equal(tuned['output_projection']['kernel'], 0)


class ShardingEqualityTest(absltest.TestCase):
  """1 device and 8 devices (data=4, model=2) give the same losses."""

  def run_subprocess(self, devices: int, mesh: str, workdir: str):
    env = dict(os.environ,
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               JAX_PLATFORMS='cpu')
    overrides = [f'--config.mesh.{k}={v}' for k, v in
                 zip(('data', 'fsdp', 'model'), mesh.split(','))]
    cmd = [sys.executable, '-m', 'tokenlearner_jax.train',
           f'--config={ROOT}/configs/demo_moving_digits.py:runlocal',
           f'--workdir={workdir}', '--config.num_training_steps=4',
           f'--config.dataset_configs.data_dir={DATA_DIR}',
           '--config.model.num_layers=2'] + overrides
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True,
                            text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    return [r['loss'] for r in read_jsonl(workdir) if r['kind'] == 'train']

  def test_one_vs_eight_devices(self):
    # Prepare the data once, so that both runs only read it.
    tfds.builder('moving_digits/small', data_dir=DATA_DIR).download_and_prepare()
    one = self.run_subprocess(1, '1,1,1', self.create_tempdir().full_path)
    eight = self.run_subprocess(8, '4,1,2', self.create_tempdir().full_path)
    self.assertLen(one, 4)
    np.testing.assert_allclose(eight, one, rtol=1e-5)


if __name__ == '__main__':
  absltest.main()
