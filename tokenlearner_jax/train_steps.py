"""The jit-compiled parts of training: the state, the train and eval steps.

No input pipeline, checkpointing or TensorFlow here: `tokenlearner_jax.train`
runs these in its loop, `tokenlearner_jax.evaluate` restores parameters onto
`abstract_params`' shardings, and `scripts/benchmark.py` times the same
`make_train_step` on machines without TensorFlow.
"""

import functools
from typing import Any, Callable, Dict, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import sharding


@flax.struct.dataclass
class TrainState:
  """What a train step reads and returns (and a checkpoint holds)."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _initial_params(config, model, input_shape, rng):
  """The model's (boxed) initial parameters, with `init_head_bias`."""
  params = model.init(rng, jnp.zeros((1,) + tuple(input_shape)),
                      train=False)['params']
  if config.get('init_head_bias') is not None:
    head = dict(params['output_projection'])
    head['bias'] = jnp.full_like(head['bias'], config.init_head_bias)
    params = {**params, 'output_projection': head}
  return params


def create_train_state(config, model, tx, input_shape, mesh,
                       abstract: bool = False):
  """Initialises the state directly sharded on `mesh`; returns it, shardings.

  With `abstract`, the state's leaves are `jax.ShapeDtypeStruct`s (nothing is
  computed), as a restore target.
  """

  def init(rng):
    params_rng, rng = jax.random.split(rng)
    params = _initial_params(config, model, input_shape, params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng)

  rng = jax.random.PRNGKey(config.rng_seed)
  shardings = sharding.tree_sharding(jax.eval_shape(init, rng), mesh, config)
  if abstract:
    return jax.eval_shape(lambda r: nn.unbox(init(r)), rng), shardings
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def abstract_params(config, model, input_shape, mesh) -> Tuple[Any, Any]:
  """(the parameters' `jax.ShapeDtypeStruct`s carrying their shardings, the
  shardings): where a train state's `params` live, without an optimizer."""
  boxed = jax.eval_shape(functools.partial(_initial_params, config, model,
                                           input_shape),
                         jax.random.PRNGKey(0))
  shardings = sharding.tree_sharding(boxed, mesh, config)
  target = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      nn.unbox(boxed), shardings)
  return target, shardings


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
  if isinstance(opt_state, optax.ApplyIfFiniteState):
    step_metrics['skipped_steps'] = opt_state.total_notfinite
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


def check_batch_sizes(config: ml_collections.ConfigDict, mesh) -> None:
  """Batch sizes must split evenly over the data-parallel devices."""
  parallel = mesh.shape['data'] * mesh.shape['fsdp']
  if config.batch_size % parallel:
    raise ValueError(
        f'config.batch_size={config.batch_size} is not divisible by the '
        f'data-parallel size {parallel} (config.mesh data x fsdp = '
        f"{mesh.shape['data']} x {mesh.shape['fsdp']}).")



def make_train_step(config: ml_collections.ConfigDict, model, tx, schedule,
                    shardings: Any, batch_sharding: Any,
                    multilabel: bool) -> Callable:
  """`train_step` jit-compiled over the mesh: `(state, batch) -> (state,
  metrics)`, the state on `shardings`, the batch on `batch_sharding`.

  With `config.donate_train_state` (default True) the old state's buffers
  become the new one's: one copy of the state in memory.
  """
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        config=config, multilabel=multilabel),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      donate_argnums=0 if config.get('donate_train_state', True) else ())


def make_eval_step(model, params_shardings: Any, batch_sharding: Any,
                   multilabel: bool, multiview: bool = False) -> Callable:
  """`eval_step` jit-compiled over the mesh: `(params, batch) -> (metric
  sums, logits)`."""
  return jax.jit(
      functools.partial(eval_step, model=model, multilabel=multilabel,
                        multiview=multiview),
      in_shardings=(params_shardings, batch_sharding))
