"""Test-wide settings, made once before jax is imported so that every process
a test starts (trainers, 8-device interpreters, xdist workers) inherits them:

* `JAX_DISABLE_MOST_OPTIMIZATIONS=1`, XLA:CPU's quicker emitters and
  unsplit code generation: the tests compile many tiny programs, whose
  optimisation costs more than running them. `test_aot.py`, which measures
  compiled TPU programs, opts back in.
* One persistent compilation cache for the whole run, shared by the
  processes the tests start: a command the tests run twice, and the
  processes of one job, compile once. A size limit makes jax lock it
  (`filelock`), so that no process reads an entry another is still writing.
  (The pytest processes themselves do not use it: they compile thousands of
  small programs once each.)
* `JAX_PLATFORMS=cpu`: no search for accelerators in each process (libtpu,
  installed for `aot`, is still found by `jax.experimental.topologies`).
* Quiet TensorFlow C++ logs.
* In the pytest processes, the cyclic garbage collector off while they
  import and collect, then those objects frozen and the collector on at a
  tenth of its rate (the commands the tests start do the same by
  themselves: `errors.run`).
* `TOKENLEARNER_TEST_DIR`: where the compilation cache and the demo datasets
  (built once, by whichever process needs them first) go; new for each run,
  and removed after it, unless set (set it to keep both between runs).
* `TOKENLEARNER_TEST_RUN_DIR`: this run's own scratch directory (the trained
  runs several tests read, `testing.shared_run`), always new.

Markers: `integration` (every test under tests/integration/: they start
processes; run them with one pytest worker), `e2e` (in-process tests of a
whole program: a config trained or evaluated end to end, a script's whole
pass, a TPU compile; CI runs them, the contributors' inner loop
`-m 'not integration and not e2e'` leaves them out), `slow` (more cases of
what CI covers in a small form; run with `TOKENLEARNER_SLOW_TESTS=1`).
"""

import gc
import os
import shutil
import tempfile

# Imports and collection (TensorFlow's, jax's, every test module's objects)
# without the cyclic collector, which would walk them again and again;
# `pytest_collection_finish` freezes them and turns it back on.
gc.disable()

# Made by the first process (pytest's, or xdist's controller); its workers
# and every process a test starts inherit the variables.
_MADE = []
if not os.environ.get('TOKENLEARNER_TEST_DIR'):
  os.environ['TOKENLEARNER_TEST_DIR'] = tempfile.mkdtemp(
      prefix='tokenlearner_jax_tests_')
  _MADE.append(os.environ['TOKENLEARNER_TEST_DIR'])
if not os.environ.get('TOKENLEARNER_TEST_RUN_DIR'):
  os.environ['TOKENLEARNER_TEST_RUN_DIR'] = tempfile.mkdtemp(
      prefix='run_', dir=os.environ['TOKENLEARNER_TEST_DIR'])
  _MADE.append(os.environ['TOKENLEARNER_TEST_RUN_DIR'])
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
# XLA:CPU's older elemental emitters compile a small program in about half
# the time of its fusion emitters (the same arithmetic); and its LLVM module
# compiled as one part, not split up to 32 ways for threads that two cores
# shared by three test processes cannot run at once (6-15% less CPU on
# compile-bound test files).
for _flag in ('--xla_cpu_use_fusion_emitters=false',
              '--xla_cpu_parallel_codegen_split_count=1'):
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = ' '.join(
        filter(None, [os.environ.get('XLA_FLAGS'), _flag]))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.environ['TOKENLEARNER_TEST_DIR'], 'compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(16 * 2**30))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# With libtpu installed (the `tpu` extra) every process that starts jax loads
# it; without this, one process holding its lockfile fails test_aot elsewhere.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.FLAGS.mark_as_parsed()
# The test processes themselves compile thousands of small programs, each
# once: caching those costs more than it saves.
jax.config.update('jax_enable_compilation_cache', False)

INTEGRATION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'integration')


def pytest_configure(config):
  if getattr(config.option, 'numprocesses', None) and not hasattr(
      config, 'workerinput'):
    gc.enable()  # xdist's controller: it collects no tests.
  config.addinivalue_line(
      'markers', 'integration: starts processes (trainers, jobs, entry '
      'points); every test under tests/integration/. Run with one worker.')
  config.addinivalue_line(
      'markers', 'e2e: runs a whole program in-process (a config trained or '
      'evaluated end to end, a script\'s whole pass, a TPU compile); left '
      'out of the inner loop, run by CI.')
  config.addinivalue_line(
      'markers', 'slow: more cases of a tested behaviour; run with '
      'TOKENLEARNER_SLOW_TESTS=1.')


def pytest_collection_finish(session):
  """The objects made so far (TensorFlow's, jax's, every test module's) are
  frozen, so that no collection walks them again, and the collector, back
  on, runs a tenth as often: otherwise about 5% of a test process's CPU."""
  del session
  gc.freeze()
  gc.set_threshold(10_000, 10, 10)
  gc.enable()


def pytest_unconfigure(config):
  del config
  for directory in reversed(_MADE):
    shutil.rmtree(directory, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  del config
  slow = os.environ.get('TOKENLEARNER_SLOW_TESTS') == '1'
  skip = pytest.mark.skip(reason='slow: set TOKENLEARNER_SLOW_TESTS=1')
  for item in items:
    if str(item.path).startswith(INTEGRATION_DIR + os.sep):
      item.add_marker(pytest.mark.integration)
    if 'slow' in item.keywords and not slow:
      item.add_marker(skip)
