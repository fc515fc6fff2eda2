"""How a typed config section declares its keys: one `field` per key.

A section with logic (`config.model`: `ModelConfig`, `X2Plus1DConfig`;
`config.fewshot`: `FewshotConfig`) is a frozen dataclass whose fields are
made with `field(key, default, check=..., choices=...)`: the key it reads
(under its section; '/key' from the top of the config), its default, and a
generic check. Its `Attributes:` docstring describes each field. The schema
(`configs.schema`) takes the section's keys, defaults and descriptions from
it (`attribute_docs`), so a new key is one field. `check_field` runs the
generic check, `lookup` reads a field's key, `check_known_keys` refuses a key
no field reads, naming the closest one.
"""

import dataclasses
import difflib
import re
from typing import Any, Dict, Iterator, Optional, Tuple

import ml_collections

from tokenlearner_jax import errors

CHECKS = ('positive', 'optional_positive', 'rate', 'bool', 'number')


def field(key: str, default: Any = dataclasses.MISSING, *,
          check: Optional[str] = None, choices: Optional[Tuple] = None,
          reader: Optional[str] = None, reference: bool = False):
  """A field read from `<section>.<key>` (or the top-level `key[1:]` for
  '/key'), with a generic check.

  `check`: 'positive' (int > 0), 'optional_positive' (None or int > 0),
  'rate' (in [0, 1)), 'bool' or 'number' (a number > 0); `choices`: the
  allowed values; `reader`: the package module that acts on it, where that
  is not the section's own (for the schema's table); `reference`: a config
  file of the reference sets it.
  """
  if check is not None and check not in CHECKS:
    raise ValueError(f'field {key!r}: check={check!r}, not one of {CHECKS}.')
  return dataclasses.field(default=default, metadata=dict(
      key=key, check=check, choices=choices, reader=reader,
      reference=reference))


def key_name(f: dataclasses.Field, section: str) -> str:
  """The full config key a field reads (`section.key`, or the top-level
  key of '/key'); its name where it reads none."""
  key = f.metadata['key']
  if not key:
    return f.name
  return key[1:] if key.startswith('/') else f'{section}.{key}'


def require(ok: bool, message: str) -> None:
  """Raises `errors.ConfigError(message)` unless `ok`."""
  if not ok:
    raise errors.ConfigError(message)


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_field(f: dataclasses.Field, value: Any, name: str) -> None:
  """The generic check of one field's `value` (`check` and `choices`
  metadata); errors name the key as `name`."""
  check, choices = f.metadata['check'], f.metadata['choices']
  if choices is not None:
    require(value in choices,
            f'{name} must be one of {choices}, got {value!r}.')
  if check == 'positive' or (check == 'optional_positive' and
                             value is not None):
    require(is_int(value) and value > 0,
            f'{name} must be a positive integer, got {value!r}.')
  elif check == 'rate':
    require(isinstance(value, (int, float)) and 0.0 <= value < 1.0,
            f'{name} must be in [0, 1), got {value!r}.')
  elif check == 'bool':
    require(isinstance(value, bool),
            f'{name} must be True or False, got {value!r}.')
  elif check == 'number':
    require(is_number(value) and value > 0,
            f'{name} must be a number > 0, got {value!r}.')


def lookup(config: ml_collections.ConfigDict, section: Dict[str, Any],
           key: str) -> Tuple[bool, Any]:
  """(found, value) of a field's key in `section` or, for '/key', in
  `config`."""
  node = config if key.startswith('/') else section
  for part in key.lstrip('/').split('.'):
    if node is None or part not in node:
      return False, None
    node = node[part]
  return True, node


def read(cls: Any, config: ml_collections.ConfigDict,
         section: str) -> Dict[str, Any]:
  """Field name -> value of each field of `cls` that `config` sets (not
  None) under `config.<section>` (or at the top, for '/key'); lists become
  tuples. The section may be unset."""
  node = config.get(section)
  node = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else (
      node or {})
  values: Dict[str, Any] = {}
  for f in dataclasses.fields(cls):
    found, value = lookup(config, node, f.metadata['key'])
    if found and value is not None:
      values[f.name] = tuple(value) if isinstance(value, list) else value
  return values


def check_fields(obj: Any, section: str) -> None:
  """The generic check of every field of the dataclass `obj`, errors
  naming `config.<section>.<key>`."""
  for f in dataclasses.fields(obj):
    name = key_name(f, section)
    check_field(f, getattr(obj, f.name), f'config.{name}')


def check_optional_nonnegative(obj: Any, names: Tuple[str, ...],
                               section: str) -> None:
  """Each of the fields `names` of the dataclass `obj` is None or a number
  >= 0; errors name `config.<key>`."""
  by_name = {f.name: f for f in dataclasses.fields(obj)}
  for name in names:
    value = getattr(obj, name)
    require(value is None or (is_number(value) and value >= 0),
            f'config.{key_name(by_name[name], section)} must be a number '
            f'>= 0, got {value!r}.')


def leaf_keys(node: Any, prefix: str = '',
              leaves: Tuple[str, ...] = ()) -> Iterator[str]:
  """Every key path under `node` (nested dicts), `leaves` not entered."""
  for key in node:
    path = f'{prefix}{key}'
    yield path
    if isinstance(node[key], (dict, ml_collections.ConfigDict)) and (
        path not in leaves):
      yield from leaf_keys(node[key], path + '.', leaves)


def check_known_keys(node: Any, prefix: str, known: Tuple[str, ...],
                     what: str, leaves: Tuple[str, ...] = ()) -> None:
  """Raises for a key under `node` that is not in `known`, naming the
  closest known one (`what`: e.g. 'a model setting')."""
  for key in leaf_keys(node, leaves=leaves):
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
      hint = f'; did you mean {prefix}.{close[0]}?' if close else '.'
      raise errors.ConfigError(f'{prefix}.{key} is not {what}{hint}')


def attribute_docs(docstring: str) -> Dict[str, str]:
  """name -> text of a Google-style `Attributes:` section."""
  docs: Dict[str, str] = {}
  lines = docstring.split('Attributes:', 1)[-1].splitlines()
  name = None
  for line in lines[1:]:
    match = re.match(r'^\s{4}(\w+): (.*)$', line)
    if match:
      name = match.group(1)
      docs[name] = match.group(2).strip()
    elif line.strip() and name and line.startswith(' ' * 6):
      docs[name] += ' ' + line.strip()
    elif line.strip():
      break
  return docs
