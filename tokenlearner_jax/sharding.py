"""The device mesh, logical-axis rules, and shardings of state and batches.

`config.mesh` gives the sizes of the mesh axes `data`, `fsdp` and `model`
(-1: all remaining devices). Parameters carry logical axis names (see
`tokenlearner_jax.models.common.logical`), which `config.logical_axis_rules`
maps onto mesh axes; the batch is split over `data` x `fsdp`. FSDP is the rule
`('embed', 'fsdp')` with a `fsdp` axis larger than 1.
"""

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tokenlearner_jax import errors

MESH_AXES = ('data', 'fsdp', 'model')
# Each axis's size where `config.mesh` sets none (-1: the devices left).
MESH_DEFAULTS = {'data': -1, 'fsdp': 1, 'model': 1}
DEFAULT_RULES = (('batch', ('data', 'fsdp')), ('embed', 'fsdp'),
                 ('mlp', 'model'), ('heads', 'model'), ('kv', None),
                 ('classes', None))


def mesh_shape(mesh_config: ml_collections.ConfigDict,
               num_devices: int) -> Tuple[int, ...]:
  """Axis sizes of `config.mesh` for `num_devices`, with -1 filled in."""
  sizes = [int(mesh_config.get(axis, MESH_DEFAULTS[axis]))
           for axis in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh sizes must be positive, with at most one -1;'
                     f' got {dict(zip(MESH_AXES, sizes))}.')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'config.mesh {dict(zip(MESH_AXES, sizes))} does not '
                       f'divide {num_devices} devices.')
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'config.mesh {dict(zip(MESH_AXES, sizes))} needs '
                     f'{int(np.prod(sizes))} devices, have {num_devices}.')
  return tuple(sizes)


def data_parallel_size(mesh: Mesh) -> int:
  """Devices a batch is split over: `data` x `fsdp`."""
  return mesh.shape['data'] * mesh.shape['fsdp']


def make_mesh(config: ml_collections.ConfigDict,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """`config.mesh` over `devices` (jax's, unless given: `aot` passes a TPU
  slice's compile-only devices); a mesh that does not fit them is a
  `ConfigError`."""
  devices = jax.devices() if devices is None else devices
  try:
    shape = mesh_shape(config.mesh, len(devices))
  except ValueError as e:
    raise errors.ConfigError(str(e)) from None
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules(config: ml_collections.ConfigDict) -> Sequence[Tuple[str, Any]]:
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in config.logical_axis_rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(('data', 'fsdp')))


def tree_sharding(boxed_tree: Any, mesh: Mesh,
                  config: ml_collections.ConfigDict) -> Any:
  """Shardings of a (boxed, abstract) tree from its logical axis names;
  leaves without names (a train state's `step` and `rng`, BatchNorm
  statistics) are replicated."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules(config))


def global_batch(batch: dict, sharding: NamedSharding) -> dict:
  """This process's NumPy batch -> global `jax.Array`s sharded on the mesh."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def param_specs(boxed_params: Any, config: ml_collections.ConfigDict) -> Any:
  """Mesh `PartitionSpec`s of boxed parameters under the config's rules."""
  return nn.logical_to_mesh(nn.get_partition_spec(boxed_params), rules(config))


def optimizer_copies(config: ml_collections.ConfigDict) -> int:
  """Parameter-shaped arrays per parameter in the train state: the parameter
  and the optimizer's moments (Adam: 2, momentum: 1, SGD: 0)."""
  return {'adam': 3, 'adamw': 3, 'momentum': 2, 'nesterov': 2}.get(
      config.optimizer, 1)


def bytes_per_device(params: Any, specs: Any,
                     axis_sizes: Dict[str, int]) -> int:
  """Bytes of `params` (unboxed arrays or shapes) that one device holds when
  sharded by `specs` over mesh axes of `axis_sizes`."""
  total = 0
  for leaf, spec in zip(jax.tree_util.tree_leaves(params),
                        jax.tree_util.tree_leaves(
                            specs, is_leaf=lambda x: isinstance(x, P))):
    shards = 1
    for axes in spec:
      for axis in (axes if isinstance(axes, tuple) else (axes,)):
        shards *= axis_sizes.get(axis, 1) if axis else 1
    total += math.prod(leaf.shape) * leaf.dtype.itemsize // shards
  return total
