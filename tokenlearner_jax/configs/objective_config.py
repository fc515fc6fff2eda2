"""The train step's objective and its options, as a typed section of
top-level keys: label smoothing, L2 decay, SAM, mixup, the head's initial
bias and `fast`. Each key is one `fields.field` and its line in the
`Attributes:` docstring; `configs.schema` takes the keys from them, and
`tokenlearner_jax.train_steps` reads nothing else of them.
"""

import dataclasses
from typing import Optional

import ml_collections

from tokenlearner_jax.configs import fields

_field = fields.field
MIXUP = 'mixup'  # The section of `mixup_alpha`.


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """What the train step minimises, and how.

  Attributes:
    label_smoothing: Label smoothing of the softmax cross-entropy.
    l2_decay_factor: 0.5 * factor * ||params||^2 added to the training loss.
    sam_rho: Sharpness-aware minimisation radius (unset: off).
    mixup_alpha: Mixup Beta(alpha, alpha); None or 0: off.
    init_head_bias: Initial bias of the head's logits (e.g. -10 for the
      sigmoid head).
    fast: Set by every config's `fast` argument: on TPU and GPU devices,
      bf16 compute (parameters and optimizer state stay fp32) and the
      platform's flash attention ('splash', 'cudnn') where the model keeps
      its math with it (no attention dropout, no ToMe, EViT or ATS); nothing
      on CPU, where fp32 and the einsum are fastest.
  """
  label_smoothing: Optional[float] = _field('/label_smoothing', None,
                                            reference=True)
  l2_decay_factor: Optional[float] = _field('/l2_decay_factor', None,
                                            reference=True)
  sam_rho: Optional[float] = _field('/sam_rho', None)
  mixup_alpha: Optional[float] = _field(f'/{MIXUP}.alpha', None,
                                        reader='configs.objective_config')
  init_head_bias: Optional[float] = _field('/init_head_bias', None,
                                           reference=True)
  fast: bool = _field('/fast', False, check='bool')

  def __post_init__(self):
    fields.check_fields(self, '')
    fields.require(self.label_smoothing is None or (
        fields.is_number(self.label_smoothing) and
        0 <= self.label_smoothing < 1),
                   'config.label_smoothing must be in [0, 1), got '
                   f'{self.label_smoothing!r}.')
    fields.check_optional_nonnegative(
        self, ('l2_decay_factor', 'sam_rho', 'mixup_alpha'), '')
    fields.require(self.init_head_bias is None or
                   fields.is_number(self.init_head_bias),
                   'config.init_head_bias must be a number, got '
                   f'{self.init_head_bias!r}.')

  @classmethod
  def from_config(cls,
                  config: ml_collections.ConfigDict) -> 'ObjectiveConfig':
    """The objective of `config`, checked; defaults where it sets none."""
    return cls(**fields.read(cls, config, ''))
