"""Transformer building blocks with the reference's parameter names.

These mirror the scenic layers that TokenLearner builds on
(`vit.AddPositionEmbs`, `vit.Encoder1DBlock`, `attention_layers.MlpBlock`,
`nn_layers.StochasticDepth`) so that a parameter tree written by the reference
loads unchanged.
"""

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]
LogicalAxes = Tuple[Optional[str], ...]


def logical(init: Initializer, axes: Optional[Sequence[Optional[str]]]):
  """`init` with logical axis names for sharding (None: left unannotated).

  Names change no value: `config.logical_axis_rules` maps them to mesh axes.
  """
  if axes is None:
    return init
  return nn.with_logical_partitioning(init, tuple(axes))


# (mesh, logical axis rules) of the step being traced (`activation_sharding`).
_ACTIVATION_SHARDING: contextvars.ContextVar[
    Optional[Tuple[jax.sharding.Mesh, Sequence[Tuple[str, Any]]]]] = (
        contextvars.ContextVar('activation_sharding', default=None))


@contextlib.contextmanager
def activation_sharding(mesh: jax.sharding.Mesh,
                        rules: Sequence[Tuple[str, Any]]) -> Iterator[None]:
  """Within it, `batch_split` constrains activations on `mesh` by `rules`
  (`train_steps` traces its steps inside it). Parameters are not
  constrained: the step's input shardings already place them."""
  token = _ACTIVATION_SHARDING.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVATION_SHARDING.reset(token)


def batch_split(x: jax.Array) -> jax.Array:
  """`x` split over its leading (batch) dimension as the logical axis rules
  place 'batch' (`data` x `fsdp`), whole along the others: what keeps FSDP
  sharding the batch, not the embedding. A no-op outside
  `activation_sharding`, or when its rules do not name 'batch'."""
  context = _ACTIVATION_SHARDING.get()
  if context is None:
    return x
  mesh, rules = context
  return nn.with_logical_constraint(
      x, ('batch',) + (None,) * (x.ndim - 1), rules=rules, mesh=mesh,
      fallback=nn.spmd.RulesFallback.NO_CONSTRAINT)


class MlpBlock(nn.Module):
  """Dense -> activation -> dropout -> Dense -> dropout.

  Parameters are `Dense_0` and `Dense_1`. Dropout follows *both* Dense layers,
  as in the reference (so it also drops TokenLearner selection logits).

  Attributes:
    mlp_dim: Hidden width.
    out_dim: Output width; the input width when None.
    dropout_rate: Dropout rate after each Dense layer.
    activation_fn: Activation after the first Dense layer.
    kernel_init: Kernel initializer of both Dense layers.
    bias_init: Bias initializer of both Dense layers.
    kernel_axes: Logical axis names of the two kernels, or None.
    dtype: Computation dtype.
  """
  mlp_dim: int
  out_dim: Optional[int] = None
  dropout_rate: float = 0.1
  activation_fn: Callable[[jax.Array], jax.Array] = nn.gelu
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  bias_init: Initializer = nn.initializers.normal(stddev=1e-6)
  kernel_axes: Optional[Tuple[LogicalAxes, LogicalAxes]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, *, deterministic: bool) -> jax.Array:
    out_dim = inputs.shape[-1] if self.out_dim is None else self.out_dim
    axes = self.kernel_axes or (None, None)

    def dense(features: int, kernel_axes: Optional[LogicalAxes]) -> nn.Dense:
      bias_axes = None if kernel_axes is None else kernel_axes[-1:]
      return nn.Dense(features, dtype=self.dtype,
                      kernel_init=logical(self.kernel_init, kernel_axes),
                      bias_init=logical(self.bias_init, bias_axes))

    x = self.activation_fn(dense(self.mlp_dim, axes[0])(inputs))
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = dense(out_dim, axes[1])(x)
    return nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                    mask: Optional[jax.Array] = None, dropout_rate: float = 0.,
                    deterministic: bool = True,
                    implementation: Optional[str] = None,
                    **unused) -> jax.Array:
  """`jax.nn.dot_product_attention` as a flax `attention_fn`.

  `[B, L, N, H]` queries, keys and values -> `[B, L, N, H]`. It has no
  attention dropout, so a training call with `dropout_rate > 0` raises.
  `implementation`: None (jax's choice: XLA) or 'cudnn'.
  """
  del unused
  if dropout_rate > 0. and not deterministic:
    raise ValueError(
        'jax.nn.dot_product_attention (model.attention_impl '
        f"{'cudnn' if implementation else 'fused'!r}) has no attention "
        f'dropout; model.attention_dropout_rate={dropout_rate} needs '
        "attention_impl='einsum'.")
  return jax.nn.dot_product_attention(query, key, value, mask=mask,
                                      implementation=implementation)


# The sequence block of the Pallas kernels (`pallas_attention`,
# `splash_attention`): sequences are padded to a multiple of it.
PALLAS_BLOCK = 128
# `splash_attention`'s blocks: at most the first, at least the second (or
# the whole padded sequence, where shorter).
SPLASH_MAX_BLOCK = 1024
SPLASH_MIN_BLOCK = 512


def pallas_length(tokens: int) -> int:
  """`tokens` rounded up to a multiple of `PALLAS_BLOCK`."""
  return -(-tokens // PALLAS_BLOCK) * PALLAS_BLOCK


def splash_block(length: int) -> int:
  """`splash_attention`'s query and key block for a padded `length`: the
  largest multiple of `PALLAS_BLOCK` up to `SPLASH_MAX_BLOCK` that divides
  it. Each kernel streams one side of the attention once per block of the
  other (keys and values once per query block, queries and their gradients
  once per key block), so fewer, larger blocks read less."""
  return max(b for b in range(PALLAS_BLOCK, SPLASH_MAX_BLOCK + 1,
                              PALLAS_BLOCK) if length % b == 0)


def splash_length(n: int) -> int:
  """`splash_attention`'s padded length for `n` tokens: the smallest
  multiple of `PALLAS_BLOCK` from `n` whose `splash_block` is at least
  `SPLASH_MIN_BLOCK` (or the whole length): 3,137 tokens -> 3,200 (blocks
  of 640); 7,745 -> 8,064 (896), where 7,808 would allow blocks of 128
  only."""
  length = pallas_length(n)
  while splash_block(length) < min(SPLASH_MIN_BLOCK, length):
    length += PALLAS_BLOCK
  return length


def _pallas_shards(attend: Callable[..., jax.Array], name: str,
                   padded_length: Callable[[int], int], query: jax.Array,
                   key: jax.Array, value: jax.Array,
                   mask: Optional[jax.Array], dropout_rate: float,
                   deterministic: bool) -> jax.Array:
  """`attend(q, k, v, tokens)` on `[B, padded_length(L), N, H]` inputs
  whose positions from L (`tokens`) on are padding; returns `[B, L, N, H]`;
  the einsum (`nn.dot_product_attention`) where L is under `PALLAS_BLOCK`.
  Inside a train or eval step (`activation_sharding`) on each device's shard
  (`jax.shard_map`: the batch split as 'batch', the heads as 'heads'): XLA
  does not partition a Mosaic kernel."""
  if mask is not None or (dropout_rate > 0. and not deterministic):
    raise ValueError(f"model.attention_impl={name!r} takes no attention mask "
                     'and no attention dropout.')
  tokens = query.shape[1]
  if tokens < PALLAS_BLOCK:
    # Shorter than one block (the tokens after TokenLearner): padding to a
    # block would move more bytes than the einsum's small logits.
    return nn.dot_product_attention(query, key, value)
  pad = padded_length(tokens) - tokens

  def padded(q, k, v):  # One shard: [b, L, n, H] each.
    q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
               for x in (q, k, v))  # [b, L + pad, n, H]
    return attend(q, k, v, tokens)[:, :tokens]  # [b, L, n, H]

  context = _ACTIVATION_SHARDING.get()
  if context is None:
    return padded(query, key, value)
  mesh, rules = context
  spec = nn.logical_to_mesh_axes(('batch', None, 'heads', None), rules)
  return jax.shard_map(padded, mesh=mesh, in_specs=(spec,) * 3,
                       out_specs=spec, check_vma=False)(query, key, value)


def _real_tokens(batch: int, padded: int, tokens: int) -> jax.Array:
  """1 for the `tokens` real ones, 0 for the padding: `[batch, padded]`."""
  return jnp.broadcast_to(jnp.arange(padded) < tokens,
                          (batch, padded)).astype(jnp.int32)


def pallas_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                     mask: Optional[jax.Array] = None,
                     dropout_rate: float = 0., deterministic: bool = True,
                     **unused) -> jax.Array:
  """Pallas's TPU flash attention as a flax `attention_fn`
  (`jax.experimental.pallas.ops.tpu.flash_attention`).

  `[B, L, N, H]` queries, keys and values -> `[B, L, N, H]`, the same
  softmax(QK^T / sqrt(H))V as the einsum. The kernel takes sequences in
  blocks of `PALLAS_BLOCK`: L is padded up to a multiple of it and the padding
  masked by segment ids (no real query attends to a padded key; the padded
  queries' rows are dropped). No mask and no attention dropout. Inside a
  train or eval step it runs on each device's shard (`_pallas_shards`). TPU
  devices only, or Pallas's TPU interpret mode
  (`pltpu.force_tpu_interpret_mode`).
  """
  del unused
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # pylint: disable=g-import-not-at-top
  blocks = fa.BlockSizes(
      block_q=PALLAS_BLOCK, block_k_major=PALLAS_BLOCK, block_k=PALLAS_BLOCK,
      block_b=1, block_q_major_dkv=PALLAS_BLOCK,
      block_k_major_dkv=PALLAS_BLOCK, block_k_dkv=PALLAS_BLOCK,
      block_q_dkv=PALLAS_BLOCK, block_k_major_dq=PALLAS_BLOCK,
      block_k_dq=PALLAS_BLOCK, block_q_dq=PALLAS_BLOCK)

  def attend(q, k, v, tokens):  # [b, L + pad, n, H] each.
    ids = _real_tokens(q.shape[0], q.shape[1], tokens)  # [b, L + pad]
    out = fa.flash_attention(
        *(jnp.swapaxes(x, 1, 2) for x in (q, k, v)),  # [b, n, L + pad, H]
        segment_ids=fa.SegmentIds(ids, ids), sm_scale=q.shape[-1]**-0.5,
        block_sizes=blocks)  # [b, n, L + pad, H]
    return jnp.swapaxes(out, 1, 2)  # [b, L + pad, n, H]

  return _pallas_shards(attend, 'pallas', pallas_length, query, key, value,
                        mask, dropout_rate, deterministic)


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                     mask: Optional[jax.Array] = None,
                     dropout_rate: float = 0., deterministic: bool = True,
                     **unused) -> jax.Array:
  """Pallas's TPU splash attention as a flax `attention_fn`
  (`jax.experimental.pallas.ops.tpu.splash_attention`, its fused backward
  kernel).

  The same contract as `pallas_attention` (padding masked by segment ids,
  to `splash_length(L)`; the same shards). Where the flash kernel keeps its
  softmax statistics for the backward pass as f32 `[B, N, L, 128]` arrays
  (the running max, the sum and the output-gradient product, each broadcast
  over 128 lanes), splash's backward kernel reads f32 `[N, 8, L]` ones, and
  computes the key, value and query gradients in one kernel, in blocks of
  `splash_block(L)`. Its logits are those of the queries scaled by
  1/sqrt(H) first; a shard's batch and heads are one axis of the kernel's
  heads. TPU devices only, or Pallas's TPU interpret mode
  (`pltpu.force_tpu_interpret_mode`).
  """
  del unused
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top

  def attend(q, k, v, tokens):  # [b, L + pad, n, H] each.
    b, length, heads, h = q.shape
    block = splash_block(length)
    # Every sequence has the same padding: the batch joins the heads, one
    # kernel call for the shard.
    kernel = sk.make_splash_mha(
        sm.MultiHeadMask([sm.FullMask((length, length))] * (b * heads)),
        block_sizes=sk.BlockSizes(
            block_q=block, block_kv=block, block_kv_compute=block,
            block_q_dkv=block, block_kv_dkv=block,
            block_kv_dkv_compute=block, use_fused_bwd_kernel=True),
        head_shards=1, q_seq_shards=1)
    ids = _real_tokens(1, length, tokens)[0]  # [L + pad]
    q = q * jnp.asarray(h**-0.5, q.dtype)

    def joined(x):  # [b, L + pad, n, H] -> [b * n, L + pad, H]
      return jnp.swapaxes(x, 1, 2).reshape(b * heads, length, h)

    out = kernel(joined(q), joined(k), joined(v),
                 segment_ids=sk.SegmentIds(ids, ids))  # [b * n, L + pad, H]
    out = out.reshape(b, heads, length, h)  # [b, n, L + pad, H]
    return jnp.swapaxes(out, 1, 2)  # [b, L + pad, n, H]

  return _pallas_shards(attend, 'splash', splash_length, query, key, value,
                        mask, dropout_rate, deterministic)


class StochasticDepth(nn.Module):
  """Drops the whole residual branch per example.

  Attributes:
    rate: Probability of dropping the branch of one example.
    rescale: Scale kept branches by 1/(1-rate) (scenic's `StochasticDepth`);
      False keeps them as they are (ViViT's `stochastic_droplayer_rate`).
  """
  rate: float = 0.0
  rescale: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool,
               rate: Union[float, jax.Array, None] = None) -> jax.Array:
    """`rate`, where given (a traced per-layer rate under `nn.scan`), wins."""
    rate = self.rate if rate is None else rate
    if deterministic or (isinstance(rate, float) and rate == 0.0):
      return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if not self.rescale:
      drop = jax.random.bernoulli(self.make_rng('dropout'), rate, shape)
      return x * (1.0 - drop.astype(x.dtype))
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class AddPositionEmbs(nn.Module):
  """Adds a learned 1-D position embedding `pos_embedding` of shape [1, L, C].

  Attributes:
    posemb_init: Initializer of the embedding (BERT's normal(0.02)).
  """
  posemb_init: Initializer = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    assert inputs.ndim == 3, f'expected [B, L, C], got {inputs.shape}'
    pe = self.param('pos_embedding',
                    logical(self.posemb_init, (None, None, 'embed')),
                    (1,) + inputs.shape[1:], inputs.dtype)
    return inputs + pe


def sinusoidal_1d(length: int, dim: int,
                  max_timescale: float = 1.0e4) -> np.ndarray:
  """ViViT's fixed 'sinusoidal_1d' embedding `[1, length, dim]`: sines on the
  even channels, cosines on the odd ones."""
  embedding = np.zeros((length, dim), np.float32)  # [L, D]
  position = np.arange(length)[:, None]  # [L, 1]
  rates = np.exp(np.arange(0, dim, 2) * -(np.log(max_timescale) / dim))
  embedding[:, 0::2] = np.sin(position * rates)
  embedding[:, 1::2] = np.cos(position * rates)
  return embedding[None]  # [1, L, D]


def sincos_3d(time: int, height: int, width: int, dim: int,
              temperature: float = 10_000) -> jax.Array:
  """ViViT's fixed 'sinusoidal_3d' embedding `[1, T*h*w, dim]`: sin and cos
  of t, then of the column, then of the row, `dim / 6` frequencies each."""
  omega = jnp.arange(dim // 6, dtype=jnp.float32) / (dim / 6)
  omega = 1.0 / (temperature**omega)  # [D/6]
  z, y, x = jnp.mgrid[:time, :height, :width]  # Each [T, h, w].
  parts = []
  for coordinate in (z, x, y):
    angle = jnp.einsum('m,d->md', coordinate.flatten(), omega)  # [T*h*w, D/6]
    parts += [jnp.sin(angle), jnp.cos(angle)]
  return jnp.concatenate(parts, axis=1)[None]  # [1, T*h*w, D]


def add_position_embedding(x: jax.Array, kind: str,
                           temporal_dims: int) -> jax.Array:
  """`[B, L, C]` plus the `kind` embedding (`ModelConfig.positional_embedding`).

  Call inside a compact method: 'learned_1d' adds the caller's
  `posembed_input`. 'sinusoidal_3d' needs L = T * s * s (no class token).
  """
  if kind == 'learned_1d':
    return AddPositionEmbs(name='posembed_input')(x)
  if kind == 'none':
    return x
  _, length, dim = x.shape
  if kind == 'sinusoidal_1d':
    return x + sinusoidal_1d(length, dim)
  side = math.isqrt(length // temporal_dims)
  if side * side * temporal_dims != length:
    raise ValueError("model.positional_embedding='sinusoidal_3d' needs a "
                     f'square token grid per slice and no class token: '
                     f'{length} tokens over {temporal_dims} slices.')
  return x + sincos_3d(temporal_dims, side, side, dim)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm transformer block: self-attention then MLP, both residual.

  Attributes:
    mlp_dim: Hidden width of the MLP.
    num_heads: Attention heads.
    dropout_rate: Dropout after attention and inside the MLP.
    attention_dropout_rate: Dropout on the attention weights.
    stochastic_depth: Probability of dropping each residual branch (training).
    rescale_kept: Scale kept branches by 1/(1-rate) (see `StochasticDepth`).
    attention_impl: 'einsum' (the reference's softmax(QK^T)V), 'fused'
      (`jax.nn.dot_product_attention`, XLA's), 'cudnn' (cuDNN's flash
      attention: CUDA GPUs, bf16/fp16), 'pallas' (`pallas_attention`: TPUs)
      or 'splash' (`splash_attention`: TPUs).
    dtype: Computation dtype.
  """
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_depth: float = 0.0
  rescale_kept: bool = True
  attention_impl: str = 'einsum'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool,
               depth_rate: Optional[jax.Array] = None) -> jax.Array:
    """`depth_rate` overrides `stochastic_depth` (per layer under nn.scan)."""
    assert inputs.ndim == 3, f'expected [B, L, C], got {inputs.shape}'
    x = nn.LayerNorm(dtype=self.dtype)(inputs)
    xavier = nn.initializers.xavier_uniform()
    attention_fn = {
        'einsum': nn.dot_product_attention,
        'fused': fused_attention,
        'cudnn': functools.partial(fused_attention, implementation='cudnn'),
        'pallas': pallas_attention,
        'splash': splash_attention,
    }[self.attention_impl]
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        dtype=self.dtype,
        attention_fn=attention_fn,
        kernel_init=logical(xavier, ('embed', 'heads', 'kv')),
        out_kernel_init=logical(xavier, ('heads', 'kv', 'embed')),
        broadcast_dropout=False,
        dropout_rate=self.attention_dropout_rate)(
            x, x, deterministic=deterministic)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic)
    drop_path = StochasticDepth(self.stochastic_depth, self.rescale_kept)
    x = drop_path(x, deterministic, depth_rate) + inputs

    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
                 kernel_axes=(('embed', 'mlp'), ('mlp', 'embed')),
                 dtype=self.dtype)(y, deterministic=deterministic)
    drop_path = StochasticDepth(self.stochastic_depth, self.rescale_kept)
    return batch_split(drop_path(y, deterministic, depth_rate) + x)


def pool(x: jax.Array, classifier: str,
         sizes: Optional[jax.Array] = None) -> jax.Array:
  """`[..., L, C]` -> `[..., C]`: the first token ('token', '0') or
  gap/gmp/gsp pooling.

  `sizes` `[..., L]` (the patches each token stands for after ToMe or ATS;
  0 for an empty slot) weight 'gap' and 'gsp' by size, as ToMe's MAE pooling
  (so they pool over the input patches), and keep empty slots out of 'gmp'.
  """
  if classifier in ('token', '0'):
    return x[..., 0, :]
  if sizes is None:
    reduce = {'gap': jnp.mean, 'gmp': jnp.max, 'gsp': jnp.sum}[classifier]
    return reduce(x, axis=-2)
  weights = sizes[..., None].astype(x.dtype)  # [..., L, 1]
  if classifier == 'gmp':
    return jnp.max(jnp.where(weights > 0, x, -jnp.inf), axis=-2)
  total = jnp.sum(weights * x, axis=-2)  # [..., C]
  return total / jnp.sum(weights, axis=-2) if classifier == 'gap' else total


def classifier_head(x: jax.Array, representation_size: Optional[int],
                    num_classes: int) -> jax.Array:
  """Pooled `[B, C]` -> tanh `pre_logits` (optional) -> `output_projection`.

  The output projection starts at zero, as the reference's. Call inside a compact method: the layers join the caller's parameters, and
  the caller sows the head's input `[B, D]` as `intermediates/representation`
  (the frozen features of `tokenlearner_jax.fewshot`).
  """
  if representation_size is not None:
    x = nn.tanh(nn.Dense(
        representation_size, name='pre_logits',
        kernel_init=logical(nn.linear.default_kernel_init, ('embed', None)))(x))
  head = nn.Dense(num_classes,
                  kernel_init=logical(nn.initializers.zeros, (None, 'classes')),
                  name='output_projection')
  head.parent.sow('intermediates', 'representation', x)  # The calling module.
  return head(x)
