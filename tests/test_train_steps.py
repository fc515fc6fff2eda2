"""Tests of `tokenlearner_jax.train_steps` (the steps themselves also run in
tests/test_train.py and tests/models/test_encoder.py; on 8 devices in
tests/integration/test_eight_devices.py)."""

from absl.testing import absltest
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tests import testing
from tests.testing import Linear
from tests.testing import config_for
from tests.testing import example_data
from tests.testing import fresh_state
from tests.testing import softmax_ce_grads
from tokenlearner_jax import errors
from tokenlearner_jax import optim
from tokenlearner_jax import train
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs.optim_config import ScheduleConfig


class TrainStepsTest(absltest.TestCase):

  def test_batch_not_divisible_by_data_parallel_size_is_named(self):
    config = config_for('demo_moving_digits')
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ('data', 'fsdp', 'model'))
    train_steps.check_batch_size(config.batch_size, mesh)  # Any splits over 1.
    mesh = ml_collections.ConfigDict(dict(shape=dict(data=4, fsdp=2)))
    config.batch_size = 12
    with self.assertRaisesRegex(errors.ConfigError,
                                r'batch_size=12 .* data-parallel size 8'):
      train_steps.check_batch_size(config.batch_size, mesh)

  def test_jitted_steps_and_the_parameters_without_an_optimizer(self):
    config = config_for('demo_moving_digits')
    config.model.num_layers = 2
    input_shape = (8, 32, 32, 3)
    fresh = fresh_state(config, input_shape, 4, total_steps=10)
    program, state = fresh.program, fresh.state
    target, params_shardings = train_steps.abstract_params(
        config, program.model, input_shape, program.mesh)
    self.assertEqual(params_shardings, program.shardings.params)
    self.assertEqual(
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), target),
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state.params))
    self.assertEqual(
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.sharding),
                               program.abstract_state),
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.sharding),
                               state))
    batch = jax.device_put({
        'inputs': np.zeros((config.batch_size,) + input_shape, np.float32),
        'label': np.eye(4, dtype=np.float32)[
            np.arange(config.batch_size) % 4],
        'batch_mask': np.ones(config.batch_size, np.float32),
    }, program.batch_sharding)
    self.assertEqual(
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.sharding),
                               program.abstract_batch(config.batch_size,
                                                      mask=True)),
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.sharding),
                               batch))
    self.assertEqual(state.model_state, {})  # A ViT: `params` only.
    sums, _ = program.eval_step(
        train_steps.model_variables(state.params, state.model_state), batch)
    self.assertEqual(float(sums['num_examples']), config.batch_size)
    train_step = program.train_step
    new_state, step_metrics = train_step(
        state, {k: batch[k] for k in ('inputs', 'label')})
    self.assertEqual(int(new_state.step), 1)
    self.assertTrue(np.isfinite(float(step_metrics['loss'])))
    self.assertTrue(state.step.is_deleted())  # Donated to the new state.


class FastTest(absltest.TestCase):

  def test_fast_is_bf16_and_the_platforms_attention_and_nothing_on_cpu(self):
    config = config_for('demo_moving_digits')
    config.fast = True
    for platform, impl in (('tpu', 'splash'), ('gpu', 'cudnn')):
      fast = train_steps.fast_config(config, platform, testing.NUM_CLASSES)
      self.assertEqual((fast.model_dtype_str, fast.model.attention_impl),
                       ('bfloat16', impl))
    self.assertIs(train_steps.fast_config(config, 'cpu', 40), config)
    config.fast = False
    self.assertIs(train_steps.fast_config(config, 'tpu', 40), config)

  def test_fast_keeps_the_math(self):
    # Attention dropout, and ToMe's reading of the weights, keep the einsum;
    # a dtype the config chose stays.
    for name, value in (('attention_dropout_rate', 0.1),
                        ('tokenizer.token_reduction', 'tome')):
      config = config_for('demo_moving_digits')
      config.fast, config.model_dtype_str = True, 'float16'
      node = config.model
      *parents, leaf = name.split('.')
      for part in parents:
        node = node[part]
      node[leaf] = value
      fast = train_steps.fast_config(config, 'tpu', testing.NUM_CLASSES)
      self.assertEqual((fast.model_dtype_str, fast.model.attention_impl),
                       ('float16', 'einsum'), name)
    # X(2+1)D: the dtype only.
    config = config_for('demo_event_digits')
    config.fast = True
    fast = train_steps.fast_config(config, 'tpu', 20)
    self.assertEqual(fast.model_dtype_str, 'bfloat16')
    self.assertNotIn('attention_impl', fast.model)


class TrainLengthTest(absltest.TestCase):

  def test_epochs_of_full_batches_as_the_reference(self):
    # scenic: num_training_epochs * (num_train_examples // batch_size).
    config = config_for('im1k_token_learner', arg=None)
    steps = train.run_plan(config, 1_281_167).total_steps
    self.assertEqual(steps, 90 * 312)
    self.assertEqual(config.lr_configs.total_steps, steps)
    schedule = optim.make_schedule(ScheduleConfig.from_config(config), steps)
    self.assertAlmostEqual(float(schedule(steps)), 1e-5, places=9)
    config.num_training_steps = 7
    self.assertEqual(train.run_plan(config, 1_281_167).total_steps, 7)

  def test_unset_intervals_default_to_an_epoch_as_the_reference(self):
    config = config_for('im1k_token_learner', arg=None)
    with config.unlocked():
      for key in ('log_eval_steps', 'log_summary_steps', 'checkpoint_steps'):
        config[key] = None
    self.assertEqual(train.run_plan(config, 1_281_167),
                     train.RunPlan(90 * 312, 312, 312, 312))
    config.log_summary_steps = 50
    self.assertEqual(train.run_plan(config, 1_281_167).log_summary_steps, 50)
    with self.assertRaisesRegex(ValueError, 'num_training_epochs needs'):
      train.run_plan(config, None)
    config.num_training_steps = 7
    with self.assertRaisesRegex(ValueError, 'log_eval_steps is not set'):
      train.run_plan(config, None)


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

  def test_train_loss_scores_the_labels_as_the_references_metrics(self):
    params, x, y = example_data(6)
    z = x @ params['Dense_0']['kernel'] + params['Dense_0']['bias']
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    cross_entropy = lambda target: float(-(target * log_p).sum(-1).mean())
    state = train_steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=optax.set_to_zero().init(params),
        rng=jax.random.PRNGKey(0))
    for smoothing in (None, 0.2):
      _, step_metrics = train_steps.train_step(
          state, {'inputs': x, 'label': y}, model=Linear(),
          tx=optax.set_to_zero(), schedule=lambda step: 0.0,
          config=ml_collections.ConfigDict(dict(label_smoothing=smoothing)),
          multilabel=False)
      # Against the labels, smoothed or not (the reference's train metrics).
      self.assertAlmostEqual(float(step_metrics['loss']), cross_entropy(y),
                             places=5)
      if smoothing:  # What the update minimised.
        self.assertAlmostEqual(float(step_metrics['smoothed_loss']),
                               cross_entropy(0.8 * y + 0.2 / 3), places=5)
      else:
        self.assertNotIn('smoothed_loss', step_metrics)


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
    shardings = fresh.program.shardings
    self.assertEqual(
        shardings.model_state['batch_stats']['BatchNorm_0']['mean'].spec,
        jax.sharding.PartitionSpec())
    self.assertEqual(shardings.params['Conv_0']['kernel'].spec,
                     jax.sharding.PartitionSpec(None, None, None, 'model'))
    batch_sharding = fresh.program.batch_sharding
    step = fresh.program.train_step
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

    eval_step = fresh.program.eval_step
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


if __name__ == '__main__':
  absltest.main()
