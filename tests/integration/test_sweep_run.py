"""One real sweep: studies.sweep runs trainer processes, skips a finished
point, sets aside and reruns a stale one, and tables the results; a SIGTERM
to a runner reaches its runs; submitit jobs and a command template run a
point's command line (a stand-in for the trainer there). The rest of the
sweep with faked runs: tests/studies/test_sweep.py."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest

from tests.testing import DATA_DIR
from tests.testing import ROOT
from tests.testing import SWEPT_DEMO
from tests.testing import config_for
from tests.testing import fake_finished_run
from tests.testing import final_metrics
from tests.testing import prepare_datasets
from tests.testing import sweep_record as record
from tests.testing import wait_until
from tokenlearner_jax import flops
from tokenlearner_jax.studies import launchers
from tokenlearner_jax.studies import runs
from tokenlearner_jax.studies import sweep


class SweepRunTest(absltest.TestCase):

  def test_runs_skips_finished_reruns_stale_and_tables(self):
    root = self.create_tempdir().full_path
    prepare_datasets('moving_digits/small')
    data_dir = f'dataset_configs.data_dir={DATA_DIR}'

    def run_sweep(seeds):
      return sweep.main([
          f'--config={ROOT}/{SWEPT_DEMO}', f'--workdir={root}',
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
    with open(os.path.join(root, row['run'], runs.RECORD)) as f:
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


# A runner whose one run is this sleeper: it notes a SIGTERM, then exits.
RUNNER = textwrap.dedent("""\
    import subprocess, sys
    from unittest import mock
    from tokenlearner_jax.studies import runs
    SLEEPER = (
        'import os, signal, sys, time\\n'
        'def stop(*_):\\n'
        '  open(os.path.join(sys.argv[1], "got_sigterm"), "w").close()\\n'
        '  sys.exit(0)\\n'
        'signal.signal(signal.SIGTERM, stop)\\n'
        'open(os.path.join(sys.argv[1], "started"), "w").close()\\n'
        'time.sleep(600)\\n')
    def start(run, log):
      return subprocess.Popen([sys.executable, '-c', SLEEPER, run.workdir],
                              stdout=log, stderr=subprocess.STDOUT)
    workdir = sys.argv[1]
    with mock.patch.object(runs, 'start', start):
      runs.run_all([runs.Run(workdir, 'configs/demo_moving_digits.py')],
                   records={workdir: {}})
    """)


class SigtermTest(absltest.TestCase):

  def test_a_sigterm_to_the_runner_reaches_its_runs(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, 'point')
    runner = subprocess.Popen([sys.executable, '-c', RUNNER, workdir],
                              cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    started = os.path.join(workdir, 'started')
    if not wait_until(lambda: os.path.exists(started), runner):
      self.fail(runner.communicate()[0])
    self.assertTrue(os.path.exists(os.path.join(root, runs.SWEEP_LOCK)),
                    os.listdir(root))
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=120)
    self.assertEqual(runner.returncode, 143, out)
    self.assertIn('stopped: point (exit 0)', out)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'got_sigterm')))
    self.assertFalse(os.path.exists(os.path.join(root, runs.SWEEP_LOCK)))


class FakeRun:
  """A run whose command sleeps (for cancelling a job while it runs)."""
  name = 'sleeper'

  def __init__(self, workdir: str):
    self.workdir = workdir

  def command(self):
    return [sys.executable, '-c', 'import time; time.sleep(120)']


# What a point's job runs in LauncherTest, in place of the trainer (whose
# run in a sweep SweepRunTest owns): it records the command line it stands
# for and the directory it runs in (the trainer's `python -m` needs the
# repository's), and leaves the file of a finished run.
STAND_IN = textwrap.dedent("""\
    import json, os, sys
    command = json.loads(sys.argv[1])
    workdir = [a for a in command if a.startswith('--workdir=')][0][10:]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'command.json'), 'w') as f:
      json.dump(dict(command=command, cwd=os.getcwd()), f)
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump({'step': 2}, f)
    """)


class LauncherTest(absltest.TestCase):
  """Points run as submitit jobs (its local executor: real job objects and
  processes, no SLURM) and through a command template, under the same
  rules."""

  def test_submitit_jobs_and_a_template_run_points_by_the_same_rules(self):
    root = self.create_tempdir().full_path
    base = [f'--config={ROOT}/{SWEPT_DEMO}',
            f'--set=dataset_configs.data_dir={DATA_DIR}']
    slurm = os.path.join(root, 'slurm')
    jobs = base + [f'--workdir={slurm}', '--grid=rng_seed=0,1',
                   '--launcher=slurm', '--slurm_cluster=local',
                   '--slurm_timeout_min=20']
    trainer_command = runs.Run.command
    commands = {}  # workdir -> the trainer's command line

    def stand_in(run):
      commands[run.workdir] = trainer_command(run)
      return [sys.executable, '-c', STAND_IN,
              json.dumps(commands[run.workdir])]

    def ran(workdir):
      """The trainer's command line the job ran, and that it finished."""
      self.assertEqual(final_metrics(workdir)['step'], 2)
      with open(os.path.join(workdir, 'command.json')) as f:
        record = json.load(f)
      self.assertEqual(record['command'], commands[workdir])
      self.assertEqual(record['command'][1:3], ['-m', 'tokenlearner_jax.train'])
      self.assertEqual(record['cwd'], runs.ROOT)
      return record['command']

    # A resubmitted sweep whose first point finished before: only the
    # missing point becomes a job.
    done = os.path.join(slurm, 'rng_seed=0')
    fake_finished_run(done, record({'rng_seed': '0'}, base[1][len('--set='):]),
                      dict(step=2, loss=9.5))
    with mock.patch.object(runs.Run, 'command', stand_in):
      self.assertEqual(sweep.main(jobs), 0)
      self.assertFalse(os.path.exists(os.path.join(done, launchers.JOB_FILE)))
      self.assertEqual(final_metrics(done)['loss'], 9.5)
      point = os.path.join(slurm, 'rng_seed=1')
      with open(os.path.join(point, launchers.JOB_FILE)) as f:
        job = json.load(f)
      self.assertIn('--config.rng_seed=1', ran(point))
      self.assertEqual(list(commands), [point])
      self.assertTrue(os.listdir(job['folder']))  # submitit's own files.
      # Both points finished: no new job.
      self.assertEqual(sweep.main(jobs), 0)
      with open(os.path.join(point, launchers.JOB_FILE)) as f:
        self.assertEqual(json.load(f)['job_id'], job['job_id'])
      # A template (an ssh or gcloud line, here run locally) gets the
      # command.
      template = os.path.join(root, 'template')
      self.assertEqual(sweep.main(base + [
          f'--workdir={template}', '--grid=rng_seed=2', '--launcher=command',
          '--launch_template=echo launching {name} && {cmd}']), 0)
    with open(os.path.join(template, 'rng_seed=2', 'train.log')) as f:
      self.assertIn('launching rng_seed=2', f.read())
    self.assertIn('--config.rng_seed=2',
                  ran(os.path.join(template, 'rng_seed=2')))

  def test_cancel_cancels_a_submitted_job(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, 'log'), 'w') as log:
      handle = launchers.Slurm(cluster='local').start(FakeRun(workdir), log)
    self.assertIsNone(handle.poll())
    self.assertEqual(launchers.cancel(workdir), str(handle.job.job_id))
    self.assertEqual(handle.wait(timeout=60), 1)


if __name__ == '__main__':
  absltest.main()
