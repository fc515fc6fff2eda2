"""Schedules and optimizers against values computed from the reference's
definitions (scenic `train_lib_deprecated.lr_schedules`, flax.optim)."""

import math

from absl.testing import absltest
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tokenlearner_jax import errors
from tokenlearner_jax import optim
from tokenlearner_jax.configs.optim_config import OptimizerConfig
from tokenlearner_jax.configs.optim_config import ScheduleConfig


def lr_configs(factors, **kwargs):
  return ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound', factors=factors,
      base_learning_rate=0.1, **kwargs))


def schedule_config(factors, **kwargs):
  return ScheduleConfig.from_config(ml_collections.ConfigDict(
      dict(lr_configs=lr_configs(factors, **kwargs))))


def values(steps, factors, run_steps=100, **kwargs):
  """The schedule at `steps` in a run of `run_steps`."""
  schedule = optim.make_schedule(schedule_config(factors, **kwargs),
                                 run_steps)
  return [float(schedule(s)) for s in steps]


def cosine(progress):
  return 0.5 * (1 + math.cos(math.pi * progress))


class ScheduleTest(absltest.TestCase):

  def test_warmup_cosine_restarts_after_a_cycle(self):
    # The cycle loses the warmup: 110 - 10 = 100 steps of cosine from step 10,
    # then a second cycle starts again from the base rate.
    np.testing.assert_allclose(
        values((0, 5, 10, 60, 109, 110, 160),
               'constant * cosine_decay * linear_warmup', 110,
               warmup_steps=10, steps_per_cycle=110),
        [0.0, 0.05, 0.1, 0.05, 0.1 * cosine(0.99), 0.1, 0.05], atol=1e-7)

  def test_cycle_shrinks_by_its_share_of_the_warmup(self):
    # Two cycles of 50 in 100 steps: each loses int(10 / 2) = 5 steps.
    np.testing.assert_allclose(
        values((10, 20, 55), 'constant * cosine_decay', 100, warmup_steps=10,
               steps_per_cycle=50, total_steps=100),
        [0.1, 0.1 * cosine(10 / 45), 0.1], rtol=1e-6)

  def test_cosine_alpha_t_mul_m_mul(self):
    # Cycles [0, 10), [10, 30), [30, 70): lengths 10 * 2**i, peaks 0.5**i,
    # each from its peak to 0, then scaled into [alpha, 1].
    steps = (3, 15, 20, 50)
    cycles = ((0, 10, 0), (10, 20, 1), (10, 20, 1), (30, 40, 2))
    want = [0.1 * (0.9 * 0.5**i * cosine((step - start) / length) + 0.1)
            for step, (start, length, i) in zip(steps, cycles)]
    np.testing.assert_allclose(
        values(steps, 'constant * cosine_decay', steps_per_cycle=10, t_mul=2.0,
               m_mul=0.5, alpha=0.1), want, rtol=1e-5)

  def test_start_decay_step(self):
    np.testing.assert_allclose(
        values((4, 9, 14), 'constant * linear_warmup * cosine_decay',
               warmup_steps=4, start_decay_step=5, steps_per_cycle=104),
        [0.1, 0.1, 0.1 * cosine(5 / 100)], rtol=1e-6)

  def test_warmup_alpha(self):
    np.testing.assert_allclose(
        values((0, 5, 10, 20), 'constant * linear_warmup', warmup_steps=10,
               warmup_alpha=0.2),
        [0.02, 0.06, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(
        values((0,), 'constant * linear_warmup', warmup_steps=0), [0.1])

  def test_warmup_linear_decay_to_end(self):
    np.testing.assert_allclose(
        values((5, 10, 60, 110), 'constant * linear_warmup * linear_decay',
               110, warmup_steps=10, end_learning_rate=1e-3, total_steps=110),
        [0.05, 0.1, 0.0505, 1e-3], rtol=1e-5)

  def test_rsqrt(self):
    # Without timescale: 1 / sqrt(max(step, warmup)).
    np.testing.assert_allclose(
        values((1, 4, 16), 'constant * rsqrt_decay', warmup_steps=4),
        [0.05, 0.05, 0.025], rtol=1e-6)
    # With timescale: 1 through the warmup, then sqrt(t / (step + t - w)).
    np.testing.assert_allclose(
        values((2, 4, 40), 'constant * rsqrt_decay', warmup_steps=4,
               timescale=100),
        [0.1, 0.1, 0.1 * math.sqrt(100 / 136)], rtol=1e-6)
    np.testing.assert_allclose(
        values((1, 16), 'constant * rsqrt_normalized_decay', warmup_steps=4),
        [0.1, 0.05], rtol=1e-6)

  def test_polynomial(self):
    np.testing.assert_allclose(
        values((0, 5, 10, 20), 'constant * polynomial', decay_steps=10,
               end_factor=0.1, power=2),
        [0.1, 0.1 * (0.9 * 0.25 + 0.1), 0.01, 0.01], rtol=1e-6)

  def test_piecewise(self):
    events = dict(decay_events=[10, 20], decay_factors=[0.5, 0.1])
    np.testing.assert_allclose(
        values((10, 11, 20, 21), 'constant * piecewise_constant', **events),
        [0.1, 0.05, 0.05, 0.01], rtol=1e-6)
    np.testing.assert_allclose(
        values((0, 5, 15, 30), 'constant * piecewise_linear', **events),
        [0.1, 0.075, 0.03, 0.01], rtol=1e-6)

  def test_exponential_decay_and_decay_every(self):
    np.testing.assert_allclose(
        values((5, 15), 'constant * exponential_decay', decay_steps=10,
               decay_rate=0.5), [0.1 * 0.5**0.5, 0.1 * 0.5**1.5], rtol=1e-6)
    np.testing.assert_allclose(
        values((5, 15), 'constant * exponential_decay', decay_steps=10,
               decay_rate=0.5, staircase=True), [0.1, 0.05], rtol=1e-6)
    np.testing.assert_allclose(
        values((9, 25), 'constant * decay_every', steps_per_decay=10,
               decay_factor=0.1), [0.1, 0.001], rtol=1e-5)

  def test_vivit_base_k400(self):
    # scenic vivit_base_k400: batch 64, 30 epochs of 3,356 steps, warmup
    # 2.5 epochs, steps_per_cycle = total_steps, base 0.1.
    total, warmup = 100_680, 8_390
    np.testing.assert_allclose(
        values((4_195, warmup, warmup + 46_145, total - 1),
               'constant * cosine_decay * linear_warmup', total,
               warmup_steps=warmup, steps_per_cycle=total),
        [0.05, 0.1, 0.05, 0.1 * cosine((total - 1 - warmup) / 92_290)],
        rtol=1e-5, atol=1e-9)

  def test_unknown_factor_and_missing_key(self):
    with self.assertRaisesRegex(errors.ConfigError, 'lr_configs.factors'):
      schedule_config('constant * cosine')
    with self.assertRaisesRegex(errors.ConfigError, 'lr_configs.decay_rate '
                                ".* 'exponential_decay'"):
      schedule_config('exponential_decay', decay_steps=3)


GRADS = [np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], np.float32),
         np.array([[-1.0, 0.5, 0.5], [2.0, -0.5, 1.0]], np.float32),
         np.array([[0.25, 0.25, -2.0], [-1.0, 1.0, 0.5]], np.float32)]
BIAS_GRADS = [np.array([1.0, -2.0, 0.5], np.float32),
              np.array([0.5, 0.5, -1.0], np.float32),
              np.array([-1.5, 1.0, 2.0], np.float32)]


def initial_params():
  return {'dense': {'kernel': np.array([[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]],
                                       np.float32),
                    'bias': np.array([0.5, -0.5, 1.0], np.float32)}}


def run_optimizer(**config):
  """Three steps of `config`'s optimizer on `initial_params` with GRADS; the
  rate halves every step from 0.1."""
  config = ml_collections.ConfigDict(dict(
      lr_configs=lr_configs('constant * decay_every', steps_per_decay=1,
                            decay_factor=0.5), **config))
  tx, _ = optim.make_optimizer(config, 3)
  params = initial_params()
  state = tx.init(params)
  for kernel, bias in zip(GRADS, BIAS_GRADS):
    grads = {'dense': {'kernel': jnp.asarray(kernel),
                       'bias': jnp.asarray(bias)}}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params['dense']


def flax_momentum(weight_decay=0.0, nesterov=False, explicit_decay=0.0):
  """flax.optim.Momentum(beta=0.9) by its definition, in NumPy: L2 added to
  the gradient before the momentum; then the reference's explicit decay."""
  params = initial_params()['dense']
  momentum = {k: np.zeros_like(v) for k, v in params.items()}
  for step, grads in enumerate(zip(GRADS, BIAS_GRADS)):
    lr = 0.1 * 0.5**step
    for name, grad in zip(('kernel', 'bias'), grads):
      grad = grad + weight_decay * params[name]
      momentum[name] = 0.9 * momentum[name] + grad
      direction = grad + 0.9 * momentum[name] if nesterov else momentum[name]
      params[name] = params[name] - lr * direction
    params['kernel'] = (1.0 - lr * explicit_decay) * params['kernel']
  return params


class OptimizerTest(absltest.TestCase):

  def assert_params(self, actual, expected):
    for name in ('kernel', 'bias'):
      np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5,
                                 atol=1e-7)

  def test_momentum_weight_decay_is_l2_on_the_gradient(self):
    self.assert_params(
        run_optimizer(optimizer='momentum',
                      optimizer_configs=dict(momentum=0.9, weight_decay=0.1)),
        flax_momentum(weight_decay=0.1))

  def test_nesterov(self):
    expected = flax_momentum(weight_decay=0.1, nesterov=True)
    self.assert_params(
        run_optimizer(optimizer='nesterov',
                      optimizer_configs=dict(weight_decay=0.1)), expected)
    self.assert_params(
        run_optimizer(optimizer='momentum', optimizer_configs=dict(
            weight_decay=0.1, nesterov=True)), expected)

  def test_explicit_weight_decay_shrinks_kernels_after_the_update(self):
    self.assert_params(
        run_optimizer(optimizer='momentum', explicit_weight_decay=0.5,
                      optimizer_configs=dict(momentum=0.9)),
        flax_momentum(explicit_decay=0.5))

  def test_sgd_has_no_weight_decay(self):
    params = initial_params()['dense']
    for step, grads in enumerate(zip(GRADS, BIAS_GRADS)):
      for name, grad in zip(('kernel', 'bias'), grads):
        params[name] = params[name] - 0.1 * 0.5**step * grad
    self.assert_params(
        run_optimizer(optimizer='sgd',
                      optimizer_configs=dict(weight_decay=0.1)), params)

  def test_per_shard_clipping_leaves_the_clip_to_the_train_step(self):
    clipped = run_optimizer(optimizer='sgd', max_grad_norm=0.1)
    per_shard = run_optimizer(optimizer='sgd', max_grad_norm=0.1,
                              grad_clip_per_shard=True)
    self.assertGreater(np.abs(per_shard['kernel'] - clipped['kernel']).max(),
                       0.1)
    self.assertIn('global norm 0.1', optim.clipping(OptimizerConfig(
        name='sgd', max_grad_norm=0.1)))
    self.assertIn('each data shard', optim.clipping(OptimizerConfig(
        name='sgd', max_grad_norm=0.1, grad_clip_per_shard=True)))

  def test_unknown_optimizer(self):
    config = ml_collections.ConfigDict(dict(
        optimizer='lamb', lr_configs=lr_configs('constant')))
    with self.assertRaisesRegex(ValueError, 'config.optimizer'):
      optim.make_optimizer(config, 10)


if __name__ == '__main__':
  absltest.main()
