"""The parts of the X(2+1)D module slot (the paper's Figure 9 and Tables 11-12).

Each part maps `[B, T, H, W, D]` to the same shape at the module's width D.
`VectorAttention` is pairwise vector self-attention with the subtraction
relation (Zhao, Jia and Koltun, "Exploring Self-attention for Image
Recognition", CVPR 2020): one attention weight per channel, the ST x ST x C
attention tensor of the paper's figure. docs/models.md states every choice.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.tokenlearner import TokenFuser

KERNEL_AXES = (None, None, None, 'embed', 'mlp')  # [t, h, w, in, out].
IN_AXES = ('embed', 'mlp')  # Dense D -> hidden.
OUT_AXES = ('mlp', 'embed')  # Dense hidden -> D.


def dense(features: int, axes, name: str, **kw) -> nn.Dense:
  return nn.Dense(features, kernel_init=logical(
      nn.initializers.xavier_uniform(), axes), name=name, **kw)


class ConvBN(nn.Module):
  """A full convolution D -> D over `kernel` (t, h, w), BatchNorm, ReLU.

  Attributes:
    kernel: (t, h, w): (1, 3, 3) is the paper's "Conv2D", (3, 1, 1) "Conv1D".
    momentum: BatchNorm momentum.
    dtype: Compute dtype (parameters stay fp32).
  """
  kernel: tuple
  momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Conv(x.shape[-1], self.kernel, padding='SAME', use_bias=False,
                kernel_init=logical(nn.initializers.he_normal(), KERNEL_AXES),
                dtype=self.dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                     epsilon=1e-5, dtype=self.dtype, name='bn')(x)
    return nn.relu(x)


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
  return x.reshape(x.shape[:-1] + (num_heads, -1))  # [..., N, h, d/h]


class SpaceTimeAttention(nn.Module):
  """Pre-LayerNorm multi-head self-attention with a residual.

  Attributes:
    axes: 'joint' (over all T x H x W positions), 'spatial' (within each
      frame) or 'temporal' (across frames at each position).
    num_heads: Heads.
    attention_dim: Query, key and value width (all heads).
    dtype: Compute dtype (parameters stay fp32).
    position: 'none', or 'factorized': learned embeddings along each
      attended axis (`pos_t`, `pos_h`, `pos_w`), summed into one per position
      (r), with content-position logits q r^T added to q k^T, as the
      Bottleneck Transformer's Figure 4 draws them. Embeddings learned at
      one clip size are linearly resized to another's (a test crop).
  """
  axes: str
  num_heads: int
  attention_dim: int
  dtype: Any = jnp.float32
  position: str = 'none'

  def _axis_embedding(self, name: str, length: int) -> jax.Array:
    """`[length, attention_dim]`: the learned one, resized if learned at
    another length."""
    if self.has_variable('params', name):
      table = self.get_variable('params', name)
    else:
      table = self.param(name, nn.initializers.normal(
          self.attention_dim**-0.5), (length, self.attention_dim))
    if table.shape[0] != length:
      table = jax.image.resize(table, (length, table.shape[1]), 'linear')
    return table.astype(self.dtype)

  def _positions(self, t: int, h: int, w: int) -> jax.Array:
    """r of the attended positions, in the sequence's order: [N, A]."""
    a = self.attention_dim
    r = jnp.zeros((1, 1, 1, a), self.dtype)  # [T, H, W, A] once broadcast.
    if self.axes in ('joint', 'temporal'):
      r = r + self._axis_embedding('pos_t', t)[:, None, None]
    if self.axes in ('joint', 'spatial'):
      r = (r + self._axis_embedding('pos_h', h)[None, :, None] +
           self._axis_embedding('pos_w', w)[None, None, :])
    return r.reshape(-1, a)  # [N, A]: THW, HW or T positions.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    b, t, h, w, d = x.shape
    if self.axes == 'joint':
      seq = x.reshape(b, t * h * w, d)  # [B, THW, D]
    elif self.axes == 'spatial':
      seq = x.reshape(b * t, h * w, d)  # [BT, HW, D]
    else:
      # [BHW, T, D]
      seq = jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b * h * w, t, d)
    y = nn.LayerNorm(dtype=self.dtype, name='norm')(seq)
    q, k, v = (_heads(dense(self.attention_dim, IN_AXES, n, dtype=self.dtype)(
        y), self.num_heads) for n in ('query', 'key', 'value'))  # [G, N, h, d/h]
    logits = jnp.einsum('gqhd,gkhd->ghqk', q, k)  # [G, h, N, N]
    if self.position == 'factorized':
      r = _heads(self._positions(t, h, w), self.num_heads)  # [N, h, d/h]
      logits = logits + jnp.einsum('gqhd,khd->ghqk', q, r)  # [G, h, N, N]
    logits = logits / math.sqrt(q.shape[-1])
    out = jnp.einsum('ghqk,gkhd->gqhd', nn.softmax(logits), v)  # [G, N, h, d/h]
    out = dense(d, OUT_AXES, 'out', dtype=self.dtype)(
        out.reshape(out.shape[:2] + (-1,)))
    seq = seq + out  # [G, N, D]
    if self.axes == 'temporal':
      return jnp.transpose(seq.reshape(b, h, w, t, d), (0, 3, 1, 2, 4))
    return seq.reshape(b, t, h, w, d)  # [B, T, H, W, D]


class TemporalMixer(nn.Module):
  """An MLP-Mixer block over the frames' spatially pooled features.

  The `[B, T, D]` frame features get a token-mixing MLP over T (hidden T) and a
  channel-mixing MLP (hidden D), each pre-LayerNorm with a residual; what the
  block adds is broadcast back over every position.

  Attributes:
    dtype: Compute dtype (parameters stay fp32; the widths are the input's).
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    frames = jnp.mean(x, axis=(2, 3))  # [B, T, D]
    t, d = frames.shape[1:]
    dtype = self.dtype
    # [B, D, T]
    y = jnp.swapaxes(nn.LayerNorm(dtype=dtype, name='token_norm')(frames), 1, 2)
    y = nn.Dense(t, dtype=dtype, name='token_mlp_0')(y)
    y = nn.Dense(t, dtype=dtype, name='token_mlp_1')(nn.gelu(y))
    mixed = frames + jnp.swapaxes(y, 1, 2)  # [B, T, D]
    y = dense(d, IN_AXES, 'channel_mlp_0', dtype=dtype)(
        nn.LayerNorm(dtype=dtype, name='channel_norm')(mixed))
    mixed = mixed + dense(d, OUT_AXES, 'channel_mlp_1', dtype=dtype)(
        nn.gelu(y))
    return x + (mixed - frames)[:, :, None, None, :]  # [B, T, H, W, D]


def region_pooling_matrix(h: int, w: int, num_tokens: int) -> np.ndarray:
  """`[HW, S]` averaging weights of S = rows x cols regions of an h x w grid
  (adaptive-pooling bounds; rows x cols the factorisation of S nearest a
  square, rows <= cols)."""
  rows = max(r for r in range(1, int(math.isqrt(num_tokens)) + 1)
             if num_tokens % r == 0)
  cols = num_tokens // rows
  weights = np.zeros((h, w, rows, cols), np.float32)
  for i in range(rows):
    r0, r1 = (i * h) // rows, -(-(i + 1) * h // rows)
    for j in range(cols):
      c0, c1 = (j * w) // cols, -(-(j + 1) * w // cols)
      weights[r0:r1, c0:c1, i, j] = 1.0 / ((r1 - r0) * (c1 - c0))
  return weights.reshape(h * w, num_tokens)


class FrameTokens(nn.Module):
  """S tokens from each frame `[N, H, W, D]` -> `[N, S, D]`.

  'tokenlearner': a single 3x3 convolution D -> S, sigmoid maps, the mean of
  the map-weighted frame (the paper's TokenLearner v1.0 with one conv);
  'fixed': learned, input-independent sigmoid maps `[HW, S]`, same pooling;
  'dense': tokens from a dense layer over the HW positions; 'pooling': the
  means of S regions of the frame.

  Attributes:
    num_tokens: S.
    maker: One of `x2plus1d_config.TOKEN_MAKERS`.
    dtype: Compute dtype (parameters stay fp32).
  """
  num_tokens: int
  maker: str = 'tokenlearner'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, d = x.shape
    flat = x.reshape(n, h * w, d)  # [N, HW, D]
    if self.maker == 'pooling':
      weights = jnp.asarray(region_pooling_matrix(h, w, self.num_tokens),
                            self.dtype)
      return jnp.einsum('nic,is->nsc', flat, weights)  # [N, S, D]
    if self.maker == 'tokenlearner':
      maps = nn.Conv(self.num_tokens, (3, 3), padding='SAME', use_bias=False,
                     kernel_init=logical(nn.initializers.he_normal(),
                                         (None, None, 'embed', None)),
                     dtype=self.dtype, name='attention_conv')(x)
      maps = nn.sigmoid(maps.reshape(n, h * w, self.num_tokens))  # [N, HW, S]
    elif self.maker == 'fixed':
      # [1, HW, S]
      maps = nn.sigmoid(self.param('maps', nn.initializers.normal(1.0),
                                   (h * w, self.num_tokens)))[None].astype(
                                       self.dtype)
    else:  # 'dense'
      maps = self.param('kernel', nn.initializers.lecun_normal(),
                        (h * w, self.num_tokens))[None].astype(
                            self.dtype)  # [1, HW, S]
      return jnp.einsum('nic,nis->nsc', flat, jnp.broadcast_to(
          maps, (n,) + maps.shape[1:]))  # [N, S, D]
    self.sow('intermediates', 'attention_maps', jnp.swapaxes(maps, 1, 2))
    return jnp.einsum('nic,nis->nsc', flat, jnp.broadcast_to(
        maps, (n,) + maps.shape[1:])) / (h * w)  # [N, S, D]


class VectorAttention(nn.Module):
  """Pairwise vector self-attention with the subtraction relation.

  y_i = W_o sum_j softmax_j(gamma(q_i - k_j)) * v_j, with q, k, v dense maps
  D -> D, softmax over j for each channel (an N x N x D attention tensor) and
  gamma a grouped linear map of relu(q_i - k_j) (groups of
  `relation_group_size` channels).

  Attributes:
    relation_group_size: Channels per group of gamma.
    dtype: Compute dtype (parameters stay fp32).
  """
  relation_group_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    g = self.relation_group_size
    q, k, v = (dense(d, IN_AXES, name, dtype=self.dtype)(x)
               for name in ('query', 'key', 'value'))
    relation = nn.relu(q[:, :, None, :] - k[:, None, :, :])  # [B, N, N, D]
    relation = relation.reshape(b, n, n, d // g, g)  # [B, N, N, D/g, g]
    gamma = self.param('relation', logical(nn.initializers.lecun_normal(
        in_axis=-2, out_axis=-1, batch_axis=(0,)), ('mlp', None, None)),
                       (d // g, g, g)).astype(self.dtype)
    logits = jnp.einsum('bijgc,gce->bijge', relation, gamma).reshape(
        b, n, n, d)  # [B, N, N, D]
    logits = logits + self.param('relation_bias', nn.initializers.zeros,
                                 (d,)).astype(self.dtype)
    weights = nn.softmax(logits, axis=2)  # Over j, per channel.
    out = jnp.einsum('bijd,bjd->bid', weights, v)  # [B, N, D]
    return dense(d, OUT_AXES, 'out', dtype=self.dtype)(out)


class TokenModule(nn.Module):
  """TokenLearner -> Vector Transformer -> TokenFuser (the paper's Figure 9).

  S tokens per frame (`FrameTokens`), pre-LayerNorm vector self-attention
  with a residual over all T x S tokens, then the reference's TokenFuser maps
  each frame's tokens back onto its H x W positions, added to the input.

  Attributes:
    num_tokens: S per frame.
    maker: What makes the tokens (`FrameTokens.maker`).
    relation_group_size: `VectorAttention`'s.
    dtype: Compute dtype (parameters stay fp32; TokenFuser computes in
      fp32, as in the ViT).
  """
  num_tokens: int
  maker: str
  relation_group_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    b, t, h, w, d = x.shape
    frames = x.reshape(b * t, h, w, d)  # [BT, H, W, D]
    tokens = FrameTokens(self.num_tokens, self.maker, self.dtype,
                         name='tokens')(frames)
    tokens = tokens.reshape(b, t * self.num_tokens, d)  # [B, TS, D]
    tokens = tokens + VectorAttention(
        self.relation_group_size, self.dtype, name='vector_attention')(
            nn.LayerNorm(dtype=self.dtype, name='norm')(tokens))
    tokens = tokens.reshape(b * t, self.num_tokens, d)  # [BT, S, D]
    fused = TokenFuser(name='fuser')(tokens, frames, deterministic=not train)
    return x + fused.reshape(b, t, h, w, d).astype(x.dtype)  # [B, T, H, W, D]


class ModuleSlot(nn.Module):
  """The module's parts in order (`X2Plus1DConfig.parts`).

  Attributes:
    config: An `X2Plus1DConfig`.
  """
  config: 'object'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = self.config
    dtype = c.compute_dtype
    for part in c.parts:
      if part in ('conv2d', 'conv1d'):
        kernel = (1, 3, 3) if part == 'conv2d' else (3, 1, 1)
        x = ConvBN(kernel, c.bn_momentum, dtype, name=part)(x, train=train)
      elif part == 'mlp_mixer':
        x = TemporalMixer(dtype, name=part)(x, train=train)
      elif part == 'tokenlearner':
        x = TokenModule(c.num_tokens, c.token_maker, c.relation_group_size,
                        dtype, name=part)(x, train=train)
      else:
        axes, position = c.attention_part(part)
        x = SpaceTimeAttention(axes, c.num_heads, c.attention_dim, dtype,
                               position, name=part)(x, train=train)
    return x
