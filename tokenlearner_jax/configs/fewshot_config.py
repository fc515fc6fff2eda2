"""`config.fewshot`, the few-shot evaluation's settings, as a typed section.

Each key is one `fields.field` of `FewshotConfig` (key, default, check) and
its line in the `Attributes:` docstring; `configs.schema` takes the section's
keys from it. `FewshotConfig.from_config` reads, checks and completes the
section (`tokenlearner_jax.fewshot` reads nothing else).
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import ml_collections

from tokenlearner_jax import errors
from tokenlearner_jax.configs import fields
from tokenlearner_jax.configs.data_config import DataConfig

SECTION = 'fewshot'


@dataclasses.dataclass(frozen=True)
class FewshotConfig:
  """Few-shot linear evaluation of the frozen pre-logits; unset: none.

  Attributes:
    datasets: Name -> (tfds name, few-shot pool split, test split), e.g.
      {'pets': ('oxford_iiit_pet', 'train', 'test')}.
    shots: Examples per class of the few-shot sets.
    num_seeds: Few-shot sets drawn per dataset and shots, seeds 0..N-1.
    l2_reg: The fixed L2 strength of the ridge regression, big_vision's.
    log_steps: Steps between few-shot evaluations during training (also at
      the end; unset: at the end only).
    image_size: Side the images are cropped to (unset: the model's input
      side).
    crop_fraction: Smaller side resized to image_size / fraction, then the
      central crop; 1.0: a plain resize.
    batch_size: Global batch of the feature extraction (unset:
      eval_batch_size).
    data_dir: tfds data directory (unset: dataset_configs.data_dir).
  """
  datasets: Dict[str, Tuple[str, str, str]] = fields.field('datasets')
  shots: Tuple[int, ...] = fields.field('shots', (1, 5, 10, 25))
  num_seeds: int = fields.field('num_seeds', 3, check='positive')
  l2_reg: float = fields.field('l2_reg', 2.0**10, check='number')
  log_steps: Optional[int] = fields.field('log_steps', None,
                                          check='optional_positive',
                                          reader='train')
  image_size: Optional[int] = fields.field('image_size', None,
                                           check='optional_positive')
  crop_fraction: float = fields.field('crop_fraction', 0.875, check='number')
  batch_size: Optional[int] = fields.field('batch_size', None,
                                           check='optional_positive')
  data_dir: Optional[str] = fields.field('data_dir', None)

  def __post_init__(self):
    fields.check_fields(self, SECTION)
    fields.require(
        isinstance(self.datasets, dict) and bool(self.datasets),
        f'config.{SECTION}.datasets must map names to (tfds name, train '
        f'split, test split), got {self.datasets!r}.')
    for name, entry in self.datasets.items():
      fields.require(
          isinstance(entry, tuple) and len(entry) == 3 and
          all(isinstance(s, str) and s for s in entry),
          f'config.{SECTION}.datasets.{name}={entry!r}: must be (tfds name, '
          "train split, test split), e.g. ('cifar100', 'train', 'test').")
    fields.require(
        bool(self.shots) and all(fields.is_int(k) and k > 0
                                 for k in self.shots),
        f'config.{SECTION}.shots={self.shots!r}: must be integers > 0.')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'FewshotConfig':
    """`config.fewshot`, checked, with its defaults (the batch and data
    directory: the eval batch size and `dataset_configs.data_dir`)."""
    if config.get(SECTION) is None:
      raise errors.ConfigError(f'config.{SECTION} is not set.')
    values = fields.read(cls, config, SECTION)
    values['datasets'] = {n: _tuple(e) for n, e in
                          (values.get('datasets') or {}).items()}
    values.setdefault('batch_size', config.get('eval_batch_size') or
                      config.batch_size)
    values.setdefault('data_dir', DataConfig.from_config(config).data_dir)
    return cls(**values)


def _tuple(value: Any) -> Any:
  return tuple(value) if isinstance(value, (list, tuple)) else value
