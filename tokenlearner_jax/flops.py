"""Analytic multiply-add counts: the paper's "GFLOPs" (GMACs per example/view).

Counts every matrix product, convolution and einsum of the forward pass (one
multiply-add = 1); elementwise work (LayerNorm, softmax, GELU, biases) is not
counted, as in the paper. `tests/test_flops.py` cross-checks these counts
against XLA's `cost_analysis` of the real model.
"""

import math
from typing import Optional, Sequence

import ml_collections

from tokenlearner_jax import models
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.models.x2plus1d import round_width

BOTTLENECK_DIM = 64  # TokenLearner v1.1 / TokenFuser MLP width (reference).
# FLOPs per multiply-add per example, for model FLOPs and MFU: a forward pass
# is 2 (a multiply and an add); a train step 6 (forward, and a backward pass
# of twice the forward's work). Rematerialised forwards are not counted.
EVAL_FLOPS_PER_MAC = 2
TRAIN_FLOPS_PER_MAC = 6


def block_macs(tokens: int, hidden: int, mlp_dim: int) -> int:
  """One encoder block: q/k/v/out projections, QK^T, AV and the MLP."""
  return (4 * tokens * hidden * hidden + 2 * tokens * tokens * hidden +
          2 * tokens * hidden * mlp_dim)


def tokenlearner_macs(hw: int, hidden: int, num_tokens: int,
                      use_v11: bool) -> int:
  """One TokenLearner on one temporal slice of `hw` tokens."""
  pooling = num_tokens * hw * hidden
  if use_v11:
    return (hw * hidden * BOTTLENECK_DIM + hw * BOTTLENECK_DIM * num_tokens
            + pooling)
  convs = hw * 9 * hidden * num_tokens + 3 * hw * 9 * num_tokens * num_tokens
  return convs + pooling


def tokenfuser_macs(hw: int, hidden: int, num_tokens: int) -> int:
  """One TokenFuser on one temporal slice."""
  mixing = hidden * num_tokens * num_tokens
  masking = hw * hidden * BOTTLENECK_DIM + hw * BOTTLENECK_DIM * num_tokens
  return mixing + masking + hw * num_tokens * hidden


def reprojection_macs(hw: int, hidden: int, num_tokens: int) -> int:
  """One 'reprojection' (attention from the grid to the tokens) on one slice:
  query and output projections of the grid, key and value projections of the
  tokens, QK^T and AV."""
  return (2 * hw * hidden * hidden + 2 * num_tokens * hidden * hidden +
          2 * hw * num_tokens * hidden)


def fuser_macs(fuser_type: str, hw: int, hidden: int, num_tokens: int) -> int:
  """What maps the tokens of one slice back: TokenFuser or an alternative."""
  if fuser_type == 'unpool':  # The transpose of TokenLearner's pooling.
    return hw * num_tokens * hidden
  if fuser_type == 'reprojection':
    return reprojection_macs(hw, hidden, num_tokens)
  return tokenfuser_macs(hw, hidden, num_tokens)


def encoder_macs(m: ModelConfig, grid: grid_lib.TokenGrid,
                 extra_tokens: int) -> int:
  """The joint space-time encoder with TokenLearner/TokenFuser where enabled."""
  d, mlp, layers = m.hidden_size, m.mlp_dim, m.num_layers
  full = grid.total + extra_tokens
  if not m.tokenlearner_on:
    return layers * block_macs(full, d, mlp)
  loc, s = m.tokenlearner_loc, m.num_tokens
  if m.token_reduction in ('tome', 'evit', 'ats'):
    return block_reduction_macs(m, full)
  if m.token_reduction == 'pooling':  # Averages: no multiply-adds.
    s = grid.per_slice // m.pooling_window**2
    learner = 0
    if not m.use_tokenfuse:  # Pooled at every loc.
      locs = [loc, *m.pooling_locs, layers]
      macs, hw = loc * block_macs(full, d, mlp), grid.per_slice
      for start, end in zip(locs[:-1], locs[1:]):
        hw //= m.pooling_window**2
        macs += (end - start) * block_macs(grid.time * hw + extra_tokens, d,
                                           mlp)
      return macs
  elif m.token_reduction == 'dense':  # A [HW, S] weighting of every channel.
    learner = grid.time * grid.per_slice * s * d
  elif m.token_reduction == 'patchmerger':  # Scores, then the weighted sums.
    learner = grid.time * 2 * grid.per_slice * d * s
  else:
    learner = grid.time * tokenlearner_macs(grid.per_slice, d, s, m.use_v11)
  learned = grid.time * s + extra_tokens
  if m.use_tokenfuse:
    fuser = grid.time * fuser_macs(m.fuser_type, grid.per_slice, d, s)
    later = block_macs(learned, d, mlp) + learner + fuser
    return loc * block_macs(full, d, mlp) + (layers - loc) * later
  return (loc * block_macs(full, d, mlp) + learner +
          (layers - loc) * block_macs(learned, d, mlp))


def token_counts(m: ModelConfig, tokens: int):
  """(tokens into the attention, tokens out of the reduction) of every block
  of a ToMe, EViT or ATS encoder that starts with `tokens`."""
  counts = []
  for lyr in range(m.num_layers):
    out = tokens
    if lyr in m.reduction_blocks:
      others = tokens - int(m.protects_first_token)
      if m.token_reduction == 'tome':
        out = tokens - max(min(m.tome_r, others // 2), 0)
      elif m.token_reduction == 'evit':
        keep = math.ceil(m.keep_rate * others)
        out = tokens if keep >= others else 1 + keep + 1
      else:  # ATS: a slot per sampling point (some may be empty).
        out = 1 + min(m.num_tokens, others)
    counts.append((tokens, out))
    tokens = out
  return counts


def block_reduction_macs(m: ModelConfig, tokens: int) -> int:
  """A ToMe, EViT or ATS encoder: attention on a block's input tokens, the
  MLP on what its reduction leaves, plus the reduction's own products
  (ToMe's similarities of the head-averaged keys, EViT's fused token, ATS's
  value norms); ATS counts its slots, empty or not, as they are computed."""
  d, mlp, head_dim = m.hidden_size, m.mlp_dim, m.hidden_size // m.num_heads
  macs = 0
  for n, out in token_counts(m, tokens):
    macs += 4 * n * d * d + 2 * n * n * d + 2 * out * d * mlp
    if out == n:
      continue
    if m.token_reduction == 'tome':
      macs += ((n + 1) // 2) * (n // 2) * head_dim
    elif m.token_reduction == 'evit':
      macs += (n - 1) * d
    else:
      macs += n * d
  return macs


def model_gmacs(m: ModelConfig, input_shape: Sequence[int]) -> float:
  """Multiply-adds per example (per view) of `m`, in billions."""
  grid = m.token_grid(input_shape, warn=False)
  d = m.hidden_size
  patch_volume = 1  # (h, w) or (h, w, t): pixels per patch or tubelet.
  for size in m.patch_size:
    patch_volume *= size
  macs = grid.total * patch_volume * input_shape[-1] * d
  cls = int(m.has_cls_token)
  if m.attention_type == 'factorized_encoder':
    sp, tp = m.spatial_transformer, m.temporal_transformer
    macs += grid.time * sp.num_layers * block_macs(grid.per_slice + cls, d,
                                                   sp.mlp_dim)
    macs += tp.num_layers * block_macs(grid.time + cls, d, tp.mlp_dim)
  else:
    macs += encoder_macs(m, grid, cls)
  head_in = d
  if m.representation_size is not None:
    macs += d * m.representation_size
    head_in = m.representation_size
  macs += head_in * m.num_classes
  return macs / 1e9


def gmacs(config: ml_collections.ConfigDict, input_shape: Sequence[int],
          num_classes: Optional[int] = None) -> float:
  """Multiply-adds per example (per view) of `config.model`, in billions.

  Args:
    config: A config with a `config.model` block (`ModelConfig`'s schema,
      or `X2Plus1DConfig`'s for the `x2plus1d_*` model names).
    input_shape: `(H, W, 3)` or `(T, H, W, 3)`.
    num_classes: Head width; `config.dataset_configs.num_classes` when None,
      else 1000.
  """
  if num_classes is None:
    num_classes = DataConfig.from_config(config).num_classes or 1000
  checked = models.model_config(config, num_classes)
  if isinstance(checked, models.X2Plus1DConfig):
    return x2plus1d_macs(checked, input_shape)['total'] / 1e9
  return model_gmacs(checked, input_shape)


# ------------------------------------------------- X(2+1)D (Section 6)

FUSER_BOTTLENECK = 64  # TokenFuser's `token_masking` MLP width (reference).


def _conv_out(size: int, stride: int) -> int:
  return (size - 1) // stride + 1  # 'SAME'-padded odd kernels.


def attention_part_macs(axes: str, t: int, hw: int, d: int, a: int,
                        position: str = 'none') -> int:
  """A `SpaceTimeAttention` over `t` frames of `hw` positions, width d,
  attention width a: the four projections and QK^T, AV, and with
  'factorized' position logits Qr^T."""
  p = t * hw
  groups = {'joint': (1, p), 'spatial': (t, hw), 'temporal': (hw, t)}[axes]
  products = 3 if position == 'factorized' else 2
  return 4 * p * d * a + products * groups[0] * groups[1]**2 * a


def token_part_macs(c, t: int, hw: int, d: int) -> int:
  """TokenLearner (or an alternative) -> Vector Transformer -> TokenFuser."""
  s, p = c.num_tokens, t * hw
  maker = p * s * d  # The weighted (or plain) means over space.
  if c.token_maker == 'tokenlearner':
    maker += p * 9 * d * s  # Its single 3x3 convolution.
  n = t * s
  vector = 4 * n * d * d + n * n * d * (c.relation_group_size + 1)
  fuser = t * (d * s * s + hw * d * FUSER_BOTTLENECK +
               hw * FUSER_BOTTLENECK * s + hw * s * d)
  return maker + vector + fuser


def module_part_macs(c, part: str, t: int, h: int, w: int, d: int) -> int:
  """Multiply-adds of one part of the module slot (`video_modules`)."""
  p = t * h * w
  if part == 'conv2d':
    return p * 9 * d * d
  if part == 'conv1d':
    return p * 3 * d * d
  if part == 'mlp_mixer':
    return 2 * d * t * t + 2 * t * d * d
  if part == 'tokenlearner':
    return token_part_macs(c, t, h * w, d)
  axes, position = c.attention_part(part)
  return attention_part_macs(axes, t, h * w, d, c.attention_dim, position)


def x2plus1d_macs(c, input_shape: Sequence[int]) -> dict:
  """Multiply-adds per view of an `X2Plus1DConfig` network: {'total': ...,
  'module': the module slot's (all blocks carrying it), 'parts': {part: ...}}.
  """
  t, h, w = input_shape[:3]
  h, w = _conv_out(h, 2), _conv_out(w, 2)
  macs = t * h * w * (9 * 3 * c.stem_width + 5 * c.stem_width)
  channels, parts = c.stem_width, {}
  for stage, (depth, width) in enumerate(zip(c.depths, c.widths), start=2):
    d = c.inner_width(stage)
    carries = c.module_blocks() if stage == c.stage else ()
    for i in range(depth):
      p_in = t * h * w
      if i == 0:
        h, w = _conv_out(h, 2), _conv_out(w, 2)
      p = t * h * w
      macs += p_in * channels * d + p * d * width
      if i in carries:
        for part in c.parts:
          parts[part] = parts.get(part, 0) + module_part_macs(c, part, t, h, w,
                                                              d)
      else:  # The middle: 27 or 9 + 3 taps per channel, or per channel pair.
        macs += p * d * (27 if c.conv_type == '3d' else 12) * (
            d if c.middle_conv == 'full' else 1)
      if c.se_ratio > 0 and i % 2 == 0:
        macs += 2 * d * round_width(d * c.se_ratio)
      if channels != width or i == 0:
        macs += p * channels * width
      channels = width
  d5 = c.inner_width(5)
  macs += t * h * w * channels * d5 + d5 * c.head_width
  macs += c.head_width * c.num_classes
  module = sum(parts.values())
  return {'total': macs + module, 'module': module, 'parts': parts}
