"""Tests of `scripts/`, which are files rather than a package."""

import importlib.util
import os
import types

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def script_path(name: str) -> str:
  return os.path.join(REPO, 'scripts', f'{name}.py')


def load_script(name: str) -> types.ModuleType:
  """Imports `scripts/<name>.py` as a module."""
  spec = importlib.util.spec_from_file_location(name, script_path(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
