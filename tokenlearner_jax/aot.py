r"""Ahead-of-time compiles of the train and eval steps for a TPU slice.

  python -m tokenlearner_jax.aot --config=configs/vivit_k400.py \
      --topology=v4:2x2x2 [--config.mesh.fsdp=4 ...] [--max_batch] \
      [--json=PATH] [--hlo_dir=DIR] [--unrolled_costs]

Needs libtpu (`pip install -e '.[tpu]'`), no TPU: `jax.experimental.
topologies.get_topology_desc` gives compile-only devices of the slice, and
the real TPU compiler compiles for them. The train step, its state shardings
and the batch sharding are the ones `tokenlearner_jax.train` builds
(`train_steps.build_program`), on the mesh of `config.mesh` over the slice's
devices. Printed per device:
parameter + optimizer bytes, temporaries, peak against the device's HBM, and
whether it fits; the compile time; the compiler's flops and time estimate
(`cost_analysis()['optimal_seconds']` when it is usable, else a roofline
bound from the compiled flops and bytes against the chip's published peaks)
and, from them, an MFU and examples/s per chip. These are the compiler's
estimates: nothing here ran on a TPU. A step the compiler refuses for HBM
(RESOURCE_EXHAUSTED) is reported as not fitting, with the temporaries it
asked for. `--max_batch`: the largest global batch that fits, searched over
multiples of the data-parallel size.

A device is what jax sees: one TensorCore on v3 and v4 (two per chip, each
with half the chip's HBM), one chip on v5e and v5p (v5p's two cores as one
megacore device).
"""

import dataclasses
import json
import math
import os
import re
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from absl import flags

# libtpu lets one process at a time load it (a lockfile) unless told
# otherwise; compile-only use needs no TPU to itself.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections
from ml_collections import config_flags

from tokenlearner_jax import errors
from tokenlearner_jax import flops
from tokenlearner_jax import sharding
from tokenlearner_jax import summary
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures of a TPU generation.

  Attributes:
    name: The generation, as `--topology` names it.
    hbm_bytes: HBM per chip.
    bf16_flops: Peak bf16 FLOP/s per chip.
    hbm_bandwidth: HBM bytes/s per chip.
  """
  name: str
  hbm_bytes: int
  bf16_flops: float
  hbm_bandwidth: float


# Sources (Cloud TPU system architecture pages, cloud.google.com/tpu/docs/):
# v3: tpus "TPU v3" (32 GiB HBM, 123 TFLOP/s bf16, 900 GB/s per chip);
# v4: /v4 (32 GiB, 275 TFLOP/s, 1,200 GB/s); v5e: /v5e (16 GiB, 197 TFLOP/s,
# 819 GB/s); v5p: /v5p (95 GiB, 459 TFLOP/s, 2,765 GB/s).
CHIPS: Dict[str, Chip] = {
    'v3': Chip('v3', 32 * GiB, 123e12, 900e9),
    'v4': Chip('v4', 32 * GiB, 275e12, 1200e9),
    'v5e': Chip('v5e', 16 * GiB, 197e12, 819e9),
    'v5litepod': Chip('v5e', 16 * GiB, 197e12, 819e9),
    'v5p': Chip('v5p', 95 * GiB, 459e12, 2765e9),
}


class TopologyError(errors.KnownFault, ValueError):
  """A `--topology` that names no known TPU slice."""


@dataclasses.dataclass(frozen=True)
class Slice:
  """The compile-only devices of a TPU slice.

  Attributes:
    name: `--topology`, e.g. 'v4:2x2x2'.
    chip: The generation's published figures.
    devices: The devices jax compiles for.
    devices_per_chip: 2 for v3 and v4 (one per TensorCore), else 1.
  """
  name: str
  chip: Chip
  devices: Tuple[Any, ...]
  devices_per_chip: int

  @property
  def num_chips(self) -> int:
    return len(self.devices) // self.devices_per_chip

  @property
  def device_hbm(self) -> int:
    return self.chip.hbm_bytes // self.devices_per_chip

  @property
  def device_flops(self) -> float:
    return self.chip.bf16_flops / self.devices_per_chip

  @property
  def device_bandwidth(self) -> float:
    return self.chip.hbm_bandwidth / self.devices_per_chip


def tpu_slice(name: str) -> Slice:
  """The slice `name` ('v4:2x2x2', 'v5e:4x4', ...) as compile-only devices."""
  generation = name.split(':')[0]
  if generation not in CHIPS or ':' not in name:
    raise TopologyError(f'--topology={name!r}: expected GENERATION:SHAPE with '
                        f'GENERATION one of {sorted(CHIPS)}, e.g. v4:2x2x2.')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    topology = topologies.get_topology_desc(topology_name=name,
                                            platform='tpu')
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise TopologyError(f'--topology={name!r}: no such TPU slice, or libtpu '
                        f"is missing (pip install -e '.[tpu]'): {first}"
                        ) from None
  devices = tuple(topology.devices)
  chips = {tuple(d.coords) for d in devices}
  return Slice(name, CHIPS[generation], devices, len(devices) // len(chips))


def _num_steps(config: ml_collections.ConfigDict) -> int:
  """The schedule's length (it changes constants only, not the program)."""
  if config.get('num_training_steps'):
    return int(config.num_training_steps)
  return 100_000


def _shard_bytes(tree) -> int:
  """Bytes of the largest shard of each leaf (`ShapeDtypeStruct`s carrying
  shardings), summed: what one device holds."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree_util.tree_leaves(tree))


@dataclasses.dataclass
class Compiled:
  """One compiled step's figures, per device.

  Attributes:
    name: 'train' or 'eval'.
    batch_size: Global batch.
    compile_s: Seconds to lower and compile.
    state_bytes: Parameters + optimizer state (train) or variables (eval).
    argument_bytes: All arguments (state and batch).
    output_bytes: Outputs not aliased to arguments' buffers.
    temp_bytes: Temporaries.
    peak_bytes: argument + output - alias + temporaries.
    fits: Whether `peak_bytes` is within the device's HBM.
    flops: The compiled program's flops: XLA's cost analysis's, plus
      `kernel_flops`.
    bytes_accessed: Its HBM bytes accessed: the cost analysis's, plus
      `kernel_bytes`.
    kernel_flops: Pallas attention kernels' flops that the cost analysis
      leaves out (`kernel_costs`, analytic).
    kernel_bytes: What the kernels read again inside themselves, which the
      cost analysis leaves out (`kernel_costs`, analytic).
    optimal_seconds: XLA's time estimate (None if it gave none).
    roofline_seconds: max(max(flops, model_flops) / peak FLOP/s, bytes / HBM
      bandwidth): XLA's flops miss Pallas kernels' and count a scanned
      body once, so the analytic count bounds the compute term from below.
    seconds: The estimate used: `optimal_seconds` when it is positive and
      no faster than the roofline bound, else `roofline_seconds`.
    estimate: Which: 'xla optimal_seconds' or 'roofline'.
    model_flops: Analytic FLOPs of the step per device (GMACs x 6 train,
      x 2 eval, over the batch).
    mfu: model_flops / (seconds x the device's peak bf16 FLOP/s).
    examples_per_s_per_chip: batch / chips / seconds.
    hlo: The compiled program's text (kept for tests, not printed).
    exhausted: The compiler's RESOURCE_EXHAUSTED line when it refused the
      program for HBM ('' when it compiled): then `temp_bytes` is what it
      asked for and there are no estimates.
  """
  name: str
  batch_size: int
  compile_s: float
  state_bytes: int
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  peak_bytes: int
  fits: bool
  flops: float
  bytes_accessed: float
  optimal_seconds: Optional[float]
  roofline_seconds: float
  seconds: float
  estimate: str
  model_flops: float
  mfu: float
  examples_per_s_per_chip: float
  kernel_flops: float = 0.
  kernel_bytes: float = 0.
  hlo: str = dataclasses.field(default='', repr=False)
  exhausted: str = ''

  def as_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    out.pop('hlo')
    return out


def _cost(compiled) -> Dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  return dict(cost or {})


_HLO_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 's8': 1,
              'u8': 1, 'pred': 1}
# Pallas attention kernels (instruction-name prefixes) whose outer loop runs
# over query blocks (the key-side operands stream once per query block) or
# over key blocks (the query-side operands stream once per key block), with
# the [L, L] x H products each computes (splash's backward kernel: the
# logits again, the probabilities' and the values' gradients, the keys' and
# the queries').
_OVER_QUERY_BLOCKS = {'flash_attention': 2, 'flash_mha_bwd_dq': 3,
                      'splash_mha_fwd': 2}
_OVER_KEY_BLOCKS = {'flash_mha_bwd_dkv': 4, 'splash_mha_dkv': 5}
_KERNEL_PRODUCTS = {**_OVER_QUERY_BLOCKS, **_OVER_KEY_BLOCKS}


def kernel_costs(hlo: str) -> Tuple[float, float]:
  """(FLOPs, HBM bytes) of the Pallas attention kernels of a compiled
  program that XLA's cost analysis leaves out: analytic, from each kernel's
  operand shapes.

  FLOPs: 2 x the products' multiply-adds (`[..., Lq, H] x [..., Lk, H]`
  each), for each kernel that carries no cost estimate of its own (flash's
  forward kernel does; XLA counts it). Bytes: what a kernel reads again
  inside itself (XLA counts each operand and result once). Queries, keys and
  values are a kernel's first three float operands; the key side is keys,
  values and the key segment ids, the query side every other float operand
  (queries, output gradients, softmax statistics) and the query segment
  ids. A kernel looping over query blocks reads the key side once per
  block; one looping over key blocks, the query side once per block. The
  blocks: a splash kernel's from its block mask (`s8[1, query blocks, key
  blocks]`), a flash kernel's `PALLAS_BLOCK`. Segment ids are
  `[..., L, 128]` on the side of the kernel's outer loop and `[..., 8, L]`
  on the other (flash: the queries' and keys' in every kernel).
  """
  from tokenlearner_jax.models import common  # pylint: disable=g-import-not-at-top
  flops_, bytes_ = 0., 0.
  for line in hlo.splitlines():
    if 'custom_call_target="tpu_custom_call"' not in line:
      continue
    name = line.strip().lstrip('%').split(' ', 1)[0]
    kind = [k for k in _KERNEL_PRODUCTS if name.startswith(k)]
    found = re.search(
        r'operand_layout_constraints=\{((?:[^{}]|\{[^{}]*\})*)\}', line)
    if not kind or not found:
      continue
    over_queries = kind[0] in _OVER_QUERY_BLOCKS
    operands = [(dtype, tuple(int(d) for d in dims.split(',') if d))
                for dtype, dims in re.findall(r'(\w+)\[([\d,]*)\]',
                                              found.group(1))]
    floats = [o for o in operands if o[0] in ('f32', 'bf16', 'f16')]
    if len(floats) < 3:
      continue
    (_, q), (_, k) = floats[:2]
    if '"cost_estimate"' not in line:
      flops_ += (2 * _KERNEL_PRODUCTS[kind[0]] * math.prod(q[:-1]) * k[-2] *
                 q[-1])
    grid = [o[1] for o in operands if o[0] == 's8' and len(o[1]) == 3]
    if grid:  # Splash: [1, query blocks, key blocks].
      blocks = grid[0][1] if over_queries else grid[0][2]
    else:
      blocks = q[-2] // common.PALLAS_BLOCK

    def size(o):
      return _HLO_BYTES[o[0]] * math.prod(o[1])

    rows = [o for o in operands if o[0] == 's32' and o[1][-1:] == (128,)]
    lanes = [o for o in operands if o[0] == 's32' and o[1][-2:-1] == (8,)]
    query_ids, key_ids = (lanes, rows) if grid and not over_queries else (
        rows, lanes)
    key_side = sum(map(size, floats[1:3] + key_ids))
    query_side = sum(map(size, floats[:1] + floats[3:] + query_ids))
    bytes_ += (blocks - 1) * (key_side if over_queries else query_side)
  return flops_, bytes_


def analyse(name: str, lowered_fn: Callable[[], Any], batch_size: int,
            state_bytes: int, gmacs: float, the_slice: Slice,
            keep_hlo: bool = False,
            cost_fn: Optional[Callable[[], Any]] = None) -> Compiled:
  """Compiles `lowered_fn()` and reads its memory and cost analyses; a
  program the compiler finds too large for the device's HBM comes back as
  not fitting, with the temporaries it asked for (`_exhausted`). With
  `cost_fn`, the flops, bytes and time estimate are those of the program it
  lowers (compiled for them alone: `compile_train`'s unrolled twin)."""
  start = time.perf_counter()
  lowered = lowered_fn()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return _exhausted(name, batch_size, time.perf_counter() - start,
                      state_bytes, str(e), the_slice)
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes -
          mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  costed = cost_fn().compile() if cost_fn else compiled
  cost = _cost(costed)
  kernel_flops, kernel_bytes = kernel_costs(costed.as_text())
  flops_ = float(cost.get('flops', 0.0)) + kernel_flops
  bytes_ = float(cost.get('bytes accessed', 0.0)) + kernel_bytes
  optimal = cost.get('optimal_seconds')
  per_mac = (flops.TRAIN_FLOPS_PER_MAC if name == 'train' else
             flops.EVAL_FLOPS_PER_MAC)
  model_flops = per_mac * gmacs * 1e9 * batch_size / len(the_slice.devices)
  # XLA counts no flops inside custom calls (Pallas kernels) and a scanned
  # body once: the compute term takes the larger of its count and the
  # analytic one.
  roofline = max(max(flops_, model_flops) / the_slice.device_flops,
                 bytes_ / the_slice.device_bandwidth)
  usable = (optimal is not None and math.isfinite(optimal) and optimal > 0
            and optimal >= roofline)
  seconds = float(optimal) if usable else roofline
  return Compiled(
      name=name, batch_size=batch_size, compile_s=compile_s,
      state_bytes=state_bytes, argument_bytes=mem.argument_size_in_bytes,
      output_bytes=mem.output_size_in_bytes - mem.alias_size_in_bytes,
      temp_bytes=mem.temp_size_in_bytes, peak_bytes=peak,
      fits=peak <= the_slice.device_hbm, flops=flops_,
      bytes_accessed=bytes_, kernel_flops=kernel_flops,
      kernel_bytes=kernel_bytes,
      optimal_seconds=None if optimal is None else float(optimal),
      roofline_seconds=roofline, seconds=seconds,
      estimate=('xla optimal_seconds' if usable else 'roofline') + (
          ' (costs of the unrolled twin)' if cost_fn else ''),
      model_flops=model_flops,
      mfu=model_flops / (seconds * the_slice.device_flops) if seconds else 0.,
      examples_per_s_per_chip=(batch_size / the_slice.num_chips / seconds
                               if seconds else 0.),
      hlo=compiled.as_text() if keep_hlo else '')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What `train` builds for `config` on a slice's mesh (all abstract).

  Attributes:
    program: The step program (`train_steps.build_program`).
    state: Its abstract train state, carrying its shardings.
    gmacs: Multiply-adds per example (`flops.gmacs`).
  """
  program: train_steps.StepProgram
  state: train_steps.TrainState
  gmacs: float


def setup(config: ml_collections.ConfigDict, the_slice: Slice) -> Setup:
  """`train`'s step program for `config` on `the_slice`."""
  config = schema.complete(config)
  num_classes = summary.example_num_classes(config)
  input_shape = tuple(summary.example_input_shape(config))
  program = train_steps.build_program(
      config, sharding.make_mesh(config, the_slice.devices), input_shape,
      num_classes, _num_steps(config))
  return Setup(program, program.abstract_state,
               flops.gmacs(config, input_shape, num_classes))


def unrolled_twin(s: Setup, the_slice: Slice) -> Optional[Setup]:
  """`s`'s program with `model.scan_layers=False`, when it scans: XLA
  counts a scanned body's flops and bytes once, the twin's every layer's."""
  if not getattr(s.program.model.config, 'scan_layers', False):
    return None
  twin = ml_collections.ConfigDict(s.program.config.to_dict())
  twin.model.scan_layers = False
  return setup(twin, the_slice)


def compile_train(s: Setup, the_slice: Slice, batch_size: int,
                  keep_hlo: bool = False,
                  costs_from: Optional[Setup] = None) -> Compiled:
  """The train step of `train` at global `batch_size`, compiled; with
  `costs_from` (`unrolled_twin`), its flops, bytes and time are that
  program's."""
  train_steps.check_batch_size(batch_size, s.program.mesh)
  batch = s.program.abstract_batch(batch_size)
  cost_fn = costs_from and (
      lambda: costs_from.program.train_step.lower(costs_from.state, batch))
  return analyse('train',
                 lambda: s.program.train_step.lower(s.state, batch),
                 batch_size, _shard_bytes(s.state.params) + _shard_bytes(
                     s.state.opt_state), s.gmacs, the_slice, keep_hlo,
                 cost_fn)


def compile_eval(s: Setup, the_slice: Slice, batch_size: int,
                 keep_hlo: bool = False) -> Compiled:
  """The eval step of `train` (one view per example), compiled;
  `batch_size` a multiple of the devices (the padded eval batch)."""
  variables = train_steps.model_variables(s.state.params,
                                          s.state.model_state)
  batch = s.program.abstract_batch(batch_size, mask=True)
  return analyse('eval',
                 lambda: s.program.eval_step.lower(variables, batch),
                 batch_size, _shard_bytes(variables), s.gmacs, the_slice,
                 keep_hlo)


def largest_batch(fits: Callable[[int], bool], unit: int, start: int,
                  limit: int = 1 << 16,
                  tolerance: Optional[Callable[[int], int]] = None,
                  tried: Optional[Dict[int, bool]] = None
                  ) -> Tuple[int, Dict[int, bool]]:
  """The largest batch, a multiple of `unit`, for which `fits` holds.

  The one largest-batch search (`max_batch` here, `scripts/benchmark.py`'s
  `--max_batch`). `fits` is assumed monotone and is called at most once per
  batch. From `start`, batches further out (the distance doubling from one
  `tolerance`) until one fits and a larger one does not, then bisection until
  the two are at most `tolerance(fit)` apart (default: one `unit`, i.e. the
  exact answer).

  Args:
    fits: batch -> whether it fits.
    unit: The step between batches (the data-parallel size).
    start: The first batch tried (rounded to a multiple of `unit`).
    limit: The largest batch tried.
    tolerance: fitting batch -> how far above it the search may stop.
    tried: batch -> fits, already known (counted as tried, not called).

  Returns:
    The largest fitting batch found (0: not even `unit` fits), and each
    batch tried -> fits.
  """
  tolerance = tolerance or (lambda batch: unit)
  tried = dict(tried or {})
  top = max(unit, limit // unit * unit)

  def rounded(batch: int) -> int:
    return min(top, max(unit, int(batch) // unit * unit))

  probe = rounded(start)
  distance, probed = tolerance(probe), set()
  while True:
    if probe not in tried:
      tried[probe] = fits(probe)
    probed.add(probe)
    fit = max((b for b, ok in tried.items() if ok), default=None)
    over = min((b for b, ok in tried.items() if not ok), default=None)
    if fit is None:
      if probe == unit:
        return 0, tried
      probe = rounded(probe - distance)
    elif over is None:
      if fit == top:
        return fit, tried
      probe = rounded(probe + distance)
    elif over - fit <= tolerance(fit):
      return fit, tried
    else:
      # Bisection; a bound known beforehand (not probed here) is approached
      # in the doubling steps from the probed side instead.
      middle = rounded((fit + over) // 2)
      if fit not in probed:
        probe = max(middle, rounded(over - distance))
      elif over not in probed:
        probe = min(middle, fit + distance)
      else:
        probe = middle
      if probe in tried:
        return fit, tried
    distance *= 2


def max_batch(s: Setup, the_slice: Slice, start: int,
              limit: int = 1 << 16) -> Tuple[int, Dict[int, bool]]:
  """The largest global train batch (a multiple of the data-parallel size)
  whose peak fits the device's HBM (`largest_batch` from `start`). Returns it
  (0: not even one example per data shard) and each size tried -> fits."""
  return largest_batch(
      lambda batch: compile_train(s, the_slice, batch).fits,
      s.program.data_parallel, start, limit)


def _gib(x: float) -> str:
  if x < GiB:
    return f'{x / 2**20:,.1f} MiB'
  return f'{x / GiB:,.2f} GiB'


_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def _exhausted(name: str, batch_size: int, compile_s: float, state_bytes: int,
               message: str, the_slice: Slice) -> Compiled:
  """A program the compiler refused for HBM: the temporaries it needed
  (from its message, 0 where the message gives none), no estimates."""
  needed = re.search(r'required for HLO temporaries \(([\d.]+)([KMGT])\)',
                     message) or re.search(r'Used ([\d.]+)([KMGT]) of',
                                           message)
  temp = int(float(needed.group(1)) * _UNITS[needed.group(2)]) if needed else 0
  return Compiled(
      name=name, batch_size=batch_size, compile_s=compile_s,
      state_bytes=state_bytes, argument_bytes=state_bytes, output_bytes=0,
      temp_bytes=temp, peak_bytes=state_bytes + temp, fits=False, flops=0.,
      bytes_accessed=0., optimal_seconds=None, roofline_seconds=0.,
      seconds=0., estimate='none: does not fit', model_flops=0., mfu=0.,
      examples_per_s_per_chip=0.,
      exhausted=message.strip().splitlines()[0])


def report(c: Compiled, the_slice: Slice) -> str:
  """`c` as printed lines."""
  optimal = ('none' if c.optimal_seconds is None
             else f'{c.optimal_seconds:.4g} s')
  if c.exhausted:
    return '\n'.join([
        f'{c.name} step, global batch {c.batch_size}: DOES NOT FIT (the '
        f'compiler ran out of HBM after {c.compile_s:.1f} s)',
        f'  per device: state (parameters + optimizer) {_gib(c.state_bytes)},'
        f' temporaries {_gib(c.temp_bytes)}: at least {_gib(c.peak_bytes)} '
        f'of {_gib(the_slice.device_hbm)} HBM',
        f'  compiler: {c.exhausted}'])
  lines = [
      f'{c.name} step, global batch {c.batch_size}: compiled in '
      f'{c.compile_s:.1f} s',
      f'  per device: state (parameters + optimizer) {_gib(c.state_bytes)}, '
      f'arguments {_gib(c.argument_bytes)}, outputs {_gib(c.output_bytes)}, '
      f'temporaries {_gib(c.temp_bytes)}',
      f'  peak {_gib(c.peak_bytes)} of {_gib(the_slice.device_hbm)} HBM '
      f"({c.peak_bytes / the_slice.device_hbm:.0%}): "
      f"{'fits' if c.fits else 'DOES NOT FIT'}",
      f'  compiler estimates (not measured): {c.flops / 1e12:,.3f} TFLOP and '
      f'{c.bytes_accessed / GiB:,.2f} GiB HBM traffic per device' + (
          f' ({(c.flops - c.kernel_flops) / 1e12:,.3f} TFLOP and '
          f'{(c.bytes_accessed - c.kernel_bytes) / GiB:,.2f} GiB counted by '
          f'XLA + {c.kernel_flops / 1e12:,.3f} TFLOP and '
          f'{c.kernel_bytes / GiB:,.2f} GiB inside the Pallas attention '
          'kernels, analytic)' if c.kernel_flops or c.kernel_bytes else '') +
      f'; XLA optimal_seconds {optimal}, roofline {c.roofline_seconds:.4g} s;'
      f' using {c.estimate}: {c.seconds:.4g} s per step',
      f'  -> estimated MFU {c.mfu:.1%} (analytic {c.model_flops / 1e12:,.3f} '
      f'TFLOP per device), {c.examples_per_s_per_chip:,.2f} examples/s per '
      'chip',
  ]
  return '\n'.join(lines)


def _write_hlo(hlo_dir: Optional[str], c: Compiled) -> None:
  if hlo_dir:
    os.makedirs(hlo_dir, exist_ok=True)
    with open(os.path.join(hlo_dir, f'{c.name}.hlo'), 'w') as f:
      f.write(c.hlo)


def plan(config: ml_collections.ConfigDict, topology: str,
         find_max_batch: bool = False, eval_step: bool = True,
         hlo_dir: Optional[str] = None,
         unrolled_costs: bool = False) -> Dict[str, Any]:
  """Compiles `config`'s train (and eval) step for `topology`; returns the
  figures and prints them. With `hlo_dir`, writes each compiled program's
  text there (`train.hlo`, `eval.hlo`). With `unrolled_costs`, a scanned
  model's train-step flops, bytes and time come from its unrolled twin
  (compiled for them alone)."""
  the_slice = tpu_slice(topology)
  s = setup(config, the_slice)
  program = s.program
  config = program.config  # Completed.
  print(f'{topology}: {len(the_slice.devices)} devices on '
        f'{the_slice.num_chips} chips ({the_slice.devices_per_chip} per chip, '
        f'{_gib(the_slice.device_hbm)} HBM and '
        f'{the_slice.device_flops / 1e12:.1f} bf16 TFLOP/s each); mesh '
        f'{dict(program.mesh.shape)}; rules {sharding.rules(config)}')
  print(f'model {config.model_name}, input {program.input_shape}, '
        f'{program.num_classes} classes, {s.gmacs:.4g} GMACs per example, '
        f'optimizer {config.optimizer}, dtype {config.model_dtype_str}')
  out: Dict[str, Any] = dict(
      topology=topology, devices=len(the_slice.devices),
      chips=the_slice.num_chips, device_hbm=the_slice.device_hbm,
      mesh=dict(program.mesh.shape), gmacs=s.gmacs,
      input_shape=program.input_shape, jax=jax.__version__)
  keep = hlo_dir is not None
  twin = unrolled_twin(s, the_slice) if unrolled_costs else None
  if getattr(program.model.config, 'scan_layers', False) and not twin:
    print('model.scan_layers: the compiler counts each scanned body once, '
          'so the flops, bytes and time below are too low '
          '(--unrolled_costs takes them from the unrolled twin).')
  train = compile_train(s, the_slice, config.batch_size, keep, twin)
  print(report(train, the_slice))
  out['train'] = train.as_dict()
  _write_hlo(hlo_dir, train)
  if eval_step:
    # As the input pipeline pads it (`batching.padded_eval_batch_size`).
    eval_batch = -(-config.eval_batch_size // len(the_slice.devices)) * len(
        the_slice.devices)
    evaluated = compile_eval(s, the_slice, eval_batch, keep)
    print(report(evaluated, the_slice))
    out['eval'] = evaluated.as_dict()
    _write_hlo(hlo_dir, evaluated)
  if find_max_batch:
    largest, tried = max_batch(s, the_slice, config.batch_size)
    print(f'largest global train batch that fits: {largest} (tried: '
          + ', '.join(f"{k} {'fits' if v else 'no'}"
                      for k, v in sorted(tried.items())) + ')')
    out['max_batch'] = largest
    out['max_batch_tried'] = {str(k): v for k, v in tried.items()}
  return out


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('topology', None, "TPU slice, e.g. 'v4:2x2x2', "
                      "'v5e:4x4', 'v5p:4x4x4'.")
  flags.DEFINE_bool('max_batch', False, 'Also find the largest global train '
                    'batch that fits.')
  flags.DEFINE_bool('eval', True, 'Also compile the eval step.')
  flags.DEFINE_string('json', None, 'Write the figures to this JSON file.')
  flags.DEFINE_string('hlo_dir', None, 'Write the compiled programs\' text '
                      'here (train.hlo, eval.hlo).')
  flags.DEFINE_bool('unrolled_costs', False, 'With model.scan_layers: take '
                    "the train step's flops, bytes and time from the "
                    'unrolled twin (one more, slower, compile).')


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  out = errors.exit_on_known_fault(plan, f.config, f.topology, f.max_batch,
                                   f.eval, f.hlo_dir, f.unrolled_costs)
  if f.json:
    with open(f.json, 'w') as file:
      json.dump(out, file, indent=1)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config', 'topology'])
  errors.run(main)
