"""Optimizers and learning-rate schedules from the reference's config keys.

`config.optimizer` ('adam', 'adamw', 'momentum', 'nesterov', 'sgd') with
`config.optimizer_configs`, `config.lr_configs` (scenic's 'compound' schedule:
a `factors` string such as 'constant * linear_warmup * cosine_decay'),
`config.max_grad_norm` and `config.explicit_weight_decay` become one optax
transformation, with the semantics of the flax.optim optimizers and the
`lr_schedules` of scenic's `train_lib_deprecated`, which the reference's ViViT
and TokenLearner trainers use (docs/training.md, "Reference training keys").

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

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
OPTIMIZERS = ('adam', 'adamw', 'momentum', 'nesterov', 'sgd')
_REQUIRED = object()


def _get(lr, name: str, factor: str, default=_REQUIRED):
  """`lr_configs.<name>`; one without a default must be set."""
  value = lr.get(name, None)
  if value is None:
    if default is _REQUIRED:
      raise ValueError(f"lr_configs.{name} is required by the factor "
                       f"{factor!r}.")
    return default
  return value


def _constant(step, ratio, lr, total_steps):
  del step, total_steps
  return ratio * _get(lr, 'base_learning_rate', 'constant')


def _linear_warmup(step, ratio, lr, total_steps):
  """From `warmup_alpha` (a fraction of the rate) to 1 over `warmup_steps`."""
  del total_steps
  warmup = _get(lr, 'warmup_steps', 'linear_warmup')
  if warmup <= 0:
    return ratio
  alpha = lr.get('warmup_alpha', 0.0) or 0.0
  if alpha:
    return ratio * jnp.minimum(1.0, alpha + step * (1.0 - alpha) / warmup)
  return ratio * jnp.minimum(1.0, step / warmup)


def _linear_decay(step, ratio, lr, total_steps):
  """The rate so far, linearly to `end_learning_rate` at `total_steps`."""
  warmup = float(lr.get('warmup_steps', 0) or 0)
  total = float(_get(lr, 'total_steps', 'linear_decay', total_steps))
  end = lr.get('end_learning_rate', 0.0) or 0.0
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


def _cosine_decay(step, ratio, lr, total_steps):
  """Cosine cycles of `steps_per_cycle` (default: the run's steps) starting
  after `warmup_steps + start_decay_step`; each cycle is shortened by its
  share of the warmup; skipped when that leaves no steps."""
  cycle = _get(lr, 'steps_per_cycle', 'cosine_decay', total_steps)
  warmup = lr.get('warmup_steps', 0.0) or 0.0
  total = lr.get('total_steps', None) or cycle
  cycle -= int(warmup / (total / cycle))
  if cycle <= 0:
    return ratio
  start = warmup + (lr.get('start_decay_step', 0.0) or 0.0)
  t_mul = lr.get('t_mul', 1.0)
  factor = _cosine_cycles(jnp.maximum(0.0, step - start), cycle, t_mul,
                          lr.get('m_mul', 1.0), lr.get('alpha', 0.0))
  return ratio * factor


def _rsqrt_decay(step, ratio, lr, total_steps):
  """`1/sqrt(max(step, warmup_steps))`; with `timescale`, scenic's current
  form: 1 until `warmup_steps`, then `sqrt(timescale / (step + timescale -
  warmup_steps))`."""
  del total_steps
  warmup = lr.get('warmup_steps', 0.0) or 0.0
  timescale = lr.get('timescale', None)
  if timescale is None:
    return ratio * (1.0 / jnp.sqrt(jnp.maximum(step, warmup)))
  shifted = step + (timescale - warmup)
  return ratio * jnp.where(warmup < step,
                           math.sqrt(timescale) / jnp.sqrt(shifted), 1.0)


def _rsqrt_normalized_decay(step, ratio, lr, total_steps):
  del total_steps
  warmup = _get(lr, 'warmup_steps', 'rsqrt_normalized_decay')
  return ratio * (math.sqrt(warmup) / jnp.sqrt(jnp.maximum(step, warmup)))


def _polynomial(step, ratio, lr, total_steps):
  """From 1 to `end_factor` over `decay_steps`, as `(1 - step /
  decay_steps)**power`."""
  del total_steps
  decay_steps = _get(lr, 'decay_steps', 'polynomial')
  end = _get(lr, 'end_factor', 'polynomial')
  left = jnp.where(step <= decay_steps, 1.0 - step / decay_steps, 0.0)
  return ratio * ((1.0 - end) * left**_get(lr, 'power', 'polynomial') + end)


def _piecewise_constant(step, ratio, lr, total_steps):
  """`decay_factors[i]` (absolute) once `step` passes `decay_events[i]`."""
  del total_steps
  events = jnp.asarray(_get(lr, 'decay_events', 'piecewise_constant'))
  factors = [1.0] + list(_get(lr, 'decay_factors', 'piecewise_constant'))
  return ratio * jnp.asarray(factors)[jnp.sum(events < step)]


def _piecewise_linear(step, ratio, lr, total_steps):
  """Linear through (0, 1) and each (`decay_events[i]`, `decay_factors[i]`),
  constant after the last event."""
  del total_steps
  events = list(_get(lr, 'decay_events', 'piecewise_linear'))
  factors = list(_get(lr, 'decay_factors', 'piecewise_linear'))
  return ratio * jnp.interp(step, jnp.asarray([0.0] + events, jnp.float32),
                            jnp.asarray([1.0] + factors, jnp.float32))


def _decay_every(step, ratio, lr, total_steps):
  del total_steps
  every = _get(lr, 'steps_per_decay', 'decay_every')
  return ratio * _get(lr, 'decay_factor', 'decay_every')**(step // every)


def _exponential_decay(step, ratio, lr, total_steps):
  """`decay_rate ** (step / decay_steps)`, floored with `staircase`."""
  del total_steps
  progress = step / float(_get(lr, 'decay_steps', 'exponential_decay'))
  if lr.get('staircase', False):
    progress = jnp.floor(progress)
  return ratio * jnp.power(_get(lr, 'decay_rate', 'exponential_decay'),
                           progress)


FACTORS = {
    'constant': _constant,
    'linear_warmup': _linear_warmup,
    'linear_decay': _linear_decay,
    'cosine_decay': _cosine_decay,
    'rsqrt_decay': _rsqrt_decay,
    'rsqrt_normalized_decay': _rsqrt_normalized_decay,
    'polynomial': _polynomial,
    'piecewise_constant': _piecewise_constant,
    'piecewise_linear': _piecewise_linear,
    'decay_every': _decay_every,
    'exponential_decay': _exponential_decay,
}
SCHEDULE_FACTORS = tuple(FACTORS)


def make_schedule(lr_configs: ml_collections.ConfigDict,
                  total_steps: int) -> Schedule:
  """Step -> learning rate: the product of `lr_configs.factors` in order, as
  scenic's `compound_lr_scheduler` (`linear_decay` moves the product so far
  towards `end_learning_rate`)."""
  if lr_configs.learning_rate_schedule != 'compound':
    raise ValueError("lr_configs.learning_rate_schedule must be 'compound', "
                     f'got {lr_configs.learning_rate_schedule!r}.')
  factors = [f.strip() for f in lr_configs.factors.split('*')]
  for name in factors:
    if name not in FACTORS:
      raise ValueError(f'lr_configs.factors: unknown factor {name!r}; known: '
                       f'{SCHEDULE_FACTORS}.')

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ratio = jnp.float32(1.0)
    for name in factors:
      ratio = FACTORS[name](step, ratio, lr_configs, total_steps)
    return jnp.asarray(ratio, jnp.float32)

  schedule(0)  # Raises here for a missing key.
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


def _base_optimizer(config, schedule) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`, as flax.optim defined it."""
  opt = config.get('optimizer_configs') or ml_collections.ConfigDict()
  name = config.optimizer
  decay = opt.get('weight_decay', 0.0) or 0.0
  if name in ('adam', 'adamw'):
    # flax.optim's Adam(weight_decay=...) is decoupled decay scaled by the
    # learning rate, i.e. optax's adamw.
    return optax.adamw(schedule, b1=opt.get('beta1', 0.9),
                       b2=opt.get('beta2', 0.999),
                       eps=opt.get('epsilon', 1e-8), weight_decay=decay)
  if name in ('momentum', 'nesterov'):
    # flax.optim's Momentum: L2 on the gradient (every parameter) before the
    # momentum, so scaled by the learning rate too.
    sgd = optax.sgd(schedule, momentum=opt.get('momentum', 0.9),
                    nesterov=name == 'nesterov' or opt.get('nesterov', False))
    return optax.chain(optax.add_decayed_weights(decay), sgd) if decay else sgd
  if name == 'sgd':
    if decay:
      logging.warning('optimizer_configs.weight_decay=%s has no effect with '
                      "optimizer 'sgd', as in the reference (flax.optim's "
                      "GradientDescent has none); 'momentum' or "
                      'l2_decay_factor decay the weights.', decay)
    return optax.sgd(schedule)
  raise ValueError(f'config.optimizer must be one of {OPTIMIZERS}, got '
                   f'{name!r}.')


def clipping(config: ml_collections.ConfigDict) -> str:
  """How gradients are clipped, in words (the trainer logs it)."""
  if not config.get('max_grad_norm'):
    return 'none'
  if config.get('grad_clip_per_shard'):
    return (f'each data shard to norm {config.max_grad_norm}, before the mean '
            'over shards (grad_clip_per_shard)')
  return f'the mean gradient to global norm {config.max_grad_norm}'


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """Returns `(optax transformation, schedule)` for `config`."""
  schedule = make_schedule(config.lr_configs, total_steps)
  tx = _base_optimizer(config, schedule)
  if config.get('explicit_weight_decay'):
    tx = optax.chain(tx, decay_kernels_after_update(
        schedule, config.explicit_weight_decay))
  if config.get('max_grad_norm'):
    # Per shard, the train step clips; the same state layout either way.
    clip = (optax.identity() if config.get('grad_clip_per_shard') else
            optax.clip_by_global_norm(config.max_grad_norm))
    tx = optax.chain(clip, tx)
  if config.get('skip_nonfinite_steps'):
    # Updates with a non-finite gradient are dropped (the state stays as it
    # was); after `skip_nonfinite_steps` such steps in a row the update goes
    # through, and the trainer stops on the non-finite loss.
    tx = optax.apply_if_finite(
        tx, max_consecutive_errors=int(config.skip_nonfinite_steps))
  return tx, schedule
