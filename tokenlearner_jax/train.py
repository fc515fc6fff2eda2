r"""Training and evaluation of TokenLearner ViT / ViViT models.

  python -m tokenlearner_jax.train --config=configs/demo_moving_digits.py \
      --workdir=/tmp/run [--config.batch_size=64 ...]

One `jax.jit`-ed train step over a device mesh (`tokenlearner_jax.sharding`,
`train_steps.build_program`), orbax checkpoints under `WORKDIR/checkpoints`
(`tokenlearner_jax.checkpoint`; re-running the same command resumes), clu
writers (TensorBoard events in WORKDIR), one JSON object per logged summary in
`WORKDIR/metrics.jsonl`, and the final eval metrics in
`WORKDIR/final_metrics.json` for sweep scripts. Steps/s and the ETA come from
clu's `ReportProgress` (its 'Setting work unit notes' log line).

`config.model_name` picks the task head's loss and metrics
(`metrics.is_multilabel`): 'token_learner_classification' (softmax
cross-entropy; accuracy) or 'token_learner_multilabel_classification'
(sigmoid cross-entropy; prec@1 and mAP).

Multi-process jobs: on TPU pods and under SLURM `jax.distributed` finds its
peers by itself (`runtime.in_cluster`); elsewhere pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` to every
process. SIGTERM (a preemption notice) saves a checkpoint at the current step
and exits 0; the same command resumes there, with the input stream at the same
position.

Every way out of a run (its end, SIGTERM, a non-finite loss, any error) waits
for the checkpoint writes in flight to be committed. Process 0 holds
`WORKDIR/train.lock` (`workdir_lock.WorkdirLock`) while it runs: a second
trainer on the same workdir exits at once with one line naming the holder.

Process 0 records the run's completed config in `WORKDIR/config.json`
(`tokenlearner_jax.run_config`). Resuming with a changed config lists the
changed keys in one warning line, or, for a change the saved state cannot
take (the parameters' or optimizer state's shapes, `batch_size`), stops
with one line naming the keys before anything compiles. A resumed run drops
the rows of `metrics.jsonl` past the step it restored before logging those
steps again, so the file holds each (step, kind) once; each checkpoint holds
the per-step train metrics since the last summary, so that the rows of a
resumed run average the same steps as an uninterrupted run's.
"""

import contextlib
import dataclasses
import functools
import json
import os
import signal
import threading
from typing import Any, Dict, List, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp

from tokenlearner_jax import checkpoint
from tokenlearner_jax import checkpoint_formats
from tokenlearner_jax import errors
from tokenlearner_jax import evaluation
from tokenlearner_jax import fewshot
from tokenlearner_jax import flops
from tokenlearner_jax import optim
from tokenlearner_jax import run_config
from tokenlearner_jax import runtime
from tokenlearner_jax import sharding
from tokenlearner_jax import surgery
from tokenlearner_jax import train_steps
from tokenlearner_jax import workdir_lock
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.init_from_config import InitFromConfig
from tokenlearner_jax.configs.optim_config import OptimizerConfig
from tokenlearner_jax.data import batching
from tokenlearner_jax.data import input_pipeline

Metrics = Dict[str, float]


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
  flags.DEFINE_integer('heartbeat_timeout_seconds', 30, 'A multi-process '
                       'job whose peer stops answering for this long stops '
                       '(jax.distributed\'s heartbeat).')


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """A run's length and intervals, in steps, as the config sets them or as
  the reference defaults them from the train split's size.

  Attributes:
    total_steps: `num_training_steps`, or `num_training_epochs` times the
      full batches in the train split (as the reference: 90 ImageNet epochs
      at 4096 are 28,080).
    log_eval_steps: `log_eval_steps`, else one epoch.
    log_summary_steps: `log_summary_steps`, else `log_eval_steps`.
    checkpoint_steps: `checkpoint_steps`, else `log_eval_steps`.
  """
  total_steps: int
  log_eval_steps: int
  log_summary_steps: int
  checkpoint_steps: int


def run_plan(config: ml_collections.ConfigDict,
             num_examples: Optional[int]) -> RunPlan:
  """The `RunPlan` of a completed `config` whose train split has
  `num_examples` examples (0 or None: unknown)."""
  steps_per_epoch = (num_examples or 0) // config.batch_size
  if config.get('num_training_steps'):
    total = int(config.num_training_steps)
  elif not num_examples:
    raise ValueError('num_training_epochs needs the train split size, which '
                     'the dataset does not report: set num_training_steps.')
  else:
    total = int(config.num_training_epochs * steps_per_epoch)
  log_eval = config.get('log_eval_steps')
  if not log_eval:
    if not num_examples:
      raise ValueError('log_eval_steps is not set, and its default (one '
                       'epoch) needs the train split size, which the dataset '
                       'does not report.')
    log_eval = max(steps_per_epoch, 1)
  return RunPlan(total, log_eval, config.get('log_summary_steps') or log_eval,
                 config.get('checkpoint_steps') or log_eval)


# Set by SIGTERM (a preemption notice) in a single-process run; `main`
# installs the handler. In a multi-process job JAX's preemption service handles
# SIGTERM and the processes agree on the step through
# `CheckpointManager.reached_preemption`.
PREEMPTION_NOTICE = threading.Event()
# Set until the run's first step returns: a SIGTERM meanwhile (during data
# set-up, a restore or the first compile, which can take minutes on a pod and
# runs in C++, where no Python handler runs) has nothing new to save, and the
# trainer exits at once (`exit_on_sigterm_before_a_step`).
NOTHING_TO_SAVE = threading.Event()
# Held by the watcher from its check of `NOTHING_TO_SAVE` to its exit, and by
# the train loop to clear it: the first step's state is then either never
# saved (the watcher exits first) or saved by the loop (the watcher sees the
# flag cleared and leaves the SIGTERM to it), never both.
_FIRST_STEP = threading.Lock()
_HELD_LOCKS: List[workdir_lock.WorkdirLock] = []  # Released on such an exit.


def exit_on_sigterm_before_a_step() -> None:
  """Installs the single-process SIGTERM handling: the Python handler sets
  `PREEMPTION_NOTICE` (the train loop saves the step and exits); a watcher
  thread, woken by the signal's byte on a wakeup pipe even while the main
  thread is in a compile, exits the process (status 0, the workdir lock
  released) when `NOTHING_TO_SAVE` is set."""
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  signal.signal(signal.SIGTERM, lambda *_: PREEMPTION_NOTICE.set())

  def watch():
    while True:
      signals = os.read(read_fd, 64)
      if signal.SIGTERM not in signals:
        continue
      with _FIRST_STEP:
        if not NOTHING_TO_SAVE.is_set():
          continue
        # Decided: the process exits here whatever the clean-up raises (the
        # loop waits on `_FIRST_STEP` and must never save this step).
        try:
          logging.warning('SIGTERM before the first step: nothing new to '
                          'save; exiting now (the same command starts '
                          'again).')
          for lock in _HELD_LOCKS:
            lock.release()
          logging.flush()
        except Exception:  # pylint: disable=broad-except
          logging.exception('Releasing the workdir lock failed; the next '
                            'run takes over the lock of this dead process.')
        finally:
          os._exit(0)  # pylint: disable=protected-access

  NOTHING_TO_SAVE.set()
  threading.Thread(target=watch, name='sigterm_watch', daemon=True).start()


def preemption_requested(manager: ocp.CheckpointManager, step: int) -> bool:
  if jax.process_count() > 1:
    return manager.reached_preemption(step)
  return PREEMPTION_NOTICE.is_set()


# metrics.jsonl's `kind` -> the TensorBoard tag prefix of the reference.
TAG_PREFIXES = {'train': 'train', 'eval': 'valid', 'fewshot': 'fewshot'}


def drop_rows_after(path: str, step: int) -> None:
  """Rewrites the JSON-lines file `path` without its rows past `step` (and a
  last line cut short), atomically: a temporary file, renamed."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines
          if line.endswith('\n') and json.loads(line)['step'] <= step]
  if len(kept) == len(lines):
    return
  with open(path + '.tmp', 'w') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)
  logging.info('Dropped the %d rows of %s past step %d (the resumed run logs '
               'those steps again).', len(lines) - len(kept), path, step)


class Recorder:
  """Writes summaries to the clu writer and to `WORKDIR/metrics.jsonl`.

  A run resumed at `start_step` first drops the rows past it (steps that an
  interrupted run logged after its last checkpoint), so that the file holds
  each (step, kind) once.
  """

  def __init__(self, workdir: str, start_step: int):
    self.is_main = jax.process_index() == 0
    self.workdir = workdir
    self.writer = metric_writers.create_default_writer(
        workdir, just_logging=not self.is_main)
    if self.is_main:
      drop_rows_after(os.path.join(workdir, 'metrics.jsonl'), start_step)

  def record(self, step: int, kind: str, values: Metrics) -> None:
    """`kind` 'train', 'eval' or 'fewshot'; TensorBoard tags as the
    reference's (`train_loss`, `valid_accuracy`, ...) and
    `fewshot_<dataset>_<shots>shot`."""
    prefix = TAG_PREFIXES[kind]
    self.writer.write_scalars(step,
                              {f'{prefix}_{k}': v for k, v in values.items()})
    if self.is_main:
      with open(os.path.join(self.workdir, 'metrics.jsonl'), 'a') as f:
        f.write(json.dumps({'step': step, 'kind': kind, **values}) + '\n')


class _Rates(metric_writers.LoggingWriter):
  """Keeps the scalars `ReportProgress` writes (`steps_per_sec`)."""

  def __init__(self):
    super().__init__()
    self.latest: Metrics = {}

  def write_scalars(self, step: int, scalars) -> None:
    del step
    self.latest.update(scalars)


class StepMetrics:
  """The per-step metrics since the last summary (saved with each
  checkpoint, and restored with it: `checkpoint.train_rows`), and the values
  not yet checked for finiteness: the updated parameters' norm and, unless
  `skip_nonfinite_steps` skips such updates, the loss."""

  def __init__(self, config: ml_collections.ConfigDict):
    skips = OptimizerConfig.from_config(config).skip_nonfinite_steps
    self.watch = ('param_norm',) if skips else ('loss', 'param_norm')
    self.pending: List[Dict[str, Any]] = []
    self.unchecked: List[Tuple[int, Dict[str, Any]]] = []

  def add(self, step: int, step_metrics: Dict[str, Any]) -> None:
    self.pending.append(step_metrics)
    self.unchecked.append((step, {k: step_metrics[k] for k in self.watch}))

  def check_finite(self, manager: ocp.CheckpointManager) -> None:
    """Raises naming the first step with a non-finite watched metric, and
    the latest checkpoint, once its write is committed."""
    for step, values in self.unchecked:
      for name, value in values.items():
        value = float(value)
        if not np.isfinite(value):
          manager.wait_until_finished()  # The step named below is on disk.
          raise errors.NonFiniteError(
              f'Non-finite train {name} ({value}) at step {step}; stopped '
              f'with the last good checkpoint at step {manager.latest_step()} '
              '(set config.skip_nonfinite_steps to skip such updates).')
    self.unchecked = []

  def summary(self) -> Metrics:
    """The means of the pending metrics (which it clears)."""
    summary = {k: float(np.mean([m[k] for m in self.pending]))
               for k in self.pending[0]}
    if 'skipped_steps' in summary:  # A running count: the latest.
      summary['skipped_steps'] = int(self.pending[-1]['skipped_steps'])
    self.pending = []
    return summary


def initial_state(config: ml_collections.ConfigDict, state, shardings,
                  manager: ocp.CheckpointManager, input_shape):
  """The latest checkpoint, else `config.init_from`'s parameters (and, from
  a workdir of this trainer, its model state where names and shapes fit),
  else `state` (scratch)."""
  if manager.latest_step() is not None:
    return checkpoint.restore_state(manager, state, shardings)
  init_from = InitFromConfig.from_config(config)
  if init_from.enabled:
    pretrained = checkpoint_formats.load_variables(init_from)
    params = surgery.init_params(state.params, pretrained.pop('params'),
                                 config, input_shape)
    return state.replace(params=params,
                         model_state=checkpoint_formats.fit_model_state(
                             state.model_state, pretrained))
  return state


def log_start(config, state, data, recorder: Recorder, total_steps: int,
              mesh) -> float:
  """Logs what the run starts with; returns the GMACs per example."""
  gmacs = flops.gmacs(config, data.input_shape, data.num_classes)
  start_step = int(state.step)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params)
    logging.info('GMACs per example: %.4f', gmacs)
    recorder.writer.write_scalars(0, {'gmacs_per_example': gmacs})
  logging.info('Training %d steps from step %d, batch %d, mesh %s, '
               '%d processes.', total_steps, start_step, config.batch_size,
               dict(mesh.shape), jax.process_count())
  logging.info('Gradient clipping: %s.', optim.clipping(OptimizerConfig.from_config(config)))
  return gmacs


def log_summary(step: int, total_steps: int, metrics: StepMetrics,
                rates: _Rates, config, recorder: Recorder,
                lock: Optional[workdir_lock.WorkdirLock],
                skipped: Optional[batching.SkippedExamples]) -> None:
  """The train summary of the steps since the last one, with the rate that
  `ReportProgress` measured over them (it logs the ETA) and, where the input
  pipeline skips corrupt examples, how many it has skipped; refreshes the
  workdir lock's heartbeat."""
  if lock is not None:
    lock.beat()
  summary = metrics.summary()
  if skipped is not None:
    summary['skipped_examples'] = skipped.train
  summary['steps_per_sec'] = rates.latest['steps_per_sec']
  summary['examples_per_sec'] = summary['steps_per_sec'] * config.batch_size
  logging.info('step %d/%d: loss=%.4f lr=%.3g %.2f steps/s %.1f examples/s',
               step, total_steps, summary['loss'], summary['learning_rate'],
               summary['steps_per_sec'], summary['examples_per_sec'])
  recorder.record(step, 'train', summary)


def save_on_preemption(manager: ocp.CheckpointManager, step: int, state,
                       metrics: StepMetrics, recorder: Recorder) -> None:
  checkpoint.save(manager, step, state, force=True,
                  train_rows=metrics.pending)
  manager.wait_until_finished()  # The write is committed.
  recorder.writer.flush()
  logging.warning('Preempted: saved the checkpoint of step %d; the same '
                  'command resumes from it.', step)


def run_fewshot(evaluator: fewshot.FewShotEvaluator, state, step: int,
                recorder: Recorder, report) -> Metrics:
  """The few-shot accuracies of `state` (`tokenlearner_jax.fewshot`),
  recorded as kind 'fewshot'; returns them prefixed 'fewshot_', as
  `final_metrics.json` holds them."""
  with report.timed('fewshot', wait_jax_async_dispatch=False):
    results, _ = evaluator.run(fewshot.variables_of(state))
  logging.info('step %d few-shot: %s', step, results)
  recorder.record(step, 'fewshot', results)
  return {f'fewshot_{k}': v for k, v in results.items()}


def finish(workdir: str, state, eval_results: Metrics, gmacs: float,
           manager: ocp.CheckpointManager, recorder: Recorder) -> Metrics:
  """Waits for the last checkpoint; writes `final_metrics.json`."""
  manager.wait_until_finished()  # The last write is committed.
  recorder.writer.flush()
  final = {'step': int(state.step), **eval_results, 'gmacs_per_example': gmacs}
  if recorder.is_main:
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(final, f, indent=1)
  return final


def record_config(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int], data, mesh) -> None:
  """Stops on a change of `config` that the checkpoint at `step` cannot
  resume with, logs the others (`run_config.check_resume`); then process 0
  records `config` in `WORKDIR/config.json`."""
  record = run_config.to_record(config)
  run_config.check_resume(config, workdir, step, functools.partial(
      run_config.state_shapes, input_shape=data.input_shape,
      num_classes=data.num_classes, mesh=mesh))
  if jax.process_index() == 0:
    run_config.write(workdir, record)


def hold_workdir(workdir: str, config: ml_collections.ConfigDict
                 ) -> contextlib.AbstractContextManager:
  """Process 0's `workdir_lock.WorkdirLock` on `workdir`; nothing on the
  others."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  lock = workdir_lock.WorkdirLock(workdir, config.workdir_lock_stale_seconds)
  _HELD_LOCKS[:] = [lock]  # One run at a time in a process.
  return lock


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Optional[Metrics]:
  """Trains, evaluates, checkpoints; returns the final eval metrics.

  Returns None when stopped by SIGTERM (after saving a checkpoint). Every
  exit, an error's too, waits for the checkpoint writes in flight.

  Raises:
    ValueError: for a config the trainer would not honour, before anything
      is read or compiled (`schema.check_config`).
    run_config.ConfigChangeError: a ValueError naming the changed keys that
      the checkpoint resumed cannot take (parameter or optimizer state
      shapes, `batch_size`), before anything compiles.
    workdir_lock.WorkdirLockedError: naming the trainer that holds `workdir`.
  """
  config = schema.complete(config)
  with contextlib.ExitStack() as stack:
    return _train_and_evaluate(config, workdir, stack)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        stack: contextlib.ExitStack) -> Optional[Metrics]:
  """`train_and_evaluate` of a completed config; `stack` closes the workdir
  lock and the checkpoint manager on the way out."""
  lock = stack.enter_context(hold_workdir(workdir, config))
  mesh = sharding.make_mesh(config)
  train_steps.check_batch_size(config.batch_size, mesh)
  resume_step = checkpoint.latest_step(workdir)
  data = input_pipeline.get_data(config, start_step=resume_step or 0)
  record_config(config, workdir, resume_step, data, mesh)
  plan = run_plan(config, data.num_train_examples)
  manager = checkpoint.make_manager(workdir, config, plan.checkpoint_steps)
  stack.callback(manager.close)  # Waits for the checkpoint writes in flight.
  total_steps = plan.total_steps
  program = train_steps.build_program(config, mesh, data.input_shape,
                                      data.num_classes, total_steps)
  fewshot_eval = (fewshot.FewShotEvaluator(config, program.model, mesh,
                                            data.input_shape)
                  if fewshot.enabled(config) else None)
  fewshot_steps = fewshot_eval and fewshot_eval.settings.log_steps
  state = initial_state(config, program.init_state(), program.shardings,
                        manager, data.input_shape)
  batch_sharding = program.batch_sharding
  start_step = int(state.step)
  recorder = Recorder(workdir, start_step)
  stack.callback(recorder.writer.flush)  # On every way out.
  gmacs = log_start(config, state, data, recorder, total_steps, mesh)
  rates, metrics = _Rates(), StepMetrics(config)
  if start_step and manager.latest_step() is not None:
    # The steps since the last summary, saved with the checkpoint: the
    # first summary averages the same steps as an uninterrupted run's.
    metrics.pending = checkpoint.train_rows(manager.directory, start_step)
  report = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=rates,
      every_steps=plan.log_summary_steps, every_secs=None)
  report(start_step)  # Rates from here (the first step's compile included).

  def evaluate(current) -> Metrics:
    variables = train_steps.model_variables(current.params,
                                            current.model_state)
    with report.timed('eval', wait_jax_async_dispatch=False):
      results = evaluation.evaluate_batches(
          variables, data.eval_batches(), program.eval_step, batch_sharding,
          program.multilabel)
    if data.skipped is not None:
      results['skipped_examples'] = data.skipped.last_pass
    return results

  eval_results: Optional[Metrics] = None
  fewshot_results: Metrics = {}  # The latest, for final_metrics.json.
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      batch = sharding.global_batch(next(data.train_iter), batch_sharding)
      state, step_metrics = program.train_step(state, batch)
    if NOTHING_TO_SAVE.is_set():
      with _FIRST_STEP:  # Not while the watcher exits.
        NOTHING_TO_SAVE.clear()  # From here a SIGTERM saves this step.
    metrics.add(step, step_metrics)
    report(step)
    last = step == total_steps
    preempted = preemption_requested(manager, step)
    summarize = step % plan.log_summary_steps == 0 or last
    if preempted or manager.should_save(step) or summarize:
      metrics.check_finite(manager)  # Never save a non-finite state.
    if summarize:
      log_summary(step, total_steps, metrics, rates, config, recorder, lock,
                  data.skipped)
    if preempted:
      save_on_preemption(manager, step, state, metrics, recorder)
      return None
    # Saved before the evaluations, so that one that fails loses no step.
    checkpoint.save(manager, step, state, force=last,
                    train_rows=metrics.pending)
    if step % plan.log_eval_steps == 0 or last:
      eval_results = evaluate(state)
      logging.info('step %d eval: %s', step, eval_results)
      recorder.record(step, 'eval', eval_results)
    if fewshot_eval and (last or (fewshot_steps and
                                  step % fewshot_steps == 0)):
      fewshot_results = run_fewshot(fewshot_eval, state, step, recorder,
                                    report)
  if eval_results is None:  # Resumed after the last step: evaluate again.
    eval_results = evaluate(state)
    if fewshot_eval:
      fewshot_results = run_fewshot(fewshot_eval, state, int(state.step),
                                    recorder, report)
  return finish(workdir, state, {**eval_results, **fewshot_results}, gmacs,
                manager, recorder)


def main(argv) -> None:
  del argv
  runtime.initialize_runtime(flags.FLAGS.coordinator_address,
                             flags.FLAGS.num_processes, flags.FLAGS.process_id,
                             flags.FLAGS.heartbeat_timeout_seconds)
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise app.UsageError('--workdir is required.')
  if jax.process_count() == 1:
    exit_on_sigterm_before_a_step()
  os.makedirs(workdir, exist_ok=True)
  errors.exit_on_known_fault(train_and_evaluate, flags.FLAGS.config, workdir)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
