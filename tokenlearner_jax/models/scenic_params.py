"""Loading parameter trees written by the reference (scenic) code.

`build_model` keeps the reference's parameter layout (`embedding`, `cls`,
`Transformer/posembed_input`, `Transformer/encoderblock_{i}`,
`Transformer/TokenLearnerModuleV11_{k}` or `TokenLearnerModule_{k}`,
`Transformer/TokenFuser_{k}`, `Transformer/encoder_norm`, `pre_logits`,
`output_projection`), so conversion is the identity on the arrays. What this
module adds is a check that the tree fits the config, with an error naming
what is missing or unexpected instead of a shape error deep inside `apply`.
"""

from typing import Any, Dict, Set

import flax
import jax.numpy as jnp
import ml_collections

from tokenlearner_jax.models.config import ModelConfig


def expected_modules(config: ml_collections.ConfigDict) -> Set[str]:
  """Top-level and `Transformer/*` module names the reference writes."""
  # The names do not depend on the number of classes.
  model = ModelConfig.from_config(config, num_classes=1)
  names = {'embedding', 'output_projection'}
  if model.representation_size is not None:
    names.add('pre_logits')
  if model.attention_type == 'factorized_encoder':
    for part, size in (('SpatialTransformer', model.spatial_transformer),
                       ('TemporalTransformer', model.temporal_transformer)):
      if model.has_cls_token:
        names.add(f'cls_{part}')
      names |= {f'{part}/posembed_input', f'{part}/encoder_norm'}
      names |= {f'{part}/encoderblock_{i}' for i in range(size.num_layers)}
    return names
  if model.has_cls_token:
    names.add('cls')
  names |= {'Transformer/posembed_input', 'Transformer/encoder_norm'}
  names |= {f'Transformer/encoderblock_{i}' for i in range(model.num_layers)}
  if model.tokenlearner_on:
    loc = model.tokenlearner_loc
    learner = 'TokenLearnerModuleV11' if model.use_v11 else 'TokenLearnerModule'
    count = model.num_layers - loc if model.use_tokenfuse else 1
    names |= {f'Transformer/{learner}_{k}' for k in range(count)}
    if model.use_tokenfuse:
      names |= {f'Transformer/TokenFuser_{k}' for k in range(count)}
  return names


def _module_names(params: Dict[str, Any]) -> Set[str]:
  names = set()
  for key, value in params.items():
    if key.endswith('Transformer') and isinstance(value, dict):
      names |= {f'{key}/{sub}' for sub in value}
    else:
      names.add(key)
  return names


def from_scenic_params(params: Any,
                       config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Returns `build_model(config, ...)` parameters from a reference tree.

  Args:
    params: The reference's parameter tree (`train_state.params`, or
      `optimizer.target` of the deprecated TrainState); a `{'params': ...}`
      wrapper and logically partitioned (boxed) leaves are accepted too.
    config: The config the tree was trained with.

  Raises:
    ValueError: listing the modules that are missing or unexpected for config.
  """
  params = flax.core.unfreeze(flax.linen.meta.unbox(params))
  if set(params) == {'params'}:
    params = params['params']
  expected, found = expected_modules(config), _module_names(params)
  if expected != found:
    raise ValueError(
        'Parameter tree does not match config.model: missing '
        f'{sorted(expected - found)}, unexpected {sorted(found - expected)}.')
  return flax.traverse_util.unflatten_dict({
      k: jnp.asarray(v)
      for k, v in flax.traverse_util.flatten_dict(params).items()})
