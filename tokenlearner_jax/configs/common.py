"""Shared config helpers, importable from any working directory.

`model_config('L/16', ...)` returns the `config.model` block of the reference
schema for a ViT size and patch, every setting the model has given a key (the
defaults are `tokenlearner_jax.models.config.ModelConfig`'s, the reference's:
a config that wants no dropout says `dropout_rate=0.0`, as ours do);
`parse_arg` turns `get_config(arg)` strings
such as `'variant=B/16,num_tokens=8,runlocal'` into typed values;
`load_config('configs/x.py:ARG')` is the one loader of config files, for
scripts and tests (the trainer's `--config` flag loads them itself).
"""

import dataclasses
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


# ModelConfig fields that `model_config` derives, or that live outside
# `config.model` (`num_classes` comes from the dataset, `dtype` is the
# top-level `model_dtype_str`).
_DERIVED = ('num_classes', 'hidden_size', 'num_heads', 'mlp_dim', 'num_layers',
            'patch_size', 'tokenizer_type', 'dtype')


def model_config(variant: str, tokenizer_type: str = 'dynamic', *,
                 classifier: str = 'gap', extra_layers: int = 0,
                 tubelet_frames: int = 2,
                 **fields: Any) -> ml_collections.ConfigDict:
  """The `config.model` block for `variant` such as 'B/16' or 'L/14'.

  Every model setting gets a key, so that `--config.model.<key>=...`
  overrides any of them: the widths and depth of the ViT size, the patch,
  `classifier`, the `fields` given, and `ModelConfig`'s default for the rest
  (the reference's defaults, e.g. `dropout_rate=0.1` and
  `attention_dropout_rate=0.1`; they are written down there only).

  Args:
    variant: '<size>/<patch>', size a key of `VIT_SIZES`.
    tokenizer_type: 'patch', 'dynamic' or 'video' (3d_conv tubelets).
    classifier: 'gap', 'gmp', 'gsp' or 'token' (`ModelConfig` has no default:
      the reference reads it from every config).
    extra_layers: Blocks appended to the size's depth (the paper's "24+11").
    tubelet_frames: Frames per tubelet for videos.
    **fields: `ModelConfig` fields by name, e.g. `num_tokens`,
      `tokenlearner_loc`, `use_v11`, `use_tokenfuse`, `dropout_rate`,
      `kernel_init_method`, `scan_layers` (see its `Attributes`).

  Returns:
    The block, in the reference's schema (`model.tokenizer.num_tokens`, ...).

  Raises:
    ValueError: For a field `ModelConfig` does not have (naming the closest).
  """
  # Imported here: loading a config file or a script needs no flax.
  from tokenlearner_jax.models import config as model_lib  # pylint: disable=g-import-not-at-top
  all_fields = dataclasses.fields(model_lib.ModelConfig)
  settable = [f.name for f in all_fields if f.name not in _DERIVED]
  for name in fields:
    if name not in settable:
      close = difflib.get_close_matches(name, settable, n=1)
      hint = f'; did you mean {close[0]!r}?' if close else '.'
      raise ValueError(f'model_config: {name!r} is not a model setting{hint}')
  size, patch = variant.split('/')
  hidden, heads, mlp, layers = VIT_SIZES[size]
  patch = int(patch)
  values = dict(
      hidden_size=hidden, num_heads=heads, mlp_dim=mlp,
      num_layers=layers + extra_layers, tokenizer_type=tokenizer_type,
      patch_size=((patch, patch, tubelet_frames) if tokenizer_type == 'video'
                  else (patch, patch)),
      classifier=classifier, **fields)
  hints = typing.get_type_hints(model_lib.ModelConfig)
  block: Dict[str, Any] = {}
  for f in all_fields:
    key = f.metadata['key']
    if not key or key.startswith('/'):  # Not under config.model.
      continue
    *parents, leaf = key.split('.')
    node = block
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = _overridable(values.get(f.name, f.default), hints[f.name])
  return ml_collections.ConfigDict(block)


def _overridable(value: Any, hint: Any) -> Any:
  """`value`, or for None of an `Optional[int]` (float, str) field a
  placeholder of that type, which `--config.key=3` can set (a plain None
  cannot be overridden)."""
  if value is not None:
    return value
  types = [t for t in typing.get_args(hint) if t in (int, float, str)]
  return ml_collections.config_dict.placeholder(types[0]) if types else None


def x2plus1d_model_config(**fields: Any) -> ml_collections.ConfigDict:
  """The `config.model` block of the X(2+1)D network (`X2Plus1DConfig`):
  every setting with a key, `fields` (by field name, e.g. `parts`,
  `num_tokens`) over the defaults (X(2+1)D-M's).

  Raises:
    ValueError: For a field `X2Plus1DConfig` does not have.
  """
  from tokenlearner_jax.models import x2plus1d_config  # pylint: disable=g-import-not-at-top
  block: Dict[str, Any] = {}
  names = set()
  for f in dataclasses.fields(x2plus1d_config.X2Plus1DConfig):
    key = f.metadata['key']
    if not key or key.startswith('/'):  # Not under config.model.
      continue
    names.add(f.name)
    *parents, leaf = key.split('.')
    node = block
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = fields.get(f.name, f.default)
  unknown = sorted(set(fields) - names)
  if unknown:
    raise ValueError(f'x2plus1d_model_config: {unknown[0]!r} is not a setting '
                     f'of the X(2+1)D network; they are {sorted(names)}.')
  return ml_collections.ConfigDict(block)


def parse_arg(arg: Optional[str], *, types: Optional[Mapping[str, Any]] = None,
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `'k=v,flag'` against `defaults`, casting each value to its type.

  Every config also takes `fast` (a bare flag, as `runlocal`): it sets
  `config.fast`, which `train_steps.fast_config` applies for the devices the
  run is on. A value's type is its default's, or `types[key]` where
  declared: e.g.
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
  defaults = {'fast': False, **defaults}  # Every config takes `fast`.
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
  """Gives `config` every trainer key that has a default (`schema.KEYS`): no
  `init_from` checkpoint, data parallelism over all devices, the default
  logical-axis rules, ... so that `--config.<key>` overrides any of them."""
  from tokenlearner_jax.configs import schema  # pylint: disable=g-import-not-at-top
  schema.fill_defaults(config)
