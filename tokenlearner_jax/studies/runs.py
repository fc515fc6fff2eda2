"""Runs as data, and the runner that starts, skips and sets them aside.

A `Run` is one `python -m tokenlearner_jax.train` (or `.evaluate`) process:
its workdir, its config file and its overrides as a dict (applied as
`--config.key=value` flags, in order, by the trainer's own config flag). Before
a train run starts, the config it runs with is written to
`WORKDIR/sweep_point.json` (`RECORD`); a finished run (`final_metrics.json`)
whose record is the requested config is skipped, an interrupted one resumes
from its checkpoint, and one recorded with another config (or without a
record) is stale: moved to `<parent>/stale/<name>.<n>` (kept, never tabled)
and rerun from scratch. An evaluate run is done when its `out` file exists.

A runner holds `<parent>/sweep.lock` of its runs' workdirs while it runs (a
second sweep on them is refused, naming the first), never moves or writes a
run whose workdir lock (`train.lock`) is live, and passes a SIGTERM or
Ctrl-C on to the runs it started (the trainers save and exit) before it
exits itself.
"""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from tokenlearner_jax import run_config
from tokenlearner_jax import workdir_lock
from tokenlearner_jax.configs import schema
from tokenlearner_jax.studies import launchers

Record = Dict[str, Any]
# The repository root: config paths are relative to it, and runs start in it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RECORD = 'sweep_point.json'
ENTRIES = ('train', 'evaluate')
SWEEP_LOCK = 'sweep.lock'
# A lock whose heartbeat is older is stale (the trainer's default).
STALE_SECONDS = schema.TABLE['workdir_lock_stale_seconds'].default


def config_flag(value: str) -> str:
  """A `--config` value with its path made absolute (relative: to `ROOT`)."""
  path, sep, arg = value.partition(':')
  return os.path.join(ROOT, path) + sep + arg


def override_flags(overrides: Mapping[str, Any]) -> List[str]:
  """`--config.key=value` flags, in order (`str(value)` is the value)."""
  return [f'--config.{key}={value}' for key, value in overrides.items()]


def resolve(config: str, overrides: Mapping[str, Any]
            ) -> ml_collections.ConfigDict:
  """The config a trainer runs with: `config` (a `--config` value) with
  `overrides` applied as `--config.x=y` flags by the same config flag."""
  argv = ['train', f'--config={config_flag(config)}',
          *override_flags(overrides)]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@dataclasses.dataclass(frozen=True)
class Run:
  """One trainer or evaluator process.

  Attributes:
    workdir: The run's workdir (evaluate: the trained run it evaluates).
    config: `configs/<x>.py[:arg]`, relative to `ROOT` or absolute.
    overrides: Config key -> value (`str(value)` is the flag's value), in
      the order applied.
    entry: 'train' or 'evaluate'.
    out: evaluate's `--out` file.
  """
  workdir: str
  config: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  entry: str = 'train'
  out: Optional[str] = None

  def __post_init__(self):
    if self.entry not in ENTRIES:
      raise ValueError(f'Run.entry={self.entry!r}: one of {ENTRIES}.')
    if (self.entry == 'evaluate') != bool(self.out):
      raise ValueError('Run.out: set for evaluate runs (only).')

  def command(self) -> List[str]:
    return [sys.executable, '-m', f'tokenlearner_jax.{self.entry}',
            f'--config={config_flag(self.config)}',
            f'--workdir={self.workdir}', *override_flags(self.overrides),
            *([f'--out={self.out}'] if self.out else [])]

  @property
  def result(self) -> str:
    """The file a finished run leaves."""
    return self.out or os.path.join(self.workdir, 'final_metrics.json')

  @property
  def log(self) -> str:
    return (self.out + '.log' if self.out
            else os.path.join(self.workdir, 'train.log'))

  @property
  def name(self) -> str:
    return os.path.basename(self.out or self.workdir)

  def finished(self) -> bool:
    return os.path.exists(self.result)

  def resolved(self) -> ml_collections.ConfigDict:
    """The config it runs with."""
    return resolve(self.config, self.overrides)

  def record(self) -> Record:
    """What `RECORD` holds: its `--config` and overrides, and the config
    they resolve to (None, with the error, where they do not resolve: the
    run then fails and says why)."""
    record: Record = dict(config=config_flag(self.config),
                          overrides=override_flags(self.overrides))
    try:
      record['resolved'] = json.loads(
          self.resolved().to_json_best_effort(sort_keys=True))
    except Exception as e:  # pylint: disable=broad-except
      lines = str(e).strip().splitlines() or [type(e).__name__]
      record.update(resolved=None, error=lines[0])
    return record


def read_record(workdir: str) -> Optional[Record]:
  """The config `workdir`'s run was started with by the runner, if any."""
  return run_config.read_json(os.path.join(workdir, RECORD))


def differences(recorded: Optional[Record], requested: Record) -> List[str]:
  """Why a run recorded as `recorded` is not the run `requested` ([]: it is).

  One 'key: old -> new' per differing config key; a key missing from the
  recorded config is no difference when the requested value is its schema
  default. Configs that do not resolve are compared by their overrides.
  """
  if recorded is None:
    return [f'no {RECORD}: the config it ran with is unknown']
  if recorded.get('resolved') is None or requested['resolved'] is None:
    if (recorded.get('config'), recorded.get('overrides')) == (
        requested['config'], requested['overrides']):
      return []
    return [f'overrides {recorded.get("overrides")} -> '
            f'{requested["overrides"]}']
  changes = run_config.changes(recorded['resolved'], requested['resolved'])
  show = lambda value: value if value == run_config.UNSET else repr(value)
  return [f'{key}: {show(before)} -> {show(after)}'
          for key, (before, after) in changes.items()]


def move_stale(workdir: str) -> str:
  """Moves `workdir` to `<its parent>/stale/<name>.<n>` (the first free n)."""
  stale = os.path.join(os.path.dirname(workdir), 'stale')
  os.makedirs(stale, exist_ok=True)
  n = 1
  while os.path.exists(os.path.join(stale, f'{os.path.basename(workdir)}.{n}')):
    n += 1
  target = os.path.join(stale, f'{os.path.basename(workdir)}.{n}')
  os.rename(workdir, target)
  return target


def check_not_live(workdir: str) -> None:
  """Raises `WorkdirLockedError` when a live trainer holds `workdir`."""
  holder = workdir_lock.WorkdirLock(workdir, STALE_SECONDS).live_holder()
  if holder:
    raise workdir_lock.WorkdirLockedError(
        f'{workdir} is being trained ({holder}): the sweep neither moves nor '
        'writes a point a live trainer holds; stop that trainer or wait for '
        'it to end.')


def set_aside_stale(runs: Sequence[Run], records: Mapping[str, Record]) -> None:
  """Moves the workdir of each train run that ran with another config than
  `records[workdir]` (or has no record) out of the way, saying why; never
  one a live trainer holds."""
  for run in runs:
    workdir = run.workdir
    if (run.entry != 'train' or not os.path.isdir(workdir) or
        not os.listdir(workdir)):
      continue
    check_not_live(workdir)
    diffs = differences(read_record(workdir), records[workdir])
    if diffs:
      target = move_stale(workdir)
      print(f'stale: {os.path.basename(workdir)} ran with another config '
            f'({"; ".join(diffs)}); moved to {target}, rerunning.',
            flush=True)


def start(run: Run, log: Any) -> subprocess.Popen:
  """Starts `run`'s process in `ROOT`, its output to the file `log`."""
  return subprocess.Popen(run.command(), stdout=log, stderr=subprocess.STDOUT,
                          cwd=ROOT)


class Terminated(Exception):
  """The runner got SIGTERM."""


@contextlib.contextmanager
def sweep_locks(runs: Sequence[Run]):
  """Holds `SWEEP_LOCK` in each parent directory of `runs`' workdirs.

  Raises:
    WorkdirLockedError: naming the live sweep that holds one.
  """
  locks = []
  try:
    for parent in sorted({os.path.dirname(r.workdir) for r in runs}):
      locks.append(workdir_lock.WorkdirLock(
          parent, STALE_SECONDS, SWEEP_LOCK, 'sweep').acquire())
    yield
  finally:
    for lock in locks:
      lock.release()


@contextlib.contextmanager
def terminate_on_sigterm():
  """Turns SIGTERM into `Terminated` while the runner runs (in the main
  thread; elsewhere signals are not Python's to catch)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  def handler(signum, frame):
    del signum, frame
    raise Terminated()
  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def stop(running: Mapping[str, Any], timeout: float = 120.0) -> None:
  """SIGTERM to each running process (a trainer saves and exits), then
  waits up to `timeout` s for each; kills what is left."""
  for _, process, _, _ in running.values():
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
  deadline = time.time() + timeout
  for run, process, log, _ in running.values():
    try:
      process.wait(max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    log.close()
    print(f'stopped: {run.name} (exit {process.returncode})', flush=True)


def run_all(runs: Sequence[Run], parallel: int = 1,
            records: Optional[Mapping[str, Record]] = None,
            launcher: Any = None) -> Dict[str, int]:
  """Runs `runs`, `parallel` at a time; returns exit codes by `Run.result`.

  `records`: the config each train run runs with, by workdir (default: each
  run's `record()`). Holds the sweep lock of the runs' directories; stale
  train runs are set aside first; finished runs are skipped. A train run's
  record is written to its `RECORD` before it starts. Each run's output goes
  to its `log`; it starts in `ROOT`, through `launcher`
  (`studies.launchers`; default: a local subprocess). SIGTERM or Ctrl-C
  stop the running runs (`stop`; cluster jobs are cancelled) and exit.

  Raises:
    WorkdirLockedError: another live sweep holds the directory, or a live
      trainer a run's workdir.
  """
  if records is None:
    records = {r.workdir: r.record() for r in runs if r.entry == 'train'}
  with sweep_locks(runs), terminate_on_sigterm():
    return _run_locked(runs, parallel, records,
                       launcher or launchers.Local())


def _run_locked(runs: Sequence[Run], parallel: int,
                records: Mapping[str, Record],
                launcher: Any) -> Dict[str, int]:
  """`run_all` under its locks."""
  set_aside_stale(runs, records)
  waiting = [run for run in runs if not run.finished()]
  print(f'{len(runs) - len(waiting)} of {len(runs)} runs already finished; '
        f'running {len(waiting)}, {parallel} at a time.', flush=True)
  running: Dict[str, Any] = {}  # Result -> (run, process, log, start time).
  codes: Dict[str, int] = {}
  try:
    _loop(waiting, running, codes, parallel, records, launcher)
  except (Terminated, KeyboardInterrupt):
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Once is enough.
    print('Stopping: passing the signal on to the running runs.', flush=True)
    stop(running)
    raise SystemExit(143)
  return codes


def _loop(waiting: List[Run], running: Dict[str, Any], codes: Dict[str, int],
          parallel: int, records: Mapping[str, Record],
          launcher: Any) -> None:
  """Starts `waiting` runs, `parallel` at a time, until all have ended."""
  while waiting or running:
    while waiting and len(running) < max(parallel, 1):
      run = waiting.pop(0)
      os.makedirs(os.path.dirname(run.log), exist_ok=True)
      if run.entry == 'train':
        check_not_live(run.workdir)
        with open(os.path.join(run.workdir, RECORD), 'w') as f:
          json.dump(records[run.workdir], f, indent=1, sort_keys=True)
      log = open(run.log, 'a')
      print(f'start {run.name}', flush=True)
      running[run.result] = (run, launcher.start(run, log), log, time.time())
    ended = [key for key, (_, process, _, _) in running.items()
             if process.poll() is not None]
    if not ended:  # Wait a little for one of the running processes.
      time.sleep(0.5)
    for key in ended:
      run, process, log, started = running[key]
      log.close()
      codes[key] = process.returncode
      status = 'done' if process.returncode == 0 else (
          f'FAILED (exit {process.returncode}, see {run.log})')
      print(f'{status}: {run.name} in {time.time() - started:.0f} s',
            flush=True)
      del running[key]
