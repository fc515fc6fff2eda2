"""Tests of `tokenlearner_jax.train_steps` (the steps themselves also run in
tests/test_train.py and tests/models/test_speed_options.py)."""

import json
import subprocess
import sys

from absl.testing import absltest
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests import testing
from tests.testing import ROOT
from tests.testing import config_for
from tests.testing import fresh_state
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax import train
from tokenlearner_jax import train_steps


class TrainStepsTest(absltest.TestCase):

  def test_batch_not_divisible_by_data_parallel_size_is_named(self):
    config = config_for('demo_moving_digits')
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ('data', 'fsdp', 'model'))
    train_steps.check_batch_sizes(config, mesh)  # Any batch splits over 1.
    mesh = ml_collections.ConfigDict(dict(shape=dict(data=4, fsdp=2)))
    config.batch_size = 12
    with self.assertRaisesRegex(ValueError,
                                r'batch_size=12 .* data-parallel size 8'):
      train_steps.check_batch_sizes(config, mesh)

  def test_jitted_steps_and_the_parameters_without_an_optimizer(self):
    config = config_for('demo_moving_digits')
    config.model.num_layers = 2
    input_shape = (8, 32, 32, 3)
    fresh = fresh_state(config, input_shape, 4, total_steps=10)
    model, mesh, state, shardings = (fresh.model, fresh.mesh, fresh.state,
                                     fresh.shardings)
    target, params_shardings = train_steps.abstract_params(config, model,
                                                           input_shape, mesh)
    self.assertEqual(params_shardings, shardings.params)
    self.assertEqual(
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), target),
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state.params))
    batch_sharding = sharding.batch_sharding(mesh)
    batch = jax.device_put({
        'inputs': np.zeros((config.batch_size,) + input_shape, np.float32),
        'label': np.eye(4, dtype=np.float32)[
            np.arange(config.batch_size) % 4],
        'batch_mask': np.ones(config.batch_size, np.float32)}, batch_sharding)
    self.assertEqual(state.model_state, {})  # A ViT: `params` only.
    eval_step = train_steps.make_eval_step(
        model, train_steps.model_variables(shardings.params,
                                           shardings.model_state),
        batch_sharding, multilabel=False)
    sums, _ = eval_step(
        train_steps.model_variables(state.params, state.model_state), batch)
    self.assertEqual(float(sums['num_examples']), config.batch_size)
    train_step = train_steps.make_train_step(
        config, model, fresh.tx, fresh.schedule, shardings, batch_sharding,
        multilabel=False)
    new_state, step_metrics = train_step(
        state, {k: batch[k] for k in ('inputs', 'label')})
    self.assertEqual(int(new_state.step), 1)
    self.assertTrue(np.isfinite(float(step_metrics['loss'])))
    self.assertTrue(state.step.is_deleted())  # Donated to the new state.

  def test_steps_and_the_model_benchmark_import_without_tensorflow(self):
    # GPU images often have jax but no TensorFlow: the steps and
    # scripts/benchmark.py's model part must not need it.
    code = ('import sys; import tokenlearner_jax.train_steps; '
            'from tokenlearner_jax.configs import common; '
            'common.load_module("scripts/benchmark.py"); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("tensorflow", "tensorflow_datasets")))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.strip(), '[]')


class TrainLengthTest(absltest.TestCase):

  def test_epochs_of_full_batches_as_the_reference(self):
    # scenic: num_training_epochs * (num_train_examples // batch_size).
    config = config_for('im1k_token_learner', arg=None)
    steps = train.num_train_steps(config, 1_281_167)
    self.assertEqual(steps, 90 * 312)
    self.assertEqual(config.lr_configs.total_steps, steps)
    schedule = optim.make_schedule(config.lr_configs, steps)
    self.assertAlmostEqual(float(schedule(steps)), 1e-5, places=9)
    config.num_training_steps = 7
    self.assertEqual(train.num_train_steps(config, 1_281_167), 7)


class Linear(nn.Module):
  """logits = x @ kernel + bias: gradients with a closed form."""

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return nn.Dense(3)(x)


def example_data(num_examples: int = 16):
  """Parameters and a batch whose 2-example slices have growing scales."""
  rng = np.random.default_rng(0)
  params = {'Dense_0': {
      'kernel': rng.normal(size=(4, 3)).astype(np.float32),
      'bias': rng.normal(size=3).astype(np.float32)}}
  scale = np.repeat(np.linspace(0.1, 2.0, num_examples // 2), 2)[:, None]
  x = (rng.normal(size=(num_examples, 4)) * scale).astype(np.float32)
  y = np.eye(3, dtype=np.float32)[np.arange(num_examples) % 3]
  return params, x, y


def softmax_ce_grads(kernel, bias, x, y):
  """The gradient of the mean softmax cross-entropy of `x @ kernel + bias`."""
  z = x @ kernel + bias
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dz = (p - y) / len(x)
  return x.T @ dz, dz.sum(0)


def clipped(grads, max_norm):
  norm = np.sqrt(sum(np.sum(g**2) for g in grads))
  return [g * min(1.0, max_norm / norm) for g in grads], norm


class LossTermsTest(absltest.TestCase):

  def grads(self, **config):
    params, x, y = example_data(6)
    (loss, logits, model_state), grads = train_steps.loss_and_grads(
        jax.tree_util.tree_map(jnp.asarray, params), {}, jnp.asarray(x),
        jnp.asarray(y), jax.random.PRNGKey(0), model=Linear(),
        config=ml_collections.ConfigDict(config), multilabel=False)
    self.assertEqual(model_state, {})
    return params['Dense_0'], x, y, loss, logits, grads['Dense_0']

  def test_l2_decay_factor_penalises_kernels_only(self):
    params, x, y, loss, _, grads = self.grads(l2_decay_factor=0.1)
    kernel, bias = softmax_ce_grads(params['kernel'], params['bias'], x, y)
    np.testing.assert_allclose(grads['kernel'], kernel + 0.1 * params['kernel'],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads['bias'], bias, rtol=1e-5, atol=1e-7)
    _, _, _, plain_loss, _, _ = self.grads()
    self.assertEqual(float(loss), float(plain_loss))  # The data loss.

  def test_sam_takes_the_gradient_at_the_normalised_ascent_step(self):
    params, x, y, _, logits, grads = self.grads(sam_rho=0.05)
    g = softmax_ce_grads(params['kernel'], params['bias'], x, y)
    norm = np.sqrt(sum(np.sum(v**2) for v in g))
    kernel = params['kernel'] + 0.05 * g[0] / (norm + 1e-7)
    bias = params['bias'] + 0.05 * g[1] / (norm + 1e-7)
    expected = softmax_ce_grads(kernel, bias, x, y)
    np.testing.assert_allclose(grads['kernel'], expected[0], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(grads['bias'], expected[1], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(logits, x @ kernel + bias, rtol=1e-5,
                               atol=1e-6)


# Runs with 8 CPU devices: one SGD step (rate 1) with clipping to 0.5 per
# shard and globally on a mesh data=4 x fsdp=2; prints the results as JSON.
EIGHT_DEVICES = """
import json, sys
import jax, ml_collections, numpy as np
from tests.test_train_steps import Linear
from tokenlearner_jax import optim, sharding, train_steps

data = json.load(sys.stdin)
results = {}
for per_shard in (True, False):
  config = ml_collections.ConfigDict(dict(
      optimizer='sgd', max_grad_norm=0.5, grad_clip_per_shard=per_shard,
      lr_configs=dict(learning_rate_schedule='compound', factors='constant',
                      base_learning_rate=1.0),
      mesh=dict(data=4, fsdp=2, model=1), rng_seed=0, batch_size=16,
      logical_axis_rules=sharding.DEFAULT_RULES))
  tx, schedule = optim.make_optimizer(config, 1)
  mesh = sharding.make_mesh(config)
  state, shardings = train_steps.create_train_state(
      config, Linear(), tx, (4,), mesh)
  params = {'Dense_0': {k: np.float32(v)
                        for k, v in data['params']['Dense_0'].items()}}
  state = state.replace(params=jax.device_put(params, shardings.params))
  batch_sharding = sharding.batch_sharding(mesh)
  step = train_steps.make_train_step(config, Linear(), tx, schedule,
                                     shardings, batch_sharding, False)
  batch = jax.device_put({'inputs': np.float32(data['x']),
                          'label': np.float32(data['y'])}, batch_sharding)
  state, metrics = step(state, batch)
  results[per_shard] = dict(
      params=jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(),
                                    state.params),
      loss=float(metrics['loss']), grad_norm=float(metrics['grad_norm']))
print(json.dumps([results[True], results[False]]))
"""


class PerShardClippingTest(absltest.TestCase):

  def test_mean_of_clipped_shard_gradients_on_8_devices(self):
    params, x, y = example_data()
    per_shard, global_ = testing.on_eight_devices(
        self, EIGHT_DEVICES, stdin=json.dumps(dict(
            params=jax.tree_util.tree_map(lambda v: v.tolist(), params),
            x=x.tolist(), y=y.tolist())))
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


def batchnorm_steps(config, devices, batches):
  """(losses, batch_stats as nested lists) of one `TinyBatchNormNet` train
  step per batch of `batches`, on a mesh of `devices`."""
  fresh = testing.batchnorm_state(config, devices)
  batch_sharding = sharding.batch_sharding(fresh.mesh)
  step = train_steps.make_train_step(config, fresh.model, fresh.tx,
                                     fresh.schedule, fresh.shardings,
                                     batch_sharding, multilabel=False)
  state, losses = fresh.state, []
  for batch in batches:
    state, step_metrics = step(state, jax.device_put(batch, batch_sharding))
    losses.append(float(step_metrics['loss']))
  stats = state.model_state['batch_stats']['BatchNorm_0']
  return losses, {k: np.asarray(v).tolist() for k, v in stats.items()}


# Runs with 8 CPU devices: `TinyBatchNormNet`'s train steps on a mesh data=2
# x fsdp=2 x model=2, under plain jit (two steps) and with
# grad_clip_per_shard (one step); prints the results as JSON.
BATCHNORM_EIGHT_DEVICES = """
import json
import jax
from tests import testing
from tests.test_train_steps import batchnorm_steps

batches = [testing.batchnorm_batch(seed) for seed in (0, 1)]
print(json.dumps({
    'jit': batchnorm_steps(testing.batchnorm_config((2, 2, 2)),
                           jax.devices(), batches),
    'per_shard': batchnorm_steps(
        testing.batchnorm_config((2, 2, 2), grad_clip_per_shard=True),
        jax.devices(), batches[:1])}))
"""


def conv(params, inputs):
  """`TinyBatchNormNet`'s convolution alone: `[B, H, W, 4]`, float64."""
  return np.asarray(nn.Conv(4, (3, 3)).apply({'params': params['Conv_0']},
                                             inputs), np.float64)


def head(params, normalised):
  """`TinyBatchNormNet` after its BatchNorm's normalisation, in NumPy."""
  bn, out = params['BatchNorm_0'], params['output_projection']
  pooled = np.maximum(normalised * bn['scale'] + bn['bias'], 0).mean((1, 2))
  return pooled @ out['kernel'] + out['bias']  # [B, 3]


class BatchNormStateTest(absltest.TestCase):
  """A model with BatchNorm's `batch_stats` (`TrainState.model_state`)."""

  def test_batch_stats_move_and_eval_normalises_by_their_averages(self):
    config = testing.batchnorm_config()
    fresh = testing.batchnorm_state(config, jax.devices()[:1])
    stats = jax.device_get(fresh.state.model_state)['batch_stats']
    np.testing.assert_array_equal(stats['BatchNorm_0']['mean'], np.zeros(4))
    np.testing.assert_array_equal(stats['BatchNorm_0']['var'], np.ones(4))
    # Leaves without logical axis names are replicated.
    self.assertEqual(
        fresh.shardings.model_state['batch_stats']['BatchNorm_0']['mean'].spec,
        jax.sharding.PartitionSpec())
    self.assertEqual(fresh.shardings.params['Conv_0']['kernel'].spec,
                     jax.sharding.PartitionSpec(None, None, None, 'model'))
    batch_sharding = sharding.batch_sharding(fresh.mesh)
    step = train_steps.make_train_step(config, fresh.model, fresh.tx,
                                       fresh.schedule, fresh.shardings,
                                       batch_sharding, multilabel=False)
    batch = testing.batchnorm_batch(0)
    params = jax.device_get(fresh.state.params)
    state, _ = step(fresh.state, jax.device_put(batch, batch_sharding))
    # Momentum 0.5: half the old average, half the batch's (biased) moment.
    y = conv(params, batch['inputs'])
    stats = jax.device_get(state.model_state)['batch_stats']['BatchNorm_0']
    np.testing.assert_allclose(stats['mean'], 0.5 * y.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats['var'], 0.5 + 0.5 * y.var((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)

    eval_step = train_steps.make_eval_step(
        fresh.model, train_steps.model_variables(
            fresh.shardings.params, fresh.shardings.model_state),
        batch_sharding, multilabel=False)
    batch = {**testing.batchnorm_batch(1),
             'batch_mask': np.ones(16, np.float32)}
    _, logits = eval_step(
        train_steps.model_variables(state.params, state.model_state),
        jax.device_put(batch, batch_sharding))
    params = jax.device_get(state.params)
    y = conv(params, batch['inputs'])
    running = head(params, (y - stats['mean']) / np.sqrt(stats['var'] + 1e-5))
    np.testing.assert_allclose(logits, running, rtol=1e-4, atol=1e-5)
    own = head(params, (y - y.mean((0, 1, 2))) /
               np.sqrt(y.var((0, 1, 2)) + 1e-5))  # The batch's statistics.
    self.assertGreater(np.abs(own - running).max(), 1e-2)

  def test_one_device_and_a_2x2x2_mesh_of_8_take_the_same_steps(self):
    eight = testing.on_eight_devices(self, BATCHNORM_EIGHT_DEVICES)
    one_device = jax.devices()[:1]
    batches = [testing.batchnorm_batch(seed) for seed in (0, 1)]
    # Under jit the statistics are the global batch's, as on one device.
    losses, stats = batchnorm_steps(testing.batchnorm_config(), one_device,
                                    batches)
    np.testing.assert_allclose(eight['jit'][0], losses, rtol=1e-5)
    for name in ('mean', 'var'):
      np.testing.assert_allclose(eight['jit'][1][name], stats[name],
                                 rtol=1e-5, atol=1e-6)
    # grad_clip_per_shard: each of the 4 data shards normalises its 4
    # examples by their own statistics; the running averages are the mean
    # of the shards' (each as a 1-device step on that slice alone).
    shards = [batchnorm_steps(testing.batchnorm_config(batch_size=4),
                              one_device,
                              [{k: v[i:i + 4] for k, v in batches[0].items()}])
              for i in range(0, 16, 4)]
    losses, stats = eight['per_shard']
    self.assertAlmostEqual(losses[0], np.mean([l[0] for l, _ in shards]),
                           places=5)
    _, whole = batchnorm_steps(testing.batchnorm_config(), one_device,
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


if __name__ == '__main__':
  absltest.main()
