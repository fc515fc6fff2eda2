"""`build_model`: the reference's config schema -> a Flax module, validated.

Reads `config.model` exactly as scenic's TokenLearner wrappers do, including
their defaults (`dropout_rate=0.1`, `attention_dropout_rate=0.1`,
`tokenizer.use_v11=True`, `tokenizer.use_tokenfuse=False`), so reference configs
carry over. Every bad value raises a `ValueError` naming the field before any
trace or compile. Differences from the reference, all deliberate:
  * `tokenlearner_loc` outside `[0, num_layers)` raises (the reference silently
    runs without TokenLearner); `tokenlearner_loc=None` means "off".
  * `stochastic_depth` is wired and `classifier='token'` works.
  * `model.attention_config.type='factorized_encoder'` builds ViViT model 2.
The paper's baselines (ours, off by default): `model.tokenizer.token_reduction`
'pooling' (`pooling_window`, `pooling_locs`) or 'dense', `fuser_type` 'unpool'
or 'reprojection' instead of TokenFuser, and `use_sum_pooling=False` (v1.0's
mean pooling, as the paper's text). Speed options (ours; none changes a number): `model.scan_layers`,
`model.remat_policy`, `model.attention_impl` and `model_dtype_str`.
"""

from typing import Any, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models.common import ATTENTION_IMPLS
from tokenlearner_jax.models.encoder import FUSER_TYPES
from tokenlearner_jax.models.encoder import REMAT_POLICIES
from tokenlearner_jax.models.encoder import TOKEN_REDUCTIONS
from tokenlearner_jax.models.vit import TokenLearnerViT
from tokenlearner_jax.models.vivit import FactorisedEncoderViViT
from tokenlearner_jax.models.vivit import KERNEL_INIT_METHODS

CLASSIFIERS = ('gap', 'gmp', 'gsp', 'token')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
          'float16': jnp.float16}
ATTENTION_TYPES = ('spacetime', 'factorized_encoder')


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _positive_int(value: Any, field: str) -> int:
  _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
           f'{field} must be a positive integer, got {value!r}.')
  return value


def _encoder_sizes(cfg: ml_collections.ConfigDict,
                   prefix: str) -> Tuple[int, int, int]:
  """(num_layers, num_heads, mlp_dim) of `cfg`, validated."""
  num_layers = _positive_int(cfg.num_layers, f'{prefix}.num_layers')
  num_heads = _positive_int(cfg.num_heads, f'{prefix}.num_heads')
  mlp_dim = _positive_int(cfg.mlp_dim, f'{prefix}.mlp_dim')
  return num_layers, num_heads, mlp_dim


def tokenlearner_enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` runs a TokenLearner (a non-'patch' stem with a loc)."""
  tokenizer = config.model.tokenizer
  return (tokenizer.type != 'patch' and
          tokenizer.get('tokenlearner_loc') is not None)


def validate_model_config(config: ml_collections.ConfigDict) -> None:
  """Raises a `ValueError` naming the first bad field of `config.model`."""
  _require('model' in config and 'tokenizer' in config.model,
           'config.model.tokenizer is missing.')
  model, tokenizer = config.model, config.model.tokenizer
  _require(tokenizer.get('type') in grid_lib.TOKENIZER_TYPES,
           f'model.tokenizer.type must be one of {grid_lib.TOKENIZER_TYPES}, '
           f'got {tokenizer.get("type")!r}.')
  _require(model.get('classifier') in CLASSIFIERS,
           f'model.classifier must be one of {CLASSIFIERS}, got '
           f'{model.get("classifier")!r}.')
  dtype = config.get('model_dtype_str', 'float32')
  _require(dtype in DTYPES, f'model_dtype_str must be one of {tuple(DTYPES)}, '
           f'got {dtype!r}.')
  _require(isinstance(model.get('scan_layers', False), bool),
           f'model.scan_layers must be True or False, got '
           f'{model.get("scan_layers")!r}.')
  _require(model.get('remat_policy', 'none') in REMAT_POLICIES,
           f'model.remat_policy must be one of {REMAT_POLICIES}, got '
           f'{model.get("remat_policy")!r}.')
  attention = model.get('attention_impl', 'einsum')
  _require(attention in ATTENTION_IMPLS,
           f'model.attention_impl must be one of {ATTENTION_IMPLS}, got '
           f'{attention!r}.')
  _require(attention == 'einsum' or
           not model.get('attention_dropout_rate', 0.1),
           f'model.attention_impl={attention!r} has no attention dropout: set '
           'model.attention_dropout_rate=0 (it is '
           f'{model.get("attention_dropout_rate", 0.1)!r}; the reference '
           'default is 0.1).')
  _require(attention != 'cudnn' or dtype in ('bfloat16', 'float16'),
           "model.attention_impl='cudnn' (cuDNN flash attention) computes in "
           f"bf16 or fp16: set model_dtype_str='bfloat16' (it is {dtype!r}).")
  hidden = _positive_int(model.get('hidden_size'), 'model.hidden_size')
  rep = model.get('representation_size')
  _require(rep is None or (isinstance(rep, int) and rep > 0),
           f'model.representation_size must be None or a positive integer, '
           f'got {rep!r}.')
  for field in ('dropout_rate', 'attention_dropout_rate', 'stochastic_depth'):
    rate = model.get(field, 0.0)
    _require(rate is not None and 0.0 <= rate < 1.0,
             f'model.{field} must be in [0, 1), got {rate!r}.')

  size = tokenizer.get('patches', {}).get('size')
  _require(size is not None and len(size) in (2, 3) and
           all(isinstance(s, int) and s > 0 for s in size),
           f'model.tokenizer.patches.size must be 2 or 3 positive integers, '
           f'got {size!r}.')
  if tokenizer.type == 'video':
    tec = tokenizer.get('temporal_encoding_config')
    _require(tec is not None,
             'model.tokenizer.temporal_encoding_config is required for '
             "tokenizer.type='video'.")
    _require(tec.get('method') in grid_lib.TEMPORAL_ENCODINGS,
             'model.tokenizer.temporal_encoding_config.method must be one of '
             f'{grid_lib.TEMPORAL_ENCODINGS}, got {tec.get("method")!r}.')
    _require(tec.get('kernel_init_method') in KERNEL_INIT_METHODS,
             'model.tokenizer.temporal_encoding_config.kernel_init_method must '
             f'be one of {KERNEL_INIT_METHODS}, got '
             f'{tec.get("kernel_init_method")!r}.')
    if tec.method == '3d_conv':
      _require(len(size) == 3, 'model.tokenizer.patches.size must be (h, w, t) '
               f'for 3d_conv tubelets, got {tuple(size)}.')
    else:
      _positive_int(tec.get('n_sampled_frames'),
                    'model.tokenizer.temporal_encoding_config.n_sampled_frames')
  else:
    _require(len(size) == 2, 'model.tokenizer.patches.size must be (h, w) for '
             f'tokenizer.type={tokenizer.type!r}, got {tuple(size)}.')

  attention = model.get('attention_config', {}).get('type', 'spacetime')
  _require(attention in ATTENTION_TYPES, 'model.attention_config.type must be '
           f'one of {ATTENTION_TYPES}, got {attention!r}.')
  if attention == 'factorized_encoder':
    _require(tokenizer.type == 'video', "model.attention_config.type="
             "'factorized_encoder' needs model.tokenizer.type='video'.")
    _require(not tokenlearner_enabled(config),
             'model.tokenizer.tokenlearner_loc must be None with the '
             "factorized_encoder (TokenLearner is wired into the joint "
             "space-time encoder only).")
    for part in ('spatial_transformer', 'temporal_transformer'):
      _require(part in model, f'model.{part} is required for the '
               'factorized_encoder.')
      _, heads, _ = _encoder_sizes(model[part], f'model.{part}')
      _require(hidden % heads == 0, f'model.hidden_size={hidden} must be '
               f'divisible by model.{part}.num_heads={heads}.')
    return

  num_layers, heads, _ = _encoder_sizes(model, 'model')
  _require(hidden % heads == 0, f'model.hidden_size={hidden} must be divisible '
           f'by model.num_heads={heads}.')
  loc = tokenizer.get('tokenlearner_loc')
  if tokenizer.type == 'patch':
    if loc is not None:
      logging.warning("model.tokenizer.tokenlearner_loc=%s is ignored: "
                      "tokenizer.type='patch' is the plain ViT.", loc)
    return
  if loc is None:
    return
  _require(isinstance(loc, int) and not isinstance(loc, bool) and
           0 <= loc < num_layers,
           f'model.tokenizer.tokenlearner_loc must be in [0, num_layers='
           f'{num_layers}) while TokenLearner is on, got {loc!r} (use None to '
           f'turn TokenLearner off).')
  _positive_int(tokenizer.get('num_tokens'), 'model.tokenizer.num_tokens')
  reduction = tokenizer.get('token_reduction', 'tokenlearner')
  _require(reduction in TOKEN_REDUCTIONS, 'model.tokenizer.token_reduction '
           f'must be one of {TOKEN_REDUCTIONS}, got {reduction!r}.')
  if reduction == 'pooling':
    _positive_int(tokenizer.get('pooling_window'),
                  'model.tokenizer.pooling_window')
  _require(isinstance(tokenizer.get('use_sum_pooling', True), bool),
           'model.tokenizer.use_sum_pooling must be True or False, got '
           f'{tokenizer.get("use_sum_pooling")!r}.')
  fuse = tokenizer.get('use_tokenfuse', False)
  fuser_type = tokenizer.get('fuser_type', 'tokenfuser')
  _require(fuser_type in FUSER_TYPES, 'model.tokenizer.fuser_type must be one '
           f'of {FUSER_TYPES}, got {fuser_type!r}.')
  _require(fuse or fuser_type == 'tokenfuser',
           f'model.tokenizer.fuser_type={fuser_type!r} needs '
           'model.tokenizer.use_tokenfuse=True.')
  _require(fuser_type != 'unpool' or reduction == 'tokenlearner',
           "model.tokenizer.fuser_type='unpool' reuses TokenLearner's maps: "
           f"it needs token_reduction='tokenlearner', got {reduction!r}.")
  pooling_locs = tuple(tokenizer.get('pooling_locs') or ())
  if pooling_locs:
    _require(reduction == 'pooling' and not fuse,
             'model.tokenizer.pooling_locs needs '
             "token_reduction='pooling' and use_tokenfuse=False.")
    _require(not model.get('scan_layers', False),
             'model.scan_layers does not take model.tokenizer.pooling_locs.')
    _require(all(isinstance(l, int) for l in pooling_locs) and
             list(pooling_locs) == sorted(set(pooling_locs)) and
             loc < pooling_locs[0] and pooling_locs[-1] < num_layers,
             'model.tokenizer.pooling_locs must be increasing layer indices in '
             f'(tokenlearner_loc={loc}, num_layers={num_layers}), got '
             f'{pooling_locs!r}.')


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """Returns the Flax module that `config.model` describes.

  `model.apply({'params': p}, x, train=False)` maps images `[B, H, W, 3]` or
  videos `[B, T, H, W, 3]` to logits `[B, num_classes]`.
  """
  validate_model_config(config)
  _positive_int(num_classes, 'num_classes')
  _require(config.model.get('attention_impl') != 'cudnn' or
           jax.default_backend() == 'gpu',
           "model.attention_impl='cudnn' (cuDNN flash attention) needs a CUDA "
           f"GPU; jax's backend here is {jax.default_backend()!r}.")
  model, tokenizer = config.model, config.model.tokenizer
  tec = tokenizer.get('temporal_encoding_config') or ml_collections.ConfigDict()
  common = dict(
      num_classes=num_classes,
      hidden_size=model.hidden_size,
      patch_size=tuple(tokenizer.patches.size),
      temporal_encoding=tec.get('method', '3d_conv'),
      kernel_init_method=tec.get('kernel_init_method'),
      n_sampled_frames=tec.get('n_sampled_frames'),
      representation_size=model.get('representation_size'),
      classifier=model.classifier,
      dropout_rate=model.get('dropout_rate', 0.1),
      attention_dropout_rate=model.get('attention_dropout_rate', 0.1),
      stochastic_depth=model.get('stochastic_depth', 0.0),
      scan_layers=model.get('scan_layers', False),
      remat_policy=model.get('remat_policy', 'none'),
      attention_impl=model.get('attention_impl', 'einsum'),
      dtype=DTYPES[config.get('model_dtype_str', 'float32')])
  attention = model.get('attention_config', {}).get('type', 'spacetime')
  if attention == 'factorized_encoder':
    return FactorisedEncoderViViT(
        spatial=_encoder_sizes(model.spatial_transformer, ''),
        temporal=_encoder_sizes(model.temporal_transformer, ''), **common)
  loc: Optional[int] = (tokenizer.tokenlearner_loc
                        if tokenlearner_enabled(config) else None)
  return TokenLearnerViT(
      num_layers=model.num_layers,
      num_heads=model.num_heads,
      mlp_dim=model.mlp_dim,
      tokenizer_type=tokenizer.type,
      tokenlearner_loc=loc,
      num_tokens=tokenizer.get('num_tokens', 8),
      use_v11=tokenizer.get('use_v11', True),
      use_tokenfuse=tokenizer.get('use_tokenfuse', False),
      fuser_type=tokenizer.get('fuser_type', 'tokenfuser'),
      use_sum_pooling=tokenizer.get('use_sum_pooling', True),
      token_reduction=tokenizer.get('token_reduction', 'tokenlearner'),
      pooling_window=tokenizer.get('pooling_window', 2),
      pooling_locs=tuple(tokenizer.get('pooling_locs') or ()),
      **common)
