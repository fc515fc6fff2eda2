"""Shared config helpers, importable from any working directory.

`model_config('L/16', ...)` returns the `config.model` block of the reference
schema for a ViT size and patch; `parse_arg` turns `get_config(arg)` strings
such as `'variant=B/16,num_tokens=8,runlocal'` into typed values.
"""

from typing import Any, Dict, Optional, Tuple

import ml_collections

# name: (hidden_size, num_heads, mlp_dim, num_layers), as in ViT.
VIT_SIZES: Dict[str, Tuple[int, int, int, int]] = {
    'mu': (32, 2, 64, 2),  # tiny, for tests and CPU smoke runs
    'Ti': (192, 3, 768, 12),
    'S': (384, 6, 1536, 12),
    'B': (768, 12, 3072, 12),
    'L': (1024, 16, 4096, 24),
    'H': (1280, 16, 5120, 32),
}


def model_config(variant: str,
                 tokenizer_type: str = 'dynamic',
                 *,
                 num_tokens: int = 8,
                 tokenlearner_loc: Optional[int] = None,
                 use_tokenfuse: bool = False,
                 fuser_type: str = 'tokenfuser',
                 use_v11: bool = True,
                 use_sum_pooling: bool = True,
                 token_reduction: str = 'tokenlearner',
                 pooling_window: int = 2,
                 pooling_locs: Tuple[int, ...] = (),
                 extra_layers: int = 0,
                 tubelet_frames: int = 2,
                 classifier: str = 'gap',
                 representation_size: Optional[int] = None,
                 kernel_init_method: Optional[str] = None,
                 dropout_rate: float = 0.0,
                 attention_dropout_rate: float = 0.0,
                 stochastic_depth: float = 0.0,
                 scan_layers: bool = False,
                 remat_policy: str = 'none',
                 attention_impl: str = 'einsum') -> ml_collections.ConfigDict:
  """The `config.model` block for `variant` such as 'B/16' or 'L/14'.

  Args:
    variant: '<size>/<patch>', size a key of `VIT_SIZES`.
    tokenizer_type: 'patch', 'dynamic' or 'video' (3d_conv tubelets).
    num_tokens: Tokens learned per temporal slice.
    tokenlearner_loc: First block on learned tokens; None turns it off.
    use_tokenfuse: TokenLearner -> block -> TokenFuser at every block >= loc.
    fuser_type: With `use_tokenfuse`: 'tokenfuser' (the reference), or the
      paper's alternatives 'unpool' (scatter the tokens back with the
      TokenLearner's own maps) and 'reprojection' (an attention layer from
      the grid to the tokens).
    use_v11: TokenLearner v1.1; False is the paper's v1.0 module.
    use_sum_pooling: v1.0 sums over space (reference); False: the mean.
    token_reduction: 'tokenlearner', or the paper's baselines 'pooling'
      (k x k average pooling at `tokenlearner_loc`) and 'dense' (tokens
      from a fully connected layer over space).
    pooling_window: k of 'pooling'.
    pooling_locs: Further blocks before which 'pooling' pools again (Table
      5's "2x2 pool at 9 and 18": loc 9, `pooling_locs=(18,)`).
    extra_layers: Blocks appended to the base depth (the paper's "24+11").
    tubelet_frames: Frames per tubelet for videos.
    classifier: 'gap', 'gmp', 'gsp' or 'token'.
    representation_size: Width of the tanh pre-logits layer, or None.
    kernel_init_method: Tubelet kernel initializer (videos).
    dropout_rate: Dropout rate.
    attention_dropout_rate: Attention dropout rate.
    stochastic_depth: Stochastic depth rate of the last block.
    scan_layers: `nn.scan` over runs of identical layers (speed option).
    remat_policy: 'none' or a `jax.checkpoint_policies` name (memory option).
    attention_impl: 'einsum' (reference), 'fused'
      (`jax.nn.dot_product_attention`, XLA's) or 'cudnn' (the same with
      cuDNN flash attention: CUDA GPUs, bf16).
  """
  size, patch = variant.split('/')
  hidden, heads, mlp, layers = VIT_SIZES[size]
  patch = int(patch)
  video = tokenizer_type == 'video'
  return ml_collections.ConfigDict(dict(
      hidden_size=hidden, num_heads=heads, mlp_dim=mlp,
      num_layers=layers + extra_layers,
      representation_size=representation_size, classifier=classifier,
      dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
      stochastic_depth=stochastic_depth, scan_layers=scan_layers,
      remat_policy=remat_policy, attention_impl=attention_impl,
      tokenizer=dict(
          type=tokenizer_type,
          patches=dict(size=(patch, patch, tubelet_frames) if video
                       else (patch, patch)),
          num_tokens=num_tokens, tokenlearner_loc=tokenlearner_loc,
          use_tokenfuse=use_tokenfuse, fuser_type=fuser_type, use_v11=use_v11,
          use_sum_pooling=use_sum_pooling, token_reduction=token_reduction,
          pooling_window=pooling_window, pooling_locs=tuple(pooling_locs),
          temporal_encoding_config=dict(
              method='3d_conv', kernel_init_method=kernel_init_method,
              n_sampled_frames=None))))


def parse_arg(arg: Optional[str], **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `'k=v,flag'` against `defaults`, casting values to their types.

  A bare `flag` sets a boolean default to True. Unknown keys raise ValueError.
  """
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; known: '
                       f'{sorted(defaults)}.')
    default = defaults[key]
    if not _:
      if not isinstance(default, bool):
        raise ValueError(f'Config argument {key!r} needs a value.')
      result[key] = True
    elif isinstance(default, bool):
      result[key] = value.lower() in ('1', 'true', 'yes')
    elif default is None or isinstance(default, str):
      result[key] = value
    else:
      result[key] = type(default)(value)
  return result


def trainer_defaults(config: ml_collections.ConfigDict) -> None:
  """Sets no `init_from` checkpoint, data parallelism over all devices and
  the default logical-axis rules."""
  from tokenlearner_jax import sharding  # pylint: disable=g-import-not-at-top
  config.init_from = ml_collections.ConfigDict(dict(
      checkpoint_path=ml_collections.config_dict.placeholder(str),
      checkpoint_format='tokenlearner_jax',  # Or 'scenic', 'big_vision'.
      positional_embed_size_change=ml_collections.config_dict.placeholder(
          str),  # 'resize', 'tile' or 'resize_tile'.
      kernel_init_method=ml_collections.config_dict.placeholder(str),
      init_missing_from_scratch=False))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  # 0: a non-finite loss stops the run; N: skip up to N such updates in a row.
  config.skip_nonfinite_steps = 0
  # Speed/memory: the train step reuses the old state's buffers (off: two
  # copies of parameters and optimizer state live during a step).
  config.donate_train_state = True
  config.logical_axis_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
