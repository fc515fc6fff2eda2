r"""Builds a config's model and prints its parameter count and GMACs.

  python -m tokenlearner_jax.summary --config=configs/vivit_k400.py \
      [--config.model.tokenizer.num_tokens=16] [--overview] \
      [--config.mesh.fsdp=2 --config.mesh.model=2]

No data is read: the input shape per example and the classes come from
`config.dataset_configs` (`(num_frames, crop_size, crop_size, 3)` for videos,
`(image_size, image_size, 3)` for images, `num_classes`), else from the table
of known datasets (`tokenlearner_jax.data.catalog`), else from the tfds
builder's metadata. Parameters are counted with `jax.eval_shape` (nothing is
allocated); GMACs are the paper's "GFLOPs" (`tokenlearner_jax.flops`). The
bytes of parameters and optimizer moments each device holds are given for
`config.mesh`'s `fsdp` and `model` sizes (-1 counts as 1) under
`config.logical_axis_rules`.
"""

from typing import Any, Dict, List, Sequence, Tuple

from absl import flags
from clu import parameter_overview
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

import dataclasses

from tokenlearner_jax import errors
from tokenlearner_jax import flops
from tokenlearner_jax import paper
from tokenlearner_jax import sharding
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import catalog
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import model_config
from tokenlearner_jax.models import X2Plus1D
from tokenlearner_jax.models import X2Plus1DConfig


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_bool('overview', False, 'Also print the per-parameter table.')


def example_input_shape(config: ml_collections.ConfigDict) -> Tuple[int, ...]:
  """One example's input shape, without reading any data.

  From `config.dataset_configs` (`num_frames` and `crop_size` for videos,
  `image_size` for images), else `data.catalog.KNOWN`, else the features of
  the tfds builder (its metadata only).
  """
  data = DataConfig.from_config(config)
  if data.is_video:
    return (data.num_frames, data.crop_size, data.crop_size, 3)
  if data.image_size:
    return (data.image_size, data.image_size, 3)
  if config.get('dataset_name') in catalog.KNOWN:
    return catalog.KNOWN[config.dataset_name][0]
  info = _builder_info(config)
  return tuple(info.features[info.supervised_keys[0]].shape)


def example_num_classes(config: ml_collections.ConfigDict) -> int:
  """`dataset_configs.num_classes`, else from `catalog.KNOWN` or tfds."""
  num_classes = DataConfig.from_config(config).num_classes
  if num_classes:
    return num_classes
  if config.get('dataset_name') in catalog.KNOWN:
    return catalog.KNOWN[config.dataset_name][1]
  info = _builder_info(config)
  return info.features[info.supervised_keys[1]].num_classes


def _builder_info(config: ml_collections.ConfigDict):
  """The tfds builder's metadata (no prepared data needed)."""
  from tokenlearner_jax.data import datasets  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = config.get('dataset_name')
  try:
    info = tfds.builder(name).info
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'dataset_name={name!r}: its input shape and classes are unknown '
        'without data; set dataset_configs.image_size (or num_frames and '
        f'crop_size) and dataset_configs.num_classes ({e}).') from None
  return info


def summarize(config: ml_collections.ConfigDict) -> dict:
  """Returns parameter count, GMACs and shapes for `config`'s model."""
  config = schema.complete(config)
  num_classes = example_num_classes(config)
  shape = example_input_shape(config)
  model = build_model(config, num_classes)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape),
                         train=False))
  specs = sharding.param_specs(variables['params'], config)
  axis_sizes = {axis: max(int(config.mesh.get(axis, 1)), 1)
                for axis in sharding.MESH_AXES}
  state_bytes = sharding.bytes_per_device(
      nn.unbox(variables['params']), specs,
      axis_sizes) * sharding.optimizer_copies(config)
  return dict(
      params=variables['params'], param_specs=specs,
      num_params=_count(variables['params']),
      gmacs=flops.gmacs(config, shape, num_classes),
      input_shape=shape, num_classes=num_classes, axis_sizes=axis_sizes,
      state_bytes_per_device=state_bytes)


def _count(tree) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def module_params(c: X2Plus1DConfig, input_shape: Sequence[int]) -> int:
  """Parameters of the module slot (every block carrying it) of `c`."""
  variables = jax.eval_shape(lambda: X2Plus1D(c).init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(input_shape)),
      train=False))
  params = nn.unbox(variables['params'])
  return sum(_count(params[f'res{c.stage}_block{i}']['module'])
             for i in c.module_blocks())


def module_table(c: X2Plus1DConfig) -> List[Dict[str, Any]]:
  """Tables 11-12's modules in `c`'s backbone: per row, the paper's GFLOPs
  and parameters and ours (the module alone at `paper.MODULE_INPUT`,
  GFLOPs as `paper.MODULE_FLOPS_PER_MAC` x multiply-adds)."""
  rows = []
  for row in paper.MODULE_ROWS:  # One module: in the last block alone.
    row_config = dataclasses.replace(c, parts=row.parts, blocks=(-1,))
    macs = flops.x2plus1d_macs(row_config, paper.MODULE_INPUT)['module']
    gflops = paper.MODULE_FLOPS_PER_MAC * macs / 1e9
    params_m = module_params(row_config, paper.MODULE_INPUT) / 1e6
    rows.append(dict(
        row=row, gflops=gflops, params_m=params_m,
        gflops_diff=gflops / row.gflops - 1,
        params_diff=params_m / row.params_m - 1,
        this_config=row.parts == c.parts))
  return rows


def network_gflops(c: X2Plus1DConfig) -> Dict[str, Any]:
  """The whole network's GFLOPs per view at Table 10's test input
  (`paper.MODULE_INPUT`, 2 FLOPs per multiply-add) and Table 10's row of
  the same module, if there is one (`row`: None)."""
  gflops = paper.MODULE_FLOPS_PER_MAC * flops.x2plus1d_macs(
      c, paper.MODULE_INPUT)['total'] / 1e9
  row = next((r for r in paper.NETWORK_ROWS if r.parts == c.parts), None)
  return dict(gflops=gflops, row=row,
              diff=None if row is None else gflops / row.gflops - 1)


def print_module_table(c: X2Plus1DConfig) -> None:
  """The module table of `module_table`, as markdown."""
  shape = 'x'.join(map(str, paper.MODULE_INPUT[:3]))
  print(f'Module slot (res{c.stage} blocks {list(c.module_blocks())}, width '
        f'{c.inner_width(c.stage)}): GFLOPs (= {paper.MODULE_FLOPS_PER_MAC} x '
        f'GMACs, at {shape}) and parameters of each module of Tables 11-12 '
        'alone, ours beside the paper\'s (* this config):')
  print('| Module | Table | Paper GFLOPs | Ours | Diff | Paper params | Ours '
        '| Diff |')
  print('|---|---|---|---|---|---|---|---|')
  table = module_table(c)
  for r in table:
    row = r['row']
    mark = ' *' if r['this_config'] else ''
    print(f"| {row.name}{mark} | {row.table} | {row.gflops:.1f} | "
          f"{r['gflops']:.2f} | {r['gflops_diff']:+.1%} | {row.params_m:.2f}M "
          f"| {r['params_m']:.3f}M | {r['params_diff']:+.1%} |")
  for note in sorted({r['row'].note for r in table if r['row'].note}):
    print(f'Not matched: {note}.')


def main(argv: Sequence[str]) -> None:
  del argv
  summary = errors.exit_on_known_fault(summarize, flags.FLAGS.config)
  if flags.FLAGS.overview:
    print(parameter_overview.get_parameter_overview(summary['params'],
                                                    include_stats=False))
  print(f"input shape per example: {summary['input_shape']}, classes: "
        f"{summary['num_classes']}")
  print(f"parameters: {summary['num_params']:,} "
        f"({summary['num_params'] / 1e6:.1f}M)")
  checked = model_config(schema.complete(flags.FLAGS.config),
                         summary['num_classes'])
  if isinstance(checked, X2Plus1DConfig):
    macs = flops.x2plus1d_macs(checked, summary['input_shape'])
    print(f"GMACs per view: {summary['gmacs']:.2f} (the module: "
          f"{macs['module'] / 1e9:.2f}; Section 6 counts 2 FLOPs per "
          'multiply-add)')
    net = network_gflops(checked)
    shape = 'x'.join(map(str, paper.MODULE_INPUT[:3]))
    versus = (f"; Table 10's {net['row'].name}: {net['row'].gflops} "
              f"({net['diff']:+.1%})" if net['row'] else
              '; Table 10 has no network with this module')
    print(f"Whole network at {shape} (Table 10's count): "
          f"{net['gflops']:.1f} GFLOPs per view{versus}")
  else:
    print(f"GMACs per example (the paper's GFLOPs): {summary['gmacs']:.1f}")
  sizes = summary['axis_sizes']
  print(f"parameters + {flags.FLAGS.config.optimizer} state per device with "
        f"fsdp={sizes['fsdp']}, model={sizes['model']}: "
        f"{summary['state_bytes_per_device'] / 2**20:,.1f} MiB")
  if isinstance(checked, X2Plus1DConfig):
    print_module_table(checked)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
