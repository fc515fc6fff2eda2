"""Train steps on a mesh of 8 CPU devices take the steps of one device:
gradient clipping per shard and globally, BatchNorm statistics under jit and
per shard, and the X(2+1)D network with every parameter sharded as the rules
say.

One interpreter with 8 host devices (`eight_device_side`, started once for
the module) computes every 8-device side; each test compares its part with
the same steps run here on one device (or in closed form)."""

import json
import subprocess
import sys
import tempfile
from typing import Any, Dict
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests import testing
from tests.testing import ROOT
from tests.testing import clipped
from tests.testing import example_data
from tests.testing import softmax_ce_grads
from tokenlearner_jax import checkpoint
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models import X2Plus1D

CLIP = (4, 64, 64, 3)  # X(2+1)D's res5 on a 2 x 2 grid.


def clipping_steps(params, x, y) -> Dict[str, Any]:
  """One SGD step (rate 1) of `testing.Linear` with clipping to 0.5 per shard
  and globally, on a mesh data=4 x fsdp=2: {'per_shard', 'global'}: the new
  parameters, loss and gradient norm."""
  results = {}
  for per_shard in (True, False):
    config = ml_collections.ConfigDict(dict(
        optimizer='sgd', max_grad_norm=0.5, grad_clip_per_shard=per_shard,
        lr_configs=dict(learning_rate_schedule='compound', factors='constant',
                        base_learning_rate=1.0),
        mesh=dict(data=4, fsdp=2, model=1), rng_seed=0, batch_size=16,
        logical_axis_rules=sharding.DEFAULT_RULES,
        model_name='token_learner_classification'))
    config = schema.complete(config)
    program = train_steps.build_program(config, sharding.make_mesh(config),
                                        (4,), 3, 1, model=testing.Linear())
    state = program.init_state()
    state = state.replace(
        params=jax.device_put(params, program.shardings.params))
    state, metrics = program.train_step(
        state, jax.device_put({'inputs': x, 'label': y},
                              program.batch_sharding))
    results['per_shard' if per_shard else 'global'] = dict(
        params=jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(),
                                      state.params),
        loss=float(metrics['loss']), grad_norm=float(metrics['grad_norm']))
  return results


def x2plus1d_steps(mesh_shape, devices, report=None):
  """Losses of two SGD steps of a tiny Conv2D + TokenLearner X(2+1)D (batch
  8); `report(state, config, model)` sees the fresh state."""
  config = testing.batchnorm_config(
      mesh_shape, batch_size=8,
      model_name='token_learner_multilabel_classification')
  model = X2Plus1D(testing.tiny_x2plus1d(parts=('conv2d', 'tokenlearner'),
                                         dropout_rate=0.0))
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(mesh_shape),
                           sharding.MESH_AXES)
  program = train_steps.build_program(config, mesh, CLIP,
                                      testing.NUM_CLASSES, 10, model=model)
  state = program.init_state()
  if report:
    report(state, config, model)
  batch_sharding, step = program.batch_sharding, program.train_step
  losses = []
  for seed in (0, 1):
    rng = np.random.default_rng(seed)
    batch = {'inputs': rng.normal(size=(8,) + CLIP).astype(np.float32),
             'label': (rng.random((8, testing.NUM_CLASSES)) < 0.3).astype(
                 np.float32)}
    state, metrics = step(state, jax.device_put(batch, batch_sharding))
    losses.append(float(metrics['loss']))
  return losses


def placement(state, config, model) -> Dict[str, Any]:
  """Which parameters of 64 or more values are not split over fsdp or model
  (`unsharded`), which do not lie on the devices as their spec says
  (`misplaced`), and how many are split at all (`sharded`)."""
  boxed = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + CLIP), train=False))['params']
  specs = sharding.param_specs(boxed, config)
  flat_specs = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
  unsharded, misplaced, sharded = [], [], 0
  for (path, spec), leaf in zip(flat_specs,
                                jax.tree_util.tree_leaves(state.params)):
    name = jax.tree_util.keystr(path)
    axes = {a for part in spec
            for a in (part if isinstance(part, tuple) else (part,)) if a}
    if leaf.size >= 64 and not axes & {'fsdp', 'model'}:
      unsharded.append(name)
    sharded += bool(axes)
    if tuple(leaf.sharding.spec) != tuple(spec):
      misplaced.append(name)
  return dict(unsharded=unsharded, misplaced=misplaced, sharded=sharded)


def resumed_on_eight(params) -> Dict[str, Any]:
  """`testing.Linear`'s train state saved on a mesh of one device, restored
  on data=4 x fsdp=2: the warning logged and whether the values came back."""
  config = schema.complete(ml_collections.ConfigDict(dict(
      optimizer='momentum', mesh=dict(data=4, fsdp=2, model=1), batch_size=16,
      rng_seed=0,
      lr_configs=dict(learning_rate_schedule='compound', factors='constant',
                      base_learning_rate=1.0),
      logical_axis_rules=sharding.DEFAULT_RULES,
      model_name='token_learner_classification')))
  one = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                          sharding.MESH_AXES)
  programs = [train_steps.build_program(config, mesh, (4,), 3, 1,
                                        model=testing.Linear())
              for mesh in (one, sharding.make_mesh(config))]
  saved = programs[0].init_state().replace(
      params=jax.device_put(params, programs[0].shardings.params))
  manager = checkpoint.make_manager(tempfile.mkdtemp(),
                                    testing.manager_config(1))
  checkpoint.save(manager, 1, saved, force=True)
  manager.wait_until_finished()
  with mock.patch.object(checkpoint.logging, 'warning') as warning:
    restored = checkpoint.restore_state(manager, programs[1].init_state(),
                                        programs[1].shardings)
  manager.close()
  same = jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: bool(np.array_equal(a, b)), saved.params, restored.params))
  messages = [c.args[0] % c.args[1:] for c in warning.call_args_list]
  return dict(warnings=[m for m in messages if m.startswith('Resuming')],
              same=same, devices=len(
                  restored.params['Dense_0']['kernel'].sharding.device_set))


def eight_device_side() -> Dict[str, Any]:
  """Every 8-device result of the tests below (run with 8 devices)."""
  assert jax.device_count() == 8, jax.devices()
  params, x, y = example_data()
  batches = [testing.batchnorm_batch(seed) for seed in (0, 1)]
  x2plus1d = {}
  x2plus1d['losses'] = x2plus1d_steps(
      (2, 2, 2), jax.devices(),
      lambda *args: x2plus1d.update(placement(*args)))
  return {
      'clipping': clipping_steps(params, x, y),
      'batchnorm': {
          'jit': testing.batchnorm_steps(testing.batchnorm_config((2, 2, 2)),
                                         jax.devices(), batches),
          'per_shard': testing.batchnorm_steps(
              testing.batchnorm_config((2, 2, 2), grad_clip_per_shard=True),
              jax.devices(), batches[:1])},
      'x2plus1d': x2plus1d,
      'resumed': resumed_on_eight(params),
  }


class EightDevicesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    code = ('import json\n'
            'from tests.integration import test_eight_devices as t\n'
            'print(json.dumps(t.eight_device_side()))\n')
    result = subprocess.run(
        [sys.executable, '-c', code], cwd=ROOT, text=True,
        capture_output=True, check=False,
        env=testing.host_devices_env(8))
    assert result.returncode == 0, result.stderr[-3000:]
    cls.eight = json.loads(result.stdout.strip().splitlines()[-1])

  def test_clipping_per_shard_takes_the_mean_of_clipped_shard_gradients(
      self):
    params, x, y = example_data()
    results = self.eight['clipping']
    per_shard, global_ = results['per_shard'], results['global']
    kernel, bias = params['Dense_0']['kernel'], params['Dense_0']['bias']
    # The batch splits over data x fsdp into 8 slices of 2, in order.
    shards = [clipped(softmax_ce_grads(kernel, bias, x[i:i + 2], y[i:i + 2]),
                      0.5) for i in range(0, 16, 2)]
    self.assertTrue(any(n < 0.5 for _, n in shards))  # Some unclipped.
    self.assertTrue(any(n > 0.5 for _, n in shards))
    mean = [np.mean([g[i] for g, _ in shards], 0) for i in (0, 1)]
    whole, _ = clipped(softmax_ce_grads(kernel, bias, x, y), 0.5)
    for result, grads in ((per_shard, mean), (global_, whole)):
      new = result['params']['Dense_0']
      np.testing.assert_allclose(new['kernel'], kernel - grads[0], rtol=1e-5,
                                 atol=1e-6)
      np.testing.assert_allclose(new['bias'], bias - grads[1], rtol=1e-5,
                                 atol=1e-6)
    self.assertGreater(np.abs(mean[0] - whole[0]).max(), 1e-2)
    self.assertAlmostEqual(per_shard['loss'], global_['loss'], places=5)
    self.assertAlmostEqual(per_shard['grad_norm'],
                           np.mean([n for _, n in shards]), places=5)

  def test_batchnorm_on_a_2x2x2_mesh_takes_the_steps_of_one_device(self):
    eight = self.eight['batchnorm']
    one_device = jax.devices()[:1]
    batches = [testing.batchnorm_batch(seed) for seed in (0, 1)]
    # Under jit the statistics are the global batch's, as on one device.
    losses, stats = testing.batchnorm_steps(testing.batchnorm_config(),
                                            one_device, batches)
    np.testing.assert_allclose(eight['jit'][0], losses, rtol=1e-5)
    for name in ('mean', 'var'):
      np.testing.assert_allclose(eight['jit'][1][name], stats[name],
                                 rtol=1e-5, atol=1e-6)
    # grad_clip_per_shard: each of the 4 data shards normalises its 4
    # examples by their own statistics; the running averages are the mean
    # of the shards' (each as a 1-device step on that slice alone).
    shards = [testing.batchnorm_steps(
        testing.batchnorm_config(batch_size=4), one_device,
        [{k: v[i:i + 4] for k, v in batches[0].items()}])
              for i in range(0, 16, 4)]
    losses, stats = eight['per_shard']
    self.assertAlmostEqual(losses[0], np.mean([l[0] for l, _ in shards]),
                           places=5)
    _, whole = testing.batchnorm_steps(testing.batchnorm_config(), one_device,
                                       batches[:1])
    for name in ('mean', 'var'):
      np.testing.assert_allclose(stats[name],
                                 np.mean([s[name] for _, s in shards], 0),
                                 rtol=1e-5, atol=1e-6)
    # The mean of equal shards' means is the batch's, but not so the
    # variances: theirs leave out the spread between the shards' means.
    np.testing.assert_allclose(stats['mean'], whole['mean'], rtol=1e-5,
                               atol=1e-6)
    self.assertTrue(np.all(np.array(stats['var']) <
                           np.array(whole['var']) - 1e-3))

  def test_a_checkpoint_of_one_device_resumes_on_eight_saying_so(self):
    resumed = self.eight['resumed']
    self.assertTrue(resumed['same'])
    self.assertEqual(resumed['devices'], 8)  # The kernel is split (fsdp).
    self.assertEqual(resumed['warnings'], [
        "Resuming the checkpoint of step 1, written on mesh {'data': 1, "
        "'fsdp': 1, 'model': 1} (1 device), on mesh {'data': 4, 'fsdp': 2, "
        "'model': 1} (8 devices): its arrays are resharded; the global batch "
        'and the input stream are unchanged, so training goes on as it would '
        'have (up to the order of floating-point sums).'])

  def test_x2plus1d_is_sharded_by_its_rules_and_takes_the_same_steps(self):
    eight = self.eight['x2plus1d']
    # Every parameter of 64 or more values is split over fsdp or model as
    # the rules say, and lies on the devices so.
    self.assertEqual(eight['unsharded'], [])
    self.assertEqual(eight['misplaced'], [])
    self.assertGreater(eight['sharded'], 40)
    losses = x2plus1d_steps((1, 1, 1), jax.devices()[:1])
    np.testing.assert_allclose(eight['losses'], losses, rtol=2e-5)


if __name__ == '__main__':
  absltest.main()
