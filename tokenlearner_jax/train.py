r"""Training and evaluation of TokenLearner ViT / ViViT models.

  python -m tokenlearner_jax.train --config=configs/demo_moving_digits.py \
      --workdir=/tmp/run [--config.batch_size=64 ...]

One `jax.jit`-ed train step over a device mesh (`tokenlearner_jax.sharding`),
orbax checkpoints under `WORKDIR/checkpoints` (re-running the same command
resumes), clu writers (TensorBoard events in WORKDIR), one JSON object per
logged summary in `WORKDIR/metrics.jsonl`, and the final eval metrics in
`WORKDIR/final_metrics.json` for sweep scripts.
"""

import functools
import json
import os
import time
from typing import Any, Dict, Optional

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import flax
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

from tokenlearner_jax import batching
from tokenlearner_jax import flops
from tokenlearner_jax import input_pipeline
from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import optim
from tokenlearner_jax import pretrained
from tokenlearner_jax import sharding
from tokenlearner_jax.models import build_model



def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events '
                      'and result files go.')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  if config.get('num_training_steps'):
    return int(config.num_training_steps)
  if not num_examples:
    raise ValueError('num_training_epochs needs the train split size, which '
                     'the dataset does not report: set num_training_steps.')
  return int(config.num_training_epochs * num_examples // config.batch_size)


def create_train_state(config, model, tx, input_shape, mesh,
                       abstract: bool = False):
  """Initialises the state directly sharded on `mesh`; returns it, shardings.

  With `abstract`, the state's leaves are `jax.ShapeDtypeStruct`s (nothing is
  computed), as a restore target.
  """

  def init(rng):
    params_rng, rng = jax.random.split(rng)
    params = model.init(params_rng, jnp.zeros((1,) + input_shape),
                        train=False)['params']
    if config.get('init_head_bias') is not None:
      head = dict(params['output_projection'])
      head['bias'] = jnp.full_like(head['bias'], config.init_head_bias)
      params = {**params, 'output_projection': head}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng)

  rng = jax.random.PRNGKey(config.rng_seed)
  shardings = sharding.tree_sharding(jax.eval_shape(init, rng), mesh, config)
  if abstract:
    return jax.eval_shape(lambda r: nn.unbox(init(r)), rng), shardings
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model, tx,
               schedule, config, multilabel: bool):
  """One optimizer step; returns the new state and this step's metrics."""
  rng, dropout_rng, mixup_rng = jax.random.split(state.rng, 3)
  inputs, labels = batch['inputs'], batch['label']
  alpha = config.get('mixup', {}).get('alpha')
  if alpha:  # As the reference: mix with the reversed batch, one weight.
    lam = jax.random.beta(mixup_rng, alpha, alpha)
    inputs = lam * inputs + (1 - lam) * inputs[::-1]
    labels = lam * labels + (1 - lam) * labels[::-1]

  def loss_fn(params):
    logits = model.apply({'params': params}, inputs, train=True,
                         rngs={'dropout': dropout_rng})
    loss = metrics_lib.per_example_loss(logits, labels, multilabel,
                                        config.get('label_smoothing')).mean()
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hit = jnp.take_along_axis(labels, jnp.argmax(logits, -1)[:, None], -1) > 0
  step_metrics = {
      'loss': loss, 'learning_rate': schedule(state.step),
      'prec@1' if multilabel else 'accuracy': jnp.mean(hit),
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(params),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, rng=rng)
  return new_state, step_metrics


def eval_step(params, batch, *, model, multilabel: bool,
              multiview: bool = False):
  """Masked metric sums; `multiview` averages the logits of each example's
  views (`inputs` `[B, views, ...]`)."""
  inputs = batch['inputs']
  if multiview:
    b, v = inputs.shape[:2]
    inputs = inputs.reshape((b * v,) + inputs.shape[2:])  # [B * views, ...]
  logits = model.apply({'params': params}, inputs, train=False)
  if multiview:
    logits = logits.reshape(b, v, -1).mean(1)  # [B, classes]
  sums = metrics_lib.metric_sums(logits, batch['label'], batch['batch_mask'],
                                 multilabel)
  return sums, logits


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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, float]:
  """Trains, evaluates, checkpoints; returns the final eval metrics."""
  multilabel = metrics_lib.is_multilabel(config.model_name)
  data = input_pipeline.get_data(config)
  model = build_model(config, data.num_classes)
  total_steps = num_train_steps(config, data.num_train_examples)
  tx, schedule = optim.make_optimizer(config, total_steps)
  mesh = sharding.make_mesh(config)
  batch_sharding = sharding.batch_sharding(mesh)
  state, shardings = create_train_state(config, model, tx, data.input_shape,
                                        mesh)

  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  manager = checkpoint_manager(workdir, config)
  if manager.latest_step() is not None:
    state = restore(manager, state, shardings)
  elif config.get('init_from') and config.init_from.get('checkpoint_path'):
    state = state.replace(params=pretrained.init_params(
        state.params, pretrained.load_params(config.init_from), config,
        data.input_shape))
  start_step = int(state.step)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params)
    gmacs = flops.gmacs(config, data.input_shape, data.num_classes)
    logging.info('GMACs per example: %.4f', gmacs)
    writer.write_scalars(0, {'gmacs_per_example': gmacs})

  p_train_step = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        config=config, multilabel=multilabel),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      donate_argnums=0)
  p_eval_step = jax.jit(
      functools.partial(eval_step, model=model, multilabel=multilabel),
      in_shardings=(shardings.params, batch_sharding))
  report = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                           writer=writer)
  results_file = os.path.join(workdir, 'metrics.jsonl')

  def record(step: int, kind: str, values: Dict[str, float]) -> None:
    writer.write_scalars(step, {f'{kind}/{k}': v for k, v in values.items()})
    if is_main:
      with open(results_file, 'a') as f:
        f.write(json.dumps({'step': step, 'kind': kind, **values}) + '\n')

  logging.info('Training %d steps from step %d, batch %d, mesh %s.',
               total_steps, start_step, config.batch_size, dict(mesh.shape))
  pending, last_time, last_step = [], time.time(), start_step
  eval_results: Optional[Dict[str, float]] = None
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      batch = sharding.global_batch(next(data.train_iter), batch_sharding)
      state, step_metrics = p_train_step(state, batch)
    pending.append(step_metrics)
    report(step)
    if step % config.log_summary_steps == 0 or step == total_steps:
      summary = {k: float(np.mean([m[k] for m in pending]))
                 for k in pending[0]}
      if not np.isfinite(summary['loss']):
        raise FloatingPointError(f'Non-finite train loss at step {step}.')
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
  manager.wait_until_finished()
  writer.flush()
  final = {'step': int(state.step), **eval_results}
  if is_main:
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(final, f, indent=1)
  return final


def initialize_runtime() -> None:
  """Process-wide setup shared by the command-line entry points."""
  jax.config.update('jax_threefry_partitionable', True)
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # Keep TensorFlow off the GPUs.


def main(argv) -> None:
  del argv
  initialize_runtime()
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise app.UsageError('--workdir is required.')
  os.makedirs(workdir, exist_ok=True)
  train_and_evaluate(flags.FLAGS.config, workdir)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
