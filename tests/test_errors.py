"""`tokenlearner_jax.errors`: a command line's fault, and how `run` starts
and ends a command (the faults' lines of each entry point, on real
processes: tests/integration/test_entry_points.py)."""

import gc
import glob
import importlib
import os
import sys
from unittest import mock
import weakref

from absl import flags
from absl.testing import absltest
from ml_collections import config_flags

import tokenlearner_jax
from tokenlearner_jax import errors


class _Node:
  """An object in a reference cycle: only the cyclic collector frees it."""

  def __init__(self):
    self.me = self


def _collected(ref: weakref.ref) -> bool:
  gc.collect()
  return ref() is None


class ParseFlagsTest(absltest.TestCase):

  def test_a_config_file_that_is_not_there_is_one_line(self):
    # The others, on real processes: tests/integration/test_entry_points.py.
    values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=values)
    with self.assertRaises(SystemExit) as raised:
      errors.parse_flags(['command', '--config=/nowhere/nothere.py'], values)
    self.assertEqual(
        raised.exception.code, 'Error: --config=/nowhere/nothere.py: no such '
        'file (the config files are in configs/; README.md lists them).')


class RunTest(absltest.TestCase):

  def tearDown(self):
    gc.enable()
    super().tearDown()

  def test_python_dash_m_imports_the_package_without_the_collector(self):
    with mock.patch.object(sys, 'argv', ['-m']):
      importlib.reload(tokenlearner_jax)
    self.assertFalse(gc.isenabled())
    gc.enable()
    with mock.patch.object(sys, 'argv', ['python', 'x.py']):
      importlib.reload(tokenlearner_jax)  # Imported as a library.
    self.assertTrue(gc.isenabled())

  def test_every_command_of_the_package_starts_through_run(self):
    # `python -m` turns the collector off until `run` turns it back on.
    package = os.path.dirname(tokenlearner_jax.__file__)
    commands = []
    for path in glob.glob(os.path.join(package, '**', '*.py'),
                          recursive=True):
      with open(path) as f:
        _, main, block = f.read().partition("\nif __name__ == '__main__':\n")
      if main:
        commands.append(os.path.basename(path))
        self.assertIn('errors.run(', block, path)
    self.assertContainsSubset(['train.py', 'evaluate.py', 'export.py'],
                              commands)

  def test_a_command_collects_only_what_it_makes_while_it_runs(self):
    self.assertTrue(_collected(weakref.ref(_Node())))  # The test's premise.
    before = weakref.ref(_Node())  # As an import's objects, made first.
    during, made = [], []

    def main(argv):
      del argv
      during.append(_collected(weakref.ref(_Node())))
      made.append(weakref.ref(_Node()))

    with mock.patch.object(sys, 'argv', ['command']), \
        self.assertRaises(SystemExit):
      errors.run(main)
    self.assertEqual(during, [True])  # The collector is on in `main`.
    self.assertFalse(_collected(before))  # Frozen as `main` started,
    self.assertFalse(_collected(made[0]))  # and what it made, as it ended.


if __name__ == '__main__':
  absltest.main()
