"""Fine-tuning surgery: pretrained parameters fitted into a new model.

`init_params(new_params, pretrained, config, input_shape)` copies parameters
in our layout (from `checkpoint_formats.load_params`) into freshly initialised
ones as scenic's `init_token_learner_from_train_state` (with ViViT's
`init_posemb` and `init_embedding`) does:
  * `output_projection` stays new (`init_from.restore_output_proj=True`, as
    the reference ViViT trainer's key: copied, for the same classes);
    `pre_logits` and `cls` are copied where both models have them.
  * A 2-D patch kernel `[ph, pw, c, d]` is inflated into a tubelet kernel
    `[pt, ph, pw, c, d]` (`INFLATION_METHODS`).
  * The position embedding is resized (bilinear) and/or tiled over time to the
    new token grid, keeping, dropping or adding the class-token position.
Against the reference: every target parameter must be found with its shape
(no silent half-initialised model), unknown source parameters are ignored
(the reference copied them into the target), and errors name the config field
and the shapes. Checkpoints of models with and without `model.scan_layers`
load into either (`layer_layout.stack_layers`).
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import flax
import jax
import ml_collections
import numpy as np
import scipy.ndimage

from tokenlearner_jax import layer_layout
from tokenlearner_jax.checkpoint_formats import POSEMB
from tokenlearner_jax.configs import init_from_config
from tokenlearner_jax.configs.init_from_config import InitFromConfig
from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models.config import ModelConfig

Params = Dict[str, Any]

# How a pretrained 2-D patch kernel becomes a tubelet kernel. The names are
# those of the model's scratch tubelet initializers
# (`models.config.TUBELET_INITIALIZERS`, read from the same config key
# `model.tokenizer.temporal_encoding_config.kernel_init_method`), so that a
# fine-tuned kernel has the structure the model would have drawn;
# 'central_frame_initializer_scenic' (the reference's scratch initializer,
# which zeroes the width axis) inflates as 'central_frame_initializer', and
# the model's None (a plain LeCun normal) as the default
# 'average_frame_initializer'.
INFLATION_METHODS = ('average_frame_initializer', 'central_frame_initializer')
POSEMB_METHODS = init_from_config.POSEMB_METHODS


def inflate_kernel(kernel: np.ndarray, time: int, method: str) -> np.ndarray:
  """Inflates a patch kernel `[ph, pw, c, d]` to a tubelet `[pt, ph, pw, c, d]`.

  Args:
    kernel: The 2-D patch-embedding kernel.
    time: Tubelet length pt.
    method: One of `INFLATION_METHODS`. 'average_frame_initializer': the
      kernel on every frame, divided by pt (a static video embeds as the image
      did); 'central_frame_initializer': the kernel on frame pt // 2, zeros on
      the others (the time axis).
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
                   f'{INFLATION_METHODS}, got {method!r}.')


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


def _fit_tokens(tokens: np.ndarray, grid: grid_lib.TokenGrid,
                method: Optional[str], shapes: str) -> np.ndarray:
  """The source's grid positions `[n, D]` mapped onto `grid` by `method`."""
  field = 'init_from.positional_embed_size_change'
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
  return tokens


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
    shapes = (f'source {source.shape} (class token: {source_has_cls}), target '
              f'{target.shape} = {n_cls} + {grid.time}x{grid.height}x'
              f'{grid.width}')
    tokens = _fit_tokens(tokens, grid, method, shapes)  # [T*h*w, D]
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
  """How to inflate a 2-D kernel (one of `INFLATION_METHODS`): the model's
  tubelet initializer, else `init_from.kernel_init_method`, else
  'average_frame_initializer'."""
  method = (_model(config).kernel_init_method or
            InitFromConfig.from_config(config).kernel_init_method or
            'average_frame_initializer')
  if method == 'central_frame_initializer_scenic':
    method = 'central_frame_initializer'  # Only its scratch init differs.
  if method not in INFLATION_METHODS:
    raise ValueError(
        'model.tokenizer.temporal_encoding_config.kernel_init_method (or '
        f'init_from.kernel_init_method) must be one of {INFLATION_METHODS} '
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
  return _model(config).token_grid(input_shape, warn=False)


def _model(config: ml_collections.ConfigDict) -> ModelConfig:
  # Neither the tubelet initializer nor the grid depends on the classes.
  return ModelConfig.from_config(config, num_classes=1)


def _keeps_new(name: str, value: Any, old: Mapping[str, Any],
               init_from: InitFromConfig) -> bool:
  """Whether target parameter `name` keeps its new `value`; raises when the
  pretrained checkpoint should have it but does not."""
  top = name.split('/')[0]
  if top == 'output_projection' and not init_from.restore_output_proj:
    return True  # The reference's default: a new head for the new task.
  # The reference ViViT's switches (both default True): keep the new position
  # embedding or patch embedding instead of the pretrained one.
  if name == POSEMB and not init_from.restore_positional_embedding:
    return True
  if top == 'embedding' and not init_from.restore_input_embedding:
    return True
  if name in old:
    return False
  if top in ('pre_logits', 'cls') or (
      init_from.init_missing_from_scratch):  # E.g. ViT -> ViT + TokenLearner.
    return True
  raise ValueError(f'init_from: parameter {name} {tuple(value.shape)} is '
                   'missing in the pretrained checkpoint (set '
                   'init_from.init_missing_from_scratch=True to keep it newly '
                   'initialised).')


def _fitted(name: str, value: Any, old: Mapping[str, Any],
            new: Mapping[str, Any], config: ml_collections.ConfigDict,
            input_shape: Tuple[int, ...]) -> np.ndarray:
  """Pretrained `old[name]` fitted to the target `value`'s shape."""
  source = np.asarray(old[name])
  if name == 'embedding/kernel':
    source = embedding_kernel(source, tuple(value.shape), config)
  elif name == POSEMB:
    source = adapt_posemb(
        source, value, source_has_cls='cls' in old,
        target_has_cls='cls' in new, grid=target_grid(config, input_shape),
        method=InitFromConfig.from_config(
            config).positional_embed_size_change,
        source_is_image=np.ndim(old.get('embedding/kernel')) == 4)
  if tuple(source.shape) != tuple(value.shape):
    raise ValueError(f'init_from: parameter {name} {tuple(value.shape)} is '
                     f'{tuple(source.shape)} in the pretrained checkpoint.')
  return source


def init_params(new_params: Params, pretrained: Params,
                config: ml_collections.ConfigDict,
                input_shape: Tuple[int, ...]) -> Params:
  """`new_params` with every parameter but the head taken from `pretrained`.

  Args:
    new_params: The freshly initialised parameters of `config.model` (arrays;
      the result has their dtypes and shardings).
    pretrained: Parameters in our layout, e.g. from
      `checkpoint_formats.load_params`.
    config: The fine-tuning config: `model` and `init_from`
      (`positional_embed_size_change`, `kernel_init_method`,
      `init_missing_from_scratch`: keep target parameters the checkpoint
      lacks, such as a TokenLearner added to a plain ViT, newly initialised;
      `restore_positional_embedding` / `restore_input_embedding`, default
      True: False keeps the new position / patch embedding, as the
      reference ViViT's `initialise_from_train_state`;
      `restore_output_proj`, default False: True copies the head too).
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
  old = layer_layout.stack_layers(layer_layout.unstack_layers(old), new)
  init_from = InitFromConfig.from_config(config)
  merged: Params = {}
  kept: List[str] = []
  for name, value in new.items():
    if _keeps_new(name, value, old, init_from):
      merged[name] = value
      kept.append(name)
    else:
      merged[name] = _like(
          _fitted(name, value, old, new, config, input_shape), value)
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
