"""Optimizers and learning-rate schedules from the reference's config keys.

`config.optimizer` ('adam', 'adamw', 'momentum', 'sgd') with
`config.optimizer_configs`, `config.lr_configs` (scenic's 'compound' schedule:
a `factors` string such as 'constant * linear_warmup * cosine_decay') and
`config.max_grad_norm` become one optax transformation. Gradients are clipped
by their global norm over the whole (sharded) model, after the cross-device
mean that `jax.jit` performs implicitly (the reference's ViViT trainer clipped
per device before its `pmean`).
"""

from typing import Callable

import jax.numpy as jnp
import ml_collections
import optax

SCHEDULE_FACTORS = ('constant', 'linear_warmup', 'linear_decay', 'cosine_decay',
                    'rsqrt_decay')


def make_schedule(lr_configs: ml_collections.ConfigDict,
                  total_steps: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Step -> learning rate, as scenic's `compound_lr_scheduler`."""
  if lr_configs.learning_rate_schedule != 'compound':
    raise ValueError("lr_configs.learning_rate_schedule must be 'compound', got "
                     f'{lr_configs.learning_rate_schedule!r}.')
  factors = [f.strip() for f in lr_configs.factors.split('*')]
  for name in factors:
    if name not in SCHEDULE_FACTORS:
      raise ValueError(f'lr_configs.factors: unknown factor {name!r}; known: '
                       f'{SCHEDULE_FACTORS}.')
  base = lr_configs.base_learning_rate
  warmup = float(lr_configs.get('warmup_steps', 0))
  cycle = float(lr_configs.get('steps_per_cycle', total_steps))
  total = float(lr_configs.get('total_steps', total_steps))
  end = lr_configs.get('end_learning_rate', 0.0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ratio = jnp.float32(1.0)
    for name in factors:
      if name == 'constant':
        ratio *= base
      elif name == 'linear_warmup':
        ratio *= jnp.minimum(1.0, step / max(warmup, 1.0))
      elif name == 'rsqrt_decay':
        ratio /= jnp.sqrt(jnp.maximum(step, warmup))
      elif name == 'cosine_decay':
        progress = jnp.maximum(0.0, (step - warmup) / max(cycle - warmup, 1.0))
        ratio *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
      elif name == 'linear_decay':
        progress = jnp.maximum(0.0, (step - warmup) / max(total - warmup, 1.0))
        ratio = (ratio - end) * jnp.maximum(1.0 - progress, 0.0) + end
    return ratio

  return schedule


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """Returns `(optax transformation, schedule)` for `config`."""
  schedule = make_schedule(config.lr_configs, total_steps)
  opt = config.get('optimizer_configs') or ml_collections.ConfigDict()
  name = config.optimizer
  if name in ('adam', 'adamw'):
    # flax.optim's Adam(weight_decay=...) is decoupled decay scaled by the
    # learning rate, i.e. optax's adamw.
    tx = optax.adamw(schedule, b1=opt.get('beta1', 0.9),
                     b2=opt.get('beta2', 0.999), eps=opt.get('epsilon', 1e-8),
                     weight_decay=opt.get('weight_decay', 0.0))
  elif name in ('momentum', 'sgd'):
    tx = optax.sgd(schedule, momentum=opt.get('momentum', 0.9)
                   if name == 'momentum' else None,
                   nesterov=opt.get('nesterov', False))
  else:
    raise ValueError("config.optimizer must be one of 'adam', 'adamw', "
                     f"'momentum', 'sgd', got {name!r}.")
  if config.get('max_grad_norm'):
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
  if config.get('skip_nonfinite_steps'):
    # Updates with a non-finite gradient are dropped (the state stays as it
    # was); after `skip_nonfinite_steps` such steps in a row the update goes
    # through, and the trainer stops on the non-finite loss.
    tx = optax.apply_if_finite(
        tx, max_consecutive_errors=int(config.skip_nonfinite_steps))
  return tx, schedule
