"""Each entry point, run as users run it, answers a fault it knows in one
`Error:` line (exit status 1, no traceback)."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest

from tests import testing
from tests.testing import ROOT


class EntryPointErrorTest(absltest.TestCase):

  def test_every_entry_point_answers_a_known_fault_in_one_line(self):
    # One process for each entry point: faults of its command line (a
    # config file's own error, an override of a key the config lacks) and
    # of its `main` (no checkpoint, no workdir). The faults' messages are
    # checked in-process beside them (tests/test_errors.py, ...).
    directory = self.create_tempdir().full_path
    missing = os.path.join(directory, 'mistyped', 'path')
    empty = self.create_tempdir().full_path  # A workdir with no checkpoint.
    cases = [  # (module, arguments, the error)
        ('summary', [f'--config={testing.typo_config_file(directory)}'],
         testing.TYPO),
        ('train', [f'--config={ROOT}/configs/demo_moving_digits.py',
                   '--config.batch_sizee=3', f'--workdir={empty}'],
         "--config.batch_sizee: no config key 'batch_sizee'; Did you mean "
         '"batch_size" instead of "batch_sizee"?'),
        ('fewshot', [f'--config={ROOT}/configs/demo_multi_digits.py',
                     f'--workdir={empty}'],
         f'--workdir: no checkpoint under {empty}/checkpoints.'),
    ]
    for module, verb in (('evaluate', 'evaluate'), ('visualize', 'visualise')):
      cases.append((module, [f'--config={ROOT}/configs/vivit_k400.py:runlocal',
                             f'--workdir={missing}'],
                    f'--workdir={missing} does not exist (no run to {verb} '
                    'there).'))
    # All at once: each is mostly its imports.
    processes = [
        subprocess.Popen(
            [sys.executable, '-m', f'tokenlearner_jax.{module}', *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=ROOT)
        for module, args, _ in cases]
    for (module, args, error), process in zip(cases, processes):
      _, stderr = process.communicate(timeout=300)
      self.assertEqual(process.returncode, 1, f'{module}: {stderr[-3000:]}')
      self.assertNotIn('Traceback', stderr, module)
      self.assertEqual(stderr.strip().splitlines()[-1], f'Error: {error}',
                       f'{module} {args}')
    self.assertFalse(os.path.exists(os.path.dirname(missing)))  # Not made.

  def test_a_fault_that_exits_at_once_is_the_last_line_while_threads_write(
      self):
    # As orbax's failed writes do: threads writing tracebacks through the
    # stream they hold and straight to file descriptor 2, one of them a
    # write still under way (longer than the pipe holds) when the fault
    # exits, with a reader that falls behind, as on a loaded machine.
    program = textwrap.dedent("""
        import array, fcntl, os, sys, termios, threading
        from tokenlearner_jax import errors
        stream = sys.stderr
        def write():
          while True:
            stream.write('RuntimeError: Event loop is closed\\n')
            stream.flush()
            os.write(2, b'mid-')
        def write_long():
          os.write(2, b''.join(b'Traceback line %d\\n' % i
                               for i in range(50_000)))
        threading.Thread(target=write_long, daemon=True).start()
        unread = array.array('i', [0])
        while unread[0] < fcntl.fcntl(2, fcntl.F_GETPIPE_SZ):
          fcntl.ioctl(2, termios.FIONREAD, unread, True)
        # The pipe is full: the long write waits in it for the reader.
        for _ in range(2):
          threading.Thread(target=write, daemon=True).start()
        class Refused(errors.KnownFault):
          exit_at_once = True
        def fail():
          raise Refused('a refused write: what to do.')
        print('failing', flush=True)
        errors.exit_on_known_fault(fail)
        """)
    process = subprocess.Popen([sys.executable, '-c', program], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    # stderr is read only once the fault is under way.
    self.assertEqual(process.stdout.readline(), 'failing\n')
    _, stderr = process.communicate(timeout=60)
    self.assertEqual(process.returncode, 1, stderr[-3000:])
    # The long write landed whole, and the line after it, the last.
    self.assertTrue('\nTraceback line 49999\n' in stderr, stderr[-300:])
    self.assertEqual(stderr.splitlines()[-1],
                     'Error: a refused write: what to do.', stderr[-300:])


if __name__ == '__main__':
  absltest.main()
