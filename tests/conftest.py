"""Test-wide settings: compile fast (the tests compile many tiny models), let
absltest helpers (`create_tempdir`) run under pytest, run `slow` tests (more
cases of what CI already covers in a small form) only with
`TOKENLEARNER_SLOW_TESTS=1`, and start the `processes` tests (minutes each)
first, so that pytest-xdist's workers do not end with one of them alone."""

import os

from absl import flags

# With libtpu installed (the `tpu` extra) every process that starts jax loads
# it; without this, one process holding its lockfile fails test_aot elsewhere.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

jax.config.update('jax_disable_most_optimizations', True)
flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: more cases of a tested behaviour; run with '
      'TOKENLEARNER_SLOW_TESTS=1.')
  config.addinivalue_line(
      'markers', 'processes: starts several training processes (a minute or '
      'more on 2 cores); collected first.')


def pytest_collection_modifyitems(config, items):
  del config
  # A stable sort: the same order in every xdist worker, as xdist requires.
  items.sort(key=lambda item: 'processes' not in item.keywords)
  if os.environ.get('TOKENLEARNER_SLOW_TESTS') == '1':
    return
  skip = pytest.mark.skip(reason='slow: set TOKENLEARNER_SLOW_TESTS=1')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
