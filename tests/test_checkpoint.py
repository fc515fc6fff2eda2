"""Tests of `tokenlearner_jax.checkpoint`: save and restore of train states and
parameters (also of a workdir written before this module existed), and the
per-layer <-> scanned parameter layouts."""

import os
import shutil

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


if __name__ == '__main__':
  absltest.main()
