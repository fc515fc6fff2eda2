"""Transformer encoder with TokenLearner, and optionally TokenFuser.

`TokenLearnerEncoder` is the reference's `EncoderMod` (TokenLearner once, before
block `tokenlearner_loc`) and `EncoderModFuser` (TokenLearner -> block ->
TokenFuser + residual at every block >= `tokenlearner_loc`) in one module, with
the same parameter names. With `tokenlearner_loc=None` it is the plain
ViT/ViViT encoder.

Speed options, none of which changes a number: `scan_layers` runs each run of
identical layers as one `nn.scan` (parameters stacked on a leading axis, under
the names `scan_segments` gives; `tokenlearner_jax.layer_stacking` converts
from and to the reference layout), `remat_policy` rematerialises each block in
the backward pass, and `attention_impl='fused'` / `'cudnn'` use
`jax.nn.dot_product_attention` (XLA's / cuDNN's flash attention).
"""

from typing import Any, List, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import AddPositionEmbs
from tokenlearner_jax.models.common import Encoder1DBlock
from tokenlearner_jax.models.tokenlearner import DenseTokens
from tokenlearner_jax.models.tokenlearner import PoolingTokens
from tokenlearner_jax.models.tokenlearner import TokenFuser
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.tokenlearner import TokenReprojection
from tokenlearner_jax.models.tokenlearner import unpool_tokens

# `token_reduction` values: TokenLearner, or the paper's baselines.
TOKEN_REDUCTIONS = ('tokenlearner', 'pooling', 'dense')
# `fuser_type` values (with `use_tokenfuse`): the reference's TokenFuser, or
# the paper's alternatives (scatter with the TokenLearner's own maps, or an
# attention layer from the grid to the tokens).
FUSER_TYPES = ('tokenfuser', 'unpool', 'reprojection')
# `remat_policy` values: 'none' (no remat) or a `jax.checkpoint_policies` name.
REMAT_POLICIES = ('none', 'nothing_saveable', 'dots_saveable',
                  'dots_with_no_batch_dims_saveable', 'everything_saveable')


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


def make_learner(token_reduction: str, *, num_tokens: int, use_v11: bool,
                 use_sum_pooling: bool, pooling_window: int,
                 dropout_rate: float, suffix: str) -> nn.Module:
  """The token reducer `token_reduction` names, named `<Class><suffix>`."""
  if token_reduction == 'pooling':
    return PoolingTokens(pooling_window, name=f'PoolingTokens{suffix}')
  if token_reduction == 'dense':
    return DenseTokens(num_tokens, name=f'DenseTokens{suffix}')
  if use_v11:
    return TokenLearnerModuleV11(num_tokens, dropout_rate=dropout_rate,
                                 name=f'TokenLearnerModuleV11{suffix}')
  return TokenLearnerModule(num_tokens, use_sum_pooling=use_sum_pooling,
                            name=f'TokenLearnerModule{suffix}')


def make_fuser(fuser_type: str, *, num_heads: int, dropout_rate: float,
               suffix: str) -> Optional[nn.Module]:
  """The module that maps tokens back onto the grid; None for 'unpool'."""
  if fuser_type == 'unpool':
    return None
  if fuser_type == 'reprojection':
    return TokenReprojection(num_heads, dropout_rate=dropout_rate,
                             name=f'TokenReprojection{suffix}')
  return TokenFuser(dropout_rate=dropout_rate, name=f'TokenFuser{suffix}')


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
  return jnp.concatenate([cls, learned], axis=1), tokens, weights


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
  return jnp.concatenate([y[:, :n_cls], fused], axis=1)


def block_class(remat_policy: str):
  """`Encoder1DBlock`, rematerialised under `remat_policy` unless 'none'."""
  if remat_policy == 'none':
    return Encoder1DBlock
  return nn.remat(Encoder1DBlock,
                  policy=getattr(jax.checkpoint_policies, remat_policy),
                  static_argnums=(2,))  # `deterministic` (self counts).


class FuserLayer(nn.Module):
  """One TokenLearner -> block -> TokenFuser unit, for `nn.scan`.

  Attributes:
    block: Keyword arguments of its `Encoder1DBlock` (as a tuple of pairs).
    learner: Arguments of `make_learner` (as a tuple of pairs).
    fuser_type: One of `FUSER_TYPES` (its dropout is the learner's).
    temporal_dims: Temporal slices T.
    has_cls_token: The first token is a class token.
    remat_policy: One of `REMAT_POLICIES`, for the block.
    train: Training mode (dropout, stochastic depth).
  """
  block: tuple
  learner: tuple
  fuser_type: str
  temporal_dims: int
  has_cls_token: bool
  remat_policy: str
  train: bool

  @nn.compact
  def __call__(self, x: jax.Array, depth_rate: Optional[jax.Array]):
    """`[B, 1|0 + T*HW, C]` -> (the same shape, None), as `nn.scan` wants."""
    block_args, learner_args = dict(self.block), dict(self.learner)
    block = block_class(self.remat_policy)(**block_args, name='encoderblock')
    y, tokens, weights = learn_tokens(
        x, make_learner(**learner_args, suffix=''),
        temporal_dims=self.temporal_dims, has_cls_token=self.has_cls_token,
        train=self.train, return_weights=self.fuser_type == 'unpool')
    y = block(y, not self.train, depth_rate)
    fuser = make_fuser(self.fuser_type, num_heads=block_args['num_heads'],
                       dropout_rate=learner_args['dropout_rate'], suffix='')
    return fuse_tokens(y, tokens, fuser, weights,
                       has_cls_token=self.has_cls_token, train=self.train), None


class TokenLearnerEncoder(nn.Module):
  """Transformer encoder that learns `num_tokens` tokens per temporal slice.

  Attributes:
    num_layers: Encoder blocks.
    mlp_dim: MLP width of each block.
    num_heads: Attention heads.
    temporal_dims: Temporal slices T in the `[B, T*HW, C]` input.
    tokenlearner_loc: Index of the first block that sees learned tokens; None
      turns TokenLearner off (a plain ViT/ViViT encoder).
    num_tokens: Tokens learned per slice.
    use_v11: TokenLearner v1.1 (MLP + softmax) instead of v1.0 (convs + sigmoid).
    use_tokenfuse: TokenLearner -> block -> TokenFuser at every block >= loc.
    fuser_type: One of `FUSER_TYPES`: what maps the tokens back with
      `use_tokenfuse` ('tokenfuser', the reference, or the paper's 'unpool'
      and 'reprojection').
    use_sum_pooling: v1.0 sums over space (the reference); False: the mean
      (the paper's text).
    token_reduction: One of `TOKEN_REDUCTIONS`: 'tokenlearner', or the
      paper's baselines 'pooling' (k x k average pooling, Table 5) and
      'dense' (tokens from a fully connected layer over space).
    pooling_window: k of 'pooling'.
    pooling_locs: Further blocks before which 'pooling' pools again (Table
      5's "2x2 pool at 9 and 18" is loc 9 with `pooling_locs=(18,)`).
    has_cls_token: The first token is a class token that TokenLearner skips.
    dropout_rate: Dropout rate (also used inside TokenLearner/TokenFuser).
    attention_dropout_rate: Dropout on attention weights.
    stochastic_depth: Drop rate of the last block; block i uses i/(L-1) of it.
    scan_layers: Run each of `scan_segments` as one `nn.scan`.
    remat_policy: One of `REMAT_POLICIES`: rematerialise each block.
    attention_impl: 'einsum' (the reference), 'fused' or 'cudnn'.
    dtype: Computation dtype of the blocks.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  temporal_dims: int = 1
  tokenlearner_loc: Optional[int] = None
  num_tokens: int = 8
  use_v11: bool = True
  use_tokenfuse: bool = False
  fuser_type: str = 'tokenfuser'
  use_sum_pooling: bool = True
  token_reduction: str = 'tokenlearner'
  pooling_window: int = 2
  pooling_locs: Tuple[int, ...] = ()
  has_cls_token: bool = False
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_depth: float = 0.0
  scan_layers: bool = False
  remat_policy: str = 'none'
  attention_impl: str = 'einsum'
  dtype: Any = jnp.float32

  def _learner_args(self) -> dict:
    return dict(token_reduction=self.token_reduction,
                num_tokens=self.num_tokens, use_v11=self.use_v11,
                use_sum_pooling=self.use_sum_pooling,
                pooling_window=self.pooling_window,
                dropout_rate=self.dropout_rate)

  def _block_args(self, stochastic_depth: float) -> dict:
    return dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                stochastic_depth=stochastic_depth,
                attention_impl=self.attention_impl, dtype=self.dtype)

  def _depth_rate(self, lyr: int) -> float:
    return (lyr / max(self.num_layers - 1, 1)) * self.stochastic_depth

  def _unrolled(self, x: jax.Array, train: bool) -> jax.Array:
    """The reference's loop: `encoderblock_{i}`, `TokenLearnerModule*_{j}`."""
    block_cls = block_class(self.remat_policy)
    loc = self.tokenlearner_loc
    # Blocks preceded by a token reduction (without a fuser).
    reduce_at = [] if loc is None else [loc, *self.pooling_locs]
    for lyr in range(self.num_layers):
      block = block_cls(**self._block_args(self._depth_rate(lyr)),
                        name=f'encoderblock_{lyr}')
      learn_here = loc is not None and (
          lyr >= loc if self.use_tokenfuse else lyr in reduce_at)
      if not learn_here:
        x = block(x, not train)
        continue
      index = lyr - loc if self.use_tokenfuse else reduce_at.index(lyr)
      unpool = self.use_tokenfuse and self.fuser_type == 'unpool'
      y, tokens, weights = learn_tokens(
          x, make_learner(**self._learner_args(), suffix=f'_{index}'),
          temporal_dims=self.temporal_dims, has_cls_token=self.has_cls_token,
          train=train, return_weights=unpool)
      x = block(y, not train)
      if self.use_tokenfuse:
        fuser = make_fuser(self.fuser_type, num_heads=self.num_heads,
                           dropout_rate=self.dropout_rate, suffix=f'_{index}')
        x = fuse_tokens(x, tokens, fuser, weights,
                        has_cls_token=self.has_cls_token, train=train)
    return x

  def _scanned(self, x: jax.Array, train: bool) -> jax.Array:
    """Each of `scan_segments` as one `nn.scan` over stacked parameters."""
    if self.pooling_locs:
      raise ValueError('model.scan_layers does not take '
                       'model.tokenizer.pooling_locs.')

    def scan(target, length: int):
      return nn.scan(target, variable_axes={'params': 0, 'intermediates': 0},
                     split_rngs={'params': True, 'dropout': True},
                     length=length,
                     metadata_params={nn.PARTITION_NAME: 'layers'})

    sd = self.stochastic_depth

    def block_body(block, carry, rate):
      return block(carry, not train, rate if sd > 0 else None), None

    for segment in scan_segments(self.num_layers, self.tokenlearner_loc,
                                 self.use_tokenfuse):
      # The stochastic-depth rate of each layer of the segment: [layers].
      layers = range(segment.first, segment.last + 1)
      rates = jnp.array([self._depth_rate(i) for i in layers], jnp.float32)
      if segment.kind == 'fuser':
        x, _ = scan(FuserLayer, len(layers))(
            block=tuple(self._block_args(sd).items()),
            learner=tuple(self._learner_args().items()),
            fuser_type=self.fuser_type, temporal_dims=self.temporal_dims,
            has_cls_token=self.has_cls_token, remat_policy=self.remat_policy,
            train=train,
            name=segment.name)(x, rates if sd > 0 else None)
        continue
      if segment.first == self.tokenlearner_loc:  # Learn before this segment.
        x, _, _ = learn_tokens(
            x, make_learner(**self._learner_args(), suffix='_0'),
            temporal_dims=self.temporal_dims,
            has_cls_token=self.has_cls_token, train=train)
      block = block_class(self.remat_policy)(**self._block_args(sd),
                                             name=segment.name)
      x, _ = scan(block_body, len(layers))(block, x, rates)
    return x

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    assert inputs.ndim == 3, f'expected [B, L, C], got {inputs.shape}'
    x = AddPositionEmbs(name='posembed_input')(inputs)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
    x = self._scanned(x, train) if self.scan_layers else self._unrolled(x,
                                                                        train)
    return nn.LayerNorm(name='encoder_norm')(x)
