"""`tokenlearner_jax.errors`: how an entry point ends (its faults' lines are
checked on real processes in tests/integration/test_entry_points.py)."""

import gc
import sys
from unittest import mock
import weakref

from absl.testing import absltest

from tokenlearner_jax import errors


class _Node:
  """An object in a reference cycle: only the cyclic collector frees it."""

  def __init__(self):
    self.me = self


class RunTest(absltest.TestCase):

  def test_what_a_command_made_is_left_uncollected_to_the_end(self):
    made = []

    def main(argv):
      del argv
      made.append(weakref.ref(_Node()))

    try:
      with mock.patch.object(sys, 'argv', ['command']), \
          self.assertRaises(SystemExit):
        errors.run(main)
      gc.collect()
      self.assertIsNotNone(made[0]())  # Frozen: the collector skips it.
    finally:
      gc.unfreeze()
    gc.collect()
    self.assertIsNone(made[0]())  # And a collection frees it otherwise.


if __name__ == '__main__':
  absltest.main()
