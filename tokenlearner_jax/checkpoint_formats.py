"""Checkpoint formats: pretrained parameters read into our layout.

`load_params(InitFromConfig.from_config(config))` reads a checkpoint into our
parameter layout (a nested dict of numpy arrays, per-layer:
`layer_layout.unstack_layers`):
  * 'tokenlearner_jax': a workdir of this trainer (`checkpoint.restore_params`
    of its latest checkpoint, parameters only; `load_variables` also reads
    its model state, such as BatchNorm's `batch_stats`, which
    `fit_model_state` puts into a new model's);
  * 'scenic': a reference (scenic) flax msgpack file, or a directory of
    `checkpoint_<step>` files; both of scenic's TrainState layouts load;
  * 'big_vision': a big_vision / vision_transformer `.npz` (the format public
    ViT weights ship in): scanned blocks, pre-linen names, `head` and the
    top-level position embedding are mapped to ours (`from_big_vision`).
`surgery.init_params` then fits the result into a new model.

`build_model` keeps the reference's parameter layout (`embedding`, `cls`,
`Transformer/posembed_input`, `Transformer/encoderblock_{i}`,
`Transformer/TokenLearnerModuleV11_{k}` or `TokenLearnerModule_{k}`,
`Transformer/TokenFuser_{k}`, `Transformer/encoder_norm`, `pre_logits`,
`output_projection`), so a reference tree needs no conversion:
`from_scenic_params` checks that it fits a config (`expected_modules`), with
an error naming what is missing or unexpected instead of a shape error deep
inside `apply`.
"""

import io
import math
import re
from typing import Any, Callable, Dict, Mapping, Set

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import layer_layout
from tokenlearner_jax.configs import init_from_config
from tokenlearner_jax.configs.init_from_config import InitFromConfig
from tokenlearner_jax.models.config import ModelConfig

Params = Dict[str, Any]

FORMATS = init_from_config.FORMATS
POSEMB = 'Transformer/posembed_input/pos_embedding'
# Encoder-block children of checkpoints converted from pre-linen flax (the
# published vision_transformer weights) -> their linen names (ours).
PRE_LINEN_BLOCK_NAMES = {
    'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
    'LayerNorm_2': 'LayerNorm_1',
    'MlpBlock_3': 'MlpBlock_0',
}
# big_vision's scanned blocks: `Transformer/encoderblock/X` `[depth, ...]`.
BIG_VISION_SCANNED = 'Transformer/encoderblock/'


def load_params(init_from: InitFromConfig) -> Params:
  """Parameters of `init_from.checkpoint_path`, in our layout, as numpy.

  Args:
    init_from: `checkpoint_path` and `checkpoint_format`, one of `FORMATS`
      (default 'tokenlearner_jax'; see the module docstring).

  Raises:
    ValueError: for an unknown format or a file without parameters.
    FileNotFoundError: naming the path when there is nothing to read.
  """
  return load_variables(init_from, model_state=False)['params']


def load_variables(init_from: InitFromConfig,
                   model_state: bool = True) -> Dict[str, Params]:
  """`{'params': load_params(init_from), **model_state}`, as numpy: the
  model state (the checkpoint's non-`params` collections, such as
  `batch_stats`) comes only from a workdir of this trainer that holds one,
  else it is empty. `model_state=False` reads the parameters alone.

  Raises:
    As `load_params`.
  """
  if not init_from.enabled:
    raise ValueError('init_from.checkpoint_path is not set.')
  path, fmt = init_from.checkpoint_path, init_from.checkpoint_format
  loaders = {'tokenlearner_jax': load_workdir, 'scenic': load_scenic,
             'big_vision': load_big_vision}
  if fmt == 'tokenlearner_jax' and model_state:
    variables = load_workdir_variables(str(path))
  else:
    variables = {'params': loaders[fmt](str(path))}
  logging.info('Loaded %d pretrained arrays (%s format) from %s.',
               len(flax.traverse_util.flatten_dict(variables)), fmt, path)
  return variables


def load_workdir(workdir: str) -> Params:
  """`params` of the latest checkpoint of a workdir of this trainer.

  Only the parameters are read (not the optimizer state), as numpy arrays in
  the per-layer layout.
  """
  return layer_layout.per_layer(_read_workdir(workdir,
                                              checkpoint.restore_params))


def load_workdir_variables(workdir: str) -> Dict[str, Params]:
  """As `load_workdir`, with the checkpoint's model state:
  `{'params': ..., **model_state}` (`checkpoint.restore_variables`)."""
  variables = _read_workdir(workdir, checkpoint.restore_variables)
  params = variables.pop('params')
  return {'params': layer_layout.per_layer(params), **variables}


def _read_workdir(workdir: str, restore: Callable[[str], Params]) -> Params:
  """`restore(workdir)` as numpy, its errors naming the config key."""
  try:
    params = restore(workdir)
  except FileNotFoundError as e:
    raise errors.MissingFileError(
        f'init_from.checkpoint_path: {str(e).rstrip(".")} '
        "(checkpoint_format='tokenlearner_jax' "
        'reads a workdir of this trainer).') from e
  except ValueError as e:
    raise ValueError(f'init_from.checkpoint_path: {e}') from e
  return _as_numpy(params)


def fit_model_state(model_state: Params, pretrained: Params) -> Params:
  """`model_state` (a new model's, `TrainState.model_state`) with each leaf
  that `pretrained` (`load_variables` without `params`) has under the same
  name and shape taken from it, in the new leaf's dtype and sharding; the
  others stay new. One log line names what was taken and what was kept."""
  new = flax.traverse_util.flatten_dict(flax.core.unfreeze(model_state),
                                        sep='/')
  if not new:
    return model_state
  old = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained),
                                        sep='/')
  merged, kept = {}, []
  for name, value in new.items():
    if name in old and np.shape(old[name]) == tuple(value.shape):
      array = np.asarray(old[name]).astype(value.dtype)
      sharding = getattr(value, 'sharding', None)
      merged[name] = (array if sharding is None
                      else jax.device_put(array, sharding))
    else:
      merged[name] = value
      kept.append(name)
  logging.info('Initialised %d model state arrays from the pretrained '
               'checkpoint; kept new: %s.', len(merged) - len(kept), kept)
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def latest_scenic_file(path: str) -> epath.Path:
  """`path` itself, or its `checkpoint_<step>` file of the largest step."""
  path = epath.Path(path)
  if not path.exists():
    raise errors.MissingFileError(
        f'init_from.checkpoint_path: {path} does not exist.')
  if not path.is_dir():
    return path
  steps = {int(m.group(1)): f for f in path.iterdir()
           if (m := re.fullmatch(r'checkpoint_(\d+)', f.name))}
  if not steps:
    raise errors.MissingFileError(
        'init_from.checkpoint_path: no checkpoint_<step> file in the '
        f'directory {path}.')
  return steps[max(steps)]


def load_scenic(path: str) -> Params:
  """Parameters of a reference (scenic) flax msgpack checkpoint.

  Both TrainState layouts load: `params` (scenic's current one) and the
  deprecated `optimizer.target` (what `init_token_learner_from_train_state`
  reads).
  """
  file = latest_scenic_file(path)
  tree = flax.serialization.msgpack_restore(file.read_bytes())
  if not isinstance(tree, dict):
    raise ValueError(f'init_from.checkpoint_path: {file} holds a '
                     f'{type(tree).__name__}, not a TrainState.')
  if 'params' in tree:
    params = tree['params']
  elif isinstance(tree.get('optimizer'), dict) and (
      'target' in tree['optimizer']):
    params = tree['optimizer']['target']
  else:
    raise ValueError(f'init_from.checkpoint_path: {file} holds neither '
                     '`params` nor `optimizer.target`; its top-level keys are '
                     f'{sorted(tree)}.')
  if isinstance(params, dict) and set(params) == {'params'}:
    params = params['params']  # A variables dict: {'params': {...}}.
  return _as_numpy(params)


def load_big_vision(path: str) -> Params:
  """Parameters of a big_vision or vision_transformer `.npz`, in our layout."""
  file = epath.Path(path)
  if not file.exists():
    raise errors.MissingFileError(
        f'init_from.checkpoint_path: {file} does not exist.')
  with file.open('rb') as f:  # np.load seeks: read it whole first.
    loaded = np.load(io.BytesIO(f.read()), allow_pickle=False)
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise ValueError(f'init_from.checkpoint_path: {file} is not an .npz '
                     "archive (checkpoint_format='big_vision').")
  with loaded:
    flat = {name: loaded[name] for name in loaded.files}
  return from_big_vision(flat)


def from_big_vision(flat: Mapping[str, np.ndarray]) -> Params:
  """Our parameter tree from flat '/'-joined big_vision / vit_jax names.

  * A `params/` prefix (big_vision saves the whole train state) is stripped
    and anything outside it (optimizer state) dropped.
  * Scanned blocks `Transformer/encoderblock/...` `[depth, ...]` are unstacked
    into `Transformer/encoderblock_{i}/...` (`scanned_as_ours`, then
    `layer_layout.unstack_layers`).
  * Pre-linen block children (`MultiHeadDotProductAttention_1`, `LayerNorm_2`,
    `MlpBlock_3`, in the vision_transformer weights) get their linen names.
  * big_vision's top-level `pos_embedding` (and the older
    `Transformer/pos_embedding`) moves to `Transformer/posembed_input`.
    big_vision adds it before prepending `cls`, so with a class token a zero
    row is prepended for the `cls` position (our model adds the embedding
    after): the same function. Old checkpoints whose embedding already has the
    `cls` row (`1 + s*s` rows) are kept.
  * `head` becomes `output_projection`.
  """
  flat = {name: _bfloat16_fixed(np.asarray(value))
          for name, value in flat.items()}
  if any(name.startswith('params/') for name in flat):
    flat = {name[len('params/'):]: value for name, value in flat.items()
            if name.startswith('params/')}
  flat = layer_layout.unstack_layers(scanned_as_ours(flat))
  renamed: Dict[str, np.ndarray] = {}
  cls_row_missing = False
  for name, value in flat.items():
    new_name = big_vision_name(name)
    if new_name in renamed:
      raise ValueError(f'big_vision checkpoint: both {name} and another array '
                       f'map to {new_name}.')
    if name in ('pos_embedding', 'Transformer/pos_embedding'):
      cls_row_missing = not _has_combined_cls_row(value.shape[1])
    renamed[new_name] = value
  if 'cls' in renamed and cls_row_missing:
    posemb = renamed[POSEMB]  # [1, h*w, D]
    zeros = np.zeros_like(posemb[:, :1])  # [1, 1, D]
    renamed[POSEMB] = np.concatenate([zeros, posemb], axis=1)  # [1, 1+h*w, D]
  return flax.traverse_util.unflatten_dict(renamed, sep='/')


def scanned_as_ours(flat: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """big_vision's `Transformer/encoderblock/X` `[depth, ...]` renamed to our
  scanned segment `Transformer/encoderblock_0_to_{depth - 1}/X`, which
  `layer_layout.unstack_layers` splits (and checks) like our own."""
  depths = {np.shape(value)[0] if np.ndim(value) else 0
            for name, value in flat.items()
            if name.startswith(BIG_VISION_SCANNED)}
  if not depths:
    return dict(flat)
  if len(depths) > 1 or 0 in depths:
    raise ValueError('big_vision checkpoint: the scanned '
                     f'{BIG_VISION_SCANNED}* arrays have leading axes '
                     f'{sorted(depths)}, not one layer axis.')
  segment = f'Transformer/encoderblock_0_to_{depths.pop() - 1}/'
  return {(segment + name[len(BIG_VISION_SCANNED):]
           if name.startswith(BIG_VISION_SCANNED) else name): value
          for name, value in flat.items()}


def big_vision_name(name: str) -> str:
  """Our name of one flat big_vision / vision_transformer array name."""
  if name in ('pos_embedding', 'Transformer/pos_embedding'):
    return POSEMB
  parts = name.split('/')
  if parts[0] == 'head':
    parts[0] = 'output_projection'
  if (len(parts) > 2 and parts[0] == 'Transformer' and
      re.fullmatch(r'encoderblock_\d+', parts[1])):
    parts[2] = PRE_LINEN_BLOCK_NAMES.get(parts[2], parts[2])
  return '/'.join(parts)


def _has_combined_cls_row(length: int) -> bool:
  """Whether a big_vision embedding of `length` rows is `1 + s*s` (old)."""
  side = math.isqrt(max(length - 1, 0))
  return length > 1 and side * side + 1 == length


def _bfloat16_fixed(value: np.ndarray) -> np.ndarray:
  """bfloat16 arrays that `np.savez` stored as raw 2-byte voids."""
  if value.dtype.kind == 'V' and value.dtype.itemsize == 2:
    return value.view(jnp.bfloat16)
  return value


def _as_numpy(tree: Any) -> Params:
  """A nested dict of numpy arrays (from frozen dicts or device arrays)."""
  tree = flax.core.unfreeze(tree)
  return jax.tree_util.tree_map(np.asarray, tree)


# ------------------------------------------------- reference (scenic) trees


def expected_modules(config: ml_collections.ConfigDict) -> Set[str]:
  """Top-level and `Transformer/*` module names the reference writes."""
  model = ModelConfig.from_config(config, num_classes=1)
  names = {'embedding', 'output_projection'}
  if model.representation_size is not None:
    names.add('pre_logits')
  if model.attention_type == 'factorized_encoder':
    for part, size in (('SpatialTransformer', model.spatial_transformer),
                       ('TemporalTransformer', model.temporal_transformer)):
      if model.has_cls_token:
        names.add(f'cls_{part}')
      names |= {f'{part}/encoder_norm'}
      if model.positional_embedding == 'learned_1d':
        names.add(f'{part}/posembed_input')
      names |= {f'{part}/encoderblock_{i}' for i in range(size.num_layers)}
    return names
  if model.has_cls_token:
    names.add('cls')
  names.add('Transformer/encoder_norm')
  if model.positional_embedding == 'learned_1d':
    names.add('Transformer/posembed_input')
  names |= {f'Transformer/encoderblock_{i}' for i in range(model.num_layers)}
  if model.tokenlearner_on:
    learner = ('TokenLearnerModuleV11' if model.use_v11
               else 'TokenLearnerModule')
    count = (model.num_layers - model.tokenlearner_loc
             if model.use_tokenfuse else 1)
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
