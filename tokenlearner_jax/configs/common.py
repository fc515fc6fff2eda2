"""Shared config helpers, importable from any working directory.

`model_config('L/16', ...)` returns the `config.model` block of the reference
schema for a ViT size and patch; `parse_arg` turns `get_config(arg)` strings
such as `'variant=B/16,num_tokens=8,runlocal'` into typed values;
`load_config('configs/x.py:ARG')` is the one loader of config files, for
scripts and tests (the trainer's `--config` flag loads them itself).
"""

import difflib
import importlib.util
import os
import types as types_lib
import typing
from typing import Any, Dict, Mapping, Optional, Tuple

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


def parse_arg(arg: Optional[str], *, types: Optional[Mapping[str, Any]] = None,
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `'k=v,flag'` against `defaults`, casting each value to its type.

  A value's type is its default's, or `types[key]` where declared: e.g.
  `parse_arg(arg, types=dict(tokenlearner_loc=Optional[int]),
  tokenlearner_loc=18)` takes `tokenlearner_loc=12` or `tokenlearner_loc=None`.
  A default of None without a declared type is an `Optional[str]`. A bare
  `flag` sets a bool to True; bools take True/False (also 1/0, yes/no).

  Args:
    arg: The string after `:` in `--config=file.py:ARG`, or None.
    types: Declared types of some keys (`Optional[int]`, `int`, ...).
    **defaults: Every known key with its default.

  Returns:
    A ConfigDict holding every key of `defaults`.

  Raises:
    ValueError: For an unknown key (naming the closest known one), a
      missing value or a value that does not cast to its key's type.
  """
  types = dict(types or {})
  unknown = set(types) - set(defaults)
  if unknown:
    raise ValueError(f'types= names keys without a default: {sorted(unknown)}.')
  result = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, has_value, value = item.partition('=')
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults), n=1)
      hint = f'; did you mean {close[0]!r}?' if close else '.'
      raise ValueError(f'Unknown config argument {key!r}{hint} Known: '
                       f'{sorted(defaults)}.')
    kind = types.get(key, _default_type(defaults[key]))
    if not has_value:
      if kind is not bool:
        raise ValueError(f'Config argument {key!r} needs a value.')
      value = 'True'
    result[key] = _cast(key, value, kind)
  return ml_collections.ConfigDict(result)


def _default_type(default: Any) -> Any:
  return Optional[str] if default is None else type(default)


def _cast(key: str, value: str, kind: Any) -> Any:
  """`value` as `kind` (bool, int, float, str or Optional of one)."""
  if typing.get_origin(kind) in (typing.Union, types_lib.UnionType):
    args = typing.get_args(kind)
    if type(None) not in args or len(args) != 2:
      raise ValueError(f'Config argument {key!r}: type {kind} is not '
                       'supported (only Optional[X]).')
    if value == 'None':
      return None
    kind = next(a for a in args if a is not type(None))
  if kind is bool:
    lowered = value.lower()
    if lowered in ('1', 'true', 'yes'):
      return True
    if lowered in ('0', 'false', 'no'):
      return False
  else:
    try:
      return kind(value)
    except ValueError:
      pass
  raise ValueError(f'Config argument {key}={value!r}: expected '
                   f'{getattr(kind, "__name__", kind)}.')


def load_module(path: str) -> types_lib.ModuleType:
  """Imports the Python file at `path` (a config file or a script).

  Config files live outside the package, so they are loaded by path, which
  works from any working directory.
  """
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None:
    raise ValueError(f'{path!r} is not a Python file.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str,
                arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `path`, as `--config` runs it.

  Args:
    path: The config file, optionally followed by `:ARG`
      (`'configs/vivit_k400.py:runlocal'`), as ml_collections' config flag
      takes it.
    arg: The argument instead of a `:ARG` suffix.

  Returns:
    The config; `get_config()` is called without an argument when there is
    none, as the config flag does.
  """
  if ':' in path:
    if arg is not None:
      raise ValueError(f'Both {path!r} and arg={arg!r} give an argument.')
    path, arg = path.split(':', 1)
  module = load_module(path)
  return module.get_config(arg) if arg else module.get_config()


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
