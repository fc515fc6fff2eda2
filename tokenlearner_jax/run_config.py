"""The config a run was started with, and resuming it with a changed one.

Process 0 of a run writes the completed config (`schema.complete`'s) to
`WORKDIR/config.json` before training. A rerun of the same workdir that
resumes from a checkpoint compares its own config with that record
(`check_resume`):

  * Keys that cannot apply to the saved state stop the run with one
    `ConfigChangeError` line naming them, before anything compiles: a change
    of the parameters' tree or shapes (`model.hidden_size`,
    `model.scan_layers`, ...) or of the optimizer state's (`optimizer`
    'adamw' -> 'momentum', `max_grad_norm` set or unset,
    `skip_nonfinite_steps`, ...), found by tracing (never running) the train
    state's initialisation under both configs ('adamw' -> 'adam' keeps the
    state, and proceeds); and `batch_size`, since the input pipeline positions
    the resumed stream at `step * batch_size` examples
    (`data.batching.skip_to_step`), which under a new batch size is not the
    example the run reached.
  * Every other change is listed in one warning line and the run goes on
    with it; the record is then rewritten with the new config. `SAFE_KEYS`
    (the run's length, logging and checkpoint intervals) change only when
    things happen; others (a learning rate, a dropout rate, the data
    directory) change training from the restored step on.

A key that the record lacks and whose value is its schema default (a key
added to the trainer since the record was written) is no change. A workdir
written before runs recorded their config resumes without a comparison.
"""

import copy
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import ml_collections

from tokenlearner_jax import errors
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema

CONFIG_FILE = 'config.json'
# Keys whose change alters only when things happen, never a train step.
SAFE_KEYS = ('num_training_steps', 'num_training_epochs', 'log_summary_steps',
             'log_eval_steps', 'checkpoint_steps', 'max_checkpoints_to_keep',
             'workdir_lock_stale_seconds', 'experiment_name')
# Keys refused on resume whatever the saved state is, with why.
REFUSED_KEYS = {
    'batch_size': 'the input stream would resume at step x the new batch '
                  'size examples, not at the example the run reached',
}
UNSET = '(unset)'

Record = Dict[str, Any]
Change = Tuple[Any, Any]  # (saved value, new value)
Shapes = Dict[str, Tuple[int, ...]]


class ConfigChangeError(errors.ConfigError):
  """A changed config that the saved state cannot resume with."""


def to_record(config: ml_collections.ConfigDict) -> Record:
  """`config` as plain JSON values (what `CONFIG_FILE` holds)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def read_json(path: str) -> Optional[Record]:
  """The JSON file at `path`, None where there is none."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read(workdir: str) -> Optional[Record]:
  """`WORKDIR/config.json`, None when the run recorded none."""
  return read_json(os.path.join(workdir, CONFIG_FILE))


def write(workdir: str, record: Record) -> None:
  """Writes `WORKDIR/config.json` atomically (a temporary file, renamed)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(path + '.tmp', path)


def with_defaults(record: Record) -> Record:
  """`record` with the schema defaults it lacks (keys added since)."""
  config = ml_collections.ConfigDict(copy.deepcopy(record))
  schema.fill_defaults(config)
  return to_record(config)


def _flat(record: Any, prefix: str = '') -> Dict[str, Any]:
  """'a.b.c' -> leaf value; a dict is walked into, anything else a leaf."""
  if not isinstance(record, dict) or (prefix and not record):
    return {prefix[:-1]: record}
  flat = {}
  for key, value in record.items():
    flat.update(_flat(value, f'{prefix}{key}.'))
  return flat


def changes(saved: Record, record: Record) -> Dict[str, Change]:
  """Key -> (saved value, new value) of the keys that differ (`UNSET` for a
  key one side lacks), in key order."""
  old, new = _flat(with_defaults(saved)), _flat(record)
  return {key: (old.get(key, UNSET), new.get(key, UNSET))
          for key in sorted(set(old) | set(new))
          if old.get(key, UNSET) != new.get(key, UNSET)}


def _with_change(record: Record, key: str, value: Any) -> Record:
  """A copy of `record` with `key` (dotted) set to `value` (or removed)."""
  record = copy.deepcopy(record)
  *parents, leaf = key.split('.')
  node = record
  for parent in parents:
    node = node.setdefault(parent, {})
  if value == UNSET:
    node.pop(leaf, None)
  else:
    node[leaf] = value
  return record


def state_shapes(record: Record, input_shape: Tuple[int, ...],
                 num_classes: int, mesh: jax.sharding.Mesh) -> Shapes:
  """The train state's leaves -> shapes under config `record`.

  The step program's state is traced only (under `jax.eval_shape`): nothing
  runs or compiles. The run length does not shape the state, so the schedule
  is made for 1 step.
  """
  config = ml_collections.ConfigDict(record)
  traced = {}

  def trace():
    traced['state'] = train_steps.build_program(
        config, mesh, input_shape, num_classes, 1).abstract_state
    return ()

  jax.eval_shape(trace)
  leaves, _ = jax.tree_util.tree_flatten_with_path(traced['state'])
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in leaves}


def structural_keys(saved: Record, candidates: List[str],
                    new_value: Callable[[str], Any],
                    shapes: Callable[[Record], Shapes]) -> List[str]:
  """The `candidates` whose change alone changes the state's `shapes` (all
  of them when only their combination does; none when the state is the
  same)."""
  saved = with_defaults(saved)
  if not candidates:
    return []
  try:
    before = shapes(saved)
  except (ValueError, KeyError, TypeError) as e:  # A key no longer known.
    logging.warning('Not comparing the train state with the one of the saved '
                    'config, which no longer builds: %s', e)
    return []
  combined = saved
  for key in candidates:
    combined = _with_change(combined, key, new_value(key))
  if shapes(combined) == before:
    return []
  alone = [key for key in candidates
           if shapes(_with_change(saved, key, new_value(key))) != before]
  return alone or list(candidates)


def _describe(diff: Dict[str, Change], keys: List[str]) -> str:
  return ', '.join(f'{key}: {diff[key][0]!r} -> {diff[key][1]!r}'
                   for key in keys)


def check_resume(config: ml_collections.ConfigDict, workdir: str,
                 step: Optional[int],
                 shapes: Callable[[Record], Shapes]) -> None:
  """Compares `config` with the record of the run resumed at `step`.

  Args:
    config: The completed config of this run.
    workdir: The run's workdir.
    step: The checkpoint the run resumes from (None: it starts afresh, and
      any recorded config is simply replaced).
    shapes: Record -> the train state's shapes (`state_shapes` with the
      run's input shape, classes and mesh).

  Raises:
    ConfigChangeError: in one line naming each changed key that the saved
      state cannot resume with.
  """
  saved = read(workdir) if step is not None else None
  if saved is None:
    if step is not None:
      logging.info('%s has no %s (written before runs recorded it): resuming '
                   'without comparing configs.', workdir, CONFIG_FILE)
    return
  diff = changes(saved, to_record(config))
  if not diff:
    return
  refused = [key for key in diff if key in REFUSED_KEYS]
  candidates = [key for key in diff
                if key not in SAFE_KEYS and key not in REFUSED_KEYS]
  state = structural_keys(saved, candidates, lambda key: diff[key][1], shapes)
  if refused or state:
    reasons = [f'{_describe(diff, [key])} ({REFUSED_KEYS[key]})'
               for key in refused]
    if state:
      reasons.append(f'{_describe(diff, state)} (the saved parameters or '
                     'optimizer state have another tree or shapes)')
    raise ConfigChangeError(
        f'Cannot resume {workdir} from step {step} with a changed config: '
        f'{"; ".join(reasons)}. Set them back as in '
        f'{os.path.join(workdir, CONFIG_FILE)}, or use a new workdir.')
  safe = [key for key in diff if key in SAFE_KEYS]
  others = [key for key in diff if key not in SAFE_KEYS]
  parts = [_describe(diff, safe)] if safe else []
  if others:
    parts.append(f'changing training from step {step + 1} on: '
                 f'{_describe(diff, others)}')
  logging.warning('Resuming %s from step %d with a changed config: %s.',
                  workdir, step, '; '.join(parts))
