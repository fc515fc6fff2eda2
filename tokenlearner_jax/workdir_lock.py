"""The workdir lock: `WORKDIR/train.lock`, which process 0 of a run holds
while it trains, so that a second trainer on the same workdir stops at once
instead of writing checkpoints over the first's (`WorkdirLock`).
"""

import datetime
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Optional, Tuple

from absl import logging
from etils import epath

from tokenlearner_jax import errors


def is_remote(path: str) -> bool:
  """A path on a remote file system ('scheme://...'), not made absolute."""
  return '://' in path


LOCK_FILE = 'train.lock'


class WorkdirLockedError(errors.KnownFault, RuntimeError):
  """Another trainer, alive, holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True


class WorkdirLock:
  """`WORKDIR/train.lock`: the trainer that runs on a workdir.

  The file holds JSON: the holder's `host`, `pid` and `started` (UTC time).
  Its modification time is the holder's heartbeat: `beat` refreshes it (the
  trainer does at each train summary), and so does a background thread every
  `min(stale_seconds / 4, 60)` s, so that a long compile, evaluation or
  summary interval does not make a live holder look stale. A lock is stale,
  and taken over with a warning, when its process is dead on this host or
  its heartbeat is older than `stale_seconds`.

  Local workdirs are locked atomically (hard link or `O_EXCL` create); on a
  remote file system (a 'scheme://' path) the check and the write are two
  operations, so two trainers started in the same instant may both pass.

  A sweep holds `WORKDIR/sweep.lock` the same way (`lock_file`, `owner`).

  Attributes:
    path: The lock file.
    stale_seconds: A heartbeat older than this marks a stale lock.
    holder: What this process writes in the lock file.
    owner: Who holds such a lock, in messages ('trainer', 'sweep').
  """

  def __init__(self, workdir: str, stale_seconds: float,
               lock_file: str = LOCK_FILE, owner: str = 'trainer'):
    self.remote = is_remote(workdir)
    workdir = workdir if self.remote else os.path.abspath(workdir)
    self.path: epath.Path = epath.Path(workdir) / lock_file
    self.owner = owner
    self.stale_seconds: float = float(stale_seconds)
    self.holder: Dict[str, Any] = {
        'host': socket.gethostname(), 'pid': os.getpid(),
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds')}
    self._text = json.dumps(self.holder)
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # ---------------------------------------------------------------- reading

  def read(self) -> Tuple[Optional[Dict[str, Any]], Optional[float]]:
    """The lock file's holder (None when unreadable) and its heartbeat's age
    in seconds; (None, None) when there is no lock file."""
    try:
      text = self.path.read_text()
      mtime = (self.path.stat().mtime if self.remote else
               os.path.getmtime(self.path))
      age = time.time() - mtime
    except FileNotFoundError:
      return None, None
    try:
      holder = json.loads(text)
    except ValueError:  # Being written, or not ours.
      holder = None
    return (holder if isinstance(holder, dict) else None), age

  def stale_reason(self, holder: Optional[Dict[str, Any]],
                   age: float) -> Optional[str]:
    """Why a lock of `holder` whose heartbeat is `age` s old is stale; None
    when it is held."""
    holder = holder or {}
    if (holder.get('host') == self.holder['host'] and
        isinstance(holder.get('pid'), int) and not _pid_alive(holder['pid'])):
      return f'its process (pid {holder["pid"]}) is dead'
    if age > self.stale_seconds:
      return (f'its heartbeat is {age:.0f} s old (> '
              f'workdir_lock_stale_seconds={self.stale_seconds:g})')
    return None

  def live_holder(self) -> Optional[str]:
    """The holder of a live lock on the workdir, described; None when
    there is no lock or it is stale."""
    holder, age = self.read()
    if age is None or self.stale_reason(holder, age) is not None:
      return None
    return self.describe(holder, age)

  def describe(self, holder: Optional[Dict[str, Any]], age: float) -> str:
    holder = holder or {}
    return (f'host {holder.get("host", "?")}, pid {holder.get("pid", "?")}, '
            f'started {holder.get("started", "?")}, last heartbeat '
            f'{age:.0f} s ago')

  # ---------------------------------------------------------------- writing

  def _create(self) -> bool:
    """Writes the lock file unless one exists; whether it wrote it."""
    if self.remote:
      if self.path.exists():
        return False
      self.path.write_text(self._text)
      return True
    temporary = f'{self.path}.{self.holder["pid"]}.tmp'
    with open(temporary, 'w') as f:
      f.write(self._text)
    try:
      os.link(temporary, self.path)  # Atomic; fails when the lock exists.
      return True
    except FileExistsError:
      return False
    except OSError:  # No hard links here: an exclusive create.
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(self._text)
      return True
    finally:
      os.unlink(temporary)

  def _replace(self) -> None:
    if self.remote:
      self.path.write_text(self._text)
      return
    temporary = f'{self.path}.{self.holder["pid"]}.tmp'
    with open(temporary, 'w') as f:
      f.write(self._text)
    os.replace(temporary, self.path)

  def _refused(self, holder, age) -> WorkdirLockedError:
    return WorkdirLockedError(
        f'{self.path.parent} is in use by another {self.owner} ('
        f'{self.describe(holder, age)}; lock file {self.path}): stop it or '
        'wait for it to end. A lock whose process is dead, or whose heartbeat '
        'is older than config.workdir_lock_stale_seconds '
        f'({self.stale_seconds:g} s), is taken over.')

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock (over a stale one, with a warning).

    Raises:
      WorkdirLockedError: naming the holder, when a live trainer holds it.
    """
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if not self._create():
      holder, age = self.read()
      if age is None:  # Released meanwhile.
        return self.acquire()
      reason = self.stale_reason(holder, age)
      if reason is None:
        raise self._refused(holder, age)
      logging.warning('Taking over the stale lock %s (%s): %s.', self.path,
                      self.describe(holder, age), reason)
      self._replace()
      holder, age = self.read()
      if holder != self.holder:  # Another trainer took it over first.
        raise self._refused(holder, age or 0.0)
    logging.info('Holding the workdir lock %s.', self.path)
    interval = max(min(self.stale_seconds / 4, 60.0), 0.01)
    self._thread = threading.Thread(target=self._beat_every, args=(interval,),
                                    name='workdir_lock_heartbeat', daemon=True)
    self._thread.start()
    return self

  def beat(self) -> None:
    """Refreshes the heartbeat (the lock file's modification time)."""
    try:
      if self.remote:
        self.path.write_text(self._text)
      else:
        os.utime(self.path)
    except OSError as e:  # A heartbeat is not worth stopping a run for.
      logging.warning('Could not refresh the workdir lock %s: %s', self.path,
                      e)

  def _beat_every(self, interval: float) -> None:
    while not self._stop.wait(interval):
      self.beat()

  def release(self) -> None:
    """Stops the heartbeat; removes the lock file if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      # Not yet started when a SIGTERM's exit releases the lock from another
      # thread while `acquire` is between making and starting it.
      if self._thread.ident is not None:
        self._thread.join()
      self._thread = None
    holder, _ = self.read()
    if holder == self.holder:
      self.path.unlink(missing_ok=True)

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()
