"""The real train step of a config, timed: what `scripts/benchmark.py` and
the reduction study measure (`train_steps.build_program`'s step, AdamW, jit
over the config's mesh, on normal inputs)."""

import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps


def peak_memory_bytes(compiled) -> Optional[int]:
  """XLA's peak estimate: arguments + outputs + temporaries - donated."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes +
               m.temp_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def train_step_program(config, input_shape,
                       num_classes: int) -> train_steps.StepProgram:
  """The real train step of `config` (AdamW, jit over the mesh)."""
  mesh = sharding.make_mesh(config)
  train_steps.check_batch_size(config.batch_size, mesh)
  return train_steps.build_program(config, mesh, input_shape, num_classes,
                                   total_steps=1000)


def random_batch(program: train_steps.StepProgram) -> Dict[str, jax.Array]:
  """`config.batch_size` normal inputs and one-hot labels on the mesh."""
  batch_size, num_classes = program.config.batch_size, program.num_classes
  return jax.device_put({
      'inputs': jax.random.normal(jax.random.PRNGKey(0),
                                  (batch_size,) + program.input_shape),
      'label': jax.nn.one_hot(jnp.arange(batch_size) % num_classes,
                              num_classes)}, program.batch_sharding)


def compiled_train_step(config, input_shape, num_classes: int):
  """(compiled step, state, batch, compile seconds) for `config`."""
  program = train_step_program(config, input_shape, num_classes)
  state, batch = program.init_state(), random_batch(program)
  # Initialisation runs asynchronously: let it finish before timing compiles.
  jax.block_until_ready((state, batch))
  start = time.perf_counter()
  compiled = program.train_step.lower(state, batch).compile()
  return compiled, state, batch, time.perf_counter() - start


def time_steps(compiled, state, batch, warmup: int, steps: int):
  """(step seconds of the `steps` timed steps, last state, last metrics)."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, step_metrics = compiled(state, batch)
    jax.block_until_ready((state, step_metrics))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times, state, step_metrics

