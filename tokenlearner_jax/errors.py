"""Faults a user causes or meets, reported in one line without a traceback.

Each entry point's `main` runs through `exit_on_known_fault`, which turns a
`KnownFault` into `Error: <message>` and exit status 1. Each class also
derives from the built-in error it refines (`ValueError`, ...), so callers
that catch those keep working.
"""

import sys
from typing import Any, Callable

from etils import epath


class KnownFault(Exception):
  """A fault with a one-line message that names its cause."""


class ConfigError(KnownFault, ValueError):
  """A config key or value the trainer does not take (named, with the
  closest known key where one is close)."""


class NonFiniteError(KnownFault, FloatingPointError):
  """A non-finite training value; names the step and the last good
  checkpoint."""


class WorkdirNotFoundError(KnownFault, FileNotFoundError):
  """`--workdir` is not a directory (evaluate, visualize)."""


def require_workdir(workdir: str, verb: str) -> None:
  """Raises `WorkdirNotFoundError` naming `workdir` unless it is a directory
  (local or remote); nothing is created. `verb`: what would be done there."""
  if not epath.Path(workdir).is_dir():
    raise WorkdirNotFoundError(f'--workdir={workdir} does not exist (no run '
                               f'to {verb} there).')


def exit_on_known_fault(fn: Callable[..., Any], *args: Any) -> Any:
  """`fn(*args)`; a `KnownFault` exits with its message in one line."""
  try:
    return fn(*args)
  except KnownFault as e:
    sys.exit(f'Error: {e}')
