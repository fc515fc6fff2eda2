"""Where a study's runs run: local processes, cluster jobs, or a command line.

The runner (`runs.run_all`) starts each run through a launcher and watches
what it returns as it watches a local process (`poll`, `returncode`,
`send_signal`, `wait`, `kill`), so the skip, stale, resume and lock rules are
the same everywhere:

* `Local`: a subprocess of the runner (the default).
* `Slurm`: one submitit job per run (`submitit.AutoExecutor`; nodes, tasks
  per node = processes, GPUs per task, time, partition); the trainer's
  multi-host set-up reads SLURM's variables (`runtime.initialize_runtime`).
  `cluster='local'` is submitit's local executor: real job objects and
  processes without SLURM (the tests use it). Each run's job id is in
  `WORKDIR/<run>/job.json`; `cancel` cancels the jobs a sweep submitted.
* `Command`: a command line of the user's, `{cmd}` standing for the run's
  command (shell-quoted), e.g. `gcloud compute tpus tpu-vm ssh NAME
  --worker=all --command="cd REPO && {cmd}"` or an `xpk workload create ...
  --command "{cmd}"` line; `{workdir}` and `{name}` are the run's.
"""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import time
from typing import Any, Dict, Optional

from tokenlearner_jax import errors

JOB_FILE = 'job.json'  # A cluster run's job, in its workdir.


class Local:
  """Runs each run as a subprocess of the runner."""

  def start(self, run: Any, log: Any) -> subprocess.Popen:
    from tokenlearner_jax.studies import runs  # pylint: disable=g-import-not-at-top
    return runs.start(run, log)


@dataclasses.dataclass(frozen=True)
class Command:
  """Runs each run through a command-line template (a shell command).

  Attributes:
    template: The command, with `{cmd}` (the run's command, shell-quoted),
      and optionally `{workdir}` and `{name}`.
  """
  template: str

  def __post_init__(self):
    if '{cmd}' not in self.template:
      raise errors.UsageError(
          f'--launch_template={self.template!r} has no {{cmd}}: it must say '
          'where the run\'s command goes.')

  def start(self, run: Any, log: Any) -> subprocess.Popen:
    from tokenlearner_jax.studies import runs  # pylint: disable=g-import-not-at-top
    line = self.template.format(cmd=shlex.join(run.command()),
                                workdir=run.workdir, name=run.name)
    print(f'  {run.name}: {line}', flush=True)
    return subprocess.Popen(line, shell=True, stdout=log,
                            stderr=subprocess.STDOUT, cwd=runs.ROOT)


class JobHandle:
  """A submitit job seen as a process (what the runner watches)."""

  def __init__(self, job: Any, cluster: Optional[str]):
    self.job = job
    self.cluster = cluster
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None and self.job.done():
      failed = self.job.state not in ('COMPLETED', 'FINISHED') or (
          self.job.exception() is not None)
      self.returncode = 1 if failed else 0
    return self.returncode

  def send_signal(self, sig: int) -> None:
    del sig  # SLURM's scancel sends SIGTERM, then SIGKILL.
    cancel_job(self.job, self.cluster)

  def wait(self, timeout: Optional[float] = None) -> int:
    deadline = None if timeout is None else time.time() + timeout
    while self.poll() is None:
      if deadline is not None and time.time() > deadline:
        raise subprocess.TimeoutExpired(str(self.job.job_id), timeout)
      time.sleep(0.5)
    return self.returncode

  def kill(self) -> None:
    cancel_job(self.job, self.cluster)


@dataclasses.dataclass(frozen=True)
class Slurm:
  """Submits each run as a submitit job.

  Attributes:
    nodes: Nodes per run.
    tasks_per_node: Processes per node (one per host's devices, or per GPU).
    gpus_per_node: GPUs per node.
    timeout_min: The job's time limit.
    partition: The SLURM partition (None: the cluster's default).
    cluster: submitit's cluster: None (SLURM, detected) or 'local'.
    extra: Other `slurm_*` parameters of submitit (e.g. `account`).
  """
  nodes: int = 1
  tasks_per_node: int = 1
  gpus_per_node: int = 0
  timeout_min: int = 60 * 24
  partition: Optional[str] = None
  cluster: Optional[str] = None
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def executor(self, folder: str) -> Any:
    import submitit  # pylint: disable=g-import-not-at-top
    executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
    params = dict(nodes=self.nodes, tasks_per_node=self.tasks_per_node,
                  timeout_min=self.timeout_min)
    if self.gpus_per_node:
      params['gpus_per_node'] = self.gpus_per_node
    if self.partition:
      params['slurm_partition'] = self.partition
    params.update({f'slurm_{k}': v for k, v in self.extra.items()})
    executor.update_parameters(**params)
    return executor

  def start(self, run: Any, log: Any) -> JobHandle:
    import submitit  # pylint: disable=g-import-not-at-top
    from tokenlearner_jax.studies import runs  # pylint: disable=g-import-not-at-top
    folder = os.path.join(run.workdir, 'jobs')
    executor = self.executor(folder)
    executor.update_parameters(name=run.name)
    job = executor.submit(submitit.helpers.CommandFunction(
        run.command(), cwd=runs.ROOT))
    record = dict(job_id=str(job.job_id), folder=folder,
                  cluster=self.cluster, command=run.command())
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, JOB_FILE), 'w') as f:
      json.dump(record, f, indent=1)
    log.write(f'submitted job {job.job_id}; its output: {folder}\n')
    log.flush()
    print(f'  {run.name}: job {job.job_id}', flush=True)
    return JobHandle(job, self.cluster)


def cancel(workdir: str) -> Optional[str]:
  """Cancels the job `WORKDIR/job.json` names, if any; its id."""
  path = os.path.join(workdir, JOB_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  import submitit  # pylint: disable=g-import-not-at-top
  executor = submitit.AutoExecutor(folder=record['folder'],
                                   cluster=record['cluster'])
  job_class = executor._executor.job_class  # pylint: disable=protected-access
  cancel_job(job_class(folder=record['folder'], job_id=record['job_id']),
             record['cluster'])
  return record['job_id']


def cancel_job(job: Any, cluster: Optional[str]) -> None:
  """Cancels a submitit job: SLURM's scancel; for a job of the local
  executor (whose id is its controller's pid), SIGTERM to its tasks first (a
  trainer saves and exits), then to the controller, which may ignore SIGINT
  (`LocalJob.cancel`'s signal) when started from a shell's background job."""
  if cluster != 'local':
    job.cancel(check=False)
    return
  controller = int(job.job_id)
  for pid in _descendants(controller)[::-1] + [controller]:
    try:
      os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
      pass


def _descendants(pid: int) -> list:
  """The processes under `pid`, parents first (Linux's /proc)."""
  try:
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      children = [int(c) for c in f.read().split()]
  except OSError:
    return []
  return [p for c in children for p in [c] + _descendants(c)]


def from_flags(launcher: str, template: Optional[str] = None,
               **slurm: Any) -> Any:
  """The launcher the study flags name ('local', 'slurm', 'command')."""
  if launcher == 'local':
    return Local()
  if launcher == 'command':
    if not template:
      raise errors.UsageError('--launcher=command needs --launch_template, '
                              "e.g. 'ssh host \"cd REPO && {cmd}\"'.")
    return Command(template)
  if launcher == 'slurm':
    return Slurm(**slurm)
  raise errors.UsageError(f'--launcher={launcher}: one of local, slurm, '
                          'command.')

