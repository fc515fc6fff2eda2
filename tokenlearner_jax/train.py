r"""Training and evaluation of TokenLearner ViT / ViViT models.

  python -m tokenlearner_jax.train --config=configs/demo_moving_digits.py \
      --workdir=/tmp/run [--config.batch_size=64 ...]

One `jax.jit`-ed train step over a device mesh (`tokenlearner_jax.sharding`),
orbax checkpoints under `WORKDIR/checkpoints` (re-running the same command
resumes), clu writers (TensorBoard events in WORKDIR), one JSON object per
logged summary in `WORKDIR/metrics.jsonl`, and the final eval metrics in
`WORKDIR/final_metrics.json` for sweep scripts.

Multi-process jobs: on TPU pods and under SLURM `jax.distributed` finds its
peers by itself; elsewhere pass `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` to every process. SIGTERM (a preemption
notice) saves a checkpoint at the current step and exits 0; the same command
resumes there, with the input stream at the same position.
"""

import functools
import json
import os
import signal
import threading
import time
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import flax
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp

from tokenlearner_jax import flops
from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import optim
from tokenlearner_jax import pretrained
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.data import batching
from tokenlearner_jax.data import input_pipeline
from tokenlearner_jax.models import build_model


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events '
                      'and result files go.')
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 of '
                      'a multi-process job (auto-detected on TPU pods and '
                      'SLURM).')
  flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
  flags.DEFINE_integer('process_id', None, 'This process, 0 to N-1.')


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  if config.get('num_training_steps'):
    return int(config.num_training_steps)
  if not num_examples:
    raise ValueError('num_training_epochs needs the train split size, which '
                     'the dataset does not report: set num_training_steps.')
  return int(config.num_training_epochs * num_examples // config.batch_size)


def evaluate(params, batches, p_eval_step, batch_sharding,
             multilabel: bool) -> Dict[str, float]:
  """Metrics over all `batches` of every process (each example once)."""
  totals, scores, labels = {}, [], []
  for batch in batching.in_lockstep(batches):
    sums, logits = p_eval_step(params,
                               sharding.global_batch(batch, batch_sharding))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    if multilabel:
      logits = (multihost_utils.process_allgather(logits)
                if jax.process_count() > 1 else np.asarray(logits))
      label = (multihost_utils.process_allgather(batch['label'], tiled=True)
               if jax.process_count() > 1 else batch['label'])
      keep = (multihost_utils.process_allgather(batch['batch_mask'],
                                                tiled=True)
              if jax.process_count() > 1 else batch['batch_mask']) > 0
      scores.append(logits[keep])
      labels.append(label[keep])
  results = metrics_lib.finalize(totals)
  results['num_examples'] = int(totals['num_examples'])
  if multilabel:
    results['mAP'] = metrics_lib.average_precision(np.concatenate(scores),
                                                   np.concatenate(labels))
  return results


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.get('max_checkpoints_to_keep', 3),
          save_interval_steps=config.checkpoint_steps,
          enable_async_checkpointing=True))


def restore(manager, state, shardings, step: Optional[int] = None):
  """Checkpoint `step` (default: the latest) restored onto `shardings`.

  Returns `state` itself when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return state
  if step not in manager.all_steps():
    raise ValueError(f'No checkpoint at step {step} in {manager.directory}; '
                     f'have {sorted(manager.all_steps())}.')
  target = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
      shardings)
  restored = manager.restore(step, args=ocp.args.StandardRestore(
      flax.serialization.to_state_dict(target)))
  logging.info('Restored the checkpoint at step %d.', step)
  return flax.serialization.from_state_dict(state, restored)


# Set by SIGTERM (a preemption notice) in a single-process run; `main`
# installs the handler. In a multi-process job JAX's preemption service handles
# SIGTERM and the processes agree on the step through
# `CheckpointManager.reached_preemption`.
PREEMPTION_NOTICE = threading.Event()


def preemption_requested(manager, step: int) -> bool:
  if jax.process_count() > 1:
    return manager.reached_preemption(step)
  return PREEMPTION_NOTICE.is_set()


def check_finite(unchecked, manager) -> None:
  """Raises naming the first step with a non-finite watched metric.

  `unchecked` holds `(step, {name: value})` pairs of per-step metrics.
  """
  for step, values in unchecked:
    for name, value in values.items():
      value = float(value)
      if not np.isfinite(value):
        raise FloatingPointError(
            f'Non-finite train {name} ({value}) at step {step}; stopped with '
            f'the last good checkpoint at step {manager.latest_step()} (set '
            'config.skip_nonfinite_steps to skip such updates).')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Optional[Dict[str, float]]:
  """Trains, evaluates, checkpoints; returns the final eval metrics.

  Returns None when stopped by SIGTERM (after saving a checkpoint).
  """
  multilabel = metrics_lib.is_multilabel(config.model_name)
  mesh = sharding.make_mesh(config)
  train_steps.check_batch_sizes(config, mesh)
  manager = checkpoint_manager(workdir, config)
  data = input_pipeline.get_data(config, start_step=manager.latest_step() or 0)
  model = build_model(config, data.num_classes)
  total_steps = num_train_steps(config, data.num_train_examples)
  tx, schedule = optim.make_optimizer(config, total_steps)
  batch_sharding = sharding.batch_sharding(mesh)
  state, shardings = train_steps.create_train_state(
      config, model, tx, data.input_shape, mesh)

  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  if manager.latest_step() is not None:
    state = restore(manager, state, shardings)
  elif config.get('init_from') and config.init_from.get('checkpoint_path'):
    state = state.replace(params=pretrained.init_params(
        state.params, pretrained.load_params(config.init_from), config,
        data.input_shape))
  start_step = int(state.step)
  gmacs = flops.gmacs(config, data.input_shape, data.num_classes)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params)
    logging.info('GMACs per example: %.4f', gmacs)
    writer.write_scalars(0, {'gmacs_per_example': gmacs})

  p_train_step = jax.jit(
      functools.partial(train_steps.train_step, model=model, tx=tx,
                        schedule=schedule, config=config,
                        multilabel=multilabel),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      # The old state's buffers become the new one's: one copy in memory.
      donate_argnums=0 if config.get('donate_train_state', True) else ())
  p_eval_step = jax.jit(
      functools.partial(train_steps.eval_step, model=model,
                        multilabel=multilabel),
      in_shardings=(shardings.params, batch_sharding))
  report = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                           writer=writer)
  results_file = os.path.join(workdir, 'metrics.jsonl')

  def record(step: int, kind: str, values: Dict[str, float]) -> None:
    writer.write_scalars(step, {f'{kind}/{k}': v for k, v in values.items()})
    if is_main:
      with open(results_file, 'a') as f:
        f.write(json.dumps({'step': step, 'kind': kind, **values}) + '\n')

  logging.info('Training %d steps from step %d, batch %d, mesh %s, '
               '%d processes.', total_steps, start_step, config.batch_size,
               dict(mesh.shape), jax.process_count())
  pending, last_time, last_step = [], time.time(), start_step
  eval_results: Optional[Dict[str, float]] = None
  # Per-step values not yet checked for finiteness: the loss (unless
  # skip_nonfinite_steps skips such updates) and the updated parameters'
  # norm, checked before any checkpoint is written.
  watch = (('param_norm',) if config.get('skip_nonfinite_steps')
           else ('loss', 'param_norm'))
  unchecked = []
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      batch = sharding.global_batch(next(data.train_iter), batch_sharding)
      state, step_metrics = p_train_step(state, batch)
    pending.append(step_metrics)
    unchecked.append((step, {k: step_metrics[k] for k in watch}))
    report(step)
    preempted = preemption_requested(manager, step)
    saving = preempted or manager.should_save(step) or step == total_steps
    if saving or step % config.log_summary_steps == 0:
      check_finite(unchecked, manager)  # Never save a non-finite state.
      unchecked = []
    if step % config.log_summary_steps == 0 or step == total_steps:
      summary = {k: float(np.mean([m[k] for m in pending]))
                 for k in pending[0]}
      if 'skipped_steps' in summary:  # A running count: the latest.
        summary['skipped_steps'] = int(pending[-1]['skipped_steps'])
      elapsed = time.time() - last_time
      steps_per_sec = (step - last_step) / elapsed
      summary['steps_per_sec'] = steps_per_sec
      summary['examples_per_sec'] = steps_per_sec * config.batch_size
      eta = (total_steps - step) / max(steps_per_sec, 1e-9)
      logging.info('step %d/%d: loss=%.4f lr=%.3g %.2f steps/s %.1f '
                   'examples/s ETA %dm%02ds', step, total_steps,
                   summary['loss'], summary['learning_rate'], steps_per_sec,
                   summary['examples_per_sec'], eta // 60, eta % 60)
      record(step, 'train', summary)
      pending, last_time, last_step = [], time.time(), step
    if preempted:
      manager.save(step, args=ocp.args.StandardSave(
          flax.serialization.to_state_dict(state)), force=True)
      manager.close()  # Waits for the write to be committed.
      writer.flush()
      logging.warning('Preempted: saved the checkpoint of step %d; the same '
                      'command resumes from it.', step)
      return None
    if step % config.log_eval_steps == 0 or step == total_steps:
      eval_results = evaluate(state.params, data.eval_batches(), p_eval_step,
                              batch_sharding, multilabel)
      logging.info('step %d eval: %s', step, eval_results)
      record(step, 'eval', eval_results)
      last_time = time.time()
    manager.save(step, args=ocp.args.StandardSave(
        flax.serialization.to_state_dict(state)), force=step == total_steps)

  if eval_results is None:  # Resumed after the last step: evaluate again.
    eval_results = evaluate(state.params, data.eval_batches(), p_eval_step,
                            batch_sharding, multilabel)
  manager.close()  # Waits for the last write to be committed.
  writer.flush()
  final = {'step': int(state.step), **eval_results,
           'gmacs_per_example': gmacs}
  if is_main:
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(final, f, indent=1)
  return final


def in_cluster() -> bool:
  """Whether `jax.distributed.initialize()` can find this job's peers itself.

  The signals its cluster detection reads: `JAX_COORDINATOR_ADDRESS`; a SLURM
  step of several tasks; a Cloud TPU VM (set by `import jax` when TPU chips
  and libtpu are present) that is on GKE (`TPU_WORKER_HOSTNAMES` or
  `TPU_PROCESS_ADDRESSES`) or may ask GCE's metadata server for its workers
  (`TPU_SKIP_MDS_QUERY` unset). A single-host TPU VM joins a 1-process job.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  # No public API says whether this is a Cloud TPU VM; jax sets this flag at
  # import, and its TPU cluster detection reads the same one.
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  if not cloud_tpu_init.running_in_cloud_tpu_vm:
    return False
  return bool(os.environ.get('TPU_WORKER_HOSTNAMES') or
              os.environ.get('TPU_PROCESS_ADDRESSES') or
              not os.environ.get('TPU_SKIP_MDS_QUERY'))


def initialize_runtime(coordinator_address: Optional[str] = None,
                       num_processes: Optional[int] = None,
                       process_id: Optional[int] = None) -> None:
  """Process-wide setup shared by the command-line entry points.

  Joins a multi-process job when given its coordinator (or when running on a
  TPU pod or SLURM job, which `jax.distributed` detects); a dead peer then
  stops this process within `heartbeat_timeout_seconds` instead of a hang.
  """
  jax.config.update('jax_threefry_partitionable', True)
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise app.UsageError('--coordinator_address needs --num_processes and '
                           '--process_id.')
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=30)
  elif in_cluster():
    jax.distributed.initialize(heartbeat_timeout_seconds=30)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # Keep TensorFlow off the GPUs.


def main(argv) -> None:
  del argv
  initialize_runtime(flags.FLAGS.coordinator_address,
                     flags.FLAGS.num_processes, flags.FLAGS.process_id)
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise app.UsageError('--workdir is required.')
  if jax.process_count() == 1:
    signal.signal(signal.SIGTERM, lambda *_: PREEMPTION_NOTICE.set())
  os.makedirs(workdir, exist_ok=True)
  train_and_evaluate(flags.FLAGS.config, workdir)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
