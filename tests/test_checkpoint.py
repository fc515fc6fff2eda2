"""Tests of `tokenlearner_jax.checkpoint`: save and restore of train states and
parameters (also of a workdir written before this module existed), the
checks of a checkpoint's integrity (checksums, shapes, finite values) and the
fallback to the newest good step."""

import errno
import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from tests import testing
from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import layer_layout
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
        self.workdir, testing.manager_config(2))
    self.assertEqual(manager.latest_step(), 4)
    zeros = jax.tree_util.tree_map(np.zeros_like, old_params())
    target = old_state(zeros).replace(step=jnp.asarray(0, jnp.int32))
    with self.assertLogs(level='INFO') as logs:  # Without checksums: a note.
      restored = checkpoint.restore_state(manager, target,
                                          single_device(target))
    self.assertTrue(any('has no checksums.json (written before checksums); '
                        'restoring it unverified' in line
                        for line in logs.output))
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
    per_layer = layer_layout.per_layer(params)['Transformer']
    np.testing.assert_array_equal(
        per_layer['encoderblock_1']['LayerNorm_0']['scale'], [2.0, 3.0])

  def test_its_variables_are_its_parameters(self):
    # Written before model states: no `model_state`, and none is asked for.
    variables = checkpoint.restore_variables(self.workdir)
    self.assertEqual(sorted(variables), ['params'])
    assert_trees_equal(variables['params'], old_params())
    target = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        old_params(), single_device(old_params()))
    variables = checkpoint.restore_variables(self.workdir, 4,
                                             {'params': target})
    self.assertIsInstance(variables['params']['embedding']['bias'], jax.Array)
    assert_trees_equal(variables, {'params': old_params()})


class SaveRestoreTest(absltest.TestCase):

  def test_round_trip_and_the_step_chosen(self):
    workdir = self.create_tempdir().full_path
    manager = checkpoint.make_manager(
        workdir, testing.manager_config(1))
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
    with self.assertRaisesRegex(errors.MissingFileError, r'no checkpoint at '
                                r'step 3 .* has steps \[1, 2\]'):
      checkpoint.restore_state(manager, state, single_device(state), step=3)
    manager.close()
    with self.assertRaisesRegex(errors.MissingFileError,
                                'no checkpoint at step 3'):
      checkpoint.restore_params(workdir, step=3)
    self.assertEqual(checkpoint.latest_step(workdir), 2)

  def test_a_write_refused_for_space_names_the_step_and_what_is_kept(self):
    workdir = self.create_tempdir().full_path
    manager = checkpoint.make_manager(workdir, testing.manager_config(1))
    state = old_state()
    checkpoint.save(manager, 1, state)
    manager.wait_until_finished()
    # What orbax re-raises from its write threads on a full disk.
    full = ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "x/_sharding": Failed '
        "to write 49876 bytes to file 15: No space left on device "
        "[os_error_code='28']")
    checkpoint.save(manager, 2, state)
    with mock.patch.object(ocp.CheckpointManager, 'wait_until_finished',
                           side_effect=full):
      with self.assertRaises(checkpoint.StorageFullError) as raised:
        manager.wait_until_finished()
    self.assertEqual(
        str(raised.exception),
        f'no space left on device while writing the checkpoint of step 2 in '
        f'{workdir}/checkpoints (the last committed checkpoint, step 1, is '
        'kept and the same command resumes from it): free space there, or '
        'move --workdir to a disk with room, and run the same command again.')
    self.assertTrue(raised.exception.exit_at_once)
    manager.close()
    # An OSError's errno anywhere in the chain; other errors pass as they are.
    try:
      try:
        raise OSError(errno.EDQUOT, 'Disk quota exceeded')
      except OSError as e:
        raise RuntimeError('commit failed') from e
    except RuntimeError as chained:
      self.assertEqual(checkpoint.storage_fault(chained)[0],
                       'disk quota exceeded')
    self.assertIsNone(checkpoint.storage_fault(ValueError('shape mismatch')))

  def test_workdirs_without_checkpoints_are_named(self):
    workdir = self.create_tempdir()
    self.assertIsNone(checkpoint.latest_step(workdir.full_path))
    with self.assertRaisesRegex(FileNotFoundError, 'checkpoints does not '
                                'exist'):
      checkpoint.restore_params(workdir.full_path)
    workdir.mkdir('checkpoints')
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint in'):
      checkpoint.restore_params(workdir.full_path)


def saved_keys(workdir: str, step: int):
  """The top-level keys of the train state saved at `step`."""
  with ocp.CheckpointManager(
      checkpoint.checkpoint_dir(workdir),
      item_handlers=ocp.PyTreeCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True,
                                           create=False)) as manager:
    return sorted(manager.item_metadata(step))


class ModelStateTest(absltest.TestCase):
  """A train state with a model state (`TinyBatchNormNet`'s batch_stats)."""

  def setUp(self):
    super().setUp()
    self.config = testing.batchnorm_config(checkpoint_steps=1)
    self.fresh = testing.batchnorm_state(self.config, jax.devices()[:1])
    rng = np.random.default_rng(0)
    stats = jax.tree_util.tree_map(
        lambda x: rng.uniform(0.5, 2.0, x.shape).astype(np.float32),
        self.fresh.state.model_state)
    self.state = self.fresh.state.replace(
        step=jnp.asarray(3, jnp.int32),
        model_state=jax.device_put(
            stats, self.fresh.program.shardings.model_state))
    self.workdir = self.create_tempdir().full_path

  def save(self, state, step: int = 3) -> None:
    manager = checkpoint.make_manager(self.workdir, self.config)
    checkpoint.save(manager, step, state, force=True)
    manager.close()

  def test_the_model_state_round_trips(self):
    self.save(self.state)
    self.assertEqual(saved_keys(self.workdir, 3),
                     ['model_state', 'opt_state', 'params', 'rng', 'step'])
    manager = checkpoint.make_manager(self.workdir, self.config)
    restored = checkpoint.restore_state(manager, self.fresh.state,
                                        self.fresh.program.shardings)
    manager.close()
    assert_trees_equal(restored, self.state)
    variables = checkpoint.restore_variables(self.workdir)
    self.assertEqual(sorted(variables), ['batch_stats', 'params'])
    self.assertIsInstance(variables['batch_stats']['BatchNorm_0']['mean'],
                          np.ndarray)
    expected = train_steps.model_variables(self.state.params,
                                           self.state.model_state)
    assert_trees_equal(variables, expected)
    target, shardings = train_steps.abstract_variables(
        self.config, self.fresh.program.model, testing.BATCHNORM_INPUT_SHAPE,
        self.fresh.program.mesh)
    on_device = checkpoint.restore_variables(self.workdir, 3, target)
    assert_trees_equal(on_device, expected)
    self.assertEqual(on_device['batch_stats']['BatchNorm_0']['var'].sharding,
                     shardings['batch_stats']['BatchNorm_0']['var'])
    # The parameters alone, as before.
    assert_trees_equal(checkpoint.restore_params(self.workdir),
                       self.state.params)

  def test_an_empty_model_state_is_not_saved_and_is_named_when_lacking(self):
    self.save(self.state.replace(model_state={}))
    self.assertEqual(saved_keys(self.workdir, 3),
                     ['opt_state', 'params', 'rng', 'step'])
    self.assertEqual(sorted(checkpoint.restore_variables(self.workdir)),
                     ['params'])
    manager = checkpoint.make_manager(self.workdir, self.config)
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        r'^The checkpoint at step 3 in \S+ does not fit this run: it lacks '
        r'model_state/batch_stats/BatchNorm_0/mean '):
      checkpoint.restore_state(manager, self.fresh.state,
                               self.fresh.program.shardings)
    manager.close()


def garble(path: str, count: int = 64) -> None:
  """Inverts `count` bytes in the middle of `path`, in place."""
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    data = f.read(count)
    f.seek(-len(data), os.SEEK_CUR)
    f.write(bytes(255 - b for b in data))


def largest_data_files(step_dir: str, count: int = 3):
  """The `count` largest array data files of a checkpoint step."""
  d = os.path.join(step_dir, 'default', 'ocdbt.process_0', 'd')
  paths = [os.path.join(d, name) for name in os.listdir(d)]
  return sorted(paths, key=os.path.getsize, reverse=True)[:count]


class IntegrityTest(absltest.TestCase):
  """Checksums, shapes and finite values checked on restore; an unreadable
  step is named in one line and the newest good step restored instead."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = testing.demo_config()
    cls.fresh = testing.fresh_state(cls.config, (8, 32, 32, 3), 40)
    # Its own directory: pytest-xdist workers may each set up this class.
    cls.template = os.path.join(tempfile.mkdtemp(prefix='integrity_'), 'run')
    manager = checkpoint.make_manager(cls.template, cls.config)
    for step in (2, 4):
      checkpoint.save(manager, step, cls.state(step), force=True)
    manager.close()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(os.path.dirname(cls.template), ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def state(cls, step: int):
    """The fresh state with `step` and parameters shifted by `step`."""
    state = cls.fresh.state
    return state.replace(step=jnp.asarray(step, jnp.int32),
                         params=jax.tree_util.tree_map(lambda x: x + step,
                                                       state.params))

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(self.template, self.workdir)
    self.steps_dir = os.path.join(self.workdir, 'checkpoints')

  def step_dir(self, step: int) -> str:
    return os.path.join(self.steps_dir, str(step))

  def restore(self, **overrides):
    """`restore_state` with a fresh manager of the config (+ `overrides`)."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.update(overrides)
    manager = checkpoint.make_manager(self.workdir, config)
    try:
      return checkpoint.restore_state(manager, self.fresh.state,
                                      self.fresh.program.shardings)
    finally:
      manager.close()

  def assert_falls_back(self, cause: str, step: int = 4, good: int = 2,
                        latest: int = 2) -> None:
    """Restores step `good` with one warning naming `step` and `cause`;
    `step` is moved to bad_checkpoints/ and can be saved anew. `latest`:
    what `latest_step` tells before (the files alone)."""
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(checkpoint.latest_step(self.workdir), latest)
      restored = self.restore()
    skipped = [line for line in logs.output if 'Skipping' in line]
    self.assertLen(skipped, 1)
    self.assertRegex(skipped[0], f'Skipping the checkpoint at step {step} in '
                     f'{self.steps_dir}: {cause}')
    self.assertNotIn('\n', skipped[0])
    self.assertEqual(int(restored.step), good)
    assert_trees_equal(restored.params, self.state(good).params)
    self.assertTrue(os.path.isdir(os.path.join(
        self.workdir, checkpoint.SET_ASIDE_DIR, str(step))))
    manager = checkpoint.make_manager(self.workdir, self.config)
    self.assertEqual(manager.all_steps(), [2, 4][:[2, 4].index(good) + 1])
    checkpoint.save(manager, step, restored.replace(
        step=jnp.asarray(step, jnp.int32)), force=True)  # Its place is free.
    manager.close()
    self.assertEqual(checkpoint.latest_step(self.workdir), step)

  def test_each_file_of_a_step_has_a_checksum(self):
    with open(os.path.join(self.step_dir(4), 'checksums.json')) as f:
      files = json.load(f)['files']
    self.assertIn('default/_METADATA', files)
    self.assertNotIn('_CHECKPOINT_METADATA', files)  # orbax rewrites it.
    for name, expected in files.items():
      path = os.path.join(self.step_dir(4), name)
      self.assertEqual(os.path.getsize(path), expected['size'], name)
    restored = self.restore()
    self.assertEqual(int(restored.step), 4)
    assert_trees_equal(restored, self.state(4))

  def test_a_garbled_step_falls_back(self):
    for path in largest_data_files(self.step_dir(4)):
      garble(path)
    self.assert_falls_back(r'default/ocdbt.process_0/d/\w+ does not match '
                           r'its SHA-256 in checksums.json \(corrupt\)\.$')

  def test_a_truncated_file_falls_back(self):
    path = largest_data_files(self.step_dir(4), 1)[0]
    size = os.path.getsize(path)
    os.truncate(path, 1000)
    self.assert_falls_back(rf'\S+/d/\w+ is 1000 bytes, {size} were written '
                           r'\(truncated\)')

  def test_an_empty_metadata_file_falls_back(self):
    open(os.path.join(self.step_dir(4), 'default', '_METADATA'), 'w').close()
    self.assert_falls_back(r'default/_METADATA is 0 bytes, \d+ were written')

  def test_a_stray_empty_step_directory_falls_back(self):
    os.mkdir(self.step_dir(8))
    self.assert_falls_back(r'an empty directory\.$', step=8, good=4,
                           latest=4)
    self.assertTrue(os.path.isdir(self.step_dir(4)))

  def test_non_finite_values_fall_back(self):
    manager = checkpoint.make_manager(self.workdir, self.config)
    state = self.state(6)
    state = state.replace(opt_state=jax.tree_util.tree_map(
        lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x,
        state.opt_state))
    checkpoint.save(manager, 6, state, force=True)
    manager.close()
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(int(self.restore().step), 4)
    self.assertRegex('\n'.join(logs.output), r'step 6 in .*: opt_state/\S+ '
                     r'holds non-finite values\.')

  def test_steps_written_before_checksums_restore_and_fall_back(self):
    for step in (2, 4):
      os.remove(os.path.join(self.step_dir(step), 'checksums.json'))
    with self.assertLogs(level='INFO') as logs:
      self.assertEqual(int(self.restore().step), 4)
    self.assertTrue(any('restoring it unverified' in line
                        for line in logs.output))
    # Its files cannot tell (`latest_step`); restoring it does.
    os.truncate(largest_data_files(self.step_dir(4), 1)[0], 1000)
    self.assert_falls_back(r'restoring it failed: \w+: ', latest=4)

  def test_an_empty_metadata_file_without_checksums_falls_back(self):
    os.remove(os.path.join(self.step_dir(4), 'checksums.json'))
    open(os.path.join(self.step_dir(4), 'default', '_METADATA'), 'w').close()
    self.assert_falls_back(r'default/_METADATA is empty\.$')

  def test_fallback_off_stops_in_one_line(self):
    garble(largest_data_files(self.step_dir(4), 1)[0])
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        r'^The checkpoint at step 4 in \S+: \S+ does not match its SHA-256 .*'
        r'; stopped as config.checkpoint_fallback=False \(True restores the '
        r'newest good step instead\)\.$'):
      self.restore(checkpoint_fallback=False)
    self.assertTrue(os.path.isdir(self.step_dir(4)))  # Nothing moved.

  def test_no_good_step_stops(self):
    for step in (2, 4):
      garble(largest_data_files(self.step_dir(step), 1)[0])
    with self.assertLogs(level='WARNING'):
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  r'No checkpoint in \S+ restores \(steps '
                                  r'\[4, 2\]'):
        checkpoint.latest_step(self.workdir)
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  'No checkpoint in'):
        self.restore()

  def test_another_hidden_size_names_the_parameter_and_stops(self):
    config = testing.demo_config()
    config.model.hidden_size = 32
    other = testing.fresh_state(config, (8, 32, 32, 3), 40)
    manager = checkpoint.make_manager(self.workdir, config)
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        r'^The checkpoint at step 4 in \S+ does not fit this run: '
        r'params/Transformer/\S+ is \(64,\) there, \(32,\) here \(a config '
        r'changed since it was written\?\)\.$'):
      checkpoint.restore_state(manager, other.state,
                               other.program.shardings)
    manager.close()
    self.assertTrue(os.path.isdir(self.step_dir(4)))  # Not a fallback.
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        other.state.params)
    with self.assertRaisesRegex(checkpoint.CheckpointError, 'does not fit'):
      checkpoint.restore_params(self.workdir, target=target)

  def test_restore_params_falls_back_or_names_the_step_asked_for(self):
    garble(largest_data_files(self.step_dir(4), 1)[0])
    with self.assertLogs(level='WARNING'):
      params = checkpoint.restore_params(self.workdir)
    assert_trees_equal(params, jax.device_get(self.state(2).params))
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                r'^The checkpoint at step 4 in \S+: \S+ does '
                                r'not match its SHA-256 .*\(corrupt\)\.$'):
      checkpoint.restore_params(self.workdir, step=4)
    self.assertTrue(os.path.isdir(self.step_dir(4)))  # Read only.


if __name__ == '__main__':
  absltest.main()
