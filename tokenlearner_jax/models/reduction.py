"""Token reduction methods that came after TokenLearner, in its slot.

`model.tokenizer.token_reduction` picks one; each cites its paper, and
docs/models.md lists every place we depart from the original code:

* 'tome': Token Merging (Bolya et al., ICLR 2023). In every block from
  `tokenlearner_loc` on, after attention, bipartite soft matching merges the
  `tome_r` most similar pairs (cosine similarity of the keys averaged over
  heads; tokens alternate between the two sets; a class token is never
  merged) into size-weighted averages; later attention adds log(size) to its
  logits (proportional attention, `tome_prop_attn`).
* 'evit': EViT (Liang et al., ICLR 2022). In the blocks `tokenlearner_loc` and
  `pooling_locs`, after attention, keeps the ceil(`keep_rate` (N-1)) tokens
  the class token attends to most (attention averaged over heads) and fuses
  the rest into one token weighted by that attention.
* 'ats': Adaptive Token Sampling (Fayyaz et al., ECCV 2022). In the same
  blocks, scores each token by the class token's attention (summed over
  heads) times the norm of its value, and picks at most `num_tokens` tokens
  by inverse transform sampling of the scores' distribution at evenly
  spaced points; a token picked twice is kept once, so fewer may remain
  (the empty slots carry size 0, which masks them in later attention and
  pooling). As in its authors' code, it has at least `ATS_MIN_TOKENS`
  slots, the class token's included.
* 'patchmerger': PatchMerger (Renggli et al., 2022), a learned module before
  block `tokenlearner_loc`, as TokenLearner: Y = softmax_N(W^T LN(X)^T) X
  merges each temporal slice into `num_tokens` tokens.

The first three run inside `ReducingBlock`, which has `Encoder1DBlock`'s
parameter names (a checkpoint of a plain model loads into it, which is how
ToMe and ATS are applied without retraining) and carries each token's size
`[B, N]`: how many input patches it stands for, 0 for an empty slot.
"""

import dataclasses
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.common import MlpBlock
from tokenlearner_jax.models.common import StochasticDepth

_MASKED = -1e9  # The attention logit bias of an empty slot (size 0).
# ATS's authors sample at least 8 tokens, their count including the class
# token (fewer tokens than that in a block: all of them).
ATS_MIN_TOKENS = 8


@dataclasses.dataclass(frozen=True)
class Reduction:
  """What one `ReducingBlock` does after its attention.

  Attributes:
    method: 'tome', 'evit', 'ats' or 'none' (attention with sizes only).
    amount: ToMe's r (pairs merged), EViT's keep rate, ATS's sample count.
    class_token: The first token is never merged or dropped (a class token,
      or the token `classifier='0'` reads out).
  """
  method: str = 'none'
  amount: float = 0
  class_token: bool = False


def size_bias(sizes: jax.Array) -> jax.Array:
  """Attention logit bias `[B, 1, 1, N]` of token sizes `[B, N]`: log(size),
  and a large negative number for empty slots (size 0)."""
  safe = jnp.where(sizes > 0, sizes, 1.0)
  bias = jnp.where(sizes > 0, jnp.log(safe), _MASKED)
  return jax.lax.stop_gradient(bias)[:, None, None, :]  # [B, 1, 1, N]


def _gather(x: jax.Array, idx: jax.Array) -> jax.Array:
  """`x[b, idx[b]]` for `x` `[B, N, ...]` and `idx` `[B, K]`."""
  return jax.vmap(lambda xb, ib: xb[ib])(x, idx)  # [B, K, ...]


def tome_merge(x: jax.Array, sizes: jax.Array, metric: jax.Array, r: int,
               class_token: bool) -> Tuple[jax.Array, jax.Array]:
  """ToMe's bipartite soft matching, then size-weighted merging.

  Args:
    x: Tokens `[B, N, C]`.
    sizes: Their sizes `[B, N]`.
    metric: The matching features `[B, N, Ck]` (keys averaged over heads).
    r: Pairs to merge (at most half the unprotected tokens).
    class_token: Token 0 is never merged.

  Returns:
    `[B, N - r, C]` tokens and their sizes `[B, N - r]`: the unmerged tokens
    of set A (in order of decreasing best similarity; in input order with a
    class token), then set B with the merged tokens averaged in.
  """
  n = x.shape[1]
  r = min(r, (n - int(class_token)) // 2)
  if r <= 0:
    return x, sizes
  metric = jax.lax.stop_gradient(metric)
  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[:, ::2], metric[:, 1::2]  # [B, Na, Ck], [B, Nb, Ck]
  scores = jnp.einsum('bic,bjc->bij', a, b)  # [B, Na, Nb]
  if class_token:
    scores = scores.at[:, 0, :].set(-jnp.inf)
  node_max = scores.max(axis=-1)  # [B, Na]
  node_idx = scores.argmax(axis=-1)  # [B, Na]
  edge_idx = jnp.argsort(-node_max, axis=-1, stable=True)  # [B, Na]
  unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]  # [B, Na-r], [B, r]
  dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)  # [B, r]
  if class_token:
    unm_idx = jnp.sort(unm_idx, axis=-1)

  def merge(values):  # [B, N, K] -> [B, N - r, K], merged ones summed.
    src, dst = values[:, ::2], values[:, 1::2]  # [B, Na, K], [B, Nb, K]
    dst = jax.vmap(lambda d, i, s: d.at[i].add(s))(
        dst, dst_idx, _gather(src, src_idx))  # [B, Nb, K]
    return jnp.concatenate([_gather(src, unm_idx), dst], axis=1)

  weights = sizes[..., None].astype(x.dtype)  # [B, N, 1]
  merged = merge(x * weights)  # [B, N - r, C]
  new_sizes = merge(sizes[..., None])[..., 0]  # [B, N - r]
  return merged / new_sizes[..., None].astype(x.dtype), new_sizes


def evit_keep(x: jax.Array, cls_attention: jax.Array,
              keep_rate: float) -> jax.Array:
  """EViT's attentive token keeping with fusion of the inattentive ones.

  Args:
    x: Tokens `[B, N, C]`, token 0 the class token.
    cls_attention: The class token's attention to tokens 1.. `[B, N - 1]`
      (averaged over heads).
    keep_rate: The fraction of tokens 1.. kept (rounded up).

  Returns:
    `[B, 1 + K + 1, C]`: the class token, the K kept tokens in order of
    decreasing attention, and the fused token (the others summed, weighted
    by their attention); `x` itself when every token would be kept.
  """
  others = x.shape[1] - 1
  keep = math.ceil(keep_rate * others)
  if keep >= others:
    return x
  top, idx = jax.lax.top_k(cls_attention, keep)  # [B, K], [B, K]
  del top
  kept = _gather(x[:, 1:], idx)  # [B, K, C]
  dropped = 1.0 - jax.nn.one_hot(idx, others, dtype=x.dtype).sum(1)  # [B, N-1]
  weights = cls_attention.astype(x.dtype) * dropped  # [B, N - 1]
  fused = jnp.einsum('bn,bnc->bc', weights, x[:, 1:])  # [B, C]
  return jnp.concatenate([x[:, :1], kept, fused[:, None]], axis=1)


def ats_scores(attention: jax.Array, value: jax.Array) -> jax.Array:
  """ATS's significance scores `[B, N - 1]` of tokens 1..: the class token's
  attention `[B, H, N, N]` summed over heads times the L2 norm of each
  token's value `[B, N, H, D]` (all heads), normalised to sum to 1."""
  b, n = value.shape[:2]
  norms = jnp.linalg.norm(jnp.reshape(value, (b, n, -1)), axis=-1)  # [B, N]
  scores = attention[:, :, 0].sum(axis=1) * norms  # [B, N]
  scores = scores[:, 1:]  # [B, N - 1]
  total = jnp.maximum(scores.sum(axis=-1, keepdims=True), 1e-30)
  return scores / total


def ats_sample(x: jax.Array, sizes: jax.Array, scores: jax.Array,
               num_samples: int) -> Tuple[jax.Array, jax.Array]:
  """ATS's inverse transform sampling of tokens 1.. by their scores.

  The scores are sorted ascending and accumulated into a CDF scaled to
  [0, 1]; `num_samples` points evenly spaced from its smallest positive value
  to 1 each pick the token whose CDF value is nearest; duplicates are kept
  once.

  Args:
    x: Tokens `[B, N, C]`, token 0 the class token.
    sizes: Their sizes `[B, N]` (0: an empty slot, whose score is 0).
    scores: `ats_scores` `[B, N - 1]`.
    num_samples: The sampling points K (at most K tokens are kept).

  Returns:
    `[B, 1 + K, C]` tokens (the class token, then the picked tokens in order
    of increasing score, then empty slots) and their sizes `[B, 1 + K]`.
  """
  b, n, c = x.shape
  order = jnp.argsort(scores, axis=-1, stable=True)  # [B, N - 1]
  cdf = jnp.cumsum(jnp.take_along_axis(scores, order, -1), -1)  # [B, N - 1]
  low, high = cdf.min(-1, keepdims=True), cdf.max(-1, keepdims=True)
  cdf = (cdf - low) / jnp.maximum(high - low, 1e-12)  # [B, N - 1] in [0, 1]
  start = jnp.min(jnp.where(cdf > 0, cdf, jnp.inf), -1, keepdims=True)
  start = jnp.where(jnp.isfinite(start), start, 0.0)  # [B, 1]
  steps = jnp.linspace(0.0, 1.0, num_samples)  # [K]
  ys = start + (1.0 - start) * steps  # [B, K]
  picks = jnp.argmin(jnp.abs(ys[:, :, None] - cdf[:, None, :]), -1)  # [B, K]
  picks = jnp.sort(picks, axis=-1)  # [B, K], sorted positions in `order`.
  repeated = jnp.concatenate(
      [jnp.zeros((b, 1), bool), picks[:, 1:] == picks[:, :-1]], axis=1)
  # Unique picks first (in order), duplicates pushed to the end.
  rank = jnp.argsort(repeated, axis=-1, stable=True)  # [B, K]
  picks = jnp.take_along_axis(picks, rank, -1)  # [B, K]
  valid = ~jnp.take_along_axis(repeated, rank, -1)  # [B, K]
  idx = jnp.take_along_axis(order, picks, -1) + 1  # [B, K] token indices
  chosen = jnp.where(valid[..., None], _gather(x, idx), 0)  # [B, K, C]
  chosen_sizes = jnp.where(valid, _gather(sizes, idx), 0)  # [B, K]
  del n, c
  return (jnp.concatenate([x[:, :1], chosen], axis=1),
          jnp.concatenate([sizes[:, :1], chosen_sizes], axis=1))


class InspectedAttention(nn.Module):
  """`nn.MultiHeadDotProductAttention`'s self-attention with the same
  parameters, a logit bias, and its keys, values and weights returned.

  Attributes:
    num_heads: Attention heads.
    dropout_rate: Dropout on the attention weights.
    dtype: Computation dtype.
  """
  num_heads: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, bias: Optional[jax.Array],
               deterministic: bool):
    """`[B, N, C]` -> (output `[B, N, C]`, keys and values `[B, N, H, D]`,
    weights `[B, H, N, N]`)."""
    c = x.shape[-1]
    head_dim = c // self.num_heads
    xavier = nn.initializers.xavier_uniform()

    def project(name: str) -> jax.Array:
      return nn.DenseGeneral(
          (self.num_heads, head_dim), dtype=self.dtype,
          kernel_init=logical(xavier, ('embed', 'heads', 'kv')),
          name=name)(x)  # [B, N, H, D]

    query, key, value = project('query'), project('key'), project('value')
    dropout_rng = None
    if self.dropout_rate > 0 and not deterministic:
      dropout_rng = self.make_rng('dropout')
    weights = nn.dot_product_attention_weights(
        query, key, bias=bias, broadcast_dropout=False,
        dropout_rng=dropout_rng, dropout_rate=self.dropout_rate,
        deterministic=deterministic, dtype=self.dtype)  # [B, H, N, N]
    out = jnp.einsum('...hqk,...khd->...qhd', weights, value)  # [B, N, H, D]
    out = nn.DenseGeneral(
        c, axis=(-2, -1), dtype=self.dtype,
        kernel_init=logical(xavier, ('heads', 'kv', 'embed')),
        name='out')(out)  # [B, N, C]
    return out, key, value, weights


class ReducingBlock(nn.Module):
  """`Encoder1DBlock` (same parameters) that carries token sizes and applies
  a `Reduction` between its attention and its MLP.

  Attributes:
    mlp_dim: Hidden width of the MLP.
    num_heads: Attention heads.
    reduction: What happens after attention.
    dropout_rate: Dropout after attention and inside the MLP.
    attention_dropout_rate: Dropout on the attention weights.
    stochastic_depth: Probability of dropping each residual branch.
    rescale_kept: Scale kept branches by 1/(1-rate).
    prop_attention: Add log(size) to the attention logits (ToMe's
      proportional attention); False masks empty slots only.
    dtype: Computation dtype.
  """
  mlp_dim: int
  num_heads: int
  reduction: Reduction = Reduction()
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_depth: float = 0.0
  rescale_kept: bool = True
  prop_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, sizes: jax.Array, deterministic: bool,
               depth_rate: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, jax.Array]:
    """(`[B, N, C]`, sizes `[B, N]`) -> (`[B, N', C]`, sizes `[B, N']`)."""
    x = nn.LayerNorm(dtype=self.dtype)(inputs)
    bias = size_bias(sizes if self.prop_attention else
                     jnp.minimum(sizes, 1.0))  # [B, 1, 1, N]
    x, key, value, weights = InspectedAttention(
        self.num_heads, self.attention_dropout_rate, self.dtype,
        name='MultiHeadDotProductAttention_0')(x, bias, deterministic)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic)
    drop_path = StochasticDepth(self.stochastic_depth, self.rescale_kept)
    x = drop_path(x, deterministic, depth_rate) + inputs
    x, sizes = self._reduce(x, sizes, key, value, weights)

    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
                 kernel_axes=(('embed', 'mlp'), ('mlp', 'embed')),
                 dtype=self.dtype)(y, deterministic=deterministic)
    drop_path = StochasticDepth(self.stochastic_depth, self.rescale_kept)
    return drop_path(y, deterministic, depth_rate) + x, sizes

  def _reduce(self, x, sizes, key, value, weights):
    """Scores and similarities in float32 (bf16 would tie them)."""
    r = self.reduction
    key, value, weights = (a.astype(jnp.float32) for a in (key, value,
                                                            weights))
    if r.method == 'tome':
      return tome_merge(x, sizes, key.mean(axis=2), int(r.amount),
                        r.class_token)
    if r.method == 'evit':
      cls_attention = weights[:, :, 0, 1:].mean(axis=1)  # [B, N - 1]
      kept = evit_keep(x, cls_attention, r.amount)
      if kept.shape[1] == x.shape[1]:
        return x, sizes
      # The fused token stands for many, but EViT weighs it as one.
      return kept, jnp.ones(kept.shape[:2], sizes.dtype)
    if r.method == 'ats':
      scores = jax.lax.stop_gradient(ats_scores(weights, value))
      return ats_sample(x, sizes, scores,
                        min(int(r.amount), x.shape[1] - 1))
    return x, sizes


class PatchMerger(nn.Module):
  """PatchMerger (Renggli et al., 2022): `num_tokens` learned queries merge
  the tokens, Y = softmax over tokens of (LN(X) W)^T, times X.

  Attributes:
    num_tokens: Output tokens M.
  """
  num_tokens: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, N, C]` -> `[B, M, C]`."""
    logits = nn.Dense(self.num_tokens, use_bias=False, name='queries',
                      kernel_init=logical(nn.linear.default_kernel_init,
                                          ('embed', None)))(
                                              nn.LayerNorm()(x))  # [B, N, M]
    weights = jax.nn.softmax(logits, axis=1)  # [B, N, M], over the tokens.
    return jnp.einsum('bnm,bnc->bmc', weights, x)  # [B, M, C]
