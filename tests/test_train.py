"""`tokenlearner_jax.train` in process on offline and generated data: every
config trains, resumes restore and check the config, fine-tuning. The trainer
as processes (kills, preemption, jobs): tests/integration/."""

import glob
import json
import os
import shutil
import time
from typing import Dict

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import testing
from tests.testing import ROOT
from tests.testing import committed_steps
from tests.testing import config_for
from tests.testing import demo_config
from tests.testing import final_metrics
from tests.testing import fresh_state
from tests.testing import image_example
from tests.testing import read_jsonl
from tests.testing import write_records
from tests.testing import write_video_tfrecords
from tokenlearner_jax import checkpoint
from tokenlearner_jax import checkpoint_formats
from tokenlearner_jax import evaluate
from tokenlearner_jax import flops
from tokenlearner_jax import optim
from tokenlearner_jax import run_config
from tokenlearner_jax import train
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.init_from_config import InitFromConfig


@pytest.mark.e2e
class ConfigsTrainTest(parameterized.TestCase):
  """Every config in configs/ runs 2 train steps and an eval (runlocal);
  vivit_k600 is vivit_k400 with other dataset constants."""

  def run_config(self, config, workdir=None):
    workdir = workdir or self.create_tempdir().full_path
    start = time.monotonic()
    final = train.train_and_evaluate(config, workdir)
    wall = time.monotonic() - start
    self.assertEqual(final_metrics(workdir), final)
    self.assertEqual(final['step'], 2)
    self.assertNotEmpty(glob.glob(os.path.join(workdir, 'events.out.*')))
    # The rates of ReportProgress, in every train summary: one summary a step
    # (runlocal), each rate over the time since the previous report, so the
    # steps' times (1 / rate) are consecutive intervals within the run.
    rows = [row for row in read_jsonl(workdir) if row['kind'] == 'train']
    self.assertEqual([row['step'] for row in rows], [1, 2])
    step_seconds = [1 / row['steps_per_sec'] for row in rows]
    for seconds in step_seconds:
      self.assertGreater(seconds, 0)
    self.assertLess(sum(step_seconds), wall)
    for row in rows:
      self.assertEqual(row['examples_per_sec'],
                       row['steps_per_sec'] * config.batch_size)
    return final

  def test_all_configs_covered(self):
    names = {os.path.basename(p)[:-3]
             for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))}
    self.assertEqual(names, {'avid_x2plus1d_tl', 'charades_x2plus1d_tl',
                             'demo_event_digits', 'demo_moving_digits',
                             'demo_multi_digits',
                             'im1k_token_learner', 'jft_pretrain',
                             'vit_imagenet', 'vivit_k400', 'vivit_k600'})

  def test_demo_moving_digits_with_mixup_and_label_smoothing(self):
    config = demo_config()
    config.mixup.alpha = 0.2
    config.label_smoothing = 0.1
    final = self.run_config(config)
    self.assertSameElements(final, ['step', 'loss', 'accuracy',
                                    'accuracy_top_5', 'num_examples',
                                    'gmacs_per_example'])

  def test_demo_multi_digits(self):
    _, workdir = testing.shared_run('demo_multi_digits')
    final = final_metrics(workdir)
    self.assertEqual(final['step'], 2)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mean_average_precision',
                'num_examples', 'gmacs_per_example', 'fewshot_digits_1shot',
                'fewshot_digits_5shot', 'fewshot_avg_1shot',
                'fewshot_avg_5shot'])
    self.assertBetween(final['mean_average_precision'], 0.0, 1.0)

  def test_demo_event_digits(self):
    final = self.run_config(demo_config('demo_event_digits'))
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mean_average_precision',
                'num_examples', 'gmacs_per_example'])
    self.assertEqual(final['num_examples'], 16)
    self.assertBetween(final['mean_average_precision'], 0.0, 1.0)

  def test_im1k_on_mock_data(self):
    config = config_for('im1k_token_learner')
    with tfds.testing.mock_data(num_examples=16):
      final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mean_average_precision',
                'num_examples', 'gmacs_per_example'])

  def video_config(self, name: str, counts: Dict[str, int]):
    """`config_for(name)` reading generated videos of 5 classes, `counts`
    videos per split."""
    config = config_for(name)
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    config.dataset_configs.num_classes = 5
    for split, count in counts.items():
      write_video_tfrecords(base_dir, split, count, 5)
    return config

  def test_vivit_k400_on_generated_tfrecords(self):
    # vivit_k600 is this config with other dataset constants
    # (tests/configs/test_kinetics.py); its 4x3 test: EvaluateCheckpointTest.
    _, workdir = testing.shared_run('vivit_tfrecords')
    final = final_metrics(workdir)
    self.assertEqual((final['step'], final['num_examples']), (2, 3))
    self.assertSameElements(final, ['step', 'loss', 'accuracy',
                                    'num_examples', 'gmacs_per_example',
                                    'skipped_examples'])
    # skip_corrupt_examples: the validation split's corrupt video, skipped
    # and counted in each eval row; none in the train stream.
    self.assertEqual(final['skipped_examples'], 1)
    self.assertEqual({r['skipped_examples'] for r in read_jsonl(workdir)},
                     {0, 1})
    self.assertEqual({r['skipped_examples'] for r in read_jsonl(workdir)
                      if r['kind'] == 'train'}, {0})

  def test_charades_x2plus1d_from_a_charades_folder_with_its_test(self):
    # Charades as shipped, in miniature -> the writer -> train -> test.
    root = self.create_tempdir().full_path
    video_dir, csvs = testing.write_charades_folder(root, {
        'train': [('TRN01', 'c001 0.00 1.20;c003 0.80 2.00'),
                  ('TRN02', 'c000 0.30 2.00'), ('TRN03', ''),
                  ('TRN04', 'c002 0.00 0.90;c004 1.00 2.00')],
        'test': [('TST01', 'c001 0.00 2.00;c002 0.50 1.00'),
                 ('TST02', 'c000 0.00 2.00'), ('TST03', '')]})
    base_dir = os.path.join(root, 'tfrecords')
    writer = testing.load_script('make_charades_tfrecords')
    for split in ('train', 'test'):
      writer.convert(csvs[split], video_dir, base_dir, split=split,
                     num_shards=1, fps=6.0, min_resize=72)
    config = config_for('charades_x2plus1d_tl')
    config.dataset_configs.base_dir = base_dir
    workdir = self.create_tempdir().full_path
    final = self.run_config(config, workdir)
    self.assertSameElements(final, ['step', 'loss', 'prec@1',
                                    'mean_average_precision', 'num_examples',
                                    'gmacs_per_example'])
    self.assertEqual(final['num_examples'], 3)
    results = evaluate.evaluate_checkpoint(config, workdir)  # batch_stats too.
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      self.assertEqual(json.load(f), results)
    self.assertEqual(results['views_per_example'], 2)
    self.assertEqual(results['view_pooling'], 'max')
    self.assertEqual(results['num_examples'], 3)
    # Trained on 64-pixel crops, tested on 72 (the whole smaller side).
    self.assertEqual(results['gmacs_per_example'], flops.gmacs(
        schema.complete(config), (4, 72, 72, 3), 157))
    self.assertGreater(results['gmacs_per_example'],
                       final['gmacs_per_example'])
    # Classes 0, 1, 2 have a positive in the test split; the rest are null.
    aps = results['average_precision_per_class']
    self.assertLen(aps, 157)
    self.assertEqual(results['num_classes_scored'], 3)
    self.assertEqual([i for i, ap in enumerate(aps) if ap is not None],
                     [0, 1, 2])
    self.assertAlmostEqual(results['mean_average_precision'],
                           np.mean(aps[:3]), places=6)
    self.assertBetween(results['prec@1'], 0.0, 1.0)

  def test_avid_x2plus1d_on_generated_tfrecords_with_its_test(self):
    config = self.video_config('avid_x2plus1d_tl', {'train': 8, 'test': 3})
    workdir = self.create_tempdir().full_path
    final = self.run_config(config, workdir)
    self.assertSameElements(final, ['step', 'loss', 'accuracy',
                                    'num_examples', 'gmacs_per_example'])
    results = evaluate.evaluate_checkpoint(config, workdir)
    self.assertEqual(results['views_per_example'], 2)
    self.assertEqual(results['view_pooling'], 'mean')
    self.assertEqual(results['num_examples'], 3)

  def test_vit_imagenet_on_mock_data(self):
    config = config_for('vit_imagenet')
    with tfds.testing.mock_data(num_examples=16):
      final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'accuracy', 'accuracy_top_5', 'num_examples',
                'gmacs_per_example'])

  def test_jft_pretrain_on_generated_tfrecords(self):
    config = config_for('jft_pretrain')
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    num_classes = config.dataset_configs.num_classes
    for split, count in (('train', 8), ('validation', 5)):
      write_records(
          os.path.join(base_dir, f'{split}-00000-of-00001'),
          [image_example(i, sorted({i % num_classes,
                                    (3 * i + 1) % num_classes}), (40, 48, 3))
           for i in range(count)])
    final = self.run_config(config)
    self.assertSameElements(
        final, ['step', 'loss', 'prec@1', 'mean_average_precision',
                'num_examples', 'gmacs_per_example'])
    self.assertEqual(final['num_examples'], 5)


@pytest.mark.e2e
class ResumeTest(absltest.TestCase):
  """What a resume restores (that it then continues: ResumeChangedConfigTest
  and the processes killed and resumed in tests/integration/)."""

  def test_the_saved_state_is_restored_into_a_fresh_initialisation(self):
    config, workdir = testing.shared_run('demo_moving_digits')
    fresh = fresh_state(config, (8, 32, 32, 3), 40)
    manager = checkpoint.make_manager(workdir, config)
    self.assertEqual(manager.latest_step(), 2)
    restored = checkpoint.restore_state(manager, fresh.state,
                                        fresh.program.shardings)
    self.assertEqual(int(restored.step), 2)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                     restored.params, fresh.state.params)
    self.assertTrue(any(jax.tree_util.tree_leaves(changed)))
    raw = manager.restore(2)
    np.testing.assert_array_equal(
        raw['params']['output_projection']['kernel'],
        restored.params['output_projection']['kernel'])
    manager.close()


@pytest.mark.e2e
class ResumeChangedConfigTest(absltest.TestCase):
  """Resuming a workdir with a config other than the one it recorded."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The XLA compilations while `counting`.
    cls.compiles, cls.counting = [], False

    def count(event: str, duration: float, **kwargs) -> None:
      del kwargs
      if cls.counting and event == '/jax/core/compile/backend_compile_duration':
        cls.compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    # 2 steps, a checkpoint at 2: what each test resumes (a copy of it).
    cls.trained = testing.shared_run('demo_moving_digits')[1]

  def resumable(self) -> str:
    return testing.copied_run('demo_moving_digits',
                              self.create_tempdir().full_path)[1]

  def test_the_run_records_its_completed_config(self):
    with open(os.path.join(self.trained, run_config.CONFIG_FILE)) as f:
      record = json.load(f)
    self.assertEqual(record, run_config.to_record(
        schema.complete(demo_config())))
    self.assertEqual(record['model']['hidden_size'], 64)
    self.assertIn('max_checkpoints_to_keep', record)  # A default filled in.

  def test_a_changed_safe_key_proceeds_with_a_warning_naming_it(self):
    workdir = self.resumable()
    self.compiles.clear()
    type(self).counting = True
    try:
      with self.assertLogs(level='WARNING') as logs:
        final = train.train_and_evaluate(
            demo_config(num_training_steps=3, log_eval_steps=3), workdir)
    finally:
      type(self).counting = False
    self.assertEqual(final['step'], 3)
    self.assertNotEmpty(self.compiles)  # What the refusals below never reach.
    changed = [line for line in logs.output if 'changed config' in line]
    self.assertLen(changed, 1)
    self.assertIn('from step 2 with a changed config: log_eval_steps: 2 -> 3, '
                  'num_training_steps: 2 -> 3.', changed[0])
    self.assertEqual(run_config.read(workdir)['num_training_steps'], 3)

  def test_a_change_of_training_proceeds_with_a_warning_naming_it(self):
    config = demo_config(num_training_steps=3)
    config.lr_configs.base_learning_rate = 1e-3
    with self.assertLogs(level='WARNING') as logs:
      train.train_and_evaluate(config, self.resumable())
    self.assertTrue(any(
        'num_training_steps: 2 -> 3; changing training from step 3 on: '
        'lr_configs.base_learning_rate: 0.003 -> 0.001.' in line
        for line in logs.output), logs.output)

  STATE = ('the saved parameters or optimizer state have another tree or '
           'shapes')

  def assert_refused(self, config, changes: str, why: str) -> None:
    """`config` stops with one line naming `changes` before anything
    compiles; the workdir is left as it was."""
    workdir = self.resumable()
    with open(os.path.join(workdir, run_config.CONFIG_FILE)) as f:
      recorded = f.read()
    before = read_jsonl(workdir), committed_steps(workdir)
    self.compiles.clear()
    type(self).counting = True
    try:
      with self.assertRaises(run_config.ConfigChangeError) as raised:
        train.train_and_evaluate(config, workdir)
    finally:
      type(self).counting = False
    self.assertEqual(
        str(raised.exception),
        f'Cannot resume {workdir} from step 2 with a changed config: '
        f'{changes} ({why}). Set them back as in {workdir}/config.json, or '
        'use a new workdir.')
    self.assertIsInstance(raised.exception, ValueError)
    self.assertEqual(self.compiles, [])
    with open(os.path.join(workdir, run_config.CONFIG_FILE)) as f:
      self.assertEqual(f.read(), recorded)
    self.assertEqual((read_jsonl(workdir), committed_steps(workdir)), before)

  def test_a_changed_parameter_or_optimizer_key_stops_before_compiling(self):
    config = demo_config()
    config.model.hidden_size = 32
    config.model.dropout_rate = 0.1  # Proceeds on its own: not named.
    self.assert_refused(config, 'model.hidden_size: 64 -> 32', self.STATE)
    self.assert_refused(demo_config(optimizer='momentum'),
                        "optimizer: 'adamw' -> 'momentum'", self.STATE)
    # The optimizer chain loses its clipping state.
    self.assert_refused(demo_config(max_grad_norm=None),
                        'max_grad_norm: 1.0 -> None', self.STATE)

  def test_a_changed_batch_size_is_refused(self):
    self.assert_refused(
        demo_config(batch_size=16), 'batch_size: 8 -> 16',
        'the input stream would resume at step x the new batch size '
        'examples, not at the example the run reached')

  def test_rows_past_the_step_and_a_line_cut_short_are_dropped(self):
    workdir = self.create_tempdir().full_path
    path = os.path.join(workdir, 'metrics.jsonl')
    rows = [{'step': step, 'kind': 'train'} for step in (1, 2, 3)]
    with open(path, 'w') as f:
      f.writelines(json.dumps(row) + '\n' for row in rows)
      f.write('{"step": 4, "ki')  # Killed mid-write.
    train.drop_rows_after(path, 2)
    self.assertEqual(read_jsonl(workdir), rows[:2])
    self.assertEqual(os.listdir(workdir), ['metrics.jsonl'])

  def test_metrics_hold_each_step_once_after_a_resume_that_reruns_steps(
      self):
    workdir = self.create_tempdir().full_path
    config = demo_config(num_training_steps=4)
    train.train_and_evaluate(config, workdir)
    # Killed after step 4 with its checkpoint not written: the last good one
    # is step 2, and the rows of steps 3 and 4 are in the file already.
    shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
    final = train.train_and_evaluate(config, workdir)
    self.assertEqual(final['step'], 4)
    rows = [(row['step'], row['kind']) for row in read_jsonl(workdir)]
    self.assertEqual(rows, [(1, 'train'), (2, 'train'), (2, 'eval'),
                            (3, 'train'), (4, 'train'), (4, 'eval')])
    self.assertFalse(os.path.exists(
        os.path.join(workdir, 'metrics.jsonl.tmp')))


@pytest.mark.e2e
class InitFromTest(absltest.TestCase):

  def test_fine_tune_from_a_batchnorm_run_takes_its_statistics(self):
    config = testing.batchnorm_config(checkpoint_steps=1)
    source = testing.batchnorm_state(config, jax.devices()[:1])
    rng = np.random.default_rng(0)
    pretrained = source.state.replace(
        params=jax.tree_util.tree_map(
            lambda x: x + rng.normal(size=x.shape).astype(np.float32),
            source.state.params),
        model_state=jax.tree_util.tree_map(
            lambda x: rng.uniform(0.5, 2.0, x.shape).astype(np.float32),
            source.state.model_state))
    pretrained_dir = self.create_tempdir().full_path
    manager = checkpoint.make_manager(pretrained_dir, config)
    checkpoint.save(manager, 1, pretrained, force=True)
    manager.close()
    config.init_from.checkpoint_path = pretrained_dir
    config.rng_seed = 7
    fresh = testing.batchnorm_state(config, jax.devices()[:1])
    manager = checkpoint.make_manager(self.create_tempdir().full_path, config)
    state = train.initial_state(config, fresh.state, fresh.program.shardings,
                                manager, testing.BATCHNORM_INPUT_SHAPE)
    manager.close()
    testing.assert_trees_equal(self, state.model_state,
                               pretrained.model_state)
    testing.assert_trees_equal(self, state.params['Conv_0'],
                               pretrained.params['Conv_0'])
    testing.assert_trees_equal(self, state.params['output_projection'],
                               fresh.state.params['output_projection'])
    self.assertEqual(
        state.model_state['batch_stats']['BatchNorm_0']['mean'].sharding,
        fresh.program.shardings.model_state['batch_stats']['BatchNorm_0'][
            'mean'])

  def test_fine_tune_from_a_run_keeps_the_new_head(self):
    config, pretrained_dir = testing.shared_run('demo_moving_digits')
    source = checkpoint_formats.load_params(
        InitFromConfig(checkpoint_path=pretrained_dir))
    config.init_from.checkpoint_path = pretrained_dir
    config.rng_seed = 7
    config.num_training_steps = 1
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    tuned = checkpoint_formats.load_params(
        InitFromConfig(checkpoint_path=workdir))
    # The warmup's first learning rate is 0, so the one step changes nothing:
    # the body is the pretrained one, the head the new zero-initialised one.
    np.testing.assert_array_equal(tuned['embedding']['kernel'],
                                  source['embedding']['kernel'])
    self.assertTrue(np.any(source['output_projection']['kernel'] != 0))
    np.testing.assert_array_equal(tuned['output_projection']['kernel'], 0)


class NonFiniteTest(absltest.TestCase):

  def test_skip_nonfinite_steps_drops_the_update(self):
    config = config_for('demo_moving_digits')
    config.skip_nonfinite_steps = 2
    tx, _ = optim.make_optimizer(config, 10)
    params = {'w': jnp.ones(3)}
    opt_state = tx.init(params)
    updates, opt_state = tx.update({'w': jnp.array([1.0, jnp.nan, 0.0])},
                                   opt_state, params)
    np.testing.assert_array_equal(updates['w'], 0)
    self.assertEqual(int(opt_state.total_notfinite), 1)


class ConfigCountsTest(absltest.TestCase):

  def test_a_count_not_above_zero_stops_before_anything_runs(self):
    workdir = self.create_tempdir().full_path
    for key, value in (('num_training_steps', -5), ('num_training_steps', 0),
                       ('batch_size', 0), ('eval_batch_size', -1),
                       ('log_summary_steps', 0), ('log_eval_steps', -1),
                       ('checkpoint_steps', 0)):
      with self.assertRaisesRegex(
          ValueError, rf'^config\.{key}={value}: must be a number > 0\.$'):
        train.train_and_evaluate(demo_config(**{key: value}), workdir)
    self.assertEqual(os.listdir(workdir), [])  # Not even the lock.


if __name__ == '__main__':
  absltest.main()
