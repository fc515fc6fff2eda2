"""scripts/sweep.py: grids, real runs, skipping finished runs, rerunning
stale ones, the tables."""

import csv
import json
import os

from absl.testing import absltest
import pytest

from tests.testing import DATA_DIR
from tests.testing import ROOT
from tests.testing import config_for
from tests.testing import final_metrics
from tests.testing import load_script
from tokenlearner_jax import flops

sweep = load_script('sweep')
DEMO = 'configs/demo_moving_digits.py:runlocal'


def record(point, *fixed):
  """The record of `point` of a sweep of the demo config with `--set`s
  `fixed`."""
  return sweep.point_record(sweep.train_command(DEMO, '/run', point, fixed))


def fake_finished_run(workdir, point_record, metrics):
  """A finished run's files, as a sweep would have left them."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'train.log'), 'w') as f:
    f.write('finished earlier\n')
  with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
    json.dump(metrics, f)
  if point_record is not None:
    with open(os.path.join(workdir, sweep.RECORD), 'w') as f:
      json.dump(point_record, f)


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


class StaleTest(absltest.TestCase):

  def test_a_changed_setting_is_a_difference(self):
    four = record({'rng_seed': '0'}, 'num_training_steps=4')
    self.assertEqual(four['resolved']['num_training_steps'], 4)
    self.assertEqual(sweep.differences(four, four), [])
    self.assertEqual(
        sweep.differences(four, record({'rng_seed': '0'},
                                       'num_training_steps=8')),
        ['num_training_steps: 4 -> 8'])
    self.assertEqual(sweep.differences(four, record({'rng_seed': '1'},
                                                    'num_training_steps=4')),
                     ['rng_seed: 0 -> 1'])
    self.assertRegex(sweep.differences(None, four)[0], 'unknown')

  def test_a_default_added_since_is_no_difference(self):
    now = record({'rng_seed': '0'})
    before = json.loads(json.dumps(now))
    del before['resolved']['max_checkpoints_to_keep']  # A schema default.
    self.assertEqual(sweep.differences(before, now), [])
    del before['resolved']['dataset_configs']['shuffle_buffer_size']
    self.assertEqual(sweep.differences(before, now),
                     ['dataset_configs.shuffle_buffer_size: (unset) -> 4096'])

  def test_unresolvable_overrides_are_compared_as_written(self):
    typo = record({'rng_seed': '0'}, 'num_trainin_steps=4')
    self.assertIsNone(typo['resolved'])
    self.assertIn('num_trainin_steps', typo['error'])
    self.assertEqual(sweep.differences(typo, typo), [])
    self.assertLen(sweep.differences(typo, record({'rng_seed': '0'})), 1)

  def test_a_finished_run_of_another_config_is_not_tabled(self):
    root = self.create_tempdir().full_path
    point = {'rng_seed': '0'}
    workdir = os.path.join(root, sweep.run_name(point))
    fake_finished_run(workdir, record(point, 'num_training_steps=4'),
                      dict(step=4, loss=7.5))
    requested = {workdir: record(point, 'num_training_steps=8')}
    (row,) = sweep.collect(root, [point], {}, requested)
    self.assertEqual(row['status'], 'stale')
    self.assertNotIn('loss', row)
    # The sweep moves it aside (kept) before running the point again.
    sweep.set_aside_stale([(workdir, [])], requested)
    self.assertFalse(os.path.exists(workdir))
    moved = os.path.join(root, 'stale', 'rng_seed=0.1')
    self.assertEqual(final_metrics(moved), dict(step=4, loss=7.5))
    (row,) = sweep.collect(root, [point], {}, requested)
    self.assertEqual(row['status'], 'missing')


@pytest.mark.processes
class SweepRunTest(absltest.TestCase):

  def test_runs_skips_finished_reruns_stale_and_tables(self):
    root = self.create_tempdir().full_path
    data_dir = f'dataset_configs.data_dir={DATA_DIR}'

    def run_sweep(seeds):
      return sweep.main([
          f'--config={ROOT}/{DEMO}', f'--workdir={root}',
          f'--grid=rng_seed={seeds}', f'--set={data_dir}', '--parallel=2',
          '--group_over=rng_seed'])

    # An "interrupted" sweep whose points finished (their files written here,
    # which is all a finished run is to the sweep), then the whole grid: the
    # first point, run with the config asked for, is kept; the second, run
    # with 4 steps instead of the config's 2, is stale and runs again, for
    # real.
    fake_finished_run(os.path.join(root, 'rng_seed=0'),
                      record({'rng_seed': '0'}, data_dir),
                      dict(step=2, loss=9.5, accuracy=0.25,
                           gmacs_per_example=1.0))
    fake_finished_run(os.path.join(root, 'rng_seed=1'),
                      record({'rng_seed': '1'}, data_dir,
                             'num_training_steps=4'),
                      dict(step=4, loss=7.5, accuracy=0.5,
                           gmacs_per_example=1.0))
    kept_log = os.path.join(root, 'rng_seed=0', 'train.log')
    mtime = os.path.getmtime(kept_log)
    self.assertEqual(run_sweep('0,1'), 0)
    self.assertEqual(os.path.getmtime(kept_log), mtime)
    with open(os.path.join(root, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['rng_seed'] for r in rows], ['0', '1'])
    self.assertEqual((rows[0]['status'], rows[0]['loss']), ('done', '9.5'))
    row = rows[1]  # The real run.
    self.assertEqual((row['status'], row['step']), ('done', '2'))
    stale = os.path.join(root, 'stale', 'rng_seed=1.1')
    self.assertEqual(final_metrics(stale)['loss'], 7.5)
    with open(os.path.join(root, row['run'], sweep.RECORD)) as f:
      self.assertEqual(json.load(f)['resolved'],
                       record({'rng_seed': '1'}, data_dir)['resolved'])
    final = final_metrics(os.path.join(root, row['run']))
    self.assertAlmostEqual(float(row['accuracy']), final['accuracy'])
    self.assertAlmostEqual(float(row['loss']), final['loss'])
    # The GMACs of the swept config's model on moving_digits clips.
    gmacs = flops.gmacs(config_for('demo_moving_digits'), (8, 32, 32, 3), 40)
    self.assertEqual(float(row['gmacs_per_example']), gmacs)
    self.assertEqual(final['gmacs_per_example'], gmacs)
    with open(os.path.join(root, 'results.md')) as f:
      grouped = f.read().split('n (rng_seed)')[1]  # The mean ± std table.
    self.assertIn('±', grouped)

  def test_a_failed_run_is_reported_and_the_sweep_exits_non_zero(self):
    root = self.create_tempdir().full_path
    argv = [f'--config={ROOT}/configs/demo_moving_digits.py:runlocal',
            f'--workdir={root}', '--grid=model.tokenizer.tokenlearner_loc=7',
            f'--set=dataset_configs.data_dir={DATA_DIR}']
    self.assertEqual(sweep.main(argv), 1)
    with open(os.path.join(root, 'results.csv')) as f:
      (row,) = list(csv.DictReader(f))
    self.assertEqual(row['status'], 'failed (exit 1)')
    with open(os.path.join(root, row['run'], 'train.log')) as f:
      self.assertIn('tokenlearner_loc must be in [0, num_layers=2)', f.read())


if __name__ == '__main__':
  absltest.main()
