"""Optimizers and learning-rate schedules from the reference's config keys.

`config.optimizer` ('adam', 'adamw', 'momentum', 'nesterov', 'sgd') with
`config.optimizer_configs`, `config.lr_configs` (scenic's 'compound' schedule:
a `factors` string such as 'constant * linear_warmup * cosine_decay'),
`config.max_grad_norm` and `config.explicit_weight_decay` become one optax
transformation, with the semantics of the flax.optim optimizers and the
`lr_schedules` of scenic's `train_lib_deprecated`, which the reference's ViViT
and TokenLearner trainers use (docs/training.md, "Reference training keys").
The keys are read and checked as `configs.optim_config`'s typed sections
(`OptimizerConfig`, `ScheduleConfig`); nothing here reads the config itself.

Gradients are clipped by their global norm over the whole (sharded) model,
after the cross-device mean that `jax.jit` performs implicitly, as the
reference's classification trainer does. With `config.grad_clip_per_shard`
the train step clips each data shard's gradient before the mean instead (the
reference's ViViT trainer), and the transformation here does not clip again.
"""

import math
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tokenlearner_jax import errors
from tokenlearner_jax.configs import optim_config
from tokenlearner_jax.configs.optim_config import OptimizerConfig
from tokenlearner_jax.configs.optim_config import ScheduleConfig

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
OPTIMIZERS = optim_config.OPTIMIZERS


def _constant(step, ratio, lr: ScheduleConfig, total_steps):
  del step, total_steps
  return ratio * lr.base_learning_rate


def _linear_warmup(step, ratio, lr: ScheduleConfig, total_steps):
  """From `warmup_alpha` (a fraction of the rate) to 1 over `warmup_steps`."""
  del total_steps
  warmup = lr.warmup_steps
  if warmup <= 0:
    return ratio
  if lr.warmup_alpha:
    alpha = lr.warmup_alpha
    return ratio * jnp.minimum(1.0, alpha + step * (1.0 - alpha) / warmup)
  return ratio * jnp.minimum(1.0, step / warmup)


def _linear_decay(step, ratio, lr: ScheduleConfig, total_steps):
  """The rate so far, linearly to `end_learning_rate` at `total_steps`."""
  warmup = float(lr.warmup_steps or 0)
  total = float(lr.total_steps or total_steps)
  end = lr.end_learning_rate
  progress = jnp.maximum(0.0, (step - warmup) / max(total - warmup, 1.0))
  return (ratio - end) * jnp.maximum(1.0 - progress, 0.0) + end


def _cosine_cycles(step, cycle, t_mul, m_mul, alpha):
  """Cosine from 1 to `alpha` over `cycle` steps, then restarts: cycle i
  lasts `cycle * t_mul**i` steps and starts at `m_mul**i`."""
  progress = step / float(cycle)
  if t_mul == 1.0:
    restart = jnp.floor(progress)
    progress -= restart
  else:
    restart = jnp.floor(jnp.log(1.0 - progress * (1.0 - t_mul)) /
                        math.log(t_mul))
    done = (1.0 - t_mul**restart) / (1.0 - t_mul)  # Cycles before this one.
    progress = (progress - done) / t_mul**restart
  decay = jnp.maximum(
      0.0, 0.5 * m_mul**restart * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
  return (1.0 - alpha) * decay + alpha


def _cosine_decay(step, ratio, lr: ScheduleConfig, total_steps):
  """Cosine cycles of `steps_per_cycle` (default: the run's steps) starting
  after `warmup_steps + start_decay_step`; each cycle is shortened by its
  share of the warmup; skipped when that leaves no steps."""
  cycle = lr.steps_per_cycle or total_steps
  warmup = lr.warmup_steps or 0.0
  total = lr.total_steps or cycle
  cycle -= int(warmup / (total / cycle))
  if cycle <= 0:
    return ratio
  start = warmup + lr.start_decay_step
  factor = _cosine_cycles(jnp.maximum(0.0, step - start), cycle, lr.t_mul,
                          lr.m_mul, lr.alpha)
  return ratio * factor


def _rsqrt_decay(step, ratio, lr: ScheduleConfig, total_steps):
  """`1/sqrt(max(step, warmup_steps))`; with `timescale`, scenic's current
  form: 1 until `warmup_steps`, then `sqrt(timescale / (step + timescale -
  warmup_steps))`."""
  del total_steps
  warmup = lr.warmup_steps or 0.0
  timescale = lr.timescale
  if timescale is None:
    return ratio * (1.0 / jnp.sqrt(jnp.maximum(step, warmup)))
  shifted = step + (timescale - warmup)
  return ratio * jnp.where(warmup < step,
                           math.sqrt(timescale) / jnp.sqrt(shifted), 1.0)


def _rsqrt_normalized_decay(step, ratio, lr: ScheduleConfig, total_steps):
  del total_steps
  warmup = lr.warmup_steps
  return ratio * (math.sqrt(warmup) / jnp.sqrt(jnp.maximum(step, warmup)))


def _polynomial(step, ratio, lr: ScheduleConfig, total_steps):
  """From 1 to `end_factor` over `decay_steps`, as `(1 - step /
  decay_steps)**power`."""
  del total_steps
  decay_steps, end = lr.decay_steps, lr.end_factor
  left = jnp.where(step <= decay_steps, 1.0 - step / decay_steps, 0.0)
  return ratio * ((1.0 - end) * left**lr.power + end)


def _piecewise_constant(step, ratio, lr: ScheduleConfig, total_steps):
  """`decay_factors[i]` (absolute) once `step` passes `decay_events[i]`."""
  del total_steps
  events = jnp.asarray(lr.decay_events)
  factors = [1.0] + list(lr.decay_factors)
  return ratio * jnp.asarray(factors)[jnp.sum(events < step)]


def _piecewise_linear(step, ratio, lr: ScheduleConfig, total_steps):
  """Linear through (0, 1) and each (`decay_events[i]`, `decay_factors[i]`),
  constant after the last event."""
  del total_steps
  events, factors = list(lr.decay_events), list(lr.decay_factors)
  return ratio * jnp.interp(step, jnp.asarray([0.0] + events, jnp.float32),
                            jnp.asarray([1.0] + factors, jnp.float32))


def _decay_every(step, ratio, lr: ScheduleConfig, total_steps):
  del total_steps
  return ratio * lr.decay_factor**(step // lr.steps_per_decay)


def _exponential_decay(step, ratio, lr: ScheduleConfig, total_steps):
  """`decay_rate ** (step / decay_steps)`, floored with `staircase`."""
  del total_steps
  progress = step / float(lr.decay_steps)
  if lr.staircase:
    progress = jnp.floor(progress)
  return ratio * jnp.power(lr.decay_rate, progress)


# Each factor `optim_config.FACTOR_KEYS` declares (with the keys it needs),
# computed by the function of its name.
FACTORS = {name: globals()[f'_{name}'] for name in optim_config.FACTOR_KEYS}


def make_schedule(lr: ScheduleConfig, total_steps: int) -> Schedule:
  """Step -> learning rate: the product of `lr.factors` in order, as scenic's
  `compound_lr_scheduler` (`linear_decay` moves the product so far towards
  `end_learning_rate`)."""
  factors = lr.factor_names

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ratio = jnp.float32(1.0)
    for name in factors:
      ratio = FACTORS[name](step, ratio, lr, total_steps)
    return jnp.asarray(ratio, jnp.float32)

  return schedule


def _path_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator='/')


def decay_kernels_after_update(schedule: Schedule,
                               decay: float) -> optax.GradientTransformation:
  """The reference's `explicit_weight_decay`: after the optimizer's update,
  every parameter with 'kernel' in its path becomes `(1 - lr * decay) * w`,
  `lr` the schedule's rate at this step."""

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params):
    shrink = schedule(state.count) * decay

    def decayed(path, u, w):
      if 'kernel' not in _path_name(path):
        return u
      return u - shrink * (w + u)  # (1 - shrink) * (w + u) - w

    updates = jax.tree_util.tree_map_with_path(decayed, updates, params)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def _base_optimizer(opt: OptimizerConfig,
                    schedule: Schedule) -> optax.GradientTransformation:
  """The optimizer `opt.name`, as flax.optim defined it."""
  if opt.name in ('adam', 'adamw'):
    # flax.optim's Adam(weight_decay=...) is decoupled decay scaled by the
    # learning rate, i.e. optax's adamw.
    return optax.adamw(schedule, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon,
                       weight_decay=opt.weight_decay)
  if opt.name in ('momentum', 'nesterov'):
    # flax.optim's Momentum: L2 on the gradient (every parameter) before the
    # momentum, so scaled by the learning rate too.
    sgd = optax.sgd(schedule, momentum=opt.momentum,
                    nesterov=opt.name == 'nesterov' or opt.nesterov)
    return (optax.chain(optax.add_decayed_weights(opt.weight_decay), sgd)
            if opt.weight_decay else sgd)
  if opt.weight_decay:  # 'sgd'
    logging.warning('optimizer_configs.weight_decay=%s has no effect with '
                    "optimizer 'sgd', as in the reference (flax.optim's "
                    "GradientDescent has none); 'momentum' or "
                    'l2_decay_factor decay the weights.', opt.weight_decay)
  return optax.sgd(schedule)


def clipping(opt: OptimizerConfig) -> str:
  """How gradients are clipped, in words (the trainer logs it)."""
  if not opt.clips:
    return 'none'
  if opt.grad_clip_per_shard:
    return (f'each data shard to norm {opt.max_grad_norm}, before the mean '
            'over shards (grad_clip_per_shard)')
  return f'the mean gradient to global norm {opt.max_grad_norm}'


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """Returns `(optax transformation, schedule)` for `config` (its
  `OptimizerConfig` and `ScheduleConfig`)."""
  opt = OptimizerConfig.from_config(config)
  if opt.name is None:
    raise errors.ConfigError(
        f'config.optimizer is not set: one of {OPTIMIZERS}.')
  schedule = make_schedule(ScheduleConfig.from_config(config), total_steps)
  tx = _base_optimizer(opt, schedule)
  if opt.explicit_weight_decay:
    tx = optax.chain(tx, decay_kernels_after_update(
        schedule, opt.explicit_weight_decay))
  if opt.clips:
    # Per shard, the train step clips; the same state layout either way.
    clip = (optax.identity() if opt.grad_clip_per_shard else
            optax.clip_by_global_norm(opt.max_grad_norm))
    tx = optax.chain(clip, tx)
  if opt.skip_nonfinite_steps:
    # Updates with a non-finite gradient are dropped (the state stays as it
    # was); after `skip_nonfinite_steps` such steps in a row the update goes
    # through, and the trainer stops on the non-finite loss.
    tx = optax.apply_if_finite(
        tx, max_consecutive_errors=opt.skip_nonfinite_steps)
  return tx, schedule
