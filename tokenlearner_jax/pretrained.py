"""Fine-tuning from a pretrained checkpoint: loading it, and the surgery.

`load_params(config.init_from)` reads a checkpoint into our parameter layout
(a nested dict of numpy arrays): a workdir of this trainer, a reference
(scenic) flax msgpack file, or a big_vision / vision_transformer `.npz` (the
format public ViT weights ship in). `init_params(new_params, pretrained,
config, input_shape)` then copies it into freshly initialised parameters as
scenic's `init_token_learner_from_train_state` (with ViViT's `init_posemb` and
`init_embedding`) does:
  * `output_projection` stays new; `pre_logits` and `cls` are copied where
    both models have them.
  * A 2-D patch kernel `[ph, pw, c, d]` is inflated into a tubelet kernel
    `[pt, ph, pw, c, d]` ('average_frame_initializer' or
    'central_frame_initializer').
  * The position embedding is resized (bilinear) and/or tiled over time to the
    new token grid, keeping, dropping or adding the class-token position.
Against the reference: every target parameter must be found with its shape
(no silent half-initialised model), unknown source parameters are ignored
(the reference copied them into the target), both scenic TrainState layouts
load, and errors name the config field and the shapes. Checkpoints of models
with and without `model.scan_layers` load into either (`layer_stacking`).
"""

import io
import math
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import scipy.ndimage

from tokenlearner_jax import layer_stacking
from tokenlearner_jax.models import grid as grid_lib

Params = Dict[str, Any]

FORMATS = ('tokenlearner_jax', 'scenic', 'big_vision')
KERNEL_INIT_METHODS = ('average_frame_initializer',
                       'central_frame_initializer')
POSEMB_METHODS = ('resize', 'tile', 'resize_tile')
POSEMB = 'Transformer/posembed_input/pos_embedding'
# Encoder-block children of checkpoints converted from pre-linen flax (the
# published vision_transformer weights) -> their linen names (ours).
PRE_LINEN_BLOCK_NAMES = {
    'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
    'LayerNorm_2': 'LayerNorm_1',
    'MlpBlock_3': 'MlpBlock_0',
}
SCANNED_BLOCKS = 'Transformer/encoderblock/'


# ---------------------------------------------------------------- loading


def load_params(init_from: ml_collections.ConfigDict) -> Params:
  """Parameters of `init_from.checkpoint_path`, in our layout, as numpy.

  Args:
    init_from: `checkpoint_path` and `checkpoint_format`, one of `FORMATS`:
      'tokenlearner_jax' (default): a workdir of this trainer (its latest
      checkpoint); 'scenic': a reference flax msgpack checkpoint file, or a
      directory of `checkpoint_<step>` files (the latest is read);
      'big_vision': a big_vision or vision_transformer `.npz`.

  Raises:
    ValueError: for an unknown format or a file without parameters.
    FileNotFoundError: naming the path when there is nothing to read.
  """
  path = init_from.get('checkpoint_path')
  if not path:
    raise ValueError('init_from.checkpoint_path is not set.')
  fmt = init_from.get('checkpoint_format') or 'tokenlearner_jax'
  loaders = {'tokenlearner_jax': load_workdir, 'scenic': load_scenic,
             'big_vision': load_big_vision}
  if fmt not in loaders:
    raise ValueError(f'init_from.checkpoint_format must be one of {FORMATS}, '
                     f'got {fmt!r}.')
  params = loaders[fmt](str(path))
  logging.info('Loaded %d pretrained arrays (%s format) from %s.',
               len(flax.traverse_util.flatten_dict(params)), fmt, path)
  return params


def load_workdir(workdir: str) -> Params:
  """`params` of the latest checkpoint under `workdir/checkpoints`.

  Only the parameters are read (not the optimizer state), as numpy arrays.
  """
  directory = epath.Path(os.path.abspath(workdir)
                         if '://' not in workdir else workdir) / 'checkpoints'
  if not directory.exists():
    raise FileNotFoundError(
        f'init_from.checkpoint_path: {directory} does not exist '
        "(checkpoint_format='tokenlearner_jax' reads a workdir of this "
        'trainer).')
  manager = ocp.CheckpointManager(
      directory, item_handlers=ocp.PyTreeCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'init_from.checkpoint_path: no checkpoint in {directory}.')
    metadata = manager.item_metadata(step)
    if metadata is None or 'params' not in metadata:
      raise ValueError(f'init_from.checkpoint_path: the checkpoint at step '
                       f'{step} in {directory} has no `params`.')
    target = {'params': jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata['params'])}
    restore_args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  finally:
    manager.close()
  logging.info('Read the parameters of step %d in %s.', step, directory)
  flat = flax.traverse_util.flatten_dict(_as_numpy(restored['params']),
                                         sep='/')
  return flax.traverse_util.unflatten_dict(
      layer_stacking.unstack_layers(flat), sep='/')


def latest_scenic_file(path: str) -> epath.Path:
  """`path` itself, or its `checkpoint_<step>` file of the largest step."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'init_from.checkpoint_path: {path} does not '
                            'exist.')
  if not path.is_dir():
    return path
  steps = {int(m.group(1)): f for f in path.iterdir()
           if (m := re.fullmatch(r'checkpoint_(\d+)', f.name))}
  if not steps:
    raise FileNotFoundError(f'init_from.checkpoint_path: no checkpoint_<step> '
                            f'file in the directory {path}.')
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
    raise FileNotFoundError(f'init_from.checkpoint_path: {file} does not '
                            'exist.')
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
    into `Transformer/encoderblock_{i}/...`.
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
  flat = unstack_scanned_blocks(flat)
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


def unstack_scanned_blocks(
    flat: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """`Transformer/encoderblock/X` `[depth, ...]` -> `encoderblock_{i}/X`."""
  out: Dict[str, np.ndarray] = {}
  depth: Optional[int] = None
  for name, value in flat.items():
    if not name.startswith(SCANNED_BLOCKS):
      out[name] = value
      continue
    if depth is None:
      depth = value.shape[0]
    if value.ndim == 0 or value.shape[0] != depth:
      raise ValueError(f'big_vision checkpoint: scanned {name} has shape '
                       f'{value.shape}, not a leading layer axis of {depth}.')
    rest = name[len(SCANNED_BLOCKS):]
    for i in range(depth):
      unstacked = f'Transformer/encoderblock_{i}/{rest}'
      if unstacked in flat:
        raise ValueError(f'big_vision checkpoint: {unstacked} is both scanned '
                         'and unscanned.')
      out[unstacked] = value[i]  # [...]: layer i of [depth, ...].
  return out


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


# ---------------------------------------------------------------- surgery


def inflate_kernel(kernel: np.ndarray, time: int, method: str) -> np.ndarray:
  """Inflates a patch kernel `[ph, pw, c, d]` to a tubelet `[pt, ph, pw, c, d]`.

  Args:
    kernel: The 2-D patch-embedding kernel.
    time: Tubelet length pt.
    method: 'average_frame_initializer': the kernel on every frame, divided by
      pt (a static video embeds as the image did); or
      'central_frame_initializer': the kernel on frame pt // 2, zeros on the
      others (the time axis: the reference's scratch initializer zeroes the
      width axis instead).
  """
  if kernel.ndim != 4:
    raise ValueError(f'inflate_kernel takes a [ph, pw, c, d] kernel, got shape '
                     f'{kernel.shape}.')
  if method == 'average_frame_initializer':
    tiled = np.repeat(kernel[None], time, axis=0)  # [pt, ph, pw, c, d]
    return (tiled.astype(np.float32) / time).astype(kernel.dtype)
  if method == 'central_frame_initializer':
    inflated = np.zeros((time,) + kernel.shape, kernel.dtype)  # [pt, ...]
    inflated[time // 2] = kernel
    return inflated
  raise ValueError(f'Tubelet kernel inflation must be one of '
                   f'{KERNEL_INIT_METHODS}, got {method!r}.')


def resize_posemb(grid: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a square `[s*s, D]` embedding grid to `[h*w, D]`.

  `scipy.ndimage.zoom(order=1)`, as the reference: the corner positions map
  onto the corners.
  """
  length, dim = grid.shape
  side = math.isqrt(length)
  if side * side != length:
    raise ValueError(f'init_from.positional_embed_size_change: a resize needs '
                     f'a square source grid, got {length} positions.')
  square = grid.astype(np.float32).reshape(side, side, dim)  # [s, s, D]
  zoomed = scipy.ndimage.zoom(square, (height / side, width / side, 1),
                              order=1)  # [h, w, D]
  assert zoomed.shape == (height, width, dim), zoomed.shape
  return zoomed.reshape(height * width, dim).astype(grid.dtype)  # [h*w, D]


def tile_posemb(grid: np.ndarray, time: int) -> np.ndarray:
  """`[h*w, D]` -> `[T*h*w, D]`: the grid for each time slice, t-major."""
  return np.tile(grid, (time, 1))  # [T*h*w, D]


def adapt_posemb(source: np.ndarray, target: Any, *,
                 source_has_cls: bool, target_has_cls: bool,
                 grid: grid_lib.TokenGrid,
                 method: Optional[str],
                 source_is_image: bool = False) -> np.ndarray:
  """The source embedding `[1, N, D]` fitted to the target's `[1, N', D]`.

  The class-token position (the first row of a model with a `cls` token) is
  kept when both have one, dropped when only the source has one, and taken
  from `target` (its initial value) when only the target has one. When the
  source grid's length differs from the target's `grid.total`, or the source
  is an image model's (`source_is_image`: one h' x w' grid) and the target
  has T > 1 time slices (a grid of the same length is still not the same
  grid, e.g. 8x8 vs 4 x 4x4), `method` (one of `POSEMB_METHODS`) maps it:
  'resize' to `h x w` (images: `grid.time` must be 1), 'tile' a `h*w` grid
  over the T slices, 'resize_tile' both.
  """
  if source.ndim != 3 or source.shape[-1] != target.shape[-1]:
    raise ValueError(f'init_from: parameter {POSEMB} {target.shape} is '
                     f'{source.shape} in the pretrained checkpoint.')
  image_to_video = source_is_image and grid.time > 1
  if (source.shape == target.shape and source_has_cls == target_has_cls and
      not image_to_video):
    return source
  n_cls = int(target_has_cls)
  if target.shape[1] != n_cls + grid.total:
    raise ValueError(f'init_from: {POSEMB} {target.shape} does not fit the '
                     f'{grid.time}x{grid.height}x{grid.width} token grid of '
                     'the input shape (plus a class token).')
  tokens = source[0, int(source_has_cls):]  # [N - cls, D]
  if tokens.shape[0] != grid.total or image_to_video:
    field = 'init_from.positional_embed_size_change'
    shapes = (f'source {source.shape} (class token: {source_has_cls}), target '
              f'{target.shape} = {n_cls} + {grid.time}x{grid.height}x'
              f'{grid.width}')
    if method not in POSEMB_METHODS:
      raise ValueError(f'{field} must be one of {POSEMB_METHODS} to adapt the '
                       f'position embedding, got {method!r}; {shapes}.')
    if method == 'resize' and grid.time != 1:
      raise ValueError(f"{field}='resize' maps onto one h x w grid but the "
                       f"target has {grid.time} time slices: use "
                       f"'resize_tile'; {shapes}.")
    if method == 'tile' and tokens.shape[0] != grid.per_slice:
      raise ValueError(f"{field}='tile' repeats a {grid.height}x{grid.width} "
                       f'grid, but the source has {tokens.shape[0]} '
                       f"positions: use 'resize_tile'; {shapes}.")
    try:
      if method in ('resize', 'resize_tile'):
        tokens = resize_posemb(tokens, grid.height, grid.width)  # [h*w, D]
    except ValueError as e:
      raise ValueError(f'{e} {shapes}.') from e
    if method in ('tile', 'resize_tile'):
      tokens = tile_posemb(tokens, grid.time)  # [T*h*w, D]
  if not target_has_cls:
    cls_row = tokens[:0]  # [0, D]
  elif source_has_cls:
    cls_row = source[0, :1]  # [1, D]
  else:
    cls_row = np.asarray(target[0, :1]).astype(source.dtype)  # [1, D]
  logging.info('Adapted %s from %s to %s (%s).', POSEMB, source.shape,
               target.shape, method)
  return np.concatenate([cls_row, tokens], axis=0)[None]  # [1, N', D]


def kernel_init_method(config: ml_collections.ConfigDict) -> str:
  """How to inflate a 2-D kernel: the model's tubelet initializer, else
  `init_from.kernel_init_method`, else 'average_frame_initializer'."""
  tec = (config.model.tokenizer.get('temporal_encoding_config') or
         ml_collections.ConfigDict())
  init_from = config.get('init_from') or ml_collections.ConfigDict()
  method = (tec.get('kernel_init_method') or
            init_from.get('kernel_init_method') or
            'average_frame_initializer')
  if method == 'central_frame_initializer_scenic':
    method = 'central_frame_initializer'  # Only its scratch init differs.
  if method not in KERNEL_INIT_METHODS:
    raise ValueError(
        'model.tokenizer.temporal_encoding_config.kernel_init_method (or '
        f'init_from.kernel_init_method) must be one of {KERNEL_INIT_METHODS} '
        f'to inflate a 2-D patch kernel, got {method!r}.')
  return method


def embedding_kernel(source: np.ndarray, target_shape: Tuple[int, ...],
                     config: ml_collections.ConfigDict) -> np.ndarray:
  """The pretrained `embedding/kernel` for a target of `target_shape`."""
  if tuple(source.shape) == tuple(target_shape):
    return source
  if source.ndim == 4 and len(target_shape) == 5:
    if tuple(source.shape) != tuple(target_shape[1:]):
      raise ValueError(
          f'init_from: parameter embedding/kernel {tuple(target_shape)} '
          f'cannot be inflated from the pretrained {source.shape}: the patch '
          '(h, w), channels or width differ.')
    method = kernel_init_method(config)
    logging.info('Inflating embedding/kernel %s to %s (%s).', source.shape,
                 tuple(target_shape), method)
    return inflate_kernel(source, target_shape[0], method)
  raise ValueError(f'init_from: parameter embedding/kernel '
                   f'{tuple(target_shape)} is {source.shape} in the '
                   'pretrained checkpoint.')


def target_grid(config: ml_collections.ConfigDict,
                input_shape: Tuple[int, ...]) -> grid_lib.TokenGrid:
  """The token grid that `config.model` makes of one `input_shape` example."""
  tokenizer = config.model.tokenizer
  tec = (tokenizer.get('temporal_encoding_config') or
         ml_collections.ConfigDict())
  return grid_lib.token_grid(input_shape, tokenizer.patches.size,
                             tokenizer.type, tec.get('method', '3d_conv'),
                             tec.get('n_sampled_frames'), warn=False)


def init_params(new_params: Params, pretrained: Params,
                config: ml_collections.ConfigDict,
                input_shape: Tuple[int, ...]) -> Params:
  """`new_params` with every parameter but the head taken from `pretrained`.

  Args:
    new_params: The freshly initialised parameters of `config.model` (arrays;
      the result has their dtypes and shardings).
    pretrained: Parameters in our layout, e.g. from `load_params`.
    config: The fine-tuning config: `model` and `init_from`
      (`positional_embed_size_change`, `kernel_init_method`,
      `init_missing_from_scratch`: keep target parameters the checkpoint
      lacks, such as a TokenLearner added to a plain ViT, newly initialised).
    input_shape: One example's shape, `(H, W, C)` or `(T, H, W, C)`.

  Raises:
    ValueError: naming the parameter and both shapes, when a target parameter
      is missing from `pretrained` or cannot be fitted to its shape.
  """
  new = flax.traverse_util.flatten_dict(flax.core.unfreeze(new_params),
                                        sep='/')
  old = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained),
                                        sep='/')
  # Either layout in, the target's out (model.scan_layers stacks layers).
  old = layer_stacking.stack_layers(layer_stacking.unstack_layers(old), new)
  init_from = config.get('init_from') or ml_collections.ConfigDict()
  merged, kept = {}, []
  for name, value in new.items():
    top = name.split('/')[0]
    if top == 'output_projection' or (
        top in ('pre_logits', 'cls') and name not in old):
      merged[name] = value
      kept.append(name)
      continue
    if name not in old:
      if init_from.get('init_missing_from_scratch'):  # E.g. ViT -> ViT + TL.
        merged[name] = value
        kept.append(name)
        continue
      raise ValueError(f'init_from: parameter {name} {tuple(value.shape)} is '
                       'missing in the pretrained checkpoint (set '
                       'init_from.init_missing_from_scratch=True to keep it '
                       'newly initialised).')
    source = np.asarray(old[name])
    if name == 'embedding/kernel':
      source = embedding_kernel(source, tuple(value.shape), config)
    elif name == POSEMB:
      source = adapt_posemb(
          source, value, source_has_cls='cls' in old,
          target_has_cls='cls' in new, grid=target_grid(config, input_shape),
          method=init_from.get('positional_embed_size_change'),
          source_is_image=np.ndim(old.get('embedding/kernel')) == 4)
    if tuple(source.shape) != tuple(value.shape):
      raise ValueError(f'init_from: parameter {name} {tuple(value.shape)} is '
                       f'{tuple(source.shape)} in the pretrained checkpoint.')
    merged[name] = _like(source, value)
  ignored = sorted(n for n in old if n not in new and
                   not n.startswith('output_projection/'))
  logging.info('Initialised %d parameters from the pretrained checkpoint; '
               'kept new: %s; ignored pretrained: %s.',
               len(merged) - len(kept), kept, ignored)
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def _like(value: np.ndarray, like: Any) -> Any:
  """`value` with the dtype and, for device arrays, the sharding of `like`."""
  value = np.asarray(value).astype(like.dtype)
  sharding = getattr(like, 'sharding', None)
  return value if sharding is None else jax.device_put(value, sharding)
