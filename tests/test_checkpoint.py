"""Tests of `tokenlearner_jax.checkpoint`: save and restore of train states and
parameters (also of a workdir written before this module existed), the
per-layer <-> scanned parameter layouts, and the workdir lock."""

import json
import os
import shutil
import socket
import subprocess
import time

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tokenlearner_jax import checkpoint
from tokenlearner_jax import train_steps

# A workdir as the trainer wrote it before `tokenlearner_jax.checkpoint`
# (`train.checkpoint_manager` and `manager.save(step, args=ocp.args.
# StandardSave(flax.serialization.to_state_dict(state)))`, orbax 0.12.8): one
# checkpoint at step 4 of `old_state()`. It must keep restoring.
OLD_WORKDIR = os.path.join(os.path.dirname(__file__), 'testdata',
                           'workdir_2026_11')


def old_params():
  return {'embedding': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3),
                        'bias': np.array([1., 2., 3.], np.float32)},
          'Transformer': {'encoderblock_0_to_1': {'LayerNorm_0': {
              'scale': np.arange(4, dtype=np.float32).reshape(2, 2)}}}}


def old_state(params=None):
  params = jax.tree_util.tree_map(jnp.asarray, params or old_params())
  return train_steps.TrainState(
      step=jnp.asarray(4, jnp.int32), params=params,
      opt_state=optax.adam(1e-3).init(params), rng=jax.random.PRNGKey(3))


def single_device(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(lambda _: sharding, tree)


def assert_trees_equal(actual, expected):
  jax.tree_util.tree_map(np.testing.assert_array_equal, actual, expected)


class OldWorkdirTest(absltest.TestCase):
  """The on-disk layout of the trainer's checkpoints has not changed."""

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(OLD_WORKDIR, self.workdir)

  def test_the_train_state_restores(self):
    manager = checkpoint.make_manager(
        self.workdir, ml_collections.ConfigDict(dict(checkpoint_steps=2)))
    self.assertEqual(manager.latest_step(), 4)
    zeros = jax.tree_util.tree_map(np.zeros_like, old_params())
    target = old_state(zeros).replace(step=jnp.asarray(0, jnp.int32))
    restored = checkpoint.restore_state(manager, target, single_device(target))
    manager.close()
    assert_trees_equal(restored, old_state())

  def test_the_parameters_restore_alone_as_numpy_or_onto_shardings(self):
    self.assertEqual(checkpoint.latest_step(self.workdir), 4)
    params = checkpoint.restore_params(self.workdir)
    self.assertIsInstance(params['embedding']['kernel'], np.ndarray)
    assert_trees_equal(params, old_params())
    target = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        old_params(), single_device(old_params()))
    on_device = checkpoint.restore_params(self.workdir, 4, target)
    self.assertIsInstance(on_device['embedding']['kernel'], jax.Array)
    assert_trees_equal(on_device, old_params())
    per_layer = checkpoint.per_layer(params)['Transformer']
    np.testing.assert_array_equal(
        per_layer['encoderblock_1']['LayerNorm_0']['scale'], [2.0, 3.0])


class SaveRestoreTest(absltest.TestCase):

  def test_round_trip_and_the_step_chosen(self):
    workdir = self.create_tempdir().full_path
    manager = checkpoint.make_manager(
        workdir, ml_collections.ConfigDict(dict(checkpoint_steps=1)))
    state = old_state()
    self.assertIs(checkpoint.restore_state(manager, state,
                                           single_device(state)), state)
    for step in (1, 2):
      checkpoint.save(manager, step, state.replace(
          step=jnp.asarray(step, jnp.int32)))
    manager.wait_until_finished()
    restored = checkpoint.restore_state(manager, state, single_device(state),
                                        step=1)
    self.assertEqual(int(restored.step), 1)
    with self.assertRaisesRegex(ValueError, r'No checkpoint at step 3 .* have '
                                r'\[1, 2\]'):
      checkpoint.restore_state(manager, state, single_device(state), step=3)
    manager.close()
    with self.assertRaisesRegex(ValueError, 'No checkpoint at step 3'):
      checkpoint.restore_params(workdir, step=3)
    self.assertEqual(checkpoint.latest_step(workdir), 2)

  def test_workdirs_without_checkpoints_are_named(self):
    workdir = self.create_tempdir()
    self.assertIsNone(checkpoint.latest_step(workdir.full_path))
    with self.assertRaisesRegex(FileNotFoundError, 'checkpoints does not '
                                'exist'):
      checkpoint.restore_params(workdir.full_path)
    workdir.mkdir('checkpoints')
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint in'):
      checkpoint.restore_params(workdir.full_path)


class LayerLayoutTest(absltest.TestCase):

  SCANNED = {
      'Transformer/encoderblock_0_to_1/LayerNorm_0/scale': np.arange(4.0)
                                                           .reshape(2, 2),
      'Transformer/fuserlayer_2_to_3/encoderblock/MlpBlock_0/bias':
          np.arange(6.0).reshape(2, 3),
      'Transformer/fuserlayer_2_to_3/TokenFuser/Dense_0/bias': np.ones((2, 1)),
      'embedding/bias': np.zeros(3),
  }

  def test_unstack_names_every_layer_and_stack_inverts_it(self):
    per_layer = checkpoint.unstack_layers(self.SCANNED)
    self.assertEqual(sorted(per_layer), [
        'Transformer/TokenFuser_0/Dense_0/bias',
        'Transformer/TokenFuser_1/Dense_0/bias',
        'Transformer/encoderblock_0/LayerNorm_0/scale',
        'Transformer/encoderblock_1/LayerNorm_0/scale',
        'Transformer/encoderblock_2/MlpBlock_0/bias',
        'Transformer/encoderblock_3/MlpBlock_0/bias',
        'embedding/bias'])
    np.testing.assert_array_equal(
        per_layer['Transformer/encoderblock_3/MlpBlock_0/bias'], [3, 4, 5])
    stacked = checkpoint.stack_layers(per_layer, self.SCANNED)
    self.assertEqual(sorted(stacked), sorted(self.SCANNED))
    for name, value in self.SCANNED.items():
      np.testing.assert_array_equal(stacked[name], value)

  def test_a_missing_layer_axis_or_a_layer_in_both_layouts_is_named(self):
    with self.assertRaisesRegex(ValueError, r'encoderblock_0_to_1/x has shape '
                                r'\(3,\), not a leading layer axis of 2'):
      checkpoint.unstack_layers({'Transformer/encoderblock_0_to_1/x':
                                     np.zeros(3)})
    with self.assertRaisesRegex(ValueError, 'encoderblock_1/x is both scanned'):
      checkpoint.unstack_layers({
          'Transformer/encoderblock_0_to_1/x': np.zeros((2, 3)),
          'Transformer/encoderblock_1/x': np.zeros(3)})


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
    self.path = os.path.join(self.workdir, checkpoint.LOCK_FILE)

  def write_lock(self, age: float = 0.0, **holder) -> None:
    with open(self.path, 'w') as f:
      json.dump(dict(started='2026-11-01T00:00:00+00:00', **holder), f)
    mtime = time.time() - age
    os.utime(self.path, (mtime, mtime))

  def test_held_while_inside_and_removed_after(self):
    with checkpoint.WorkdirLock(self.workdir, 600) as lock:
      with open(self.path) as f:
        holder = json.load(f)
      self.assertEqual(holder, lock.holder)
      self.assertEqual((holder['host'], holder['pid']),
                       (socket.gethostname(), os.getpid()))
      self.assertSameElements(holder, ['host', 'pid', 'started'])
    self.assertFalse(os.path.exists(self.path))
    self.assertEqual(os.listdir(self.workdir), [])  # No temporary left.

  def test_a_live_holder_refuses_naming_its_host_and_pid(self):
    # A live process elsewhere, its heartbeat fresh.
    self.write_lock(host='elsewhere', pid=4242)
    with self.assertRaisesRegex(
        checkpoint.WorkdirLockedError,
        r'in use by another trainer \(host elsewhere, pid 4242, started '
        r'2026-11-01T00:00:00\+00:00, last heartbeat 0 s ago'):
      checkpoint.WorkdirLock(self.workdir, 600).acquire()
    # A live process on this host (the parent of this one).
    self.write_lock(host=socket.gethostname(), pid=os.getppid())
    with self.assertRaisesRegex(checkpoint.WorkdirLockedError,
                                f'pid {os.getppid()},'):
      checkpoint.WorkdirLock(self.workdir, 600).acquire()
    # An unreadable lock file with a fresh heartbeat: someone is writing it.
    with open(self.path, 'w') as f:
      f.write('{"host": ')
    with self.assertRaisesRegex(checkpoint.WorkdirLockedError, 'host \\?, '):
      checkpoint.WorkdirLock(self.workdir, 600).acquire()
    self.assertTrue(os.path.exists(self.path))  # Still the holder's.

  def test_a_dead_process_on_this_host_is_taken_over_with_a_warning(self):
    pid = dead_pid()
    self.write_lock(host=socket.gethostname(), pid=pid)
    with self.assertLogs(level='WARNING') as logs:
      lock = checkpoint.WorkdirLock(self.workdir, 600).acquire()
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
      with checkpoint.WorkdirLock(self.workdir, 60) as lock:
        with open(self.path) as f:
          self.assertEqual(json.load(f), lock.holder)
    self.assertIn('its heartbeat is 61 s old', logs.output[0])
    self.assertIn('pid 4242', logs.output[0])

  def test_the_heartbeat_is_refreshed_while_held(self):
    with checkpoint.WorkdirLock(self.workdir, 0.4) as lock:
      os.utime(self.path, (0, 0))
      lock.beat()
      self.assertLess(time.time() - os.stat(self.path).st_mtime, 5)
      os.utime(self.path, (0, 0))  # The background heartbeat (every 0.1 s).
      time.sleep(0.5)
      self.assertLess(time.time() - os.stat(self.path).st_mtime, 5)
      time.sleep(0.5)  # Longer than `stale_seconds`: still held.
      with self.assertRaisesRegex(checkpoint.WorkdirLockedError,
                                  f'pid {os.getpid()},'):
        checkpoint.WorkdirLock(self.workdir, 0.4).acquire()

  def test_release_leaves_a_lock_that_is_not_its_own(self):
    lock = checkpoint.WorkdirLock(self.workdir, 600).acquire()
    self.write_lock(host='elsewhere', pid=4242)  # Taken over meanwhile.
    lock.release()
    with open(self.path) as f:
      self.assertEqual(json.load(f)['pid'], 4242)


if __name__ == '__main__':
  absltest.main()
