"""The jit-compiled parts of training: the state, the train and eval steps.

No input pipeline, checkpointing or TensorFlow here. `build_program` makes
a config's `StepProgram` (model, optimizer, state shardings, jitted train and
eval steps) once, for everything that runs or inspects those steps:
`tokenlearner_jax.train` runs it in its loop, `tokenlearner_jax.evaluate`
restores the model's variables onto its shardings, `tokenlearner_jax.aot`
compiles it for a TPU slice, and `scripts/benchmark.py` times it on machines
without TensorFlow.

Model state: besides `params`, a model may have variable collections that a
train step updates without differentiating them, such as BatchNorm's
`batch_stats` (the convolutional video models). `TrainState.model_state`
holds them (`{}` for the ViT / ViViT models, whose only collection is
`params`); `model_variables` puts the two together for `model.apply`. Under
plain `jax.jit` a BatchNorm's batch statistics are those of the global batch
(the same on 1 device as on 8); with `config.grad_clip_per_shard` each data
shard normalises by its own slice of the batch, and the updated running
averages are the mean over the shards (`per_shard_loss_and_grads`).
"""

import copy
import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from tokenlearner_jax import errors
from tokenlearner_jax import metrics as metrics_lib
from tokenlearner_jax import models
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax.configs.objective_config import ObjectiveConfig
from tokenlearner_jax.configs.optim_config import OptimizerConfig
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import common


# Collections that `model.init` returns but that are no state: what modules
# sow (TokenLearner's attention maps).
TRANSIENT_COLLECTIONS = ('intermediates',)


@flax.struct.dataclass
class TrainState:
  """What a train step reads and returns (and a checkpoint holds).

  Attributes:
    step: The number of steps taken.
    params: The model's `params` collection, what the optimizer updates.
    opt_state: The optimizer's state.
    rng: The key of the next step's dropout and mixup.
    model_state: The model's other variable collections (by name, e.g.
      `{'batch_stats': ...}`), updated by each train step and never
      differentiated; `{}` for models with `params` only. A checkpoint holds
      it only when it is not empty.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  model_state: Dict[str, Any] = flax.struct.field(default_factory=dict)


def model_variables(params: Any, model_state: Dict[str, Any]
                    ) -> Dict[str, Any]:
  """The variables `model.apply` takes: `{'params': params, **model_state}`."""
  return {'params': params, **model_state}


def _initial_variables(config, model, input_shape, rng):
  """The model's (boxed) initial parameters, with `init_head_bias`, and its
  initial model state (the other collections but `TRANSIENT_COLLECTIONS`)."""
  variables = flax.core.unfreeze(
      model.init(rng, jnp.zeros((1,) + tuple(input_shape)), train=False))
  params = variables.pop('params')
  bias = ObjectiveConfig.from_config(config).init_head_bias
  if bias is not None:
    head = dict(params['output_projection'])
    head['bias'] = jnp.full_like(head['bias'], bias)
    params = {**params, 'output_projection': head}
  model_state = {k: v for k, v in variables.items()
                 if k not in TRANSIENT_COLLECTIONS}
  return params, model_state


def _state_init(config, model, tx, input_shape) -> Callable:
  """`rng -> TrainState` at step 0, its parameters boxed with their logical
  axis names."""

  def init(rng):
    params_rng, rng = jax.random.split(rng)
    params, model_state = _initial_variables(config, model, input_shape,
                                             params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng,
                      model_state=model_state)

  return init


def abstract_variables(config, model, input_shape,
                       mesh) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(the model's variables, `model_variables(params, model_state)`, as
  `jax.ShapeDtypeStruct`s carrying their shardings, the shardings): where a
  train state's `params` and `model_state` live, without an optimizer. Model
  state leaves without logical axis names are replicated."""
  params, model_state = jax.eval_shape(
      functools.partial(_initial_variables, config, model, input_shape),
      jax.random.PRNGKey(0))
  boxed = model_variables(params, model_state)
  shardings = sharding.tree_sharding(boxed, mesh, config)
  return with_shardings(nn.unbox(boxed), shardings), shardings


def abstract_params(config, model, input_shape, mesh) -> Tuple[Any, Any]:
  """The `params` of `abstract_variables`: (their `jax.ShapeDtypeStruct`s
  carrying their shardings, the shardings)."""
  target, shardings = abstract_variables(config, model, input_shape, mesh)
  return target['params'], shardings['params']


def _mixup(inputs, labels, alpha: Optional[float], rng):
  """As the reference: mix with the reversed batch, one Beta(a, a) weight."""
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


def loss_and_grads(params, model_state, inputs, labels, dropout_rng, *,
                   model, config, multilabel: bool):
  """`((loss, logits, model_state), gradient)` of the training loss at
  `params`.

  The training loss adds `0.5 * l2_decay_factor * l2_penalty(params)` to the
  data loss (`loss`; with `label_smoothing`, against the smoothed targets).
  With `sam_rho` (SAM) the gradient and logits are those at
  `params + sam_rho * g / (||g|| + 1e-7)`, `g` the gradient at `params`, as
  the reference's ViViT trainer.

  `model_state` (the non-`params` collections, `TrainState.model_state`)
  is mutable in the model's apply (`train=True`: BatchNorm normalises by the
  batch's statistics and updates its running averages); the one returned is
  the state after the pass that gave the logits (`{}` stays `{}`).
  """
  objective = ObjectiveConfig.from_config(config)
  l2_decay = objective.l2_decay_factor
  mutable = list(model_state)

  def loss_fn(p):
    variables = model_variables(p, model_state)
    rngs = {'dropout': dropout_rng}
    if mutable:
      logits, new_state = model.apply(variables, inputs, train=True,
                                      rngs=rngs, mutable=mutable)
      new_state = flax.core.unfreeze(new_state)
    else:
      logits = model.apply(variables, inputs, train=True, rngs=rngs)
      new_state = model_state
    loss = metrics_lib.per_example_loss(logits, labels, multilabel,
                                        objective.label_smoothing).mean()
    total = loss if l2_decay is None else (
        loss + 0.5 * l2_decay * l2_penalty(p))
    return total, (loss, logits, new_state)

  rho = objective.sam_rho
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
  ViViT trainer (clip before `pmean`). Returns `(params, model_state, inputs,
  labels, rng) -> ((loss, logits, model_state), gradient, mean over shards of
  their gradient norms)`. Dropout keys differ per shard.

  Each shard applies the model to its own slice alone, so a BatchNorm
  normalises by the shard's batch statistics (not the global batch's); the
  model state returned is the mean over the shards of each shard's updated
  state (`pmean`: for BatchNorm, the mean of the running averages)."""

  def shard_fn(params, model_state, inputs, labels, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXES))
    # Each shard's own copy: its gradient is the shard's alone (not summed).
    params = jax.tree_util.tree_map(_varying, params)
    model_state = jax.tree_util.tree_map(_varying, model_state)
    (loss, logits, model_state), grads = grad_fn(params, model_state, inputs,
                                                 labels, rng)
    norm = optax.tree.norm(grads)
    if max_norm:
      grads = clip_by_norm(grads, max_norm)
    mean = functools.partial(jax.lax.pmean, axis_name=DATA_AXES)
    if model_state:
      model_state = mean(model_state)
    return (mean(loss), logits, model_state), mean(grads), mean(norm)

  batch = P(DATA_AXES)
  return jax.shard_map(shard_fn, mesh=mesh,
                       in_specs=(P(), P(), batch, batch, P()),
                       out_specs=((P(), batch, P()), P(), P()),
                       axis_names=set(DATA_AXES))


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model, tx,
               schedule, config, multilabel: bool, mesh=None):
  """One optimizer step; returns the new state and this step's metrics.

  With `config.grad_clip_per_shard`, each data shard's gradient is clipped
  before the mean over shards (`per_shard_loss_and_grads` on `mesh`);
  otherwise `tx` clips the mean gradient. The new state carries the model
  state the step's forward pass updated (`loss_and_grads`), except after an
  update that `config.skip_nonfinite_steps` skips, which keeps the old one.
  The metrics' `loss` is the cross-entropy of the step's logits against the
  batch's (mixed) labels, as the reference's train metrics; with
  `label_smoothing`, `smoothed_loss` is the loss the update minimised.
  """
  objective = ObjectiveConfig.from_config(config)
  rng, dropout_rng, mixup_rng = jax.random.split(state.rng, 3)
  inputs, labels = _mixup(batch['inputs'], batch['label'],
                          objective.mixup_alpha, mixup_rng)
  grad_fn = functools.partial(loss_and_grads, model=model, config=config,
                              multilabel=multilabel)
  opt = OptimizerConfig.from_config(config)
  if opt.grad_clip_per_shard:
    (loss, logits, model_state), grads, grad_norm = per_shard_loss_and_grads(
        grad_fn, mesh, opt.max_grad_norm)(
            state.params, state.model_state, inputs, labels, dropout_rng)
  else:
    (loss, logits, model_state), grads = grad_fn(
        state.params, state.model_state, inputs, labels, dropout_rng)
    grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hit = jnp.take_along_axis(labels, jnp.argmax(logits, -1)[:, None], -1) > 0
  smoothed = None
  if objective.label_smoothing:
    # The reference's train metrics score the logits against the batch's
    # labels, not the smoothed targets that the gradient is taken of.
    smoothed, loss = loss, metrics_lib.per_example_loss(
        logits, labels, multilabel).mean()
  step_metrics = {
      'loss': loss, 'learning_rate': schedule(state.step),
      'prec@1' if multilabel else 'accuracy': jnp.mean(hit),
      'grad_norm': grad_norm,
      'param_norm': optax.tree.norm(params),
  }
  if smoothed is not None:
    step_metrics['smoothed_loss'] = smoothed  # What the update minimised.
  if isinstance(opt_state, optax.ApplyIfFiniteState):
    step_metrics['skipped_steps'] = opt_state.total_notfinite
    model_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(opt_state.last_finite, new, old),
        model_state, state.model_state)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, rng=rng,
                            model_state=model_state)
  return new_state, step_metrics


def eval_step(variables, batch, *, model, multilabel: bool,
              multiview: bool = False, pooling: str = 'mean'):
  """Masked metric sums and logits of the model's `variables`
  (`model_variables(params, model_state)`; `train=False`: BatchNorm uses its
  running averages); `multiview` combines the logits of each example's views
  (`inputs` `[B, views, ...]`): their mean (`pooling='mean'`) or each class's
  max over the views (`'max'`, the multi-label video test of PySlowFast's
  Charades)."""
  inputs = batch['inputs']
  if multiview:
    b, v = inputs.shape[:2]
    inputs = inputs.reshape((b * v,) + inputs.shape[2:])  # [B * views, ...]
  logits = model.apply(variables, inputs, train=False)
  if multiview:
    logits = logits.reshape(b, v, -1)  # [B, views, classes]
    logits = logits.max(1) if pooling == 'max' else logits.mean(1)
  sums = metrics_lib.metric_sums(logits, batch['label'], batch['batch_mask'],
                                 multilabel)
  return sums, logits


def check_batch_size(batch_size: int, mesh) -> None:
  """A global batch (`config.batch_size`) must split evenly over the
  data-parallel devices; the one check of it (train, aot, the benchmark)."""
  parallel = sharding.data_parallel_size(mesh)
  if batch_size % parallel:
    raise errors.ConfigError(
        f'config.batch_size={batch_size} is not divisible by the '
        f'data-parallel size {parallel} (config.mesh data x fsdp = '
        f"{mesh.shape['data']} x {mesh.shape['fsdp']}).")


def traced_under_mesh(fn: Callable, mesh: jax.sharding.Mesh,
                      rules: Sequence[Tuple[str, Any]]) -> Callable:
  """`fn`, traced with `mesh` and the logical axis `rules` in context, so
  that the models' activation constraints (`models.common.batch_split`)
  take effect."""

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with common.activation_sharding(mesh, rules):
      return fn(*args, **kwargs)

  return traced


def make_train_step(config: ml_collections.ConfigDict, model, tx, schedule,
                    shardings: Any, batch_sharding: Any,
                    multilabel: bool) -> Callable:
  """`train_step` jit-compiled over the mesh: `(state, batch) -> (state,
  metrics)`, the state on `shardings`, the batch on `batch_sharding`.

  With `config.donate_train_state` (a completed config's: `schema.complete`)
  the old state's buffers become the new one's: one copy of the state in
  memory.
  """
  mesh = batch_sharding.mesh
  return jax.jit(
      traced_under_mesh(
          functools.partial(train_step, model=model, tx=tx,
                            schedule=schedule, config=config,
                            multilabel=multilabel, mesh=mesh),
          mesh, sharding.rules(config)),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      donate_argnums=0 if config.donate_train_state else ())


def make_eval_step(model, variables_shardings: Any, batch_sharding: Any,
                   multilabel: bool, rules: Sequence[Tuple[str, Any]],
                   multiview: bool = False,
                   pooling: str = 'mean') -> Callable:
  """`eval_step` jit-compiled over the mesh: `(variables, batch) -> (metric
  sums, logits)`, the variables (`model_variables`) on
  `variables_shardings`, traced under the logical axis `rules`."""
  return jax.jit(
      traced_under_mesh(
          functools.partial(eval_step, model=model, multilabel=multilabel,
                            multiview=multiview, pooling=pooling),
          batch_sharding.mesh, rules),
      in_shardings=(variables_shardings, batch_sharding))


def with_shardings(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree`'s leaves carrying `shardings`."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


@dataclasses.dataclass(frozen=True)
class StepProgram:
  """A config's train and eval steps on a mesh and what they take, built
  once (`build_program`) for train, evaluate, aot, the benchmark and tests.

  Attributes:
    config: The completed config.
    mesh: The device mesh (`sharding.make_mesh`).
    model: The model (`models.build_model`).
    tx: The optimizer (`optim.make_optimizer`).
    schedule: Its learning-rate schedule.
    input_shape: One example's input shape.
    num_classes: Classes of the head.
    multilabel: Whether the head is multi-label (`metrics.is_multilabel`).
    shardings: The train state's shardings (a `TrainState` of them).
    batch_sharding: A batch's: split over `data` x `fsdp`.
    train_step: `make_train_step`: `(state, batch) -> (state, metrics)`.
    eval_step: `make_eval_step`, one view per example: `(variables, batch)
      -> (metric sums, logits)`.
    init: `rng -> TrainState` at step 0 (parameters boxed).
    abstract_state: `init_state`'s `jax.ShapeDtypeStruct`s, carrying their
      shardings (nothing computed): a restore target, or what `lower` takes.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: Callable
  input_shape: Tuple[int, ...]
  num_classes: int
  multilabel: bool
  shardings: TrainState
  batch_sharding: jax.sharding.NamedSharding
  train_step: Callable
  eval_step: Callable
  init: Callable
  abstract_state: TrainState

  @property
  def data_parallel(self) -> int:
    """Devices a batch is split over (`sharding.data_parallel_size`)."""
    return sharding.data_parallel_size(self.mesh)

  def init_state(self) -> TrainState:
    """The step-0 state of `config.rng_seed`, made directly on the mesh."""
    return jax.jit(lambda r: nn.unbox(self.init(r)),
                   out_shardings=self.shardings)(
                       jax.random.PRNGKey(self.config.rng_seed))

  def abstract_variables(self) -> Dict[str, Any]:
    """`model_variables` of `abstract_state`: a restore target for the
    parameters and model state alone."""
    return model_variables(self.abstract_state.params,
                           self.abstract_state.model_state)

  def variables_shardings(self) -> Dict[str, Any]:
    """The shardings of `model_variables(params, model_state)`."""
    return model_variables(self.shardings.params, self.shardings.model_state)

  def abstract_batch(self, batch_size: int, mask: bool = False
                     ) -> Dict[str, jax.ShapeDtypeStruct]:
    """A global batch as the input pipeline gives it, abstract and sharded:
    float32 inputs, one-hot (or multi-hot) float32 labels, and with `mask`
    an eval batch's `batch_mask`."""
    s = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32,
                                           sharding=self.batch_sharding)
    batch = {'inputs': s((batch_size,) + self.input_shape),
             'label': s((batch_size, self.num_classes))}
    if mask:
      batch['batch_mask'] = s((batch_size,))
    return batch

  def make_eval_step(self, multiview: bool = False,
                     pooling: str = 'mean') -> Callable:
    """`make_eval_step` on the program's shardings (`evaluate`'s views)."""
    return make_eval_step(self.model, self.variables_shardings(),
                          self.batch_sharding, self.multilabel,
                          sharding.rules(self.config), multiview, pooling)


def _check_platform(model: nn.Module, mesh: jax.sharding.Mesh) -> None:
  """Pallas's TPU kernels need TPU devices (real, or `aot`'s compile-only
  ones)."""
  impl = getattr(getattr(model, 'config', None), 'attention_impl', None)
  platform = mesh.devices.flat[0].platform
  if impl in ('pallas', 'splash') and platform != 'tpu':
    raise errors.ConfigError(
        f'model.attention_impl={impl!r} (a Pallas TPU kernel) needs TPU '
        f"devices; this mesh has {platform} devices: use 'einsum' or 'fused' "
        'here.')


FAST_ATTENTION = {'tpu': 'splash', 'gpu': 'cudnn'}  # Platform -> impl.


def fast_config(config: ml_collections.ConfigDict, platform: str,
                num_classes: int) -> ml_collections.ConfigDict:
  """`config` with its `fast` settings for devices of `platform` (the
  config itself where `fast` is off or the platform is a CPU).

  `fast` keeps the math: bf16 compute with fp32 parameters and optimizer
  state (`model_dtype_str`), and the platform's flash attention
  (`FAST_ATTENTION`) in place of the einsum where the model's attention
  allows it (no attention dropout; ToMe, EViT and ATS read the weights).
  X(2+1)D's modules keep their attention. Settings the config chose itself
  (a dtype, an attention other than the einsum) stay.
  """
  if (not ObjectiveConfig.from_config(config).fast or
      platform not in FAST_ATTENTION):
    return config
  fast = copy.deepcopy(config)
  with fast.unlocked():
    if fast.get('model_dtype_str', 'float32') == 'float32':
      fast.model_dtype_str = 'bfloat16'
    model_config = models.model_config(fast, num_classes)
    if (isinstance(model_config, models.ModelConfig) and
        model_config.attention_impl == 'einsum' and
        not model_config.attention_dropout_rate and
        not model_config.reduces_in_blocks):
      fast.model.attention_impl = FAST_ATTENTION[platform]
  logging.info('fast on %s: model_dtype_str=%s, model.attention_impl=%s.',
               platform, fast.model_dtype_str,
               fast.model.get('attention_impl', '(the model\'s)'))
  return fast


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  input_shape: Sequence[int], num_classes: int,
                  total_steps: int, model: Optional[nn.Module] = None
                  ) -> StepProgram:
  """The `StepProgram` of a completed `config` on `mesh` (nothing compiled,
  nothing initialised); `total_steps` sets the schedule's length, `model`
  replaces `build_model`'s. The program's config is `config` with its
  `fast` settings for the mesh's devices (`fast_config`)."""
  input_shape = tuple(input_shape)
  if model is None:
    config = fast_config(config, mesh.devices.flat[0].platform, num_classes)
    model = build_model(config, num_classes)
  _check_platform(model, mesh)
  multilabel = metrics_lib.is_multilabel(config.model_name)
  tx, schedule = optim.make_optimizer(config, total_steps)
  init = _state_init(config, model, tx, input_shape)
  boxed = jax.eval_shape(init, jax.random.PRNGKey(config.rng_seed))
  shardings = sharding.tree_sharding(boxed, mesh, config)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = make_train_step(config, model, tx, schedule, shardings,
                               batch_sharding, multilabel)
  eval_step = make_eval_step(
      model, model_variables(shardings.params, shardings.model_state),
      batch_sharding, multilabel, sharding.rules(config))
  return StepProgram(config, mesh, model, tx, schedule, input_shape,
                     num_classes, multilabel, shardings, batch_sharding,
                     train_step, eval_step, init,
                     with_shardings(nn.unbox(boxed), shardings))
