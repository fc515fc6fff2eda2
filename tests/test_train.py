"""End-to-end tests of `tokenlearner_jax.train` on offline and generated
data."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import testing
from tests.testing import DATA_DIR
from tests.testing import ROOT
from tests.testing import config_for
from tests.testing import demo_config
from tests.testing import final_metrics
from tests.testing import free_port
from tests.testing import fresh_state
from tests.testing import image_example
from tests.testing import read_jsonl
from tests.testing import write_records
from tests.testing import write_video_tfrecords
from tokenlearner_jax import checkpoint
from tokenlearner_jax import checkpoint_formats
from tokenlearner_jax import evaluate
from tokenlearner_jax import optim
from tokenlearner_jax import run_config
from tokenlearner_jax import train
from tokenlearner_jax import workdir_lock
from tokenlearner_jax.configs import schema


class ConfigsTrainTest(parameterized.TestCase):
  """Every config in configs/ runs 2 train steps and an eval (runlocal)."""

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
    config = demo_config('demo_multi_digits')
    final = self.run_config(config)
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
    config = self.video_config('vivit_k400',
                               {'train.tfrecord': 8, 'validation': 4})
    final = self.run_config(config)
    self.assertSameElements(final, ['step', 'loss', 'accuracy',
                                    'num_examples', 'gmacs_per_example'])

  def test_vivit_k600_on_generated_tfrecords_with_the_4x3_test(self):
    config = self.video_config(
        'vivit_k600', {'train.tfrecord': 8, 'validation': 4, 'test': 3})
    workdir = self.create_tempdir().full_path
    self.run_config(config, workdir)
    results = evaluate.evaluate_checkpoint(config, workdir)
    self.assertEqual(results['views_per_example'], 12)
    self.assertEqual(results['num_examples'], 3)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'eval_test.json')))

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


class ResumeTest(absltest.TestCase):

  def test_resume_continues_from_the_saved_state(self):
    config = demo_config()
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    # The saved state equals the state restored into a fresh initialisation.
    fresh = fresh_state(config, (8, 32, 32, 3), 40)
    manager = checkpoint.make_manager(workdir, config)
    self.assertEqual(manager.latest_step(), 2)
    restored = checkpoint.restore_state(manager, fresh.state, fresh.shardings)
    self.assertEqual(int(restored.step), 2)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                     restored.params, fresh.state.params)
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
    cls.trained = tempfile.mkdtemp()
    train.train_and_evaluate(demo_config(), cls.trained)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.trained)
    super().tearDownClass()

  def resumable(self) -> str:
    workdir = os.path.join(self.create_tempdir().full_path, 'workdir')
    shutil.copytree(self.trained, workdir)
    return workdir

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
    config.init_from = ml_collections.ConfigDict(dict(
        checkpoint_path=pretrained_dir))
    config.rng_seed = 7
    fresh = testing.batchnorm_state(config, jax.devices()[:1])
    manager = checkpoint.make_manager(self.create_tempdir().full_path, config)
    state = train.initial_state(config, fresh.state, fresh.shardings, manager,
                                testing.BATCHNORM_INPUT_SHAPE)
    manager.close()
    testing.assert_trees_equal(self, state.model_state,
                               pretrained.model_state)
    testing.assert_trees_equal(self, state.params['Conv_0'],
                               pretrained.params['Conv_0'])
    testing.assert_trees_equal(self, state.params['output_projection'],
                               fresh.state.params['output_projection'])
    self.assertEqual(
        state.model_state['batch_stats']['BatchNorm_0']['mean'].sharding,
        fresh.shardings.model_state['batch_stats']['BatchNorm_0']['mean'])

  def test_fine_tune_from_a_run_keeps_the_new_head(self):
    config = demo_config()
    pretrained_dir = self.create_tempdir().full_path
    train.train_and_evaluate(config, pretrained_dir)
    source = checkpoint_formats.load_params(
        ml_collections.ConfigDict({'checkpoint_path': pretrained_dir}))
    config.init_from.checkpoint_path = pretrained_dir
    config.rng_seed = 7
    config.num_training_steps = 1
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    tuned = checkpoint_formats.load_params(
        ml_collections.ConfigDict({'checkpoint_path': workdir}))
    # The warmup's first learning rate is 0, so the one step changes nothing:
    # the body is the pretrained one, the head the new zero-initialised one.
    np.testing.assert_array_equal(tuned['embedding']['kernel'],
                                  source['embedding']['kernel'])
    self.assertTrue(np.any(source['output_projection']['kernel'] != 0))
    np.testing.assert_array_equal(tuned['output_projection']['kernel'], 0)


# The trainer's subprocesses share jax's persistent compilation cache: reruns
# of one command (the kill / resume chain) and the processes of one job
# compile once. A cached executable is the one a compile would give.
COMPILATION_CACHE = {
    'JAX_COMPILATION_CACHE_DIR': os.path.join(
        tempfile.gettempdir(), 'tokenlearner_jax_test_compilation_cache'),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
}


def train_env(**variables: str) -> Dict[str, str]:
  """The environment of a trainer subprocess."""
  return dict(os.environ, **COMPILATION_CACHE, **variables)


def train_command(workdir: str, *overrides: str):
  return [sys.executable, '-m', 'tokenlearner_jax.train',
          f'--config={ROOT}/configs/demo_moving_digits.py:runlocal',
          f'--workdir={workdir}',
          f'--config.dataset_configs.data_dir={DATA_DIR}', *overrides]


def committed_steps(workdir: str):
  """Checkpoint steps orbax has finished writing (no temporary suffix)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def steps_being_written(workdir: str):
  """Checkpoint steps whose write has started but not been committed."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return [int(name.split('.')[0]) for name in os.listdir(directory)
          if '.orbax-checkpoint-tmp' in name]


@pytest.mark.processes
class FaultToleranceTest(absltest.TestCase):
  """Kill, preemption and non-finite losses, on real subprocesses."""

  # Long enough to be killed mid-run; eval and checkpoints along the way.
  OVERRIDES = ('--config.num_training_steps=120',
               '--config.checkpoint_steps=10',
               '--config.log_summary_steps=5', '--config.log_eval_steps=60')

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tfds.builder('moving_digits/small',
                 data_dir=DATA_DIR).download_and_prepare()

  def run_to_end(self, workdir: str, *overrides: str):
    result = subprocess.run(train_command(workdir, *overrides), cwd=ROOT,
                            env=train_env(), capture_output=True, text=True,
                            check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    return result

  def final_state(self, workdir: str):
    config = config_for('demo_moving_digits')
    manager = checkpoint.make_manager(workdir, config)
    step = manager.latest_step()
    return step, manager.restore(step), final_metrics(workdir)

  def assert_same_end(self, reference, reference_log: str, straight: str,
                      workdir: str):
    """The uninterrupted run (still going) and the interrupted one end with
    the same step, bit-identical train state and equal final metrics."""
    reference.wait(timeout=600)
    with open(reference_log) as f:
      self.assertEqual(reference.returncode, 0, f.read()[-3000:])
    step_a, state_a, final_a = self.final_state(straight)
    step_b, state_b, final_b = self.final_state(workdir)
    self.assertEqual((step_a, step_b), (120, 120))
    self.assertEqual(final_a, final_b)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state_a, state_b)

  def start(self, workdir: str, *overrides: str):
    """Starts a run; returns it and the file its stderr goes to (a file: a
    full pipe would stall a run that is not being read)."""
    log = os.path.join(self.create_tempdir().full_path, 'stderr')
    with open(log, 'w') as stderr:
      process = subprocess.Popen(train_command(workdir, *overrides), cwd=ROOT,
                                 env=train_env(), stdout=subprocess.DEVNULL,
                                 stderr=stderr)
    return process, log

  def run_until(self, workdir: str, condition, *overrides: str,
                sig=signal.SIGKILL):
    """Starts a run, sends it `sig` as soon as `condition()` holds and returns
    its exit code, stderr and the seconds from the signal to its exit."""
    process, log = self.start(workdir, *overrides)
    deadline = time.time() + 300
    while not condition() and time.time() < deadline:
      if process.poll() is not None:
        break
      time.sleep(0.02)
    process.send_signal(sig)
    sent = time.time()
    process.wait(timeout=120)
    seconds = time.time() - sent
    with open(log) as f:
      stderr = f.read()
    self.assertTrue(condition(), f'the run ended first: {stderr[-3000:]}')
    return process.returncode, stderr, seconds

  def test_killed_and_preempted_run_ends_bit_identical_to_an_uninterrupted_one(
      self):
    straight = self.create_tempdir().full_path
    # The uninterrupted run goes alongside the interrupted one.
    reference, reference_log = self.start(straight, *self.OVERRIDES)
    workdir = self.create_tempdir().full_path
    # 1. SIGKILL as soon as the first checkpoint is committed.
    self.run_until(workdir, lambda: committed_steps(workdir), *self.OVERRIDES)
    first = committed_steps(workdir)[-1]
    # 2. SIGKILL in the rerun while the checkpoint of step 20 or later is
    # being written: the partial write is left behind, run 3 must restore the
    # last complete step instead, and run 4 writes that step again over it.
    self.run_until(workdir, lambda: [s for s in steps_being_written(workdir)
                                     if s >= 20], *self.OVERRIDES)
    second = committed_steps(workdir)[-1]
    self.assertGreater(second, first)
    for step in steps_being_written(workdir):
      self.assertGreater(step, second)
    # 3. SIGTERM (a preemption notice) once the rerun has logged a train
    # summary: it saves the current step and exits 0 within 30 s.
    logged = len(read_jsonl(workdir))
    code, stderr, seconds = self.run_until(
        workdir, lambda: any(r['kind'] == 'train'
                             for r in read_jsonl(workdir)[logged:]),
        *self.OVERRIDES, sig=signal.SIGTERM)
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn(f'Restored the checkpoint at step {second}', stderr)
    self.assertLess(seconds, 30)
    saved = committed_steps(workdir)[-1]
    self.assertIn(f'Preempted: saved the checkpoint of step {saved}', stderr)
    self.assertLess(saved, 120, 'preempted too late to test resume')
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 'final_metrics.json')))
    # 4. The same command resumes there and finishes.
    result = self.run_to_end(workdir, *self.OVERRIDES)
    self.assertIn(f'Restored the checkpoint at step {saved}', result.stderr)
    self.assert_same_end(reference, reference_log, straight, workdir)

  @pytest.mark.slow
  def test_sigkill_at_random_points_ends_bit_identical(self):
    """More kill points than the chain above: 5 seeded random moments of a
    120-step run, wherever they fall (a step, the eval at step 60, a
    checkpoint write)."""
    overrides = (*self.OVERRIDES, '--config.log_summary_steps=1')
    straight = self.create_tempdir().full_path
    reference, reference_log = self.start(straight, *overrides)
    workdir = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    for kill_step in np.sort(rng.choice(np.arange(11, 120), 5, replace=False)):
      # Once this run has logged the step, after a random fraction of a
      # second.
      delay, logged, seen = rng.uniform(0, 0.5), len(read_jsonl(workdir)), []

      def reached(kill_step=kill_step, delay=delay, logged=logged, seen=seen):
        if not seen and any(r['step'] >= kill_step
                            for r in read_jsonl(workdir)[logged:]):
          seen.append(time.time())
        return bool(seen) and time.time() >= seen[0] + delay

      self.run_until(workdir, reached, *overrides)
    self.run_to_end(workdir, *overrides)
    self.assert_same_end(reference, reference_log, straight, workdir)


class NonFiniteTest(absltest.TestCase):

  def test_non_finite_update_stops_naming_the_step_and_keeps_checkpoints(
      self):
    config = demo_config(num_training_steps=1, checkpoint_steps=1)
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(config, workdir)
    # Resumed with an infinite learning rate, step 2's update makes the
    # parameters non-finite: the run stops there, before saving step 2.
    config.num_training_steps = 4
    config.lr_configs.factors = 'constant'
    config.lr_configs.base_learning_rate = float('inf')
    with self.assertRaisesRegex(
        FloatingPointError, r'param_norm .* at step 2; .*checkpoint at step 1'):
      train.train_and_evaluate(config, workdir)
    self.assertEqual(committed_steps(workdir), [1])

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


class StaleLockTest(absltest.TestCase):

  def test_the_lock_of_a_dead_trainer_is_taken_over_and_released(self):
    workdir = self.create_tempdir().full_path
    lock = os.path.join(workdir, workdir_lock.LOCK_FILE)
    dead = subprocess.Popen(['true'])
    dead.wait()
    with open(lock, 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': dead.pid,
                 'started': '2026-11-01T00:00:00+00:00'}, f)
    with self.assertLogs(level='WARNING') as logs:
      final = train.train_and_evaluate(demo_config(), workdir)
    self.assertEqual(final['step'], 2)
    self.assertTrue(any(
        'Taking over the stale lock' in line and
        f'its process (pid {dead.pid}) is dead' in line
        for line in logs.output), logs.output)
    self.assertFalse(os.path.exists(lock))


@pytest.mark.processes
class ExitPathsTest(absltest.TestCase):
  """What a trainer process leaves when it stops, and the workdir lock."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tfds.builder('moving_digits/small',
                 data_dir=DATA_DIR).download_and_prepare()

  def test_a_non_finite_stop_leaves_the_checkpoint_it_names_committed(self):
    workdir = self.create_tempdir().full_path
    result = subprocess.run(train_command(
        workdir, '--config.num_training_steps=10',
        '--config.checkpoint_steps=1', '--config.lr_configs.factors=constant',
        '--config.lr_configs.base_learning_rate=1e6'), cwd=ROOT,
                            env=train_env(), capture_output=True, text=True,
                            check=False)
    self.assertNotEqual(result.returncode, 0)
    named = re.search(r'Non-finite train \w+ \(nan\) at step (\d+); stopped '
                      r'with the last good checkpoint at step (\d+)',
                      result.stderr)
    self.assertIsNotNone(named, result.stderr[-3000:])
    bad, good = int(named.group(1)), int(named.group(2))
    self.assertEqual(good, bad - 1)
    # Written before the process exited: committed, nothing half-written.
    self.assertEqual(committed_steps(workdir)[-1], good)
    self.assertEqual(steps_being_written(workdir), [])
    self.assertNotIn('cannot schedule new futures', result.stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 workdir_lock.LOCK_FILE)))

  def test_a_second_trainer_on_a_workdir_is_refused_naming_the_first(self):
    workdir = self.create_tempdir().full_path
    log = os.path.join(self.create_tempdir().full_path, 'stderr')
    with open(log, 'w') as stderr:
      first = subprocess.Popen(
          train_command(workdir, '--config.num_training_steps=1000000',
                        '--config.checkpoint_steps=1000000',
                        '--config.log_eval_steps=1000000'),
          cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
      deadline = time.time() + 300
      while not read_jsonl(workdir) and time.time() < deadline:
        self.assertIsNone(first.poll())
        time.sleep(0.1)
      with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
        self.assertEqual(json.load(f)['pid'], first.pid)
      second = subprocess.run(train_command(workdir), cwd=ROOT,
                              env=train_env(), capture_output=True, text=True,
                              timeout=300, check=False)
      self.assertEqual(second.returncode, 1)
      last = second.stderr.strip().splitlines()[-1]
      self.assertRegex(last, rf'^Error: .* is in use by another trainer '
                       rf'\(host {re.escape(socket.gethostname())}, pid '
                       rf'{first.pid}, ')
      self.assertNotIn('Traceback', second.stderr)
      self.assertNotIn('Training', second.stderr)  # It stopped before.
      self.assertIsNone(first.poll())  # The first runs on.
      first.send_signal(signal.SIGTERM)
      first.wait(timeout=120)
    finally:
      first.kill()
    with open(log) as f:
      self.assertEqual(first.returncode, 0, f.read()[-3000:])
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 workdir_lock.LOCK_FILE)))


def slurm_job_id() -> int:
  """A SLURM job id whose coordinator port (jax's SlurmCluster picks 61440 +
  id % 4096) is free here."""
  for job_id in np.random.default_rng().permutation(4096):
    with socket.socket() as sock:
      try:
        sock.bind(('localhost', 61440 + int(job_id)))
      except OSError:
        continue
      return int(job_id) + 4096 * 1000
  raise RuntimeError('No free port in 61440-65535.')


@pytest.mark.processes
class MultiProcessTest(absltest.TestCase):
  """Processes joined through jax.distributed (gloo collectives on CPU)."""

  OVERRIDES = ('--config.num_training_steps=4', '--config.checkpoint_steps=4',
               '--config.dataset_configs.global_order=True',
               '--config.mesh.data=4', '--config.mesh.model=2',
               '--config.model.num_layers=2')

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tfds.builder('moving_digits/small',
                 data_dir=DATA_DIR).download_and_prepare()

  def setUp(self):
    super().setUp()
    self.logs = {}  # pid -> its stderr file

  def launch(self, workdir: str, devices: int, *overrides: str, env=None):
    # stderr goes to a file: a full pipe would stall a process not waited on.
    log = os.path.join(self.create_tempdir().full_path, 'stderr')
    with open(log, 'w') as stderr:
      process = subprocess.Popen(
          train_command(workdir, *overrides), cwd=ROOT,
          env=train_env(JAX_PLATFORMS='cpu', XLA_FLAGS=(
              f'--xla_force_host_platform_device_count={devices}'),
                        **(env or {})),
          stdout=subprocess.DEVNULL, stderr=stderr)
    self.logs[process.pid] = log
    return process

  def launch_job(self, workdir: str, *overrides: str):
    port = free_port()
    return [self.launch(workdir, 4, *overrides,
                        f'--coordinator_address=localhost:{port}',
                        '--num_processes=2', f'--process_id={i}')
            for i in range(2)]

  def launch_slurm_job(self, workdir: str, *overrides: str):
    """Two processes that find each other through SLURM's variables, as
    `jax.distributed.initialize()`'s auto-detection reads them (no flags)."""
    job = str(slurm_job_id())
    return [self.launch(workdir, 4, *overrides, env=dict(
        SLURM_JOB_ID=job, SLURM_STEP_NODELIST='localhost', SLURM_NTASKS='2',
        SLURM_PROCID=str(i), SLURM_LOCALID=str(i))) for i in range(2)]

  def wait(self, process, timeout=600):
    process.wait(timeout=timeout)
    with open(self.logs[process.pid]) as f:
      return process.returncode, f.read()

  def test_1x1_1x8_and_2x4_devices_agree_and_the_2x4_checkpoint_restores(
      self):
    """1 device, 1 process x 8 devices (data=4, model=2) and 2 processes x 4
    devices give the same losses; one process resumes the job's checkpoint."""
    one_device, one_process, two = (self.create_tempdir().full_path
                                    for _ in range(3))
    # All three at once. The job joins by SLURM auto-detection here; the
    # tests below pass the flags.
    runs = [self.launch(one_device, 1, *self.OVERRIDES,
                        '--config.mesh.data=1', '--config.mesh.model=1'),
            self.launch(one_process, 8, *self.OVERRIDES),
            *self.launch_slurm_job(two, *self.OVERRIDES)]
    for process, (code, stderr) in zip(runs, map(self.wait, runs)):
      self.assertEqual(code, 0, stderr[-3000:])
      if process in runs[2:]:
        self.assertIn('2 processes', stderr)
    losses = [[r['loss'] for r in read_jsonl(workdir) if r['kind'] == 'train']
              for workdir in (one_device, one_process, two)]
    self.assertLen(losses[0], 4)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    np.testing.assert_allclose(losses[2], losses[0], rtol=1e-5)
    # One process with 8 devices resumes the two-process checkpoint.
    code, stderr = self.wait(self.launch(
        two, 8, *self.OVERRIDES, '--config.num_training_steps=5'))
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn('Restored the checkpoint at step 4', stderr)
    steps = [r['step'] for r in read_jsonl(two) if r['kind'] == 'train']
    self.assertEqual(steps, [1, 2, 3, 4, 5])

  def test_a_dead_process_stops_the_other(self):
    workdir = self.create_tempdir().full_path
    first, second = self.launch_job(
        workdir, *self.OVERRIDES, '--config.num_training_steps=1000000',
        '--config.checkpoint_steps=1000000', '--config.log_eval_steps=1000000')
    results = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.time() + 300
    while not os.path.exists(results) and time.time() < deadline:
      time.sleep(0.1)
    second.kill()
    second.wait()
    killed = time.time()
    try:
      code, _ = self.wait(first, timeout=90)
    finally:
      first.kill()
    self.assertLess(time.time() - killed, 60)
    self.assertNotEqual(code, 0)


  def test_sigterm_to_a_job_saves_one_step_and_every_process_exits_zero(self):
    workdir = self.create_tempdir().full_path
    processes = self.launch_job(
        workdir, *self.OVERRIDES, '--config.num_training_steps=1000000',
        '--config.checkpoint_steps=1000000', '--config.log_eval_steps=1000000',
        '--config.log_summary_steps=5')
    results = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.time() + 300
    while not os.path.exists(results) and time.time() < deadline:
      time.sleep(0.1)
    for process in processes:  # What a scheduler's preemption notice does.
      process.send_signal(signal.SIGTERM)
    sent = time.time()
    try:
      outcomes = [self.wait(p, timeout=90) for p in processes]
    finally:
      for process in processes:
        process.kill()
    self.assertLess(time.time() - sent, 30)
    for code, stderr in outcomes:
      self.assertEqual(code, 0, stderr[-3000:])
      self.assertIn('Preempted: saved the checkpoint of step', stderr)
    # Both processes wrote the one checkpoint of the step they stopped at.
    self.assertGreaterEqual(committed_steps(workdir)[-1], 5)


if __name__ == '__main__':
  absltest.main()
