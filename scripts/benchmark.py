"""Benchmarks the train step of model configs, compile times and the input.

For each model, in one process: compile time of the real train step
(`tokenlearner_jax.train.train_step`, AdamW, jit-sharded over all devices),
step time (median of `--steps` steps after `--warmup`), examples/s, XLA's peak
memory, achieved FLOP/s from the analytic count (`tokenlearner_jax.flops`;
a train step = 3 forward passes = 6 FLOPs per multiply-add) and MFU against a
matmul peak measured in the same run. Then TokenLearner's speedup over its
baseline against its GMAC ratio, the compile time of a 24-layer model with and
without `nn.scan`, and the demo input pipelines alone (clips/s, images/s)
against what the demo's train step consumes.

  python scripts/benchmark.py --small            # 2 CPU cores: minutes
  python scripts/benchmark.py                    # ViT-B/16, ViViT-B/16x2
  python scripts/benchmark.py --models=vit_b16,vit_b16_tl8at6 --batch=8
  python scripts/benchmark.py --dtype=bfloat16 --attention=fused --out=b.json

Prints Markdown tables; `--out` writes the same as JSON.
"""

import argparse
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokenlearner_jax import config_lib
from tokenlearner_jax import flops
from tokenlearner_jax import input_pipeline
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax import train
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 1000
IMAGE224 = (224, 224, 3)


class Spec(NamedTuple):
  """One benchmarked model: `model_config` arguments and an input shape."""
  name: str
  variant: str
  input_shape: Tuple[int, ...]
  kwargs: Dict[str, Any]
  baseline: Optional[str] = None  # The model its speedup is measured against.
  num_layers: Optional[int] = None  # Overrides the variant's depth.


def vit(name, variant, shape, baseline=None, **kwargs):
  return Spec(name, variant, shape, dict(tokenizer_type='dynamic', **kwargs),
              baseline)


def vivit(name, variant, shape, baseline=None, **kwargs):
  return Spec(name, variant, shape, dict(tokenizer_type='video', **kwargs),
              baseline)


MODEL_SETS = {
    'default': [
        vit('vit_b16', 'B/16', IMAGE224),
        vit('vit_b16_tl8at6', 'B/16', IMAGE224, 'vit_b16', tokenlearner_loc=6),
        vit('vit_b16_tl16at6_fuser', 'B/16', IMAGE224, 'vit_b16',
            tokenlearner_loc=6, num_tokens=16, use_tokenfuse=True),
        vivit('vivit_b16x2', 'B/16', (16, 224, 224, 3)),
        vivit('vivit_b16x2_tl8at6', 'B/16', (16, 224, 224, 3), 'vivit_b16x2',
              tokenlearner_loc=6),
    ],
    'small': [
        vit('vit_ti16', 'Ti/16', IMAGE224),
        vit('vit_ti16_tl8at6', 'Ti/16', IMAGE224, 'vit_ti16',
            tokenlearner_loc=6),
        vit('vit_ti16_tl16at6_fuser', 'Ti/16', IMAGE224, 'vit_ti16',
            tokenlearner_loc=6, num_tokens=16, use_tokenfuse=True),
        vivit('vivit_ti16x2', 'Ti/16', (8, 112, 112, 3)),
        vivit('vivit_ti16x2_tl8at6', 'Ti/16', (8, 112, 112, 3), 'vivit_ti16x2',
              tokenlearner_loc=6),
    ],
}
# 24 layers, unrolled vs nn.scan: compile time only.
COMPILE_SETS = {
    'default': Spec('vit_l16', 'L/16', IMAGE224, dict(tokenizer_type='dynamic')),
    'small': Spec('vit_s16_24layers', 'S/16', (112, 112, 3),
                  dict(tokenizer_type='dynamic'), num_layers=24),
}
ALL_SPECS = {s.name: s for specs in MODEL_SETS.values() for s in specs}


def load_config_file(name: str) -> ml_collections.ConfigDict:
  """`get_config()` of `configs/<name>.py`."""
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config()


def spec_config(spec: Spec, args: argparse.Namespace) -> ml_collections.ConfigDict:
  """A trainer config for `spec` with the speed options of `args`."""
  config = ml_collections.ConfigDict()
  config.model = config_lib.model_config(
      spec.variant, scan_layers=args.scan, remat_policy=args.remat,
      attention_impl=args.attention, **spec.kwargs)
  if spec.num_layers:
    config.model.num_layers = spec.num_layers
  config.model_dtype_str = args.dtype
  config.optimizer = 'adamw'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=0.05))
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound', factors='constant',
      base_learning_rate=1e-3))
  config.max_grad_norm = 1.0
  config.label_smoothing = None
  config.mixup = ml_collections.ConfigDict(dict(alpha=None))
  config.batch_size = args.batch
  config.rng_seed = 0
  config_lib.trainer_defaults(config)
  return config


def matmul_peak(dtype: str, sizes: Sequence[int] = (1024, 2048, 4096)) -> float:
  """The best FLOP/s of square `dtype` matmuls on one device."""
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      matmul(a, b).block_until_ready()
      times.append(time.perf_counter() - start)
    best = max(best, 2 * n**3 / min(times))
  return best


def peak_memory_bytes(compiled) -> Optional[int]:
  """XLA's peak estimate: arguments + outputs + temporaries - donated."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes +
               m.temp_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def compiled_train_step(config, input_shape, num_classes: int):
  """(compiled step, state, batch, compile seconds) for `config`."""
  model = build_model(config, num_classes)
  tx, schedule = optim.make_optimizer(config, total_steps=1000)
  mesh = sharding.make_mesh(config)
  train.check_batch_sizes(config, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  state, shardings = train.create_train_state(config, model, tx,
                                              tuple(input_shape), mesh)
  batch = {
      'inputs': jax.random.normal(jax.random.PRNGKey(0),
                                  (config.batch_size,) + tuple(input_shape)),
      'label': jax.nn.one_hot(jnp.arange(config.batch_size) % num_classes,
                              num_classes)}
  batch = jax.device_put(batch, batch_sharding)
  step = jax.jit(
      functools.partial(train.train_step, model=model, tx=tx,
                        schedule=schedule, config=config, multilabel=False),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
      donate_argnums=0 if config.donate_train_state else ())
  # Initialisation runs asynchronously: let it finish before timing compiles.
  jax.block_until_ready((state, batch))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return compiled, state, batch, time.perf_counter() - start


def bench_model(name: str, config, input_shape, num_classes: int,
                args, peak: float) -> Dict[str, Any]:
  """Compile time, step time, examples/s, FLOP/s, MFU, memory of one model."""
  compiled, state, batch, compile_s = compiled_train_step(config, input_shape,
                                                          num_classes)
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, step_metrics = compiled(state, batch)
    jax.block_until_ready((state, step_metrics))
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  gmacs = flops.gmacs(config, input_shape, num_classes)
  flop_per_s = 6 * gmacs * 1e9 * config.batch_size / step_s
  row = dict(model=name, batch=config.batch_size, gmacs=gmacs,
             compile_s=compile_s, step_s=step_s,
             step_s_spread=[min(times), max(times)],
             examples_per_s=config.batch_size / step_s,
             tflop_per_s=flop_per_s / 1e12,
             mfu=flop_per_s / (peak * jax.device_count()),
             peak_memory_mib=(peak_memory_bytes(compiled) or 0) / 2**20,
             loss=float(step_metrics['loss']))
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    row['device_peak_memory_mib'] = stats['peak_bytes_in_use'] / 2**20
  print(f'  {name}: {step_s * 1e3:.1f} ms/step, {row["examples_per_s"]:.1f} '
        f'ex/s, MFU {row["mfu"]:.1%}, compile {compile_s:.1f} s',
        file=sys.stderr, flush=True)
  return row


def bench_compile(spec: Spec, args) -> Dict[str, Any]:
  """Train-step compile seconds of `spec` unrolled and with `nn.scan`."""
  result = dict(model=spec.name)
  for scan in (False, True):
    config = spec_config(spec, argparse.Namespace(**{**vars(args),
                                                     'scan': scan}))
    *_, seconds = compiled_train_step(config, spec.input_shape, NUM_CLASSES)
    result['scan_compile_s' if scan else 'unrolled_compile_s'] = seconds
    print(f'  {spec.name} scan={scan}: compile {seconds:.1f} s',
          file=sys.stderr, flush=True)
  result['ratio'] = result['scan_compile_s'] / result['unrolled_compile_s']
  result['num_layers'] = spec.num_layers or config_lib.VIT_SIZES[
      spec.variant.split('/')[0]][3]
  return result


def bench_input(name: str, batches: int) -> Dict[str, Any]:
  """Examples/s of the train iterator of `configs/<name>.py` alone."""
  config = load_config_file(name)
  data = input_pipeline.get_data(config)
  for _ in range(5):  # Warm-up: caches, shuffle buffer.
    next(data.train_iter)
  start = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(next(data.train_iter))
  seconds = time.perf_counter() - start
  result = dict(config=name, batch=config.batch_size,
                examples_per_s=batches * config.batch_size / seconds)
  print(f'  input {name}: {result["examples_per_s"]:.0f} examples/s',
        file=sys.stderr, flush=True)
  return result


def markdown(rows: List[Dict[str, Any]], columns: Sequence[Tuple[str, str]]
             ) -> str:
  lines = ['| ' + ' | '.join(title for _, title in columns) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    cells = []
    for key, _ in columns:
      value = row.get(key, '')
      if isinstance(value, float):
        value = (f'{value:.1%}' if key in ('mfu', 'efficiency') else
                 f'{value:.4g}')
      cells.append(str(value))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true',
                      help='The CPU-sized set (ViT-Ti, ViViT-Ti at 112).')
  parser.add_argument('--models', default='',
                      help=f'Comma-separated subset of {sorted(ALL_SPECS)}.')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--scan', action='store_true')
  parser.add_argument('--remat', default='none')
  parser.add_argument('--attention', default='einsum',
                      choices=('einsum', 'fused'))
  parser.add_argument('--skip', default='',
                      help="Comma-separated parts to skip: 'compile', "
                      "'input', 'demo'.")
  parser.add_argument('--input_batches', type=int, default=100)
  parser.add_argument('--out', default='', help='Write the results as JSON.')
  return parser.parse_args(argv)


def main(argv=None) -> Dict[str, Any]:
  args = parse_args(argv)
  skip = set(filter(None, args.skip.split(',')))
  which = 'small' if args.small else 'default'
  names = list(filter(None, args.models.split(',')))
  unknown = [m for m in names if m not in ALL_SPECS]
  if unknown:
    raise ValueError(f'--models: unknown {unknown}; known: {sorted(ALL_SPECS)}.')
  specs = [ALL_SPECS[m] for m in names] if names else MODEL_SETS[which]
  device = jax.devices()[0]
  print(f'{jax.device_count()} x {device.device_kind} ({device.platform}); '
        f'jax {jax.__version__}', file=sys.stderr, flush=True)
  peak = matmul_peak(args.dtype)
  print(f'  matmul peak ({args.dtype}, one device): {peak / 1e9:.1f} GFLOP/s',
        file=sys.stderr, flush=True)
  results: Dict[str, Any] = dict(
      device=f'{jax.device_count()} x {device.device_kind}',
      platform=device.platform, cpu=platform.processor() or platform.machine(),
      cpu_count=os.cpu_count(), jax=jax.__version__,
      options=dict(dtype=args.dtype, scan=args.scan, remat=args.remat,
                   attention=args.attention, batch=args.batch,
                   steps=args.steps, warmup=args.warmup),
      matmul_peak_gflop_per_s=peak / 1e9, models=[], speedups=[])
  for spec in specs:
    results['models'].append(bench_model(
        spec.name, spec_config(spec, args), spec.input_shape, NUM_CLASSES,
        args, peak))
  by_name = {row['model']: row for row in results['models']}
  for spec in specs:
    if spec.baseline in by_name:
      base, row = by_name[spec.baseline], by_name[spec.name]
      gmac_ratio = base['gmacs'] / row['gmacs']
      wall_ratio = base['step_s'] / row['step_s']
      results['speedups'].append(dict(
          model=spec.name, baseline=spec.baseline, gmac_ratio=gmac_ratio,
          wall_ratio=wall_ratio, efficiency=wall_ratio / gmac_ratio))
  if 'compile' not in skip:
    results['compile'] = bench_compile(COMPILE_SETS[which], args)
  if 'demo' not in skip:
    demo = load_config_file('demo_moving_digits')
    demo.model_dtype_str = args.dtype
    data_shape = (8, 32, 32, 3)  # moving_digits clips.
    results['demo_train_step'] = bench_model(
        'demo_moving_digits', demo, data_shape, 40,
        argparse.Namespace(**{**vars(args), 'steps': max(args.steps, 20)}),
        peak)
  if 'input' not in skip:
    results['input'] = [bench_input(name, args.input_batches) for name in
                        ('demo_moving_digits', 'demo_multi_digits')]
    if 'demo_train_step' in results:
      results['input_over_demo_step'] = (
          results['input'][0]['examples_per_s'] /
          results['demo_train_step']['examples_per_s'])

  print(f'\n{results["device"]}, jax {results["jax"]}, options '
        f'{results["options"]}; matmul peak '
        f'{results["matmul_peak_gflop_per_s"]:.1f} GFLOP/s per device.\n')
  model_rows = results['models'] + ([results['demo_train_step']]
                                    if 'demo_train_step' in results else [])
  print(markdown(model_rows, [
      ('model', 'model'), ('batch', 'batch'), ('gmacs', 'GMACs/example'),
      ('compile_s', 'compile s'), ('step_s', 'step s (median)'),
      ('examples_per_s', 'examples/s'), ('tflop_per_s', 'TFLOP/s'),
      ('mfu', 'MFU'), ('peak_memory_mib', 'XLA peak MiB')]))
  if results['speedups']:
    print('\n' + markdown(results['speedups'], [
        ('model', 'model'), ('baseline', 'baseline'),
        ('gmac_ratio', 'GMAC ratio'), ('wall_ratio', 'step-time ratio'),
        ('efficiency', 'speedup / GMAC ratio')]))
  if 'compile' in results:
    c = results['compile']
    print(f'\nCompile, {c["model"]} ({c["num_layers"]} layers): unrolled '
          f'{c["unrolled_compile_s"]:.1f} s, nn.scan {c["scan_compile_s"]:.1f} '
          f's (ratio {c["ratio"]:.2f}).')
  if 'input' in results:
    for r in results['input']:
      print(f'Input {r["config"]}: {r["examples_per_s"]:.0f} examples/s '
            f'(batch {r["batch"]}).')
    if 'input_over_demo_step' in results:
      print(f'moving_digits input / demo train step: '
            f'{results["input_over_demo_step"]:.1f}x.')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == '__main__':
  main()
