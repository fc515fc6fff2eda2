"""Transformer encoder with TokenLearner, and optionally TokenFuser.

`TokenLearnerEncoder` is the reference's `EncoderMod` (TokenLearner once, before
block `tokenlearner_loc`) and `EncoderModFuser` (TokenLearner -> block ->
TokenFuser + residual at every block >= `tokenlearner_loc`) in one module, with
the same parameter names. With `tokenlearner_loc=None` it is the plain
ViT/ViViT encoder.

Its settings come from one `ModelConfig`. Speed options, none of which
changes a number: `scan_layers` runs each run of identical layers as one
`nn.scan` (parameters stacked on a leading axis, under the names
`scan_segments` gives; `tokenlearner_jax.checkpoint` converts from and to the
reference layout), `remat_policy` rematerialises each block in
the backward pass, and `attention_impl='fused'` / `'cudnn'` use
`jax.nn.dot_product_attention` (XLA's / cuDNN's flash attention).
"""

from typing import List, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import add_position_embedding
from tokenlearner_jax.models.common import batch_split
from tokenlearner_jax.models.common import Encoder1DBlock
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.models.reduction import Reduction
from tokenlearner_jax.models.reduction import ReducingBlock
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.tokenlearner import unpool_tokens


class ScanSegment(NamedTuple):
  """Layers `first..last` run as one `nn.scan` named `name`.

  `kind` is 'block' (plain blocks) or 'fuser' (TokenLearner -> block ->
  TokenFuser units, whose TokenLearner/TokenFuser indices start at `first -
  tokenlearner_loc`).
  """
  name: str
  first: int
  last: int
  kind: str


def scan_segments(num_layers: int, tokenlearner_loc: Optional[int],
                  use_tokenfuse: bool) -> List[ScanSegment]:
  """The runs of identical layers that `scan_layers=True` stacks."""
  loc = num_layers if tokenlearner_loc is None else tokenlearner_loc
  segments = []
  if loc > 0:
    segments.append(ScanSegment(f'encoderblock_0_to_{loc - 1}', 0, loc - 1,
                                'block'))
  if loc < num_layers:
    last = num_layers - 1
    if use_tokenfuse:
      segments.append(ScanSegment(f'fuserlayer_{loc}_to_{last}', loc, last,
                                  'fuser'))
    else:
      segments.append(ScanSegment(f'encoderblock_{loc}_to_{last}', loc, last,
                                  'block'))
  return segments


def learn_tokens(x: jax.Array, learner: nn.Module, *, temporal_dims: int,
                 has_cls_token: bool, train: bool, return_weights: bool = False
                 ) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """TokenLearner per temporal slice, the class token kept in front.

  Returns the next block's input `[B, 1|0 + T*S, C]`, the slices it was
  learned from `[B*T, HW, C]` (for a TokenFuser) and, with `return_weights`
  (TokenLearner only, for 'unpool'), the spatial weights `[B*T, S, HW]`.
  """
  n, _, c = x.shape
  n_cls = int(has_cls_token)
  cls, tokens = x[:, :n_cls], x[:, n_cls:]  # [B, 1|0, C], [B, T*HW, C]
  t = temporal_dims
  tokens = jnp.reshape(tokens, (n * t, tokens.shape[1] // t, c))  # [B*T, HW, C]
  kwargs = {'return_weights': True} if return_weights else {}
  if isinstance(learner, TokenLearnerModuleV11):
    learned = learner(tokens, deterministic=not train, **kwargs)  # [B*T, S, C]
  else:
    learned = learner(tokens, **kwargs)  # [B*T, S, C]
  weights = None
  if return_weights:
    learned, weights = learned  # [B*T, S, C], [B*T, S, HW]
  learned = jnp.reshape(learned, (n, -1, c))  # [B, T*S, C]
  return (batch_split(jnp.concatenate([cls, learned], axis=1)), tokens,
          weights)


def fuse_tokens(y: jax.Array, tokens: jax.Array, fuser: Optional[nn.Module],
                weights: Optional[jax.Array], *, has_cls_token: bool,
                train: bool) -> jax.Array:
  """Fuser + residual: `y` `[B, 1|0 + T*S, C]` -> `[B, 1|0 + T*HW, C]`.

  `tokens` `[B*T, HW, C]` are the slices the TokenLearner read; `fuser` None
  unpools with its `weights` `[B*T, S, HW]`.
  """
  n, _, c = y.shape
  n_cls = int(has_cls_token)
  nt, hw, _ = tokens.shape
  learned = jnp.reshape(y[:, n_cls:], (nt, -1, c))  # [B*T, S, C]
  if fuser is None:
    fused = unpool_tokens(learned, weights)  # [B*T, HW, C]
  else:
    fused = fuser(learned, tokens, deterministic=not train)  # [B*T, HW, C]
  fused = jnp.reshape(fused + tokens, (n, (nt // n) * hw, c))  # [B, T*HW, C]
  return batch_split(jnp.concatenate([y[:, :n_cls], fused], axis=1))


def make_block(config: ModelConfig, stochastic_depth: float, name: str,
               reduction: Optional[Reduction] = None) -> nn.Module:
  """An `Encoder1DBlock` of `config` (a `ReducingBlock` with `reduction`),
  rematerialised under its `remat_policy` unless 'none'."""
  block_cls, kwargs = Encoder1DBlock, {'attention_impl': config.attention_impl}
  if reduction is not None:
    block_cls = ReducingBlock
    kwargs = {'reduction': reduction, 'prop_attention': config.tome_prop_attn}
  if config.remat_policy != 'none':
    block_cls = nn.remat(
        block_cls,
        policy=getattr(jax.checkpoint_policies, config.remat_policy),
        # `deterministic` (self counts; a ReducingBlock also takes sizes).
        static_argnums=(2 if reduction is None else 3,))
  return block_cls(
      mlp_dim=config.mlp_dim, num_heads=config.num_heads,
      dropout_rate=config.dropout_rate,
      attention_dropout_rate=config.attention_dropout_rate,
      stochastic_depth=stochastic_depth,
      rescale_kept=not config.stochastic_droplayer_rate,
      dtype=config.compute_dtype, name=name, **kwargs)


class FuserLayer(nn.Module):
  """One TokenLearner -> block -> TokenFuser unit, for `nn.scan`.

  Attributes:
    config: The model.
    temporal_dims: Temporal slices T.
    has_cls_token: The first token is a class token.
    train: Training mode (dropout, stochastic depth).
  """
  config: ModelConfig
  temporal_dims: int
  has_cls_token: bool
  train: bool

  @nn.compact
  def __call__(self, x: jax.Array, depth_rate: Optional[jax.Array]):
    """`[B, 1|0 + T*HW, C]` -> (the same shape, None), as `nn.scan` wants."""
    cfg = self.config
    reduction = cfg.reduction
    block = make_block(cfg, cfg.droplayer_rate, 'encoderblock')
    y, tokens, weights = learn_tokens(
        x, reduction.learner(suffix=''), temporal_dims=self.temporal_dims,
        has_cls_token=self.has_cls_token, train=self.train,
        return_weights=reduction.fuser == 'unpool')
    y = block(y, not self.train, depth_rate)
    return fuse_tokens(y, tokens, reduction.fuser_module(suffix=''), weights,
                       has_cls_token=self.has_cls_token, train=self.train), None


class TokenLearnerEncoder(nn.Module):
  """Transformer encoder that learns `num_tokens` tokens per temporal slice.

  Reads the encoder fields of `config`: `num_layers`, `num_heads`, `mlp_dim`,
  the TokenLearner settings (`tokenlearner_loc` None: a plain encoder), the
  dropout rates, `droplayer_rate` (block i drops with i/(L-1) of it), the
  position embedding and the speed options.

  Attributes:
    config: The model.
    temporal_dims: Temporal slices T in the `[B, T*HW, C]` input.
    has_cls_token: The first token is a class token that TokenLearner skips.
  """
  config: ModelConfig
  temporal_dims: int = 1
  has_cls_token: bool = False

  def _depth_rate(self, lyr: int) -> float:
    return (lyr / max(self.config.num_layers - 1, 1)) * (
        self.config.droplayer_rate)

  def _learn(self, x: jax.Array, suffix: str, train: bool,
             return_weights: bool = False):
    return learn_tokens(x, self.config.reduction.learner(suffix),
                        temporal_dims=self.temporal_dims,
                        has_cls_token=self.has_cls_token, train=train,
                        return_weights=return_weights)

  def _unrolled(self, x: jax.Array, train: bool) -> jax.Array:
    """The reference's loop: `encoderblock_{i}`, `TokenLearnerModule*_{j}`."""
    cfg = self.config
    reduction = cfg.reduction  # NoReduction or LearnedTokens.
    for lyr in range(cfg.num_layers):
      block = make_block(cfg, self._depth_rate(lyr), f'encoderblock_{lyr}')
      index = reduction.learner_before(lyr)
      if index is None:
        x = block(x, not train)
        continue
      y, tokens, weights = self._learn(x, f'_{index}', train,
                                       reduction.fuser == 'unpool')
      x = block(y, not train)
      if reduction.fuser is not None:
        x = fuse_tokens(x, tokens, reduction.fuser_module(f'_{index}'),
                        weights, has_cls_token=self.has_cls_token,
                        train=train)
    return x

  def _reducing(self, x: jax.Array, train: bool
                ) -> Tuple[jax.Array, jax.Array]:
    """ToMe, EViT or ATS (`models.reduction`): plain blocks before
    `tokenlearner_loc`, then `ReducingBlock`s carrying the token sizes.

    Returns the tokens and their sizes `[B, N']`.
    """
    cfg = self.config
    reduction = cfg.reduction  # InBlockReduction.
    sizes = jnp.ones(x.shape[:2], jnp.float32)  # [B, N]
    for lyr in range(cfg.num_layers):
      name = f'encoderblock_{lyr}'
      if lyr < reduction.first:
        x = make_block(cfg, self._depth_rate(lyr), name)(x, not train)
        continue
      x, sizes = make_block(cfg, self._depth_rate(lyr), name,
                            reduction.at_block(lyr))(x, sizes, not train)
    return x, sizes

  def _scanned(self, x: jax.Array, train: bool) -> jax.Array:
    """Each of `scan_segments` as one `nn.scan` over stacked parameters."""
    cfg = self.config

    def scan(target, length: int):
      if cfg.remat_policy == 'none':
        # Only the matmuls' outputs cross the loop: the backward pass
        # recomputes the elementwise ones (layer norms, GELU, softmax), which
        # `nn.scan` would otherwise stack for every layer and read back, as
        # an unrolled step's fusions do not (same values; 15-20% of a step
        # on a CPU).
        target = nn.remat(target, policy=jax.checkpoint_policies.dots_saveable,
                          prevent_cse=False)
      return nn.scan(target, variable_axes={'params': 0, 'intermediates': 0},
                     split_rngs={'params': True, 'dropout': True},
                     length=length,
                     metadata_params={nn.PARTITION_NAME: 'layers'})

    sd = cfg.droplayer_rate

    def block_body(block, carry, rate):
      return block(carry, not train, rate if sd > 0 else None), None

    for segment in scan_segments(cfg.num_layers, cfg.tokenlearner_loc,
                                 cfg.use_tokenfuse):
      # The stochastic-depth rate of each layer of the segment: [layers].
      layers = range(segment.first, segment.last + 1)
      rates = jnp.array([self._depth_rate(i) for i in layers], jnp.float32)
      if segment.kind == 'fuser':
        x, _ = scan(FuserLayer, len(layers))(
            config=cfg, temporal_dims=self.temporal_dims,
            has_cls_token=self.has_cls_token, train=train,
            name=segment.name)(x, rates if sd > 0 else None)
        continue
      if segment.first == cfg.tokenlearner_loc:  # Learn before this segment.
        x, _, _ = self._learn(x, '_0', train)
      block = make_block(cfg, sd, segment.name)
      x, _ = scan(block_body, len(layers))(block, x, rates)
    return x

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False,
               return_sizes: bool = False):
    """`[B, L, C]` -> `[B, L', C]`; with `return_sizes`, also the tokens'
    sizes `[B, L']` (patches each stands for; None without ToMe/EViT/ATS)."""
    assert inputs.ndim == 3, f'expected [B, L, C], got {inputs.shape}'
    cfg = self.config
    x = add_position_embedding(inputs, cfg.positional_embedding,
                               self.temporal_dims)
    x = nn.Dropout(rate=cfg.dropout_rate)(batch_split(x),
                                          deterministic=not train)
    sizes = None
    if cfg.reduces_in_blocks:
      x, sizes = self._reducing(x, train)
    elif cfg.scan_layers:
      x = self._scanned(x, train)
    else:
      x = self._unrolled(x, train)
    x = nn.LayerNorm(name='encoder_norm')(x)
    return (x, sizes) if return_sizes else x
