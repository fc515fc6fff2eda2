"""The optimizer's and the learning-rate schedule's settings, as typed sections.

`OptimizerConfig`: `config.optimizer`, `config.optimizer_configs` and the
update's top-level options (clipping, explicit decay, skipped non-finite
steps). `ScheduleConfig`: `config.lr_configs`, scenic's compound schedule,
whose factors each name the keys they need (`FACTOR_KEYS`, the one list of
factors: `optim.FACTORS` computes each by its name): a missing key is
refused when the config is checked, before anything compiles. Each key is one
`fields.field` and its line in the `Attributes:` docstring; `configs.schema`
takes the sections' keys from them, and `tokenlearner_jax.optim` and the
train step read nothing else.
"""

import dataclasses
from typing import Optional, Tuple

import ml_collections

from tokenlearner_jax.configs import fields

OPTIMIZERS = ('adam', 'adamw', 'momentum', 'nesterov', 'sgd')
# Each schedule factor and the `lr_configs` keys it cannot do without
# (`total_steps` and `steps_per_cycle` default to the run's steps).
FACTOR_KEYS = {
    'constant': ('base_learning_rate',),
    'linear_warmup': ('warmup_steps',),
    'linear_decay': (),
    'cosine_decay': (),
    'rsqrt_decay': (),
    'rsqrt_normalized_decay': ('warmup_steps',),
    'polynomial': ('decay_steps', 'end_factor', 'power'),
    'piecewise_constant': ('decay_events', 'decay_factors'),
    'piecewise_linear': ('decay_events', 'decay_factors'),
    'decay_every': ('steps_per_decay', 'decay_factor'),
    'exponential_decay': ('decay_steps', 'decay_rate'),
}
_field = fields.field


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer and the update's options.

  Attributes:
    name: 'adam', 'adamw', 'momentum', 'nesterov' or 'sgd'.
    beta1: Adam beta1.
    beta2: Adam beta2.
    epsilon: Adam epsilon.
    weight_decay: Adam: decoupled decay (times the learning rate); momentum:
      L2 on the gradient.
    momentum: Momentum of 'momentum' and 'nesterov'.
    nesterov: Nesterov momentum with 'momentum'.
    max_grad_norm: Clip gradients to this global norm (unset: no clipping).
    grad_clip_per_shard: Clip each data shard's gradient before the mean, as
      the reference's ViViT trainer does.
    explicit_weight_decay: After each update, kernels become (1 - lr *
      decay) * w.
    skip_nonfinite_steps: 0: a non-finite loss stops the run; N: skip up to
      N such updates in a row.
  """
  name: Optional[str] = _field('/optimizer', None,
                               choices=(None,) + OPTIMIZERS, reference=True)
  beta1: float = _field('beta1', 0.9, reference=True)
  beta2: float = _field('beta2', 0.999, reference=True)
  epsilon: float = _field('epsilon', 1e-8)
  weight_decay: float = _field('weight_decay', 0.0, reference=True)
  momentum: float = _field('momentum', 0.9)
  nesterov: bool = _field('nesterov', False, check='bool')
  max_grad_norm: Optional[float] = _field('/max_grad_norm', None,
                                          reference=True)
  grad_clip_per_shard: bool = _field('/grad_clip_per_shard', False,
                                     check='bool', reader='train_steps')
  explicit_weight_decay: Optional[float] = _field(
      '/explicit_weight_decay', None, reference=True)
  skip_nonfinite_steps: int = _field('/skip_nonfinite_steps', 0)

  def __post_init__(self):
    fields.check_fields(self, SECTIONS[type(self)])
    fields.require(fields.is_int(self.skip_nonfinite_steps) and
                   self.skip_nonfinite_steps >= 0,
                   'config.skip_nonfinite_steps must be an integer >= 0, got '
                   f'{self.skip_nonfinite_steps!r}.')
    fields.check_optional_nonnegative(
        self, ('max_grad_norm', 'explicit_weight_decay'), SECTIONS[type(self)])

  @classmethod
  def from_config(cls,
                  config: ml_collections.ConfigDict) -> 'OptimizerConfig':
    """The optimizer of `config`, checked (`name` None where `config`
    sets none: the train step reads only the clipping)."""
    return cls(**fields.read(cls, config, SECTIONS[cls]))

  @property
  def clips(self) -> bool:
    return bool(self.max_grad_norm)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Scenic's compound learning-rate schedule: the product of its factors.

  Attributes:
    learning_rate_schedule: 'compound'.
    factors: Factors multiplied, e.g. 'constant * linear_warmup *
      cosine_decay'.
    base_learning_rate: The constant factor.
    warmup_steps: Steps of linear_warmup (and the decays start after them).
    warmup_alpha: linear_warmup starts at this fraction.
    steps_per_cycle: Steps of a cosine_decay cycle (unset: the run's).
    total_steps: Steps of linear_decay (and of cosine_decay with restarts;
      unset: the run's).
    end_learning_rate: Where linear_decay ends.
    alpha: cosine_decay ends at this fraction.
    t_mul: cosine_decay: cycle length factor per restart.
    m_mul: cosine_decay: peak factor per restart.
    start_decay_step: cosine_decay starts this many steps after the warmup.
    timescale: rsqrt_decay: scenic's current form, 1 until warmup_steps then
      sqrt(timescale / ...).
    decay_steps: Steps of polynomial and exponential_decay.
    end_factor: polynomial ends at this fraction.
    power: polynomial exponent.
    decay_events: piecewise_constant and piecewise_linear: the steps of each
      decay.
    decay_factors: piecewise_constant and piecewise_linear: the factor from
      each event on.
    decay_rate: exponential_decay rate.
    staircase: exponential_decay in steps.
    steps_per_decay: decay_every: steps between decays.
    decay_factor: decay_every: factor per decay.
  """
  learning_rate_schedule: str = _field(
      'learning_rate_schedule', choices=('compound',), reference=True,
      reader='configs.optim_config')
  factors: str = _field('factors', reference=True)
  base_learning_rate: Optional[float] = _field('base_learning_rate', None,
                                               reference=True)
  warmup_steps: Optional[float] = _field('warmup_steps', None, reference=True)
  warmup_alpha: float = _field('warmup_alpha', 0.0)
  steps_per_cycle: Optional[int] = _field('steps_per_cycle', None,
                                          reference=True)
  total_steps: Optional[int] = _field('total_steps', None, reference=True)
  end_learning_rate: float = _field('end_learning_rate', 0.0,
                                    reference=True)
  alpha: float = _field('alpha', 0.0)
  t_mul: float = _field('t_mul', 1.0)
  m_mul: float = _field('m_mul', 1.0)
  start_decay_step: float = _field('start_decay_step', 0.0)
  timescale: Optional[float] = _field('timescale', None)
  decay_steps: Optional[float] = _field('decay_steps', None)
  end_factor: Optional[float] = _field('end_factor', None)
  power: Optional[float] = _field('power', None)
  decay_events: Optional[Tuple[float, ...]] = _field('decay_events', None)
  decay_factors: Optional[Tuple[float, ...]] = _field('decay_factors', None)
  decay_rate: Optional[float] = _field('decay_rate', None)
  staircase: bool = _field('staircase', False, check='bool')
  steps_per_decay: Optional[int] = _field('steps_per_decay', None)
  decay_factor: Optional[float] = _field('decay_factor', None)

  def __post_init__(self):
    section = SECTIONS[type(self)]
    fields.check_fields(self, section)
    fields.require(isinstance(self.factors, str),
                   f'config.{section}.factors must be a string such as '
                   f"'constant * cosine_decay', got {self.factors!r}.")
    for name in self.factor_names:
      fields.require(name in FACTOR_KEYS,
                     f'config.{section}.factors: unknown factor {name!r}; '
                     f'known: {tuple(FACTOR_KEYS)}.')
      for key in FACTOR_KEYS[name]:
        fields.require(getattr(self, key) is not None,
                       f'config.{section}.{key} is required by the factor '
                       f'{name!r}.')

  @property
  def factor_names(self) -> Tuple[str, ...]:
    return tuple(f.strip() for f in self.factors.split('*'))

  @classmethod
  def from_config(cls,
                  config: ml_collections.ConfigDict) -> 'ScheduleConfig':
    """`config.lr_configs`, checked."""
    section = SECTIONS[cls]
    fields.require(config.get(section) is not None,
                   f'config.{section} is not set: the learning-rate '
                   "schedule, e.g. factors='constant * cosine_decay'.")
    for key in ('learning_rate_schedule', 'factors'):
      fields.require(config[section].get(key) is not None,
                     f'config.{section}.{key} is not set.')
    return cls(**fields.read(cls, config, section))


SECTIONS = {OptimizerConfig: 'optimizer_configs',
            ScheduleConfig: 'lr_configs'}
