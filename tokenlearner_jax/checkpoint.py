"""Checkpoints of a run: the orbax manager, save and restore, layer layouts.

A run's checkpoints live under `WORKDIR/checkpoints/<step>/`, one orbax
`StandardSave` of the train state's state dict (`step`, `params`,
`opt_state`, `rng`) per step; this layout is what every workdir of this
trainer holds, and must not change.

  * `make_manager`, `save`: what the trainer writes.
  * `restore_state`: the whole train state, onto its shardings (resuming).
  * `restore_params`: the parameters only, without an optimizer or a train
    state target (evaluation, visualisation, fine-tuning): as numpy, or onto
    given shardings.
  * `WorkdirLock`: `WORKDIR/train.lock`, which process 0 of a run holds
    while it trains, so that a second trainer on the same workdir stops at
    once instead of writing checkpoints over the first's.
  * Layer layouts: with `model.scan_layers=True` each run of identical layers
    is one `nn.scan` whose parameters carry a leading layer axis (see
    `models.encoder.scan_segments`):

      per-layer (reference) layout -> scanned layout, under `Transformer/`:
      encoderblock_{i}/X -> encoderblock_{a}_to_{b}/X `[b-a+1, ...]`
      encoderblock_{loc+j}/X -> fuserlayer_{loc}_to_{b}/encoderblock/X
      TokenLearnerModuleV11_{j}/X ->
          fuserlayer_{loc}_to_{b}/TokenLearnerModuleV11/X
      TokenFuser_{j}/X -> fuserlayer_{loc}_to_{b}/TokenFuser/X

    (the same under `SpatialTransformer`/`TemporalTransformer` of ViViT model
    2). The per-layer layout is the canonical one: `unstack_layers` maps
    scanned names to it, `stack_layers` maps it onto a model's scanned names,
    so that checkpoints of either kind load into models of either kind.
    big_vision's scanned `Transformer/encoderblock/X` goes through the same
    two functions (`checkpoint_formats.from_big_vision`).
"""

import datetime
import json
import os
import re
import socket
import threading
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from absl import logging
from etils import epath
import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

Params = Dict[str, Any]
SEGMENT = re.compile(r'(encoderblock|fuserlayer)_(\d+)_to_(\d+)')


def _is_remote(path: str) -> bool:
  return '://' in path


def checkpoint_dir(workdir: str) -> epath.Path:
  """`WORKDIR/checkpoints` (local paths made absolute, as orbax needs)."""
  workdir = workdir if _is_remote(workdir) else os.path.abspath(workdir)
  return epath.Path(workdir) / 'checkpoints'


def make_manager(workdir: str,
                 config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """The run's manager: every `checkpoint_steps`, the last
  `max_checkpoints_to_keep` (default 3) kept, written asynchronously."""
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.get('max_checkpoints_to_keep', 3),
          save_interval_steps=config.checkpoint_steps,
          enable_async_checkpointing=True))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         force: bool = False) -> bool:
  """Saves `state` (a `train_steps.TrainState`) at `step` when the manager's
  interval says so, or always with `force`; returns whether it saves."""
  return manager.save(step, args=ocp.args.StandardSave(
      flax.serialization.to_state_dict(state)), force=force)


def _checked_step(manager: ocp.CheckpointManager, step: Optional[int]) -> int:
  """`step`, or the latest one; raises naming the directory when absent."""
  if step is None:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {manager.directory}.')
  if step not in manager.all_steps():
    raise ValueError(f'No checkpoint at step {step} in {manager.directory}; '
                     f'have {sorted(manager.all_steps())}.')
  return step


def restore_state(manager: ocp.CheckpointManager, state: Any, shardings: Any,
                  step: Optional[int] = None) -> Any:
  """Checkpoint `step` (default: the latest) of the whole train state.

  Args:
    manager: The run's manager (`make_manager`).
    state: A train state (arrays or `jax.ShapeDtypeStruct`s) of the
      checkpoint's structure; returned as it is when there is no checkpoint.
    shardings: Where each leaf of `state` goes.
    step: The step to restore.
  """
  if step is None and manager.latest_step() is None:
    return state
  step = _checked_step(manager, step)
  target = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
      shardings)
  restored = manager.restore(step, args=ocp.args.StandardRestore(
      flax.serialization.to_state_dict(target)))
  logging.info('Restored the checkpoint at step %d.', step)
  return flax.serialization.from_state_dict(state, restored)


def latest_step(workdir: str) -> Optional[int]:
  """The latest checkpoint step under `workdir`, None when there is none."""
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    return None
  with _read_only_manager(directory) as manager:
    return manager.latest_step()


def _read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory, item_handlers=ocp.PyTreeCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def restore_params(workdir: str, step: Optional[int] = None,
                   target: Any = None) -> Params:
  """Only the `params` of checkpoint `step` (default: the latest).

  Nothing else of the train state is read, and no optimizer is needed.

  Args:
    workdir: A workdir of this trainer.
    step: The checkpoint step.
    target: None: numpy arrays, in the layout they were saved in. Or the
      parameters' `jax.ShapeDtypeStruct`s with their `sharding`s (the same
      layout as saved): global arrays on those shardings.

  Raises:
    FileNotFoundError: naming the directory, when there is no checkpoint.
    ValueError: for a step without a checkpoint, or one without `params`.
  """
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    raise FileNotFoundError(f'{directory} does not exist.')
  with _read_only_manager(directory) as manager:
    step = _checked_step(manager, step)
    metadata = manager.item_metadata(step)
    if metadata is None or 'params' not in metadata:
      raise ValueError(f'The checkpoint at step {step} in {directory} has no '
                       '`params`.')
    if target is None:
      target = jax.tree_util.tree_map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata['params'])
      restore_args = jax.tree_util.tree_map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    else:
      restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item={'params': target}, restore_args={'params': restore_args},
        partial_restore=True))
  logging.info('Read the parameters of step %d in %s.', step, directory)
  return flax.core.unfreeze(restored['params'])


# ------------------------------------------------------------- workdir lock

LOCK_FILE = 'train.lock'


class WorkdirLockedError(RuntimeError):
  """Another trainer, alive, holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True


class WorkdirLock:
  """`WORKDIR/train.lock`: the trainer that runs on a workdir.

  The file holds JSON: the holder's `host`, `pid` and `started` (UTC time).
  Its modification time is the holder's heartbeat: `beat` refreshes it (the
  trainer does at each train summary), and so does a background thread every
  `min(stale_seconds / 4, 60)` s, so that a long compile, evaluation or
  summary interval does not make a live holder look stale. A lock is stale,
  and taken over with a warning, when its process is dead on this host or
  its heartbeat is older than `stale_seconds`.

  Local workdirs are locked atomically (hard link or `O_EXCL` create); on a
  remote file system (a 'scheme://' path) the check and the write are two
  operations, so two trainers started in the same instant may both pass.

  Attributes:
    path: The lock file.
    stale_seconds: A heartbeat older than this marks a stale lock.
    holder: What this process writes in the lock file.
  """

  def __init__(self, workdir: str, stale_seconds: float):
    self.remote = _is_remote(workdir)
    workdir = workdir if self.remote else os.path.abspath(workdir)
    self.path: epath.Path = epath.Path(workdir) / LOCK_FILE
    self.stale_seconds: float = float(stale_seconds)
    self.holder: Dict[str, Any] = {
        'host': socket.gethostname(), 'pid': os.getpid(),
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds')}
    self._text = json.dumps(self.holder)
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # ---------------------------------------------------------------- reading

  def read(self) -> Tuple[Optional[Dict[str, Any]], Optional[float]]:
    """The lock file's holder (None when unreadable) and its heartbeat's age
    in seconds; (None, None) when there is no lock file."""
    try:
      text = self.path.read_text()
      mtime = (self.path.stat().mtime if self.remote else
               os.path.getmtime(self.path))
      age = time.time() - mtime
    except FileNotFoundError:
      return None, None
    try:
      holder = json.loads(text)
    except ValueError:  # Being written, or not ours.
      holder = None
    return (holder if isinstance(holder, dict) else None), age

  def stale_reason(self, holder: Optional[Dict[str, Any]],
                   age: float) -> Optional[str]:
    """Why a lock of `holder` whose heartbeat is `age` s old is stale; None
    when it is held."""
    holder = holder or {}
    if (holder.get('host') == self.holder['host'] and
        isinstance(holder.get('pid'), int) and not _pid_alive(holder['pid'])):
      return f'its process (pid {holder["pid"]}) is dead'
    if age > self.stale_seconds:
      return (f'its heartbeat is {age:.0f} s old (> '
              f'workdir_lock_stale_seconds={self.stale_seconds:g})')
    return None

  def describe(self, holder: Optional[Dict[str, Any]], age: float) -> str:
    holder = holder or {}
    return (f'host {holder.get("host", "?")}, pid {holder.get("pid", "?")}, '
            f'started {holder.get("started", "?")}, last heartbeat '
            f'{age:.0f} s ago')

  # ---------------------------------------------------------------- writing

  def _create(self) -> bool:
    """Writes the lock file unless one exists; whether it wrote it."""
    if self.remote:
      if self.path.exists():
        return False
      self.path.write_text(self._text)
      return True
    temporary = f'{self.path}.{self.holder["pid"]}.tmp'
    with open(temporary, 'w') as f:
      f.write(self._text)
    try:
      os.link(temporary, self.path)  # Atomic; fails when the lock exists.
      return True
    except FileExistsError:
      return False
    except OSError:  # No hard links here: an exclusive create.
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(self._text)
      return True
    finally:
      os.unlink(temporary)

  def _replace(self) -> None:
    if self.remote:
      self.path.write_text(self._text)
      return
    temporary = f'{self.path}.{self.holder["pid"]}.tmp'
    with open(temporary, 'w') as f:
      f.write(self._text)
    os.replace(temporary, self.path)

  def _refused(self, holder, age) -> WorkdirLockedError:
    return WorkdirLockedError(
        f'{self.path.parent} is in use by another trainer ('
        f'{self.describe(holder, age)}; lock file {self.path}): stop it or '
        'wait for it to end. A lock whose process is dead, or whose heartbeat '
        'is older than config.workdir_lock_stale_seconds '
        f'({self.stale_seconds:g} s), is taken over.')

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock (over a stale one, with a warning).

    Raises:
      WorkdirLockedError: naming the holder, when a live trainer holds it.
    """
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if not self._create():
      holder, age = self.read()
      if age is None:  # Released meanwhile.
        return self.acquire()
      reason = self.stale_reason(holder, age)
      if reason is None:
        raise self._refused(holder, age)
      logging.warning('Taking over the stale lock %s (%s): %s.', self.path,
                      self.describe(holder, age), reason)
      self._replace()
      holder, age = self.read()
      if holder != self.holder:  # Another trainer took it over first.
        raise self._refused(holder, age or 0.0)
    logging.info('Holding the workdir lock %s.', self.path)
    interval = max(min(self.stale_seconds / 4, 60.0), 0.01)
    self._thread = threading.Thread(target=self._beat_every, args=(interval,),
                                    name='workdir_lock_heartbeat', daemon=True)
    self._thread.start()
    return self

  def beat(self) -> None:
    """Refreshes the heartbeat (the lock file's modification time)."""
    try:
      if self.remote:
        self.path.write_text(self._text)
      else:
        os.utime(self.path)
    except OSError as e:  # A heartbeat is not worth stopping a run for.
      logging.warning('Could not refresh the workdir lock %s: %s', self.path,
                      e)

  def _beat_every(self, interval: float) -> None:
    while not self._stop.wait(interval):
      self.beat()

  def release(self) -> None:
    """Stops the heartbeat; removes the lock file if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    holder, _ = self.read()
    if holder == self.holder:
      self.path.unlink(missing_ok=True)

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


# ------------------------------------------------------------ layer layouts


def _segment(parts: List[str]) -> Optional[Tuple[int, str, int, int]]:
  """(position, kind, first, last) of the first scanned segment in `parts`."""
  for i, part in enumerate(parts):
    match = SEGMENT.fullmatch(part)
    if match:
      return i, match.group(1), int(match.group(2)), int(match.group(3))
  return None


def _layer_name(parts: List[str], segment: Tuple[int, str, int, int],
                j: int) -> str:
  """The per-layer name of layer `first + j` of a scanned parameter's path."""
  i, kind, first, _ = segment
  if kind == 'encoderblock':
    return '/'.join(parts[:i] + [f'encoderblock_{first + j}'] + parts[i + 1:])
  child = parts[i + 1]  # encoderblock, TokenLearnerModule(V11) or TokenFuser.
  child = (f'encoderblock_{first + j}' if child == 'encoderblock'
           else f'{child}_{j}')
  return '/'.join(parts[:i] + [child] + parts[i + 2:])


def unstack_layers(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """'/'-joined parameters in the per-layer layout (scanned ones split).

  Raises:
    ValueError: for a scanned parameter without its leading layer axis, or a
      layer that is both scanned and per-layer.
  """
  out: Dict[str, Any] = {}
  for name, value in flat.items():
    parts = name.split('/')
    segment = _segment(parts)
    if segment is None:
      out[name] = value
      continue
    depth = segment[3] - segment[2] + 1
    if np.ndim(value) == 0 or np.shape(value)[0] != depth:
      raise ValueError(f'Scanned parameter {name} has shape {np.shape(value)}, '
                       f'not a leading layer axis of {depth}.')
    for j in range(depth):
      layer = _layer_name(parts, segment, j)
      if layer in flat:
        raise ValueError(f'{layer} is both scanned ({name}) and per-layer.')
      out[layer] = value[j]  # Layer j of [depth, ...].
  return out


def stack_layers(flat: Mapping[str, Any],
                 target_names: Iterable[str]) -> Dict[str, Any]:
  """`flat` (per-layer layout) with layers stacked where `target_names` are.

  A scanned target name whose layers are all in `flat` gets them stacked
  `[layers, ...]`; the layers are then left out. Every other entry of `flat` is
  kept as it is (missing ones are the caller's to report).
  """
  out = dict(flat)
  for name in target_names:
    parts = name.split('/')
    segment = _segment(parts)
    if segment is None:
      continue
    sources = [_layer_name(parts, segment, j)
               for j in range(segment[3] - segment[2] + 1)]
    if all(source in flat for source in sources):
      out[name] = np.stack([np.asarray(flat[s]) for s in sources])  # [L, ...]
      for source in sources:
        out.pop(source, None)
  return out


def per_layer(params: Params) -> Params:
  """A nested parameter tree in the per-layer layout."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  return flax.traverse_util.unflatten_dict(unstack_layers(flat), sep='/')
