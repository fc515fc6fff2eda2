"""Checkpoints of a run: the orbax manager, save and restore, integrity.

A run's checkpoints live under `WORKDIR/checkpoints/<step>/`, one orbax
`StandardSave` of the train state's state dict (`step`, `params`,
`opt_state`, `rng`, and `model_state` only for a model that has one, such as
BatchNorm's `batch_stats`) per step; this layout is what every workdir of
this trainer holds, and must not change. Beside it, each step since
checksums carries `<step>/checksums.json` (`Manager`, `write_checksums`).

  * `make_manager`, `save`: what the trainer writes.
  * `restore_state`: the whole train state, onto its shardings (resuming).
  * `restore_params`: the parameters only, without an optimizer or a train
    state target (visualisation, fine-tuning): as numpy, or onto given
    shardings.
  * `restore_variables`: the parameters and the model state, as the model's
    variables `{'params': ..., **model_state}` (evaluation).
  * Integrity: before a step is restored its files are checked against its
    checksums and its shapes against the target's; after, its values must
    be finite. An unreadable step (corrupt, truncated, empty, non-finite) is
    named in one warning and the newest good step restored instead
    (`config.checkpoint_fallback=False`: a stop); a step whose shapes differ
    from the run's stops with one line (`CheckpointError`).

The workdir lock (`workdir_lock`) and the scanned <-> per-layer parameter
layouts (`layer_layout`) are modules of their own.
"""

import contextlib
import errno
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from tokenlearner_jax import errors
from tokenlearner_jax import workdir_lock

Params = Dict[str, Any]


def checkpoint_dir(workdir: str) -> epath.Path:
  """`WORKDIR/checkpoints` (local paths made absolute, as orbax needs)."""
  if not workdir_lock.is_remote(workdir):
    workdir = os.path.abspath(workdir)
  return epath.Path(workdir) / 'checkpoints'


class CheckpointError(errors.KnownFault, ValueError):
  """A checkpoint that cannot be restored, or that does not fit the train
  state; the message is one line naming the step and the cause."""


class _Unreadable(Exception):
  """A step's checkpoint is unreadable; an older step may do instead."""


class StorageFullError(errors.KnownFault, OSError):
  """A checkpoint write that the disk refused (no space left, a quota or a
  file-size limit); names the step, the directory and the last committed
  step, which is kept."""
  exit_at_once = True  # orbax's failed write tasks, collected at exit.


_ROOM = ('free space there, or move --workdir to a disk with room, and run '
         'the same command again')
# errno values of a refused write -> what happened and what to do.
_REFUSED = {
    errno.ENOSPC: ('no space left on device', _ROOM),
    errno.EDQUOT: ('disk quota exceeded', _ROOM),
    errno.EFBIG: ('a file larger than the file-size limit',
                  'raise the limit (ulimit -f) and run the same command '
                  'again')}


def storage_fault(error: BaseException) -> Optional[Tuple[str, str]]:
  """(what happened, what to do) when a write in `error`'s chain was refused
  by the disk, else None: an `OSError`'s errno, or the os error code that
  orbax's tensorstore writes put in their message (`[os_error_code='28']`)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _REFUSED:
      return _REFUSED[error.errno]
    for code, answer in _REFUSED.items():
      if f"os_error_code='{code}'" in str(error):
        return answer
    error = error.__cause__ or error.__context__
  return None


class Manager(ocp.CheckpointManager):
  """orbax's `CheckpointManager`, whose steps carry `checksums.json`, and
  whose writes refused by the disk raise `StorageFullError`.

  When every process has written its part of a step, and before orbax
  commits the step, orbax's primary host (process 0, which finalizes the
  step) writes the step's `checksums.json` (`write_checksums`).

  Attributes:
    fallback: Whether `restore_state` falls back to the newest good step when
      the latest one is unreadable (`config.checkpoint_fallback`).
  """

  def __init__(self, directory: epath.Path,
               options: ocp.CheckpointManagerOptions, fallback: bool = True):
    self.fallback: bool = fallback
    self._saving: Optional[int] = None
    self._train_rows: List[Dict[str, Any]] = []
    options.async_options = ocp.AsyncOptions(
        post_finalization_callback=self._write_checksums)
    super().__init__(directory, options=options)

  def save(self, step: int, *args, force: bool = False,
           train_rows: Sequence[Dict[str, Any]] = (), **kwargs) -> bool:
    """orbax's save; `train_rows` (the per-step train metrics since the
    last summary) go with the step, in `TRAIN_ROWS`, when it is saved."""
    if force or self.should_save(step):
      self.wait_until_finished()  # As orbax does: one save in flight.
      self._saving = step
      self._train_rows = [{k: _typed_value(v) for k, v in row.items()}
                          for row in jax.device_get(list(train_rows))]
    with self._refused_writes():
      return super().save(step, *args, force=force, **kwargs)

  def wait_until_finished(self) -> None:
    with self._refused_writes():
      super().wait_until_finished()

  def close(self) -> None:
    with self._refused_writes():
      super().close()

  @contextlib.contextmanager
  def _refused_writes(self):
    """Turns a write the disk refused into one `StorageFullError` line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      refused = storage_fault(e)
      if refused is None:
        raise
      committed = [s for s in self.all_steps() if s != self._saving]
      kept = (f'the last committed checkpoint, step {max(committed)}, is '
              'kept and the same command resumes from it' if committed else
              'no checkpoint was committed before it')
      raise StorageFullError(
          f'{refused[0]} while writing the checkpoint of step '
          f'{self._saving} in {self.directory} ({kept}): {refused[1]}.'
      ) from None

  def _write_checksums(self) -> None:
    """Of the step being saved, with its train rows first (so that they are
    checked too): in its temporary directory (renamed when committed), or in
    its own where a file marks the commit (cloud storage)."""
    temporary = self.directory / f'{self._saving}{TMP_SUFFIX}'
    step_dir = (temporary if temporary.exists() else
                self.directory / str(self._saving))
    (step_dir / TRAIN_ROWS).write_text(json.dumps(self._train_rows))
    write_checksums(step_dir)


# In each step's directory: the per-step train metrics logged since the last
# train summary, each value as [value, dtype], so that a run resumed there
# averages its first summary over the same steps, with the same arithmetic,
# as an uninterrupted run.
TRAIN_ROWS = 'train_rows.json'


def _typed_value(value: Any) -> List[Any]:
  value = np.asarray(value)
  return [value.item(), value.dtype.name]


def train_rows(directory: epath.Path, step: int) -> List[Dict[str, Any]]:
  """The train rows saved with `step` (`Manager.save`), values as 0-d numpy
  arrays of their dtype; none for a step saved without them."""
  path = directory / str(step) / TRAIN_ROWS
  if not path.exists():
    return []
  return [{k: np.asarray(v, dtype=t) for k, (v, t) in row.items()}
          for row in json.loads(path.read_text())]


def make_manager(workdir: str, config: ml_collections.ConfigDict,
                 interval: Optional[int] = None) -> Manager:
  """The run's manager: every `interval` steps (default: the config's
  `checkpoint_steps`), the last `max_checkpoints_to_keep` kept, written
  asynchronously (`config` completed: `schema.complete`)."""
  return Manager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.max_checkpoints_to_keep,
          save_interval_steps=interval or config.checkpoint_steps,
          enable_async_checkpointing=True),
      fallback=config.checkpoint_fallback)


MODEL_STATE = 'model_state'


def _state_dict(state: Any) -> Dict[str, Any]:
  """The state dict of a `train_steps.TrainState` as a checkpoint holds it:
  without `model_state` when that is empty (the layout of every workdir
  written before model states)."""
  state_dict = flax.serialization.to_state_dict(state)
  if MODEL_STATE in state_dict and not state_dict[MODEL_STATE]:
    state_dict = {k: v for k, v in state_dict.items() if k != MODEL_STATE}
  return state_dict


def save(manager: Manager, step: int, state: Any, force: bool = False,
         train_rows: Sequence[Dict[str, Any]] = ()) -> bool:
  """Saves `state` (a `train_steps.TrainState`) at `step`, with
  `train_rows` (`Manager.save`), when the manager's interval says so, or
  always with `force`; returns whether it saves. An empty `model_state` is
  not saved (`_state_dict`)."""
  return manager.save(step, args=ocp.args.StandardSave(_state_dict(state)),
                      force=force, train_rows=train_rows)


# ---------------------------------------------------------------- checksums

CHECKSUMS = 'checksums.json'
TMP_SUFFIX = '.orbax-checkpoint-tmp'
# Step-level files not checked: ours, and those orbax writes when it commits
# the step (after the checksums).
UNCHECKED = (CHECKSUMS, 'commit_success.txt', '_CHECKPOINT_METADATA')
SET_ASIDE_DIR = 'bad_checkpoints'


def _step_files(step_dir: epath.Path) -> Dict[str, epath.Path]:
  """The files under `step_dir` by relative path ('/'-joined)."""
  files = {}
  for root, _, names in step_dir.walk():
    for name in names:
      files[str((root / name).relative_to(step_dir))] = root / name
  return files


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    while chunk := f.read(1 << 23):
      digest.update(chunk)
  return digest.hexdigest()


def write_checksums(step_dir: epath.Path) -> None:
  """`step_dir/checksums.json`: {'files': {path: {'size', 'sha256'}}} of
  each file of the step but `UNCHECKED`."""
  files = {name: {'size': path.stat().length, 'sha256': _sha256(path)}
           for name, path in sorted(_step_files(step_dir).items())
           if name not in UNCHECKED}
  (step_dir / CHECKSUMS).write_text(json.dumps({'files': files}, indent=1))


def _checksum_fault(step_dir: epath.Path) -> Optional[str]:
  """The first file of the step that is not as `checksums.json` says."""
  try:
    written = json.loads((step_dir / CHECKSUMS).read_text())['files']
  except (ValueError, KeyError, TypeError) as e:
    return f'its {CHECKSUMS} is unreadable ({type(e).__name__})'
  for name, expected in written.items():
    path = step_dir / name
    if not path.exists():
      return f'{name} is missing'
    size = path.stat().length
    if size != expected['size']:
      return (f'{name} is {size} bytes, {expected["size"]} were written '
              '(truncated)')
    if _sha256(path) != expected['sha256']:
      return f'{name} does not match its SHA-256 in {CHECKSUMS} (corrupt)'
  return None


def _legacy_fault(step_dir: epath.Path) -> Optional[str]:
  """What can be told of a step written before checksums without reading
  its arrays."""
  metadata = step_dir / 'default' / '_METADATA'
  if not metadata.exists():
    return 'default/_METADATA is missing'
  text = metadata.read_text()
  if not text.strip():
    return 'default/_METADATA is empty'
  try:
    json.loads(text)
  except ValueError:
    return 'default/_METADATA is not JSON (corrupt)'
  logging.info('Note: %s has no %s (written before checksums); restoring it '
               'unverified.', step_dir, CHECKSUMS)
  return None


def _files_fault(step_dir: epath.Path) -> Optional[str]:
  """Why the step's files are not a checkpoint as written; None when they
  are, or when they predate checksums and look whole."""
  if not step_dir.is_dir() or not any(step_dir.iterdir()):
    return 'an empty directory'
  if not (step_dir / 'default').is_dir():
    return 'no default/ in it (not a checkpoint of this trainer)'
  if (step_dir / CHECKSUMS).exists():
    return _checksum_fault(step_dir)
  return _legacy_fault(step_dir)


def _stamp(path: epath.Path) -> Tuple[int, float]:
  """Size and modification time (ns when local)."""
  if workdir_lock.is_remote(str(path)):
    return path.stat().length, path.stat().mtime
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime_ns


_FILES_FAULTS: Dict[str, Tuple[Any, Optional[str]]] = {}


def files_fault(directory: epath.Path, step: int) -> Optional[str]:
  """`_files_fault` of `step`'s directory; cached (a checkpoint is hashed
  once) while its files' sizes and times stay the same."""
  step_dir = directory / str(step)
  signature = sorted((name, _stamp(path))
                     for name, path in _step_files(step_dir).items())
  cached = _FILES_FAULTS.get(str(step_dir))
  if cached is None or cached[0] != signature:
    cached = signature, _files_fault(step_dir)
    _FILES_FAULTS[str(step_dir)] = cached
  return cached[1]


# ---------------------------------------------------------------- restoring

def _checked_step(manager: ocp.CheckpointManager, step: Optional[int]) -> int:
  """`step`, or the latest one; raises naming the directory when absent."""
  if step is None:
    step = manager.latest_step()
    if step is None:
      raise errors.MissingFileError(f'no checkpoint in {manager.directory}.')
  if step not in manager.all_steps():
    raise errors.MissingFileError(
        f'--step={step}: no checkpoint at step {step} in {manager.directory}; '
        f'it has steps {sorted(manager.all_steps())}.')
  return step



_WARNED = set()


def _skip_warning(directory: epath.Path, step: int, fault: str) -> None:
  """One line per unreadable step (once per process)."""
  if (str(directory), step, fault) not in _WARNED:
    _WARNED.add((str(directory), step, fault))
    logging.warning('Skipping the checkpoint at step %d in %s: %s.', step,
                    directory, fault)


def _one_line(error: Exception) -> str:
  lines = str(error).strip().splitlines() or ['']
  return f'{type(error).__name__}: {lines[0][:200]}'


def _named(tree: Any) -> Dict[str, Any]:
  """'/'-joined key paths -> leaves."""
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path):
          leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_shapes(saved: Any, target: Any, where: str) -> None:
  """Raises naming the first leaf (parameters first) that `target` and the
  `saved` tree metadata do not share with one shape; only the saved leaves
  under `target`'s top-level keys count.

  Raises:
    CheckpointError: `where` (the checkpoint) and the leaf, in one line.
  """
  target = _named(target)
  tops = {name.split('/')[0] for name in target}
  saved = {name: leaf for name, leaf in _named(saved).items()
           if name.split('/')[0] in tops}
  for name in sorted(set(target) | set(saved),
                     key=lambda n: (not n.startswith('params/'), n)):
    if name not in saved:
      cause = f'it lacks {name}'
    elif name not in target:
      cause = f'it has {name}, which this run lacks'
    elif tuple(saved[name].shape) != tuple(target[name].shape):
      cause = (f'{name} is {tuple(saved[name].shape)} there, '
               f'{tuple(target[name].shape)} here')
    else:
      continue
    raise CheckpointError(f'{where} does not fit this run: {cause} (a config '
                          'changed since it was written?).')


_ALL_FINITE = jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all()
                                            for x in xs]))


def _first_nonfinite(tree: Any) -> Optional[str]:
  """The first float leaf of `tree` (arrays) with a NaN or an infinity."""
  floats = {name: x for name, x in _named(tree).items()
            if jnp.issubdtype(x.dtype, jnp.inexact)}
  if not floats:
    return None
  values = list(floats.values())
  finite = (np.array([np.isfinite(x).all() for x in values])
            if isinstance(values[0], np.ndarray)
            else np.asarray(jax.device_get(_ALL_FINITE(values))))
  bad = [name for name, ok in zip(floats, finite) if not ok]
  return bad[0] if bad else None


def _restore_checked(directory: epath.Path, step: int,
                     restore: Callable[[int], Any]) -> Any:
  """`restore(step)`, its files checked before and its values after.

  Raises:
    _Unreadable: naming the cause.
    CheckpointError: from `restore` (the checkpoint does not fit).
  """
  fault = files_fault(directory, step)
  if fault:
    raise _Unreadable(fault)
  try:
    restored = restore(step)
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise _Unreadable(f'restoring it failed: {_one_line(e)}') from e
  name = _first_nonfinite(restored)
  if name:
    raise _Unreadable(f'{name} holds non-finite values')
  return restored


def _restore_newest(directory: epath.Path, steps: List[int],
                    restore: Callable[[int], Any], fallback: bool,
                    asked: bool) -> Tuple[int, Any]:
  """(step, `restore(step)`) of the newest of `steps` that restores.

  Args:
    directory: The checkpoints' directory.
    steps: Newest first.
    restore: Restores a step; may raise `CheckpointError` (a stop).
    fallback: Whether an unreadable step makes way for the next one.
    asked: Whether the step was asked for (then it is the only one).

  Raises:
    CheckpointError: One line naming the step and the cause.
  """
  for step in steps:
    try:
      return step, _restore_checked(directory, step, restore)
    except _Unreadable as e:
      fault = f'The checkpoint at step {step} in {directory}: {e}'
      if asked:
        raise CheckpointError(f'{fault}.') from None
      if not fallback:
        raise CheckpointError(
            f'{fault}; stopped as config.checkpoint_fallback=False (True '
            'restores the newest good step instead).') from None
      _skip_warning(directory, step, str(e))
  raise CheckpointError(f'No checkpoint in {directory} restores (steps '
                        f'{steps}, each named in a warning above).')


def _set_aside(manager: ocp.CheckpointManager, steps: List[int]) -> None:
  """Moves unreadable `steps` to `WORKDIR/bad_checkpoints/` (kept), so that
  the run saves those steps again; the manager forgets them."""
  if not steps:
    return
  if jax.process_index() == 0:
    aside = manager.directory.parent / SET_ASIDE_DIR
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      target, n = aside / str(step), 0
      while target.exists():
        n += 1
        target = aside / f'{step}.{n}'
      (manager.directory / str(step)).rename(target)
      logging.warning('Moved the unreadable checkpoint of step %d to %s.',
                      step, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('checkpoint_set_aside')
  manager.reload()


def _mesh_of(tree: Any) -> Optional[Dict[str, int]]:
  """{axis: size} of the mesh of the first leaf of `tree` that has one:
  orbax's metadata of a saved array (`NamedShardingMetadata`) or a
  `jax.ShapeDtypeStruct` with a `NamedSharding`."""
  for leaf in jax.tree_util.tree_leaves(
      tree, is_leaf=lambda x: hasattr(x, 'sharding')):
    sharding = getattr(leaf, 'sharding', None)
    if isinstance(sharding, jax.sharding.NamedSharding):
      return dict(sharding.mesh.shape)
    if hasattr(sharding, 'axis_names') and hasattr(sharding, 'shape'):
      return dict(zip(sharding.axis_names, map(int, sharding.shape)))
  return None


def _note_mesh_change(step: int, saved: Optional[Dict[str, int]],
                      here: Optional[Dict[str, int]]) -> None:
  """One warning line when the checkpoint of `step` was written on another
  mesh than the run's."""
  if saved is None or here is None or saved == here:
    return
  devices = []
  for mesh in (saved, here):
    count = int(np.prod(list(mesh.values())))
    devices.append(f'{count} device{"s" if count > 1 else ""}')
  logging.warning(
      'Resuming the checkpoint of step %d, written on mesh %s (%s), on mesh '
      '%s (%s): its arrays are resharded; the global batch and the input '
      'stream are unchanged, so training goes on as it would have (up to '
      'the order of floating-point sums).', step, saved, devices[0], here,
      devices[1])


def restore_state(manager: ocp.CheckpointManager, state: Any, shardings: Any,
                  step: Optional[int] = None) -> Any:
  """Checkpoint `step` (default: the newest good one) of the whole train
  state.

  Each step is checked before it is restored: its files against its
  `checksums.json`, its shapes against `state`'s; and after: its values
  finite. Without `step`, an unreadable step is skipped with a warning
  (unless the manager's `fallback` is off), and the steps newer than the one
  restored are moved to `WORKDIR/bad_checkpoints/`.

  Args:
    manager: The run's manager (`make_manager`).
    state: A train state (arrays or `jax.ShapeDtypeStruct`s) of the
      checkpoint's structure; returned as it is when there is no checkpoint.
    shardings: Where each leaf of `state` goes.
    step: The step to restore.

  Raises:
    CheckpointError: One line naming the step and the cause: a checkpoint
      whose shapes differ from `state`'s, an unreadable `step`, or no step
      that restores.
  """
  if step is None and manager.latest_step() is None:
    return state
  steps = ([_checked_step(manager, step)] if step is not None
           else sorted(manager.all_steps(), reverse=True))
  target = _state_dict(jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
      shardings))

  def restore(s: int) -> Any:
    with _read_only_manager(manager.directory) as reader:
      metadata = reader.item_metadata(s)
      check_shapes(metadata, target,
                   f'The checkpoint at step {s} in {manager.directory}')
    restored = manager.restore(s, args=ocp.args.StandardRestore(target))
    _note_mesh_change(s, _mesh_of(metadata), _mesh_of(target))
    return restored

  restored_step, restored = _restore_newest(
      manager.directory, steps, restore, getattr(manager, 'fallback', True),
      asked=step is not None)
  _set_aside(manager, [s for s in steps if s > restored_step])
  logging.info('Restored the checkpoint at step %d.', restored_step)
  restored = dict(restored)
  if MODEL_STATE not in target and hasattr(state, MODEL_STATE):
    restored[MODEL_STATE] = {}  # Not saved when empty.
  return flax.serialization.from_state_dict(state, restored)


def step_to_read(workdir: str, step: Optional[int] = None) -> int:
  """`step`, else the newest good one (`latest_step`) of a run that
  `evaluate`, `fewshot` or `export` reads.

  Raises:
    errors.MissingFileError: naming the checkpoint directory when `step` is
      None and there is no checkpoint.
  """
  if step is not None:
    return step
  step = latest_step(workdir)
  if step is None:
    raise errors.MissingFileError(
        f'--workdir: no checkpoint under {checkpoint_dir(workdir)}.')
  return step


def latest_step(workdir: str) -> Optional[int]:
  """The newest checkpoint step under `workdir` whose files are as written
  (checksums; a warning names each other one), None when there is none.

  Raises:
    CheckpointError: when there are steps, none of them good.
  """
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    return None
  with _read_only_manager(directory) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    fault = files_fault(directory, step)
    if fault is None:
      return step
    _skip_warning(directory, step, fault)
  if steps:
    raise CheckpointError(f'No checkpoint in {directory} restores (steps '
                          f'{steps}, each named in a warning above).')
  return None


def _read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory, item_handlers=ocp.PyTreeCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def restore_params(workdir: str, step: Optional[int] = None,
                   target: Any = None) -> Params:
  """Only the `params` of checkpoint `step` (default: the newest good one).

  Nothing else of the train state is read, and no optimizer is needed. The
  checkpoint is checked as `restore_state` checks it; without `step`, an
  unreadable step is skipped with a warning.

  Args:
    workdir: A workdir of this trainer.
    step: The checkpoint step.
    target: None: numpy arrays, in the layout they were saved in. Or the
      parameters' `jax.ShapeDtypeStruct`s with their `sharding`s (the same
      layout as saved): global arrays on those shardings.

  Raises:
    FileNotFoundError: naming the directory, when there is no checkpoint.
    ValueError: for a step without a checkpoint, or one without `params`.
    CheckpointError: One line naming the step and the cause: parameters
      whose shapes differ from `target`'s, an unreadable `step`, or no step
      that restores.
  """
  restored = _restore_items(workdir, step, ('params',),
                            None if target is None else {'params': target})
  return flax.core.unfreeze(restored['params'])


def restore_variables(workdir: str, step: Optional[int] = None,
                      target: Optional[Dict[str, Any]] = None
                      ) -> Dict[str, Any]:
  """The model's variables of checkpoint `step`: `{'params': ...,
  **model_state}` (`train_steps.model_variables`), what `model.apply` and
  the eval step take.

  As `restore_params`, with the model state (BatchNorm's `batch_stats`) read
  too: all of the checkpoint's without `target`, else `target`'s
  collections (none for a model with `params` only, so that checkpoints
  without a model state restore).

  Args:
    workdir: A workdir of this trainer.
    step: The checkpoint step (default: the newest good one).
    target: None: numpy arrays. Or the variables' `jax.ShapeDtypeStruct`s
      with their `sharding`s (`train_steps.abstract_variables`): global
      arrays on those shardings.

  Raises:
    As `restore_params`; `CheckpointError` also names a model state the
    checkpoint lacks or whose shapes differ from `target`'s.
  """
  items = None
  if target is not None:
    model_state = {k: v for k, v in target.items() if k != 'params'}
    items = {'params': target['params']}
    if model_state:
      items[MODEL_STATE] = model_state
  restored = _restore_items(workdir, step, ('params', MODEL_STATE), items)
  return {'params': flax.core.unfreeze(restored['params']),
          **flax.core.unfreeze(restored.get(MODEL_STATE) or {})}


def _restore_items(workdir: str, step: Optional[int], keys: Tuple[str, ...],
                   target: Optional[Dict[str, Any]]) -> Dict[str, Any]:
  """The top-level `keys` of checkpoint `step`'s train state that it holds
  (`restore_params`, `restore_variables`), or `target`'s keys onto its
  shardings."""
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    raise errors.MissingFileError(f'{directory} does not exist.')
  with _read_only_manager(directory) as manager:
    steps = ([_checked_step(manager, step)] if step is not None
             else sorted(manager.all_steps(), reverse=True))
    if not steps:
      raise errors.MissingFileError(f'no checkpoint in {directory}.')
    step, restored = _restore_newest(
        directory, steps, lambda s: _read_items(manager, s, keys, target),
        fallback=True, asked=step is not None)
  logging.info('Read the %s of step %d in %s.', ' and '.join(sorted(restored)),
               step, directory)
  return restored


def _read_items(manager: ocp.CheckpointManager, step: int,
                keys: Tuple[str, ...], target: Optional[Dict[str, Any]]
                ) -> Dict[str, Any]:
  """{key: ...} of `step` for each of `keys` it holds, or of `target`'s
  keys (`_restore_items`); `params` must be there."""
  where = f'The checkpoint at step {step} in {manager.directory}'
  metadata = manager.item_metadata(step)
  if metadata is None or 'params' not in metadata:
    raise CheckpointError(f'{where} has no `params`.')
  if target is None:
    target = {key: jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata[key])
              for key in keys if key in metadata}
    restore_args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  else:
    check_shapes(metadata, target, where)
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))
