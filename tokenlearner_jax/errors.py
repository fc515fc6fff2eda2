"""Faults a user causes or meets, reported in one line without a traceback.

Each entry point runs through `run` (absl's `app.run`, with the faults of
its command line, a `--config` file that is not there or raises, an override
of a key the config lacks, answered in one line) and its `main` through
`exit_on_known_fault`, which turns a `KnownFault` into `Error: <message>` and
exit status 1. Each class also derives from the built-in error it refines
(`ValueError`, ...), so callers that catch those keep working.
"""

import array
import fcntl
import gc
import os
import stat
import sys
import termios
import time
from typing import Any, Callable, List, Sequence

from absl import app
from absl import logging
from absl import flags
from etils import epath


class KnownFault(Exception):
  """A fault with a one-line message that names its cause.

  Attributes:
    exit_at_once: Whether an entry point leaves without the interpreter's
      shutdown: a fault whose libraries' failed background tasks would each
      log a traceback as they are collected there (a refused checkpoint
      write), once the run's own clean-up (locks, writers) is done.
  """
  exit_at_once: bool = False


class ConfigError(KnownFault, ValueError):
  """A config key or value the trainer does not take (named, with the
  closest known key where one is close)."""


class NonFiniteError(KnownFault, FloatingPointError):
  """A non-finite training value; names the step and the last good
  checkpoint."""


class WorkdirNotFoundError(KnownFault, FileNotFoundError):
  """`--workdir` is not a directory (evaluate, visualize)."""


class UsageError(KnownFault, ValueError):
  """A script's flag that names nothing it knows (a study row, a grid)."""


class MissingFileError(KnownFault, FileNotFoundError):
  """A file or directory the config or a flag names is not there (a
  checkpoint, TFRecord shards); the message says what to do."""


def require_workdir(workdir: str, verb: str) -> None:
  """Raises `WorkdirNotFoundError` naming `workdir` unless it is a directory
  (local or remote); nothing is created. `verb`: what would be done there."""
  if not epath.Path(workdir).is_dir():
    raise WorkdirNotFoundError(f'--workdir={workdir} does not exist (no run '
                               f'to {verb} there).')


def _wait_for_writes_under_way(fd: int, settle: float = 0.25,
                               timeout: float = 5.0) -> None:
  """Returns once the writes into `fd` that other threads started before it
  was redirected have landed: for a pipe, once it has stayed empty for
  `settle` seconds (a write blocked on a full pipe lands as its reader
  drains it), at most `timeout` seconds; else after `settle` seconds."""
  if not stat.S_ISFIFO(os.fstat(fd).st_mode):
    time.sleep(settle)
    return
  unread = array.array('i', [0])
  start = last_unread = time.monotonic()
  while time.monotonic() - start < timeout:
    fcntl.ioctl(fd, termios.FIONREAD, unread, True)
    if unread[0]:
      last_unread = time.monotonic()
    elif time.monotonic() - last_unread >= settle:
      return
    time.sleep(0.005)


def exit_on_known_fault(fn: Callable[..., Any], *args: Any) -> Any:
  """`fn(*args)`; a `KnownFault` exits with its message in one line."""
  try:
    return fn(*args)
  except KnownFault as e:
    if e.exit_at_once:
      # The libraries' threads may still be writing their failures, even
      # mid-line, through streams they hold: file descriptor 2 itself goes
      # to nothing from here, the line goes to a copy of it that only this
      # thread holds, after the writes already under way, on a line of its
      # own, the last.
      logging.flush()
      sys.stderr.flush()
      stderr = os.dup(2)
      os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
      _wait_for_writes_under_way(stderr)
      os.write(stderr, f'\nError: {e}\n'.encode())
      os._exit(1)  # pylint: disable=protected-access
    sys.exit(f'Error: {e}')


def _one_line(error: BaseException) -> str:
  """`error`'s message in one line: a missing key's name and hint, or the
  last line of a message that wraps another error's traceback (as
  config_flags does with the config file's own error)."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]  # AttributeError(KeyError(...)), say.
  if isinstance(error, (AttributeError, KeyError)) and error.args:
    lines = [l.strip() for l in str(error.args[0]).splitlines() if l.strip()]
    return f'no config key {"; ".join(lines)}'
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  line = lines[-1] if lines else type(error).__name__
  name, _, rest = line.partition(': ')
  return rest if rest and name.endswith(('Error', 'Exception')) else line


def parse_flags(argv: Sequence[str],
                flag_values: flags.FlagValues = flags.FLAGS) -> List[str]:
  """absl's flag parsing, with a command-line fault in one `Error:` line
  (exit 1): a `--config` file that does not exist or raises (an unknown
  `row=`, say), an override of a key the config lacks (`--config.x=...`), an
  unknown flag or a bad value."""
  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':', 1)[0]
      if not os.path.isfile(path):
        sys.exit(f'Error: --config={path}: no such file (the config files '
                 'are in configs/; README.md lists them).')
  try:
    rest = flag_values(argv)
    if 'config' in flag_values:
      _ = flag_values['config'].value  # Raises the file's own error here.
  except flags.Error as e:
    sys.exit(f'Error: {_one_line(e)}')
  except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    message = _one_line(e)
    overrides = [a.split('=', 1)[0] for a in argv[1:]
                 if a.startswith('--config.')]
    named = [o for o in overrides if f"key '{o.rsplit('.', 1)[-1]}'" in
             message]
    sys.exit(f'Error: {named[0] if named else "--config"}: {message}')
  return rest


def run(main: Callable[[List[str]], Any]) -> None:
  """`app.run(main)` with `parse_flags`, the cyclic garbage collector kept
  off the objects that outlive a command's start and its end.

  The objects made before `main` (the imports: TensorFlow's and jax's
  modules) are frozen, so that no collection walks them again, and the
  collector is turned back on (`python -m` commands import without it:
  `tokenlearner_jax/__init__.py`). The objects the command made are left to
  the process's end uncollected: the interpreter's last collection over all
  of them costs about a second of CPU. Everything else of a normal exit
  still runs (thread joins, atexit handlers, the command's own clean-up).
  """
  gc.freeze()
  gc.enable()
  try:
    app.run(main, flags_parser=parse_flags)
  finally:
    gc.freeze()
