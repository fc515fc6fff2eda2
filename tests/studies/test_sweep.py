"""studies.sweep and the runner (studies.runs): grids, runs as data, skipping
finished runs, setting stale ones aside, the tables (a real sweep of trainer
processes: tests/integration/test_sweep_run.py)."""

import csv
import json
import os

from absl.testing import absltest

from tests import testing
from tests.testing import DATA_DIR
from tests.testing import ROOT
from tests.testing import fake_finished_run
from tests.testing import final_metrics
from tests.testing import sweep_record as record
from tokenlearner_jax import workdir_lock
from tokenlearner_jax.studies import runs
from tokenlearner_jax.studies import sweep


class GridTest(absltest.TestCase):

  def test_product_and_names(self):
    grid = sweep.parse_grid(['model.num_layers=2,4', 'rng_seed=0,1,2'])
    points = sweep.grid_points(grid)
    self.assertLen(points, 6)
    self.assertEqual(points[1], {'model.num_layers': '2', 'rng_seed': '1'})
    self.assertEqual(sweep.run_name(points[1]), 'model.num_layers=2,rng_seed=1')
    with self.assertRaisesRegex(ValueError, "'rng_seed'"):
      sweep.parse_grid(['rng_seed'])

  def test_config_sweep_points(self):
    points = sweep.config_sweep(os.path.join(ROOT, 'configs',
                                             'demo_moving_digits.py:runlocal'))
    self.assertLen(points, 12)
    self.assertEqual(points[0], {'model.tokenizer.tokenlearner_loc': '0',
                                 'rng_seed': '0'})

  def test_group_over_seeds(self):
    rows = [dict(run=f'a={a},s={s}', a=a, s=s, status='done', step=5,
                 accuracy=acc)
            for a, s, acc in (('1', '0', 0.5), ('1', '1', 0.7),
                              ('2', '0', 0.9))]
    grouped = sweep.group(rows, ['a', 's'], 's')
    self.assertEqual(grouped[0], {'a': '1', 'n (s)': 2,
                                  'accuracy': '0.6 ± 0.14'})
    self.assertEqual(grouped[1]['accuracy'], '0.9 ± 0')


def stale_point(test: absltest.TestCase):
  """(root, point, workdir, requested records) of a point that finished 4
  steps where 8 are now asked for."""
  root = test.create_tempdir().full_path
  point = {'rng_seed': '0'}
  workdir = os.path.join(root, sweep.run_name(point))
  fake_finished_run(workdir, record(point, 'num_training_steps=4'),
                    dict(step=4, loss=7.5))
  return root, point, workdir, {workdir: record(point,
                                                'num_training_steps=8')}


class StaleTest(absltest.TestCase):

  def test_a_changed_setting_is_a_difference(self):
    four = record({'rng_seed': '0'}, 'num_training_steps=4')
    self.assertEqual(four['resolved']['num_training_steps'], 4)
    self.assertEqual(runs.differences(four, four), [])
    self.assertEqual(
        runs.differences(four, record({'rng_seed': '0'},
                                       'num_training_steps=8')),
        ['num_training_steps: 4 -> 8'])
    self.assertEqual(runs.differences(four, record({'rng_seed': '1'},
                                                    'num_training_steps=4')),
                     ['rng_seed: 0 -> 1'])
    self.assertRegex(runs.differences(None, four)[0], 'unknown')

  def test_a_default_added_since_is_no_difference(self):
    now = record({'rng_seed': '0'})
    before = json.loads(json.dumps(now))
    del before['resolved']['max_checkpoints_to_keep']  # A schema default.
    self.assertEqual(runs.differences(before, now), [])
    del before['resolved']['dataset_configs']['shuffle_buffer_size']
    self.assertEqual(runs.differences(before, now),
                     ['dataset_configs.shuffle_buffer_size: (unset) -> 4096'])

  def test_unresolvable_overrides_are_compared_as_written(self):
    typo = record({'rng_seed': '0'}, 'num_trainin_steps=4')
    self.assertIsNone(typo['resolved'])
    self.assertIn('num_trainin_steps', typo['error'])
    self.assertEqual(runs.differences(typo, typo), [])
    self.assertLen(runs.differences(typo, record({'rng_seed': '0'})), 1)

  def test_a_finished_run_of_another_config_is_not_tabled(self):
    root, point, workdir, requested = stale_point(self)
    run = runs.Run(workdir, testing.SWEPT_DEMO)
    (row,) = sweep.collect([point], [run], {}, requested)
    self.assertEqual(row['status'], 'stale')
    self.assertNotIn('loss', row)
    # The sweep moves it aside (kept) before running the point again.
    runs.set_aside_stale([run], requested)
    self.assertFalse(os.path.exists(workdir))
    moved = os.path.join(root, 'stale', 'rng_seed=0.1')
    self.assertEqual(final_metrics(moved), dict(step=4, loss=7.5))
    (row,) = sweep.collect([point], [run], {}, requested)
    self.assertEqual(row['status'], 'missing')


class LockTest(absltest.TestCase):
  """Two sweeps on one workdir, and a point a live trainer holds."""

  def test_a_second_sweep_on_a_workdir_is_refused_naming_the_first(self):
    root = self.create_tempdir().full_path
    first = workdir_lock.WorkdirLock(root, 600, runs.SWEEP_LOCK,
                                     'sweep').acquire()  # Alive: this test.
    run = runs.Run(os.path.join(root, 'rng_seed=0'), testing.SWEPT_DEMO)
    try:
      with testing.fake_runs() as started:
        with self.assertRaisesRegex(
            workdir_lock.WorkdirLockedError,
            f'{root} is in use by another sweep .*pid {os.getpid()}'):
          runs.run_all([run], records={run.workdir: {}})
      self.assertEqual(started, [])
    finally:
      first.release()
    self.assertFalse(os.path.exists(run.workdir))  # Nothing written.

  def test_a_point_a_live_trainer_holds_is_neither_moved_nor_written(self):
    root, point, workdir, requested = stale_point(self)
    trainer = workdir_lock.WorkdirLock(workdir, 600).acquire()
    try:
      with testing.fake_runs() as started:
        with self.assertRaisesRegex(workdir_lock.WorkdirLockedError,
                                    f'{workdir} is being trained'):
          runs.run_all([runs.Run(workdir, testing.SWEPT_DEMO)],
                       records=requested)
      self.assertEqual(started, [])
      self.assertEqual(runs.read_record(workdir),
                       record(point, 'num_training_steps=4'))
      self.assertFalse(os.path.exists(os.path.join(root, 'stale')))
    finally:
      trainer.release()
    # Once the trainer is gone, the sweep sets the point aside as before,
    # and its own lock is gone when it ends.
    with testing.fake_runs():
      runs.run_all([runs.Run(workdir, testing.SWEPT_DEMO)], records=requested)
    self.assertTrue(os.path.isdir(os.path.join(root, 'stale', 'rng_seed=0.1')))
    self.assertFalse(os.path.exists(os.path.join(root, runs.SWEEP_LOCK)))


class RunTest(absltest.TestCase):

  def test_a_run_is_its_command_and_the_config_it_resolves_to(self):
    run = sweep.point_run('/w', testing.SWEPT_DEMO, {'rng_seed': '3'},
                          {'num_training_steps': '4'})
    self.assertEqual(run.workdir, '/w/rng_seed=3')
    self.assertEqual(run.overrides, {'num_training_steps': '4',
                                     'rng_seed': '3'})
    self.assertEqual(run.command()[1:], [
        '-m', 'tokenlearner_jax.train',
        f'--config={ROOT}/{testing.SWEPT_DEMO}', '--workdir=/w/rng_seed=3',
        '--config.num_training_steps=4', '--config.rng_seed=3'])
    config = run.resolved()
    self.assertEqual((config.rng_seed, config.num_training_steps), (3, 4))
    self.assertEqual(run.record()['resolved'], json.loads(
        config.to_json_best_effort(sort_keys=True)))
    evaluation = runs.Run('/w/plain', testing.SWEPT_DEMO, entry='evaluate',
                          out='/w/e.json')
    self.assertEqual(evaluation.command()[-1], '--out=/w/e.json')
    self.assertEqual((evaluation.result, evaluation.log),
                     ('/w/e.json', '/w/e.json.log'))
    with self.assertRaisesRegex(ValueError, 'Run.out'):
      runs.Run('/w', testing.SWEPT_DEMO, entry='evaluate')


class FailedRunTest(absltest.TestCase):

  def test_a_failed_run_is_reported_and_the_sweep_exits_non_zero(self):
    root = self.create_tempdir().full_path
    argv = [f'--config={ROOT}/configs/demo_moving_digits.py:runlocal',
            f'--workdir={root}', '--grid=model.tokenizer.tokenlearner_loc=7',
            f'--set=dataset_configs.data_dir={DATA_DIR}']
    with testing.fake_runs():  # The trainer's refusal: a FakeTrainer's.
      self.assertEqual(sweep.main(argv), 1)
    with open(os.path.join(root, 'results.csv')) as f:
      (row,) = list(csv.DictReader(f))
    self.assertEqual(row['status'], 'failed (exit 1)')
    with open(os.path.join(root, row['run'], 'train.log')) as f:
      self.assertIn('tokenlearner_loc must be in [0, num_layers=2)', f.read())


if __name__ == '__main__':
  absltest.main()
