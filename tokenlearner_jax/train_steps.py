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
from jax.sharding import PartitionSpec as P
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


def _mixup(inputs, labels, config, rng):
  """As the reference: mix with the reversed batch, one Beta(a, a) weight."""
  alpha = config.get('mixup', {}).get('alpha')
  if not alpha:
    return inputs, labels
  lam = jax.random.beta(rng, alpha, alpha)
  return (lam * inputs + (1 - lam) * inputs[::-1],
          lam * labels + (1 - lam) * labels[::-1])


def l2_penalty(params) -> jax.Array:
  """The reference's `l2_regularization`: the squares of every parameter
  with more than one dimension (kernels, embeddings; no biases or norms)."""
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(params)
             if x.ndim > 1)


def loss_and_grads(params, inputs, labels, dropout_rng, *, model, config,
                   multilabel: bool):
  """`((loss, logits), gradient)` of the training loss at `params`.

  The training loss adds `0.5 * l2_decay_factor * l2_penalty(params)` to the
  data loss (`loss`, what the metrics report). With `sam_rho` (SAM) the
  gradient and logits are those at `params + sam_rho * g / (||g|| + 1e-7)`,
  `g` the gradient at `params`, as the reference's ViViT trainer.
  """
  l2_decay = config.get('l2_decay_factor')

  def loss_fn(p):
    logits = model.apply({'params': p}, inputs, train=True,
                         rngs={'dropout': dropout_rng})
    loss = metrics_lib.per_example_loss(logits, labels, multilabel,
                                        config.get('label_smoothing')).mean()
    total = loss if l2_decay is None else (
        loss + 0.5 * l2_decay * l2_penalty(p))
    return total, (loss, logits)

  rho = config.get('sam_rho')
  if rho is not None:
    g = jax.grad(loss_fn, has_aux=True)(params)[0]
    norm = optax.tree.norm(g)
    params = jax.tree_util.tree_map(lambda p, d: p + rho * (d / (norm + 1e-7)),
                                    params, g)
  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return aux, grads


def clip_by_norm(grads, max_norm: float):
  """`grads * max_norm / ||grads||` where the norm reaches `max_norm`."""
  norm = optax.tree.norm(grads)
  return jax.tree_util.tree_map(
      lambda g: jnp.where(norm < max_norm, g, g * (max_norm / norm)), grads)


DATA_AXES = ('data', 'fsdp')


def _varying(x):
  if hasattr(jax.lax, 'pcast'):
    return jax.lax.pcast(x, DATA_AXES, to='varying')
  return jax.lax.pvary(x, DATA_AXES)  # Its name in older jax.


def per_shard_loss_and_grads(grad_fn: Callable, mesh, max_norm):
  """`grad_fn` run on each data shard (the `data` x `fsdp` devices' slices of
  the batch, the parameters gathered whole on each), each shard's gradient
  clipped to `max_norm` (if set), then the mean over shards: the reference's
  ViViT trainer (clip before `pmean`). Returns `(params, inputs, labels, rng)
  -> ((loss, logits), gradient, mean over shards of their gradient norms)`.
  Dropout keys differ per shard."""

  def shard_fn(params, inputs, labels, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXES))
    # Each shard's own copy: its gradient is the shard's alone (not summed).
    params = jax.tree_util.tree_map(_varying, params)
    (loss, logits), grads = grad_fn(params, inputs, labels, rng)
    norm = optax.tree.norm(grads)
    if max_norm:
      grads = clip_by_norm(grads, max_norm)
    mean = functools.partial(jax.lax.pmean, axis_name=DATA_AXES)
    return (mean(loss), logits), mean(grads), mean(norm)

  batch = P(DATA_AXES)
  return jax.shard_map(shard_fn, mesh=mesh, in_specs=(P(), batch, batch, P()),
                       out_specs=((P(), batch), P(), P()),
                       axis_names=set(DATA_AXES))


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model, tx,
               schedule, config, multilabel: bool, mesh=None):
  """One optimizer step; returns the new state and this step's metrics.

  With `config.grad_clip_per_shard`, each data shard's gradient is clipped
  before the mean over shards (`per_shard_loss_and_grads` on `mesh`);
  otherwise `tx` clips the mean gradient.
  """
  rng, dropout_rng, mixup_rng = jax.random.split(state.rng, 3)
  inputs, labels = _mixup(batch['inputs'], batch['label'], config, mixup_rng)
  grad_fn = functools.partial(loss_and_grads, model=model, config=config,
                              multilabel=multilabel)
  if config.get('grad_clip_per_shard'):
    (loss, logits), grads, grad_norm = per_shard_loss_and_grads(
        grad_fn, mesh, config.get('max_grad_norm'))(
            state.params, inputs, labels, dropout_rng)
  else:
    (loss, logits), grads = grad_fn(state.params, inputs, labels, dropout_rng)
    grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hit = jnp.take_along_axis(labels, jnp.argmax(logits, -1)[:, None], -1) > 0
  step_metrics = {
      'loss': loss, 'learning_rate': schedule(state.step),
      'prec@1' if multilabel else 'accuracy': jnp.mean(hit),
      'grad_norm': grad_norm,
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
                        config=config, multilabel=multilabel,
                        mesh=batch_sharding.mesh),
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
