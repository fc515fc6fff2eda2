"""Test-wide settings: compile fast (the tests compile many tiny models), let
absltest helpers (`create_tempdir`) run under pytest, and run `slow` tests
(more cases of what CI already covers in a small form) only with
`TOKENLEARNER_SLOW_TESTS=1`."""

import os

from absl import flags
import jax
import pytest

jax.config.update('jax_disable_most_optimizations', True)
flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: more cases of a tested behaviour; run with '
      'TOKENLEARNER_SLOW_TESTS=1.')


def pytest_collection_modifyitems(config, items):
  del config
  if os.environ.get('TOKENLEARNER_SLOW_TESTS') == '1':
    return
  skip = pytest.mark.skip(reason='slow: set TOKENLEARNER_SLOW_TESTS=1')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
