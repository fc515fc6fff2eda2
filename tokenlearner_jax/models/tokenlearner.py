"""TokenLearner v1.0 and v1.1 and TokenFuser, numerically the reference modules.

Parameter names and call signatures follow scenic's `projects/token_learner`.
Two deliberate deviations that change no number:
  * `TokenLearnerModule` raises a `ValueError` naming the shape for a 3-D input
    whose length is not a square (the reference hits a reshape error first).
  * `TokenFuser` returns `original`'s shape when `original` is 4-D (the
    reference always returns `[B, HW, C]`).
Each TokenLearner sows its spatial weights `[B, S, HW]` as the intermediate
`attention_maps`, retrievable with `apply(..., mutable=['intermediates'])`.
The paper's baselines (not in the reference): `PoolingTokens`, `DenseTokens`,
and the TokenFuser alternatives `unpool_tokens` and `TokenReprojection`.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.common import MlpBlock


# Logical axes of the `token_masking` MLP kernels `[C, bottleneck]` and
# `[bottleneck, S]`: tensor parallel over the bottleneck like a block's MLP.
SELECTION_MLP_AXES = (('embed', 'mlp'), ('mlp', None))


class TokenLearnerModule(nn.Module):
  """TokenLearner v1.0, the module of the paper's experiments.

  LayerNorm, three 3x3 convs with GELU, a fourth 3x3 conv, a sigmoid: one
  spatial map per token, which weights the un-normalised input before pooling.

  Attributes:
    num_tokens: Number of learned tokens S.
    use_sum_pooling: Sum over space (the reference default); mean otherwise.
  """
  num_tokens: int
  use_sum_pooling: bool = True

  @nn.compact
  def __call__(self, inputs: jax.Array, return_weights: bool = False):
    """Maps `[B, H, W, C]` or `[B, HW, C]` (HW a square) to `[B, S, C]`.

    With `return_weights`, returns (tokens, spatial weights `[B, S, HW]`).
    """
    if inputs.ndim == 3:
      n, hw, c = inputs.shape
      h = math.isqrt(hw)
      if h * h != hw:
        raise ValueError(
            f'TokenLearnerModule (v1.0) needs a square grid: a [B, HW, C] '
            f'input of shape {inputs.shape} has HW={hw}, not a square. Pass '
            f'[B, H, W, C] or use TokenLearnerModuleV11.')
      inputs = jnp.reshape(inputs, (n, h, h, c))  # [B, H, W, C]
    if inputs.ndim != 4:
      raise ValueError(f'TokenLearnerModule expects a 3-D or 4-D input, got '
                       f'shape {inputs.shape}.')
    n, h, w, c = inputs.shape

    selected = nn.LayerNorm()(inputs)
    for i in range(3):
      # The first kernel is [3, 3, C, S]: sharded over C like other kernels.
      kernel_axes = (None, None, 'embed', None) if i == 0 else None
      selected = nn.Conv(self.num_tokens, (3, 3), padding='SAME',
                         use_bias=False, kernel_init=logical(
                             nn.linear.default_kernel_init, kernel_axes))(
                                 selected)  # [B, H, W, S]
      selected = nn.gelu(selected)
    selected = nn.Conv(self.num_tokens, (3, 3), padding='SAME',
                       use_bias=False)(selected)  # [B, H, W, S]
    selected = jnp.reshape(selected, (n, h * w, self.num_tokens))  # [B, HW, S]
    weights = nn.sigmoid(jnp.transpose(selected, (0, 2, 1)))  # [B, S, HW]
    self.sow('intermediates', 'attention_maps', weights)

    feat = jnp.reshape(inputs, (n, 1, h * w, c))  # [B, 1, HW, C]
    weighted = feat * weights[..., None]  # [B, S, HW, C]
    if self.use_sum_pooling:
      tokens = jnp.sum(weighted, axis=2)  # [B, S, C]
    else:
      tokens = jnp.mean(weighted, axis=2)  # [B, S, C]
    return (tokens, weights) if return_weights else tokens


class TokenLearnerModuleV11(nn.Module):
  """TokenLearner v1.1: an MLP bottleneck and a softmax over space.

  Attributes:
    num_tokens: Number of learned tokens S.
    bottleneck_dim: Hidden width of the selection MLP `token_masking`.
    dropout_rate: Dropout inside `token_masking` (after both Dense layers).
  """
  num_tokens: int
  bottleneck_dim: int = 64
  dropout_rate: float = 0.

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool,
               return_weights: bool = False):
    """Maps `[B, H, W, C]` or `[B, HW, C]` (any grid) to `[B, S, C]`.

    With `return_weights`, returns (tokens, spatial weights `[B, S, HW]`).
    """
    if inputs.ndim == 4:
      n, h, w, c = inputs.shape
      inputs = jnp.reshape(inputs, (n, h * w, c))  # [B, HW, C]
    if inputs.ndim != 3:
      raise ValueError(f'TokenLearnerModuleV11 expects a 3-D or 4-D input, got '
                       f'shape {inputs.shape}.')

    selected = nn.LayerNorm()(inputs)
    selected = MlpBlock(
        mlp_dim=self.bottleneck_dim, out_dim=self.num_tokens,
        dropout_rate=self.dropout_rate, kernel_axes=SELECTION_MLP_AXES,
        name='token_masking')(
            selected, deterministic=deterministic)  # [B, HW, S]
    weights = jax.nn.softmax(jnp.transpose(selected, (0, 2, 1)),
                             axis=-1)  # [B, S, HW]
    self.sow('intermediates', 'attention_maps', weights)
    tokens = jnp.einsum('bsi,bic->bsc', weights, inputs)  # [B, S, C]
    return (tokens, weights) if return_weights else tokens


class PoolingTokens(nn.Module):
  """The paper's pooling baseline (Table 5): k x k average pooling of the grid.

  Attributes:
    window: Pooling window and stride k; the grid side must be divisible by it.
  """
  window: int

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Maps `[B, HW, C]` (HW a square) to `[B, HW / k^2, C]`."""
    n, hw, c = inputs.shape
    h = math.isqrt(hw)
    if h * h != hw or h % self.window:
      raise ValueError(
          f'PoolingTokens needs a square grid whose side is divisible by '
          f'model.tokenizer.pooling_window={self.window}; got {hw} tokens per '
          'slice.')
    x = jnp.reshape(inputs, (n, h, h, c))  # [B, H, W, C]
    x = nn.avg_pool(x, (self.window,) * 2, strides=(self.window,) * 2)
    return jnp.reshape(x, (n, -1, c))  # [B, HW / k^2, C]


class DenseTokens(nn.Module):
  """The paper's "tokens from a fully connected layer" alternative.

  Each token is a learned, input-independent weighted sum over space of the
  LayerNorm-ed input: `Dense_0` maps the spatial axis HW to S.

  Attributes:
    num_tokens: Number of tokens S.
  """
  num_tokens: int

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Maps `[B, HW, C]` to `[B, S, C]`."""
    x = nn.LayerNorm()(inputs)
    x = nn.DenseGeneral(self.num_tokens, axis=1, name='Dense_0')(
        x)  # [B, C, S]
    return jnp.transpose(x, (0, 2, 1))  # [B, S, C]


class TokenFuser(nn.Module):
  """Maps S tokens back onto the original grid (the residual is added outside).

  Tokens are LayerNorm-ed, mixed across the token axis by `Dense_0` (zero
  kernel init, so the module outputs exactly 0 at init), LayerNorm-ed again,
  then scattered over space by sigmoid weights computed from `original`.

  Attributes:
    use_normalization: Use `fuser_mix_norm1`/`fuser_mix_norm2`.
    bottleneck_dim: Hidden width of the remapping MLP `token_masking`.
    dropout_rate: Dropout inside `token_masking` and on the output.
  """
  use_normalization: bool = True
  bottleneck_dim: int = 64
  dropout_rate: float = 0.

  @nn.compact
  def __call__(self, inputs: jax.Array, original: jax.Array,
               deterministic: bool) -> jax.Array:
    """Fuses `[B, S, C]` tokens into `original` `[B, HW, C]` or `[B, H, W, C]`.

    Returns an array of `original`'s shape.
    """
    if inputs.ndim != 3:
      raise ValueError(f'TokenFuser expects [B, S, C] tokens, got shape '
                       f'{inputs.shape}.')
    original_shape = original.shape
    if original.ndim == 4:
      n, h, w, c = original.shape
      original = jnp.reshape(original, (n, h * w, c))  # [B, HW, C]
    num_tokens = inputs.shape[-2]

    if self.use_normalization:
      inputs = nn.LayerNorm(name='fuser_mix_norm1')(inputs)
    inputs = jnp.transpose(inputs, (0, 2, 1))  # [B, C, S]
    inputs = nn.Dense(num_tokens, kernel_init=nn.initializers.zeros)(inputs)
    inputs = jnp.transpose(inputs, (0, 2, 1))  # [B, S, C]
    if self.use_normalization:
      inputs = nn.LayerNorm(name='fuser_mix_norm2')(inputs)

    original = nn.LayerNorm()(original)
    mix = MlpBlock(
        mlp_dim=self.bottleneck_dim, out_dim=num_tokens,
        dropout_rate=self.dropout_rate, kernel_axes=SELECTION_MLP_AXES,
        name='token_masking')(
            original, deterministic=deterministic)  # [B, HW, S]
    mix = nn.sigmoid(mix)
    out = jnp.einsum('bsc,bhs->bhc', inputs, mix)  # [B, HW, C]
    out = nn.Dropout(rate=self.dropout_rate)(out, deterministic=deterministic)
    return jnp.reshape(out, original_shape[:-1] + (out.shape[-1],))


def unpool_tokens(inputs: jax.Array, weights: jax.Array) -> jax.Array:
  """The paper's "unpool" alternative to TokenFuser (no parameters).

  Scatters `[B, S, C]` tokens back over space with the TokenLearner's own
  spatial weights `[B, S, HW]` (the transpose of its pooling): `[B, HW, C]`.
  """
  return jnp.einsum('bsi,bsc->bic', weights, inputs)  # [B, HW, C]


class TokenReprojection(nn.Module):
  """The paper's "reprojection" alternative to TokenFuser.

  An extra attention layer restores the token count: every position of the
  original grid (LayerNorm-ed, the queries) attends to the S processed tokens
  (LayerNorm-ed, keys and values). Its cost, about 2 HW C^2 multiply-adds per
  layer for the query and output projections, is what the paper's figure adds
  over TokenFuser (+4.1 GFLOPs for ViT-B/16 8-TL at 6 at 384, six layers).

  Attributes:
    num_heads: Attention heads (the encoder's).
    dropout_rate: Dropout on the output.
  """
  num_heads: int
  dropout_rate: float = 0.

  @nn.compact
  def __call__(self, inputs: jax.Array, original: jax.Array,
               deterministic: bool) -> jax.Array:
    """Maps `[B, S, C]` tokens onto `original` `[B, HW, C]`: `[B, HW, C]`."""
    xavier = nn.initializers.xavier_uniform()
    queries = nn.LayerNorm()(original)  # [B, HW, C]
    tokens = nn.LayerNorm()(inputs)  # [B, S, C]
    out = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        kernel_init=logical(xavier, ('embed', 'heads', 'kv')),
        out_kernel_init=logical(xavier, ('heads', 'kv', 'embed')))(
            queries, tokens, deterministic=deterministic)  # [B, HW, C]
    return nn.Dropout(rate=self.dropout_rate)(out, deterministic=deterministic)
