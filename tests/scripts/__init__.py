"""Tests of `scripts/`, which are files rather than a package."""

import os
import types

from tokenlearner_jax.configs import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def script_path(name: str) -> str:
  return os.path.join(REPO, 'scripts', f'{name}.py')


def load_script(name: str) -> types.ModuleType:
  """Imports `scripts/<name>.py` as a module."""
  return common.load_module(script_path(name))
