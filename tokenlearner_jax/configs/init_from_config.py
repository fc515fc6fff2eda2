"""`config.init_from`, the checkpoint a run fine-tunes from, as a typed section.

Each key is one `fields.field` of `InitFromConfig` and its line in the
`Attributes:` docstring; `configs.schema` takes the section's keys and
defaults from it. `checkpoint_formats` (reading the checkpoint), `surgery`
(fitting it to the model) and the trainer read nothing else of the section.
"""

import dataclasses
from typing import Optional

import ml_collections

from tokenlearner_jax.configs import fields

SECTION = 'init_from'
FORMATS = ('tokenlearner_jax', 'scenic', 'big_vision')
POSEMB_METHODS = ('resize', 'tile', 'resize_tile')
_field = fields.field


@dataclasses.dataclass(frozen=True)
class InitFromConfig:
  """The checkpoint to fine-tune from; no `checkpoint_path`: from scratch.

  Attributes:
    checkpoint_path: The checkpoint (unset: train from scratch).
    checkpoint_format: 'tokenlearner_jax', 'scenic' or 'big_vision'.
    positional_embed_size_change: 'resize', 'tile' or 'resize_tile' the
      position embedding.
    kernel_init_method: 2-D -> 3-D patch kernel inflation when the model does
      not name one.
    init_missing_from_scratch: Keep parameters the checkpoint lacks newly
      initialised.
    restore_positional_embedding: Copy (and fit) the position embedding;
      False keeps it new.
    restore_input_embedding: Copy (and inflate) the patch embedding; False
      keeps it new.
    restore_output_proj: Copy the head (`output_projection`) too, as the
      reference ViViT trainer does: fine-tuning on the same classes.
  """
  checkpoint_path: Optional[str] = _field(
      'checkpoint_path', None, reference=True, reader='checkpoint_formats')
  checkpoint_format: str = _field('checkpoint_format', 'tokenlearner_jax',
                                  choices=FORMATS, reference=True,
                                  reader='checkpoint_formats')
  positional_embed_size_change: Optional[str] = _field(
      'positional_embed_size_change', None,
      choices=(None, '') + POSEMB_METHODS, reference=True, reader='surgery')
  kernel_init_method: Optional[str] = _field('kernel_init_method', None,
                                             reader='surgery')
  init_missing_from_scratch: bool = _field(
      'init_missing_from_scratch', False, check='bool', reader='surgery')
  restore_positional_embedding: bool = _field(
      'restore_positional_embedding', True, check='bool', reference=True,
      reader='surgery')
  restore_input_embedding: bool = _field(
      'restore_input_embedding', True, check='bool', reference=True,
      reader='surgery')
  restore_output_proj: bool = _field('restore_output_proj', False,
                                     check='bool', reader='surgery')

  def __post_init__(self):
    fields.check_fields(self, SECTION)
    fields.require(self.checkpoint_path is None or (
        isinstance(self.checkpoint_path, str)),
                   f'config.{SECTION}.checkpoint_path must be a path, got '
                   f'{self.checkpoint_path!r}.')

  @classmethod
  def from_config(cls,
                  config: ml_collections.ConfigDict) -> 'InitFromConfig':
    """`config.init_from` (unset: none), checked."""
    return cls(**fields.read(cls, config, SECTION))

  @property
  def enabled(self) -> bool:
    """Whether the run starts from a checkpoint."""
    return bool(self.checkpoint_path)
