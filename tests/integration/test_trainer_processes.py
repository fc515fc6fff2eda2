"""The trainer as processes: killed, preempted and resumed bit-identical to an
uninterrupted run; its exit paths (a non-finite stop, a second trainer on a
workdir); jobs of several processes joined through jax.distributed (gloo
collectives on CPU)."""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import time

from absl.testing import absltest
import jax
import numpy as np
import pytest

from tests import testing
from tests.testing import ROOT
from tests.testing import committed_steps
from tests.testing import config_for
from tests.testing import final_metrics
from tests.testing import free_port
from tests.testing import read_jsonl
from tests.testing import steps_being_written
from tests.testing import train_command
from tokenlearner_jax import checkpoint
from tokenlearner_jax import workdir_lock


class FaultToleranceTest(absltest.TestCase):
  """Kill, preemption and non-finite losses, on real subprocesses."""

  # Long enough to be killed mid-run; eval and checkpoints along the way.
  OVERRIDES = ('--config.num_training_steps=120',
               '--config.checkpoint_steps=10',
               '--config.log_summary_steps=5', '--config.log_eval_steps=60')

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    testing.prepare_datasets('moving_digits/small')

  def run_to_end(self, workdir: str, *overrides: str):
    result = subprocess.run(train_command(workdir, *overrides), cwd=ROOT,
                            capture_output=True, text=True, check=False)
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
    the same step, bit-identical train state, equal final metrics and the
    same metrics.jsonl rows but for the rates (each summary averages the
    same steps, those before a preemption or a kill included)."""
    reference.wait(timeout=600)
    with open(reference_log) as f:
      self.assertEqual(reference.returncode, 0, f.read()[-3000:])
    step_a, state_a, final_a = self.final_state(straight)
    step_b, state_b, final_b = self.final_state(workdir)
    self.assertEqual((step_a, step_b), (120, 120))
    self.assertEqual(final_a, final_b)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state_a, state_b)
    rows_a, rows_b = [[{k: v for k, v in row.items() if not k.endswith(
        '_per_sec')} for row in read_jsonl(w)] for w in (straight, workdir)]
    self.assertEqual(rows_a, rows_b)

  def start(self, workdir: str, *overrides: str):
    """Starts a run; returns it and the file its stderr goes to (a file: a
    full pipe would stall a run that is not being read)."""
    log = os.path.join(self.create_tempdir().full_path, 'stderr')
    with open(log, 'w') as stderr:
      process = subprocess.Popen(train_command(workdir, *overrides), cwd=ROOT,
                                 stdout=subprocess.DEVNULL,
                                 stderr=stderr)
    return process, log

  def run_until(self, workdir: str, condition, *overrides: str,
                sig=signal.SIGKILL):
    """Starts a run, sends it `sig` as soon as `condition()` holds and returns
    its exit code and stderr."""
    process, log = self.start(workdir, *overrides)
    self.last_pid = process.pid
    testing.wait_until(condition, process)
    process.send_signal(sig)
    process.wait(timeout=300)
    with open(log) as f:
      stderr = f.read()
    self.assertTrue(condition(), f'the run ended first: {stderr[-3000:]}')
    return process.returncode, stderr

  def test_killed_and_preempted_run_ends_bit_identical_to_an_uninterrupted_one(
      self):
    straight = self.create_tempdir().full_path
    # The uninterrupted run goes alongside the interrupted one.
    reference, reference_log = self.start(straight, *self.OVERRIDES)
    workdir = self.create_tempdir().full_path
    # 1. SIGKILL as soon as the first checkpoint is committed: the run
    # leaves its lock (its pid), which the next run takes over.
    self.run_until(workdir, lambda: committed_steps(workdir), *self.OVERRIDES)
    first = committed_steps(workdir)[-1]
    with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
      self.assertEqual(json.load(f)['pid'], self.last_pid)
    # 2. SIGKILL in the rerun while the checkpoint of step 20 or later is
    # being written: the partial write is left behind, run 3 must restore the
    # last complete step instead, and run 4 writes that step again over it.
    killed = self.last_pid
    _, stderr = self.run_until(
        workdir, lambda: [s for s in steps_being_written(workdir) if s >= 20],
        *self.OVERRIDES)
    self.assertIn(f'its process (pid {killed}) is dead', stderr)
    second = committed_steps(workdir)[-1]
    self.assertGreater(second, first)
    for step in steps_being_written(workdir):
      self.assertGreater(step, second)
    # 3. SIGTERM (a preemption notice) once the rerun has logged a train
    # summary: it saves the current step and exits 0.
    logged = len(read_jsonl(workdir))
    code, stderr = self.run_until(
        workdir, lambda: any(r['kind'] == 'train'
                             for r in read_jsonl(workdir)[logged:]),
        *self.OVERRIDES, sig=signal.SIGTERM)
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn(f'Restored the checkpoint at step {second}', stderr)
    saved = committed_steps(workdir)[-1]
    self.assertIn(f'Preempted: saved the checkpoint of step {saved}', stderr)
    self.assertLess(saved, 120, 'preempted too late to test resume')
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 'final_metrics.json')))
    # 4. SIGTERM before the next rerun's first step (as soon as it holds the
    # lock): nothing new to save, so it exits 0 at once, lock released,
    # without waiting for its data, restore and compile.
    lock = os.path.join(workdir, workdir_lock.LOCK_FILE)
    seen = []

    def holds_lock():
      try:
        with open(lock) as f:
          seen.append(json.load(f)['pid'] == self.last_pid or None)
      except (OSError, ValueError):
        pass
      return any(seen)

    code, stderr = self.run_until(workdir, holds_lock, *self.OVERRIDES,
                                  sig=signal.SIGTERM)
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn('SIGTERM before the first step: nothing new to save',
                  stderr)
    self.assertEqual(committed_steps(workdir)[-1], saved, stderr[-3000:])
    self.assertFalse(os.path.exists(lock))
    # 5. The same command resumes there and finishes.
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



class ExitPathsTest(absltest.TestCase):
  """What a trainer process leaves when it stops, and the workdir lock."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    testing.prepare_datasets('moving_digits/small')

  def test_a_non_finite_stop_leaves_the_checkpoint_it_names_committed(self):
    workdir = self.create_tempdir().full_path
    result = subprocess.run(train_command(
        workdir, '--config.num_training_steps=10',
        '--config.checkpoint_steps=1', '--config.lr_configs.factors=constant',
        '--config.lr_configs.base_learning_rate=1e6'), cwd=ROOT,
                            capture_output=True, text=True, check=False)
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

  def test_a_checkpoint_write_the_disk_refuses_ends_in_one_line(self):
    # A real refused write without a small disk: a file-size limit (EFBIG;
    # a full disk, ENOSPC, takes the same path: CheckpointTest).
    def limit_file_size():
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill.
      resource.setrlimit(resource.RLIMIT_FSIZE,
                         (64 * 1024, resource.RLIM_INFINITY))
    workdir = self.create_tempdir().full_path
    result = subprocess.run(
        train_command(workdir), cwd=ROOT, capture_output=True, text=True,
        check=False, preexec_fn=limit_file_size,
        # Cache entries are larger than the limit too.
        env=dict(os.environ, JAX_ENABLE_COMPILATION_CACHE='false'))
    self.assertEqual(result.returncode, 1)
    self.assertEqual(
        result.stderr.strip().splitlines()[-1],
        'Error: a file larger than the file-size limit while writing the '
        f'checkpoint of step 1 in {workdir}/checkpoints (no checkpoint was '
        'committed before it): raise the limit (ulimit -f) and run the same '
        'command again.')
    self.assertEqual(committed_steps(workdir), [])
    # The failed write of step 1 surfaces at step 2's save; the rows stay.
    self.assertEqual([r['step'] for r in read_jsonl(workdir)
                      if r['kind'] == 'train'], [1, 2])
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 workdir_lock.LOCK_FILE)))

  def test_a_second_trainer_on_a_workdir_is_refused_naming_the_first(self):
    # The first trainer: this process, holding the workdir's lock (that a
    # trainer takes it: FaultToleranceTest, whose killed runs leave theirs).
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir, 600):
      second = subprocess.run(train_command(workdir), cwd=ROOT,
                              capture_output=True, text=True, check=False)
      self.assertEqual(second.returncode, 1)
      last = second.stderr.strip().splitlines()[-1]
      self.assertRegex(last, rf'^Error: .* is in use by another trainer '
                       rf'\(host {re.escape(socket.gethostname())}, pid '
                       rf'{os.getpid()}, ')
      self.assertNotIn('Traceback', second.stderr)
      self.assertNotIn('Training', second.stderr)  # It stopped before.
      with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
        self.assertEqual(json.load(f)['pid'], os.getpid())  # Left as it was.
    self.assertEqual(os.listdir(workdir), [])


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


class MultiProcessTest(absltest.TestCase):
  """Processes joined through jax.distributed (gloo collectives on CPU)."""

  OVERRIDES = ('--config.num_training_steps=4', '--config.checkpoint_steps=4',
               '--config.dataset_configs.global_order=True',
               '--config.mesh.data=4', '--config.mesh.model=2',
               '--config.model.num_layers=2')

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    testing.prepare_datasets('moving_digits/small')

  def setUp(self):
    super().setUp()
    self.logs = {}  # pid -> its stderr file

  def launch(self, workdir: str, devices: int, *overrides: str, env=None):
    # stderr goes to a file: a full pipe would stall a process not waited on.
    log = os.path.join(self.create_tempdir().full_path, 'stderr')
    with open(log, 'w') as stderr:
      process = subprocess.Popen(
          train_command(workdir, *overrides), cwd=ROOT,
          env=testing.host_devices_env(devices, **(env or {})),
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

  def test_1x1_and_2x4_devices_agree_and_1x8_resumes_the_2x4_checkpoint(
      self):
    """1 device and 2 processes x 4 devices (data=4, model=2) give the same
    losses; one process with 8 devices resumes the job's checkpoint (the
    train step on 8 devices of one process: test_eight_devices.py)."""
    one_device, two = (self.create_tempdir().full_path for _ in range(2))
    # Both at once. The job joins by SLURM auto-detection here; the tests
    # below pass the flags.
    runs = [self.launch(one_device, 1, *self.OVERRIDES,
                        '--config.mesh.data=1', '--config.mesh.model=1'),
            *self.launch_slurm_job(two, *self.OVERRIDES)]
    for process, (code, stderr) in zip(runs, map(self.wait, runs)):
      self.assertEqual(code, 0, stderr[-3000:])
      if process in runs[1:]:
        self.assertIn('2 processes', stderr)
    losses = [[r['loss'] for r in read_jsonl(workdir) if r['kind'] == 'train']
              for workdir in (one_device, two)]
    self.assertLen(losses[0], 4)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
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
        '--config.checkpoint_steps=1000000', '--config.log_eval_steps=1000000',
        '--heartbeat_timeout_seconds=10')
    results = os.path.join(workdir, 'metrics.jsonl')
    testing.wait_until(lambda: os.path.exists(results), first)
    second.kill()
    second.wait()
    try:  # It stops (the timeout only guards against a hang).
      code, _ = self.wait(first, timeout=300)
    finally:
      first.kill()
    self.assertNotEqual(code, 0)


  def test_sigterm_to_a_job_saves_one_step_and_every_process_exits_zero(self):
    workdir = self.create_tempdir().full_path
    processes = self.launch_job(
        workdir, *self.OVERRIDES, '--config.num_training_steps=1000000',
        '--config.checkpoint_steps=1000000', '--config.log_eval_steps=1000000',
        '--config.log_summary_steps=5')
    results = os.path.join(workdir, 'metrics.jsonl')
    testing.wait_until(lambda: os.path.exists(results), processes[0])
    for process in processes:  # What a scheduler's preemption notice does.
      process.send_signal(signal.SIGTERM)
    try:
      outcomes = [self.wait(p, timeout=300) for p in processes]
    finally:
      for process in processes:
        process.kill()
    for code, stderr in outcomes:
      self.assertEqual(code, 0, stderr[-3000:])
      self.assertIn('Preempted: saved the checkpoint of step', stderr)
    # Both processes wrote the one checkpoint of the step they stopped at.
    self.assertGreaterEqual(committed_steps(workdir)[-1], 5)


if __name__ == '__main__':
  absltest.main()
