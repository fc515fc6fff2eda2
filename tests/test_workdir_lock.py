"""Tests of `tokenlearner_jax.workdir_lock`: `WORKDIR/train.lock` held,
refused, stale and taken over, and released."""

import json
import os
import socket
import subprocess
import threading
import time

from absl.testing import absltest

from tokenlearner_jax import workdir_lock


def dead_pid() -> int:
  """The pid of a process of this host that has exited."""
  process = subprocess.Popen(['true'])
  process.wait()
  return process.pid


class WorkdirLockTest(absltest.TestCase):
  """`WORKDIR/train.lock`: held, refused, stale and taken over, released."""

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path
    self.path = os.path.join(self.workdir, workdir_lock.LOCK_FILE)

  def write_lock(self, age: float = 0.0, **holder) -> None:
    with open(self.path, 'w') as f:
      json.dump(dict(started='2026-11-01T00:00:00+00:00', **holder), f)
    mtime = time.time() - age
    os.utime(self.path, (mtime, mtime))

  def test_held_while_inside_and_removed_after(self):
    with workdir_lock.WorkdirLock(self.workdir, 600) as lock:
      with open(self.path) as f:
        holder = json.load(f)
      self.assertEqual(holder, lock.holder)
      self.assertEqual((holder['host'], holder['pid']),
                       (socket.gethostname(), os.getpid()))
      self.assertSameElements(holder, ['host', 'pid', 'started'])
    self.assertFalse(os.path.exists(self.path))
    self.assertEqual(os.listdir(self.workdir), [])  # No temporary left.

  def test_released_before_its_heartbeat_starts(self):
    # A SIGTERM's exit may release the lock from another thread while
    # `acquire` is between making its heartbeat thread and starting it.
    lock = workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    # The state in that window: a heartbeat thread made, not started.
    lock._thread = threading.Thread(target=lambda: None)  # pylint: disable=protected-access
    lock.release()
    self.assertFalse(os.path.exists(self.path))

  def test_a_live_holder_refuses_naming_its_host_and_pid(self):
    # A live process elsewhere, its heartbeat fresh.
    self.write_lock(host='elsewhere', pid=4242)
    with self.assertRaisesRegex(
        workdir_lock.WorkdirLockedError,
        r'in use by another trainer \(host elsewhere, pid 4242, started '
        r'2026-11-01T00:00:00\+00:00, last heartbeat 0 s ago'):
      workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    # A live process on this host (the parent of this one).
    self.write_lock(host=socket.gethostname(), pid=os.getppid())
    with self.assertRaisesRegex(workdir_lock.WorkdirLockedError,
                                f'pid {os.getppid()},'):
      workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    # An unreadable lock file with a fresh heartbeat: someone is writing it.
    with open(self.path, 'w') as f:
      f.write('{"host": ')
    with self.assertRaisesRegex(workdir_lock.WorkdirLockedError, 'host \\?, '):
      workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    self.assertTrue(os.path.exists(self.path))  # Still the holder's.

  def test_a_dead_process_on_this_host_is_taken_over_with_a_warning(self):
    pid = dead_pid()
    self.write_lock(host=socket.gethostname(), pid=pid)
    with self.assertLogs(level='WARNING') as logs:
      lock = workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    try:
      self.assertIn(f'its process (pid {pid}) is dead', logs.output[0])
      with open(self.path) as f:
        self.assertEqual(json.load(f), lock.holder)
    finally:
      lock.release()
    self.assertFalse(os.path.exists(self.path))

  def test_an_old_heartbeat_is_taken_over(self):
    self.write_lock(age=61, host='elsewhere', pid=4242)
    with self.assertLogs(level='WARNING') as logs:
      with workdir_lock.WorkdirLock(self.workdir, 60) as lock:
        with open(self.path) as f:
          self.assertEqual(json.load(f), lock.holder)
    self.assertIn('its heartbeat is 61 s old', logs.output[0])
    self.assertIn('pid 4242', logs.output[0])

  def test_the_heartbeat_is_refreshed_while_held(self):
    with workdir_lock.WorkdirLock(self.workdir, 0.4) as lock:
      os.utime(self.path, (0, 0))
      lock.beat()
      self.assertLess(time.time() - os.stat(self.path).st_mtime, 5)
      os.utime(self.path, (0, 0))  # The background heartbeat (every 0.1 s).
      time.sleep(0.5)
      self.assertLess(time.time() - os.stat(self.path).st_mtime, 5)
      time.sleep(0.5)  # Longer than `stale_seconds`: still held.
      with self.assertRaisesRegex(workdir_lock.WorkdirLockedError,
                                  f'pid {os.getpid()},'):
        workdir_lock.WorkdirLock(self.workdir, 0.4).acquire()

  def test_release_leaves_a_lock_that_is_not_its_own(self):
    lock = workdir_lock.WorkdirLock(self.workdir, 600).acquire()
    self.write_lock(host='elsewhere', pid=4242)  # Taken over meanwhile.
    lock.release()
    with open(self.path) as f:
      self.assertEqual(json.load(f)['pid'], 4242)


if __name__ == '__main__':
  absltest.main()
