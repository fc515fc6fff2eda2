"""Benchmarks the train step of model configs, compile times and the input.

For each model, in one process: compile time of the real train step
(`tokenlearner_jax.train_steps.train_step`, AdamW, jit-sharded over all
devices), step time (median of `--steps` steps after `--warmup`), examples/s,
XLA's peak memory, achieved FLOP/s from the analytic count
(`tokenlearner_jax.flops`; a train step = 3 forward passes = 6 FLOPs per
multiply-add) and MFU against a matmul peak measured in the same run. Then
TokenLearner's speedup over its baseline against its GMAC ratio, the compile
and step times of a 24-layer model with and without `nn.scan`, and the demo
input pipelines alone (clips/s, images/s) against what the demo's train step
consumes. `--max_batch` adds the largest batch that fits in device memory,
per remat policy.

  python scripts/benchmark.py --small            # 2 CPU cores: minutes
  python scripts/benchmark.py                    # ViT-B/16, ViViT-B/16x2
  python scripts/benchmark.py --models=vit_b16,vit_b16_tl8at6 --batch=8
  python scripts/benchmark.py --dtype=bfloat16 --attention=fused --out=b.json
  python scripts/benchmark.py --set=x2plus1d --batch=2 --skip=compile,demo,input
  python scripts/benchmark.py --set=reduction_small --skip=compile,demo,input
  python scripts/benchmark.py --skip=models,compile,demo,input \
      --max_batch=vivit_b16x2_tl8at6 --dtype=bfloat16 --attention=fused --scan
  python scripts/benchmark.py --skip=models,compile,demo,input \
      --layouts=12,24                            # nn.scan vs unrolled
  python scripts/benchmark.py --skip=models,compile,demo,input \
      --layouts=12 --reference=SCENIC_CHECKOUT   # and scenic's own model

The model benchmarks need no TensorFlow (the input benchmark does).

Prints Markdown tables; `--out` writes the same as JSON.
"""

import argparse
import functools
import glob
import gzip
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokenlearner_jax.configs import common as config_lib
from tokenlearner_jax import aot
from tokenlearner_jax import errors
from tokenlearner_jax import flops
from tokenlearner_jax import metrics
from tokenlearner_jax import models
from tokenlearner_jax import step_timing
from tokenlearner_jax.models.config import REMAT_POLICIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 1000
PROFILED_STEPS = 3  # With --profile_dir, after the timed steps.
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


X2PLUS1D = 'x2plus1d'  # `Spec.variant` of the X(2+1)D network.
VIDEO64 = (64, 224, 224, 3)  # The paper's Section 6 training clips.
VIDEO16_112 = (16, 112, 112, 3)


def x2plus1d(name, shape, baseline=None, **fields):
  """X(2+1)D-M with `X2Plus1DConfig` `fields` (e.g. its module `parts`)."""
  return Spec(name, X2PLUS1D, shape, fields, baseline)


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
    # The paper's Section 6 network (`--models=` names them; `--set=x2plus1d`),
    # and the same at 16x112x112 (`--set=x2plus1d_small`), where a CPU takes
    # seconds, not minutes, per step.
    'x2plus1d_small': [
        x2plus1d('x2plus1d_m_16x112', VIDEO16_112),
        x2plus1d('x2plus1d_m_tl_16x112', VIDEO16_112, 'x2plus1d_m_16x112',
                 parts=('tokenlearner',)),
        x2plus1d('x2plus1d_m_conv2d_tl_16x112', VIDEO16_112,
                 'x2plus1d_m_16x112', parts=('conv2d', 'tokenlearner')),
        # Channel-wise convolutions as shifted sums, against the grouped ones.
        x2plus1d('x2plus1d_m_16x112_shifts', VIDEO16_112, 'x2plus1d_m_16x112',
                 channelwise_impl='shifts'),
        x2plus1d('x2plus1d_m_conv2d_tl_16x112_shifts', VIDEO16_112,
                 'x2plus1d_m_conv2d_tl_16x112',
                 parts=('conv2d', 'tokenlearner'), channelwise_impl='shifts'),
    ],
    'x2plus1d': [
        x2plus1d('x2plus1d_m', VIDEO64),
        x2plus1d('x2plus1d_m_tl', VIDEO64, 'x2plus1d_m',
                 parts=('tokenlearner',)),
        x2plus1d('x2plus1d_m_conv2d_tl', VIDEO64, 'x2plus1d_m',
                 parts=('conv2d', 'tokenlearner')),
    ],
}


def reductions(size: str, shape) -> List[Spec]:
  """TokenLearner and the later methods (`models.reduction`) on a ViT with a
  class token (EViT and ATS rank by its attention), against the same ViT;
  the original papers' settings for ViT-B/DeiT-S at 224."""
  base = f'vit_{size.lower()}16_cls'
  cls = dict(classifier='token')
  return [
      vit(base, f'{size}/16', shape, **cls),
      vit(f'{base}_tl8at6', f'{size}/16', shape, base, tokenlearner_loc=6,
          **cls),
      vit(f'{base}_tome_r16', f'{size}/16', shape, base, tokenlearner_loc=0,
          token_reduction='tome', tome_r=16, **cls),
      vit(f'{base}_evit_0.7_at3_6_9', f'{size}/16', shape, base,
          tokenlearner_loc=3, pooling_locs=(6, 9), token_reduction='evit',
          keep_rate=0.7, **cls),
      vit(f'{base}_ats98at3', f'{size}/16', shape, base, tokenlearner_loc=3,
          token_reduction='ats', num_tokens=98, **cls),
      vit(f'{base}_patchmerger8at6', f'{size}/16', shape, base,
          tokenlearner_loc=6, token_reduction='patchmerger', **cls),
  ]


# TokenLearner against ToMe, EViT, ATS and PatchMerger (`--set=reduction`;
# `reduction_small` for a CPU).
MODEL_SETS['reduction'] = reductions('B', IMAGE224)
MODEL_SETS['reduction_small'] = reductions('Ti', IMAGE224)
# 24 layers, unrolled vs nn.scan: compile time only.
COMPILE_SETS = {
    'default': Spec('vit_l16', 'L/16', IMAGE224,
                    dict(tokenizer_type='dynamic')),
    'small': Spec('vit_s16_24layers', 'S/16', (112, 112, 3),
                  dict(tokenizer_type='dynamic'), num_layers=24),
}
ALL_SPECS = {s.name: s for specs in MODEL_SETS.values() for s in specs}
# `--layouts`: nn.scan against the unrolled loop, and TokenFuser against the
# same TokenLearner without it, at each depth asked for.
LAYOUT_SETS = {
    'default': [
        vit('vit_s16_tl8at6', 'S/16', IMAGE224, tokenlearner_loc=6,
            num_tokens=8),
        vit('vit_s16_tl16at6', 'S/16', IMAGE224, tokenlearner_loc=6,
            num_tokens=16),
        vit('vit_s16_tl16at6_fuser', 'S/16', IMAGE224, 'vit_s16_tl16at6',
            tokenlearner_loc=6, num_tokens=16, use_tokenfuse=True),
        vivit('vivit_s16x2_tl8at6', 'S/16', (16, 112, 112, 3),
              tokenlearner_loc=6, num_tokens=8),
    ],
}


def load_config_file(name: str) -> ml_collections.ConfigDict:
  """`get_config()` of `configs/<name>.py`."""
  return config_lib.load_config(os.path.join(ROOT, 'configs', f'{name}.py'))


def spec_config(spec: Spec,
                args: argparse.Namespace) -> ml_collections.ConfigDict:
  """A trainer config for `spec` with the speed options of `args` (the
  ViT/ViViT ones: `scan`, `remat`, `attention`)."""
  config = ml_collections.ConfigDict()
  if spec.variant == X2PLUS1D:
    config.model_name = 'x2plus1d_classification'
    config.model = config_lib.x2plus1d_model_config(**{
        'dropout_rate': 0.0, 'channelwise_impl': args.channelwise,
        **spec.kwargs})
  else:
    config.model_name = 'token_learner_classification'
    config.model = config_lib.model_config(
        spec.variant, scan_layers=args.scan, remat_policy=args.remat,
        attention_impl=args.attention, dropout_rate=0.0,
        attention_dropout_rate=0.0, **spec.kwargs)
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


def with_options(args: argparse.Namespace, **changes) -> argparse.Namespace:
  """A copy of `args` with `changes`."""
  return argparse.Namespace(**{**vars(args), **changes})


def matmul_peak(dtype: str, sizes: Optional[Sequence[int]] = None) -> float:
  """The best FLOP/s of square `dtype` matmuls on one device.

  On an accelerator each timing covers 20 products dispatched back to back,
  so that launch gaps do not count; on the CPU one product is long enough.
  """
  on_cpu = jax.devices()[0].platform == 'cpu'
  sizes = sizes or ((1024, 2048, 4096) if on_cpu else (4096, 8192))
  reps = 1 if on_cpu else 20
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      for _ in range(reps):
        product = matmul(a, b)
      product.block_until_ready()
      times.append(time.perf_counter() - start)
    best = max(best, 2 * n**3 * reps / min(times))
  return best


def trace_summary(trace_dir: str, steps: int, top: int = 15
                  ) -> List[Dict[str, Any]]:
  """The kinds of op that took the most time in a `jax.profiler` trace.

  From the device's 'XLA Ops' line where the trace has one (HLO op names),
  else from its kernel streams; on a CPU, from the XLA threads. Ops are
  grouped by name without their number ('fusion.12' -> 'fusion').
  """
  path = sorted(glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*',
                                      'perfetto_trace.json.gz')))[-1]
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  processes, threads = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e['name'] == 'process_name':
      processes[e['pid']] = e['args']['name']
    if e.get('ph') == 'M' and e['name'] == 'thread_name':
      threads[e['pid'], e['tid']] = e['args']['name']
  devices = {pid for pid, name in processes.items()
             if name.startswith('/device:')}
  if devices:
    lines = {key for key in threads if key[0] in devices}
    ops_lines = {key for key in lines if threads[key] == 'XLA Ops'}
    lines = ops_lines or {key for key in lines if 'XLA' not in threads[key]
                          and 'Steps' not in threads[key]}
  else:
    lines = {key for key, name in threads.items() if 'XLA' in name}
  totals = {}
  for e in events:
    if (e.get('ph') == 'X' and (e['pid'], e.get('tid')) in lines and
        not e['name'].startswith('ThunkExecutor')):
      kind = re.sub(r'\.\d+$', '', e['name'])
      totals[kind] = totals.get(kind, 0.) + e['dur']
  busy = sum(totals.values())
  return [dict(op=op[:80], ms_per_step=us / 1e3 / steps, share=us / busy)
          for op, us in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]


def bench_model(name: str, config, input_shape, num_classes: int,
                args, peak: float) -> Dict[str, Any]:
  """Compile time, step time, examples/s, FLOP/s, MFU, memory of one model."""
  compiled, state, batch, compile_s = step_timing.compiled_train_step(
      config, input_shape, num_classes)
  times, state, step_metrics = step_timing.time_steps(
      compiled, state, batch, args.warmup, args.steps)
  step_s = statistics.median(times)
  gmacs = flops.gmacs(config, input_shape, num_classes)
  flop_per_s = (flops.TRAIN_FLOPS_PER_MAC * gmacs * 1e9 * config.batch_size /
                step_s)
  row = dict(model=name, batch=config.batch_size, gmacs=gmacs,
             compile_s=compile_s, step_s=step_s,
             step_s_spread=[min(times), max(times)],
             examples_per_s=config.batch_size / step_s,
             tflop_per_s=flop_per_s / 1e12,
             mfu=flop_per_s / (peak * jax.device_count()),
             peak_memory_mib=(
                 step_timing.peak_memory_bytes(compiled) or 0) / 2**20,
             loss=float(step_metrics['loss']))
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    row['device_peak_memory_mib'] = stats['peak_bytes_in_use'] / 2**20
  print(f'  {name}: {step_s * 1e3:.1f} ms/step, {row["examples_per_s"]:.1f} '
        f'ex/s, MFU {row["mfu"]:.1%}, compile {compile_s:.1f} s',
        file=sys.stderr, flush=True)
  if args.profile_dir:
    trace_dir = os.path.join(args.profile_dir, name)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      step_timing.time_steps(compiled, state, batch, 0, PROFILED_STEPS)
    row['profile'] = trace_summary(trace_dir, PROFILED_STEPS)
    print(markdown(row['profile'], [('op', f'{name}: ops'),
                                    ('ms_per_step', 'ms/step'),
                                    ('share', 'share')]), file=sys.stderr)
  return row


def device_memory_limit(args) -> int:
  """Bytes one device may use: `--memory_limit_gib`, else its allocator's."""
  if args.memory_limit_gib:
    return int(args.memory_limit_gib * 2**30)
  stats = jax.devices()[0].memory_stats() or {}
  if 'bytes_limit' not in stats:
    raise errors.UsageError('--max_batch: this device reports no memory '
                            'limit; set --memory_limit_gib.')
  return int(stats['bytes_limit'])  # Per device, as XLA's peak estimate.


def bench_max_batch(spec: Spec, remat: str, args, limit: int, peak: float
                    ) -> Dict[str, Any]:
  """The largest batch of `spec` whose train step fits in `limit` bytes.

  By XLA's peak estimate, which is about linear in the batch: two compiles (at
  2 and 8 times `--max_batch_multiple`) fit the line; the batch where it meets
  `limit` is compiled first, then `aot.largest_batch`'s search (out in
  doubling steps, then bisection) until a fitting and a failing batch are at
  most 5% (or one multiple) apart. One real step then runs at the batch that fits
  (10% less and again if the device runs out of memory all the same).
  """
  multiple = args.max_batch_multiple

  def rounded(batch):
    return max(multiple, int(batch) // multiple * multiple)

  def tolerance(batch):
    return max(multiple, rounded(batch * 0.05))

  def compiled_at(batch):
    config = spec_config(spec, with_options(args, remat=remat, batch=batch))
    program = step_timing.train_step_program(config, spec.input_shape,
                                             NUM_CLASSES)
    executable = program.train_step.lower(
        program.abstract_state,
        program.abstract_batch(program.config.batch_size)).compile()
    needs = step_timing.peak_memory_bytes(executable)
    print(f'    batch {batch}: {needs / 2**20:.0f} MiB', file=sys.stderr,
          flush=True)
    return program, executable, needs

  small, large = 2 * multiple, 8 * multiple
  programs = {small: compiled_at(small), large: compiled_at(large)}
  memory = {b: c[2] for b, c in programs.items()}  # Batch -> XLA's peak.
  per_example = max(1., (memory[large] - memory[small]) / (large - small))
  fixed = memory[small] - per_example * small
  predicted = rounded((limit - fixed) / per_example)
  result = dict(model=spec.name, remat=remat, limit_mib=limit / 2**20,
                per_example_mib=per_example / 2**20, fixed_mib=fixed / 2**20,
                predicted_batch=predicted)

  def fits(batch):
    programs[batch] = compiled_at(batch)
    memory[batch] = programs[batch][2]
    return memory[batch] <= limit

  fit, tried = aot.largest_batch(
      fits, multiple, predicted, limit=2**62, tolerance=tolerance,
      tried={b: m <= limit for b, m in memory.items()})
  over_batch = min((b for b, ok in tried.items() if not ok), default=None)
  if not fit:
    raise errors.UsageError(
        f'--max_batch: {spec.name} (remat={remat}) does not fit in '
        f'{limit / 2**20:.0f} MiB at batch {multiple}.')
  if over_batch is None:
    raise errors.UsageError(
        f'--max_batch: {spec.name} (remat={remat}) fits at every batch '
        f'tried, up to {fit}.')
  batch, over_peak = fit, memory[over_batch]
  program, compiled, _ = programs[batch]
  peak_bytes = memory[batch]
  for _ in range(3):
    try:
      times, *_ = step_timing.time_steps(
          compiled, program.init_state(), step_timing.random_batch(program),
          1, 2)
      break
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e):
        raise
      over_batch, over_peak = batch, peak_bytes
      batch = rounded(batch * 0.9)
      program, compiled, peak_bytes = compiled_at(batch)
  else:
    raise RuntimeError(f'{spec.name} remat={remat}: no batch ran.')
  step_s = min(times)
  gmacs = flops.gmacs(program.config, spec.input_shape, NUM_CLASSES)
  result.update(batch=batch, peak_memory_mib=peak_bytes / 2**20,
                over_batch=over_batch, over_peak_memory_mib=over_peak / 2**20,
                step_s=step_s, examples_per_s=batch / step_s,
                # Model FLOPs: a rematerialised forward pass is not counted.
                mfu=flops.TRAIN_FLOPS_PER_MAC * gmacs * 1e9 * batch / step_s /
                (peak * jax.device_count()))
  print(f'  {spec.name} remat={remat}: largest batch {batch} '
        f'({peak_bytes / 2**20:.0f} of {limit / 2**20:.0f} MiB; {over_batch} '
        f'needs {over_peak / 2**20:.0f}), {result["examples_per_s"]:.1f} ex/s, '
        f'MFU {result["mfu"]:.1%}', file=sys.stderr, flush=True)
  return result


def bench_layouts(specs: Sequence[Spec], depths: Sequence[int],
                  args) -> List[Dict[str, Any]]:
  """Step seconds of each of `specs` at each depth, unrolled and with
  `nn.scan` (the same parameters), and scan/unrolled; for a spec with a
  `baseline` (TokenFuser's: the TokenLearner without it) the step-time
  ratio to it beside the GMAC ratio. The programs of one depth are timed
  in turns (`--steps` each, in 3 rounds), so that drift of the machine
  falls on all alike."""
  rows = []
  for depth in depths:
    programs = {}
    for spec in specs:
      for scan in (False, True):
        config = spec_config(spec._replace(num_layers=depth),
                             with_options(args, scan=scan))
        compiled, state, batch, _ = step_timing.compiled_train_step(
            config, spec.input_shape, NUM_CLASSES)
        # Warm-up; then the same state, donated and returned, goes on.
        _, state, _ = step_timing.time_steps(compiled, state, batch,
                                             args.warmup, 0)
        programs[spec.name, scan] = [compiled, state, batch, []]
    for _ in range(3):
      for entry in programs.values():
        compiled, state, batch, times = entry
        more, entry[1], _ = step_timing.time_steps(
            compiled, state, batch, 0, max(args.steps // 3, 1))
        times.extend(more)
    step = {key: statistics.median(entry[3]) for key, entry in
            programs.items()}
    for spec in specs:
      config = spec_config(spec._replace(num_layers=depth), args)
      row = dict(model=spec.name, num_layers=depth,
                 gmacs=flops.gmacs(config, spec.input_shape, NUM_CLASSES),
                 unrolled_step_s=step[spec.name, False],
                 scan_step_s=step[spec.name, True])
      row['scan_ratio'] = row['scan_step_s'] / row['unrolled_step_s']
      rows.append(row)
    by_name = {row['model']: row for row in rows[-len(specs):]}
    for spec in specs:
      if spec.baseline in by_name:
        row, base = by_name[spec.name], by_name[spec.baseline]
        row['baseline'] = spec.baseline
        row['gmac_ratio'] = row['gmacs'] / base['gmacs']
        for kind in ('unrolled', 'scan'):
          ratio = row[f'{kind}_step_s'] / base[f'{kind}_step_s']
          row[f'{kind}_over_baseline'] = ratio
          row[f'{kind}_over_baseline_per_gmac'] = ratio / row['gmac_ratio']
    for row in rows[-len(specs):]:
      print(f'  {row["model"]} ({depth} layers): unrolled '
            f'{row["unrolled_step_s"] * 1e3:.1f} ms, nn.scan '
            f'{row["scan_step_s"] * 1e3:.1f} ms', file=sys.stderr, flush=True)
  return rows


# The reference model's constructor arguments, read from `config.model`
# (its keys are the reference's).
REFERENCE_KEYS = ('mlp_dim', 'num_layers', 'num_heads', 'tokenizer',
                  'hidden_size', 'representation_size', 'dropout_rate',
                  'attention_dropout_rate', 'classifier')


def reference_module(scenic_dir: str):
  """scenic's `projects/token_learner/model.py` from a checkout of
  google-research/scenic at `scenic_dir`."""
  if not os.path.isfile(os.path.join(scenic_dir, 'scenic', 'projects',
                                     'token_learner', 'model.py')):
    raise errors.UsageError(
        f'--reference={scenic_dir}: no scenic/projects/token_learner/'
        'model.py there; give the folder of a google-research/scenic '
        'checkout.')
  sys.path.insert(0, os.path.abspath(scenic_dir))
  # pylint: disable-next=g-import-not-at-top
  from scenic.projects.token_learner import model
  return model


def bench_reference(ref, specs: Sequence[Spec], depths: Sequence[int],
                    args) -> List[Dict[str, Any]]:
  """Forward + backward seconds of each image model of `specs` (unrolled) and
  of the reference's `TokenLearnerViT` built from the same `config.model`,
  with the same parameters and images (their logits checked equal first),
  timed in turns in 3 rounds; ref/ours per model and, for a spec with a
  `baseline`, each implementation's step ratio to it."""
  rows = []
  for depth in depths:
    programs = {}
    for spec in specs:
      if len(spec.input_shape) != 3:
        continue  # Images only: the reference's video stem takes other keys.
      config = spec_config(spec._replace(num_layers=depth),
                           with_options(args, scan=False))
      ours = models.build_model(config, NUM_CLASSES)
      theirs = ref.TokenLearnerViT(
          num_classes=NUM_CLASSES,
          **{k: config.model.get(k) for k in REFERENCE_KEYS})
      x = jax.random.normal(jax.random.PRNGKey(0),
                            (args.batch,) + spec.input_shape)
      labels = jax.nn.one_hot(jnp.arange(args.batch) % NUM_CLASSES,
                              NUM_CLASSES)
      params = nn.meta.unbox(jax.jit(functools.partial(
          ours.init, train=False))(jax.random.PRNGKey(0), x)['params'])
      # A non-zero head, so that equal logits say the whole model agrees.
      head = params['output_projection']
      params['output_projection'] = dict(head, kernel=0.01 * jax.random.normal(
          jax.random.PRNGKey(1), head['kernel'].shape))
      steps = {}
      for who, model in (('ours', ours), ('reference', theirs)):
        def loss(p, model=model):
          logits = model.apply({'params': p}, x, train=False)
          logits = logits[0] if isinstance(logits, tuple) else logits
          return (metrics.per_example_loss(logits, labels, False).mean(),
                  logits)
        steps[who] = jax.jit(jax.value_and_grad(loss, has_aux=True))
      (_, ours_logits), _ = steps['ours'](params)
      (_, ref_logits), _ = steps['reference'](params)
      np.testing.assert_allclose(ours_logits, ref_logits, rtol=1e-4,
                                 atol=1e-5, err_msg=spec.name)
      for who, step in steps.items():
        programs[spec.name, who] = (step, params, [])
    for _ in range(3):
      for step, params, times in programs.values():
        for _ in range(max(args.steps // 3, 1)):
          start = time.perf_counter()
          jax.block_until_ready(step(params))
          times.append(time.perf_counter() - start)
    median = {key: statistics.median(v[2]) for key, v in programs.items()}
    for spec in specs:
      if (spec.name, 'ours') not in median:
        continue
      row = dict(model=spec.name, num_layers=depth,
                 ours_s=median[spec.name, 'ours'],
                 reference_s=median[spec.name, 'reference'])
      row['ours_over_reference'] = row['ours_s'] / row['reference_s']
      if (spec.baseline, 'ours') in median:
        row['baseline'] = spec.baseline
        for who in ('ours', 'reference'):
          row[f'{who}_over_baseline'] = (median[spec.name, who] /
                                         median[spec.baseline, who])
      rows.append(row)
      print(f'  {spec.name} ({depth} layers): ours {row["ours_s"] * 1e3:.1f} '
            f'ms, reference {row["reference_s"] * 1e3:.1f} ms',
            file=sys.stderr, flush=True)
  return rows


def bench_compile(spec: Spec, args) -> Dict[str, Any]:
  """Train-step compile seconds and step seconds (median of `--steps` after
  `--warmup`) of `spec` unrolled and with `nn.scan`, and their ratios."""
  result = dict(model=spec.name)
  for scan in (False, True):
    config = spec_config(spec, with_options(args, scan=scan))
    compiled, state, batch, seconds = step_timing.compiled_train_step(
        config, spec.input_shape, NUM_CLASSES)
    times, *_ = step_timing.time_steps(compiled, state, batch, args.warmup,
                                       args.steps)
    kind = 'scan' if scan else 'unrolled'
    result[f'{kind}_compile_s'] = seconds
    result[f'{kind}_step_s'] = statistics.median(times)
    print(f'  {spec.name} scan={scan}: compile {seconds:.1f} s, step '
          f'{result[f"{kind}_step_s"] * 1e3:.1f} ms', file=sys.stderr,
          flush=True)
  result['ratio'] = result['scan_compile_s'] / result['unrolled_compile_s']
  result['step_ratio'] = result['scan_step_s'] / result['unrolled_step_s']
  result['num_layers'] = spec.num_layers or config_lib.VIT_SIZES[
      spec.variant.split('/')[0]][3]
  return result


def bench_input(name: str, batches: int) -> Dict[str, Any]:
  """Examples/s of the train iterator of `configs/<name>.py` alone."""
  # Imported here: the model benchmarks run without TensorFlow (GPU images).
  from tokenlearner_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
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
        value = (f'{value:.1%}' if key in ('mfu', 'efficiency', 'share') else
                 f'{value:.4g}')
      cells.append(str(value))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true',
                      help='The CPU-sized set (ViT-Ti, ViViT-Ti at 112).')
  parser.add_argument('--set', default='', choices=('',) + tuple(MODEL_SETS),
                      help='A set of models (default: small with --small, '
                      'else default); x2plus1d: the Section 6 network.')
  parser.add_argument('--channelwise', default='conv',
                      choices=('conv', 'shifts'),
                      help="X(2+1)D's channel-wise convolutions "
                      '(model.channelwise_impl).')
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
                      choices=('einsum', 'fused', 'cudnn'))
  parser.add_argument('--skip', default='',
                      help="Comma-separated parts to skip: 'models', "
                      "'compile', 'input', 'demo'.")
  parser.add_argument('--input_batches', type=int, default=100)
  parser.add_argument('--max_batch', default='',
                      help='Comma-separated models whose largest batch to '
                      'find.')
  parser.add_argument('--layouts', default='',
                      help='Comma-separated depths (e.g. 12,24) at which to '
                      'time LAYOUT_SETS[--set or default] unrolled and with '
                      'nn.scan, and TokenFuser against its TokenLearner.')
  parser.add_argument('--reference', default='',
                      help='With --layouts: a google-research/scenic '
                      'checkout whose TokenLearnerViT to time beside each '
                      'image model (same parameters and images).')
  parser.add_argument('--max_batch_remat', default='none,nothing_saveable',
                      help='The remat policies to find it for.')
  parser.add_argument('--max_batch_multiple', type=int, default=8,
                      help='The batch is a multiple of this.')
  parser.add_argument('--memory_limit_gib', type=float, default=0.,
                      help="Device memory for --max_batch (default: the "
                      "allocator's limit).")
  parser.add_argument('--profile_dir', default='',
                      help='Trace 3 more steps of each model there with '
                      'jax.profiler (perfetto JSON too) and print the ops '
                      'that took longest.')
  parser.add_argument('--out', default='', help='Write the results as JSON.')
  return parser.parse_args(argv)


def main(argv=None) -> Dict[str, Any]:
  args = parse_args(argv)
  skip = set(filter(None, args.skip.split(',')))
  which = args.set or ('small' if args.small else 'default')
  names = list(filter(None, args.models.split(',')))
  max_batch_names = list(filter(None, args.max_batch.split(',')))
  remats = list(filter(None, args.max_batch_remat.split(',')))
  for flag, given in (('--models', names), ('--max_batch', max_batch_names)):
    unknown = [m for m in given if m not in ALL_SPECS]
    if unknown:
      raise errors.UsageError(
          f'{flag}: unknown {unknown}; known: {sorted(ALL_SPECS)}.')
  unknown = [r for r in remats + [args.remat] if r not in REMAT_POLICIES]
  if unknown:
    raise errors.UsageError(f'--remat/--max_batch_remat: unknown {unknown}; '
                            f'known: {sorted(REMAT_POLICIES)}.')
  depths = args.layouts.split(',') if args.layouts else []
  layout_specs = LAYOUT_SETS[args.set if args.set in LAYOUT_SETS else
                             'default']
  deepest = max(s.kwargs.get('tokenlearner_loc') or 0 for s in layout_specs)
  if not all(d.isdigit() and int(d) > deepest for d in depths):
    raise errors.UsageError(
        f'--layouts={args.layouts}: comma-separated depths, each more than '
        f'{deepest} (where TokenLearner sits).')
  if args.reference and not depths:
    raise errors.UsageError('--reference: needs --layouts (the depths to '
                            'time).')
  reference = reference_module(args.reference) if args.reference else None
  limit = device_memory_limit(args) if max_batch_names else None
  if 'models' in skip:
    specs = []
  else:
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
                   channelwise=args.channelwise,
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
    results['compile'] = bench_compile(
        COMPILE_SETS['small' if args.small else 'default'], args)
  if 'demo' not in skip:
    demo = load_config_file('demo_moving_digits')
    demo.model_dtype_str = args.dtype
    data_shape = (8, 32, 32, 3)  # moving_digits clips.
    results['demo_train_step'] = bench_model(
        'demo_moving_digits', demo, data_shape, 40,
        with_options(args, steps=max(args.steps, 20)),
        peak)
  if args.layouts:
    results['layouts'] = bench_layouts(layout_specs, [int(d) for d in depths],
                                       args)
  if args.reference:
    results['reference'] = bench_reference(
        reference, layout_specs, [int(d) for d in depths], args)
  if max_batch_names:
    results['max_batch'] = [
        bench_max_batch(ALL_SPECS[name], remat, args, limit, peak)
        for name in max_batch_names for remat in remats]
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
  if model_rows:
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
          f's (ratio {c["ratio"]:.2f}); step: unrolled '
          f'{c["unrolled_step_s"] * 1e3:.1f} ms, nn.scan '
          f'{c["scan_step_s"] * 1e3:.1f} ms (ratio {c["step_ratio"]:.2f}).')
  if 'layouts' in results:
    print('\nnn.scan against the unrolled loop (step seconds, median); '
          'TokenFuser against its TokenLearner:\n')
    print(markdown(results['layouts'], [
        ('model', 'model'), ('num_layers', 'layers'), ('gmacs', 'GMACs'),
        ('unrolled_step_s', 'unrolled s'), ('scan_step_s', 'nn.scan s'),
        ('scan_ratio', 'scan / unrolled'), ('baseline', 'baseline'),
        ('gmac_ratio', 'GMAC ratio'),
        ('unrolled_over_baseline', 'step ratio (unrolled)'),
        ('scan_over_baseline', 'step ratio (nn.scan)'),
        ('unrolled_over_baseline_per_gmac', 'step / GMAC ratio (unrolled)'),
        ('scan_over_baseline_per_gmac', 'step / GMAC ratio (nn.scan)')]))
  if 'reference' in results:
    print('\nOurs against the reference (scenic) model, forward + backward '
          'seconds (median):\n')
    print(markdown(results['reference'], [
        ('model', 'model'), ('num_layers', 'layers'), ('ours_s', 'ours s'),
        ('reference_s', 'reference s'), ('ours_over_reference',
                                         'ours / reference'),
        ('baseline', 'baseline'), ('ours_over_baseline', 'ours / baseline'),
        ('reference_over_baseline', 'reference / baseline')]))
  if 'max_batch' in results:
    print('\nLargest batch in device memory (XLA\'s peak estimate; one '
          'step run at it):\n')
    print(markdown(results['max_batch'], [
        ('model', 'model'), ('remat', 'remat'), ('batch', 'largest batch'),
        ('peak_memory_mib', 'XLA peak MiB'), ('limit_mib', 'limit MiB'),
        ('over_batch', 'next batch'), ('over_peak_memory_mib', 'its MiB'),
        ('per_example_mib', 'MiB/example'), ('step_s', 'step s'),
        ('examples_per_s', 'examples/s'), ('mfu', 'MFU')]))
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
  errors.exit_on_known_fault(main)
