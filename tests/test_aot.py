"""`tokenlearner_jax.aot` on the TPU compiler (libtpu, compile-only devices):
what the compiled train step of the demo and of a ViT-L does on a 4-chip
v5e slice. Skipped without libtpu (the `tpu` extra), unless
`TOKENLEARNER_REQUIRE_TPU_COMPILER=1` (CI sets it), which makes a missing
libtpu a failure."""

import importlib.util
import math
import os
import re
import types
from typing import List, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import SingleDeviceSharding
import pytest

from tests import testing
from tokenlearner_jax import aot
from tokenlearner_jax import errors
from tokenlearner_jax.models import common

TOPOLOGY = 'v5e:2x2'  # 4 chips, one device each.
if importlib.util.find_spec('libtpu') is None:
  if os.environ.get('TOKENLEARNER_REQUIRE_TPU_COMPILER') == '1':
    raise ImportError("libtpu is missing: pip install -e '.[tpu]'.")
  pytest.skip("libtpu is not installed (pip install -e '.[tpu]')",
              allow_module_level=True)

DTYPE_BYTES = {'f32': 4, 'bf16': 2, 's32': 4, 'u32': 4, 'f16': 2, 'pred': 1,
               's8': 1, 'u8': 1}


@pytest.fixture(scope='module', autouse=True)
def optimized_compiles():
  """The real compiler pipeline (conftest turns most optimizations off)."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


@pytest.fixture(scope='module')
def tpu():
  return aot.tpu_slice(TOPOLOGY)


def all_gathers(hlo: str) -> List[Tuple[str, Tuple[int, ...]]]:
  """(dtype, shape) of each all-gather's result in the HLO text (the
  gathered operand of an async all-gather-start: its tuple's last)."""
  found = []
  for result in re.findall(r'= (.+?) all-gather(?:-start)?\(', hlo):
    dtype, dims = re.findall(r'(\w+)\[([\d,]*)\]', result)[-1]
    found.append((dtype, tuple(int(d) for d in dims.split(',') if d)))
  return found


def nbytes(dtype: str, shape: Tuple[int, ...]) -> int:
  return DTYPE_BYTES[dtype] * math.prod(shape)


def demo(fsdp: int):
  """The demo as `runlocal` sets it: 2 layers, TokenLearner at 1, batch 8."""
  config = testing.config_for('demo_moving_digits')
  config.mesh.data, config.mesh.fsdp = -1, fsdp
  return config


def vit_l(fsdp: int):
  """ViT-L/16 + 16-TL, 6 layers of its 24 (the sharding of a layer does not
  depend on the depth), TokenLearner at 3 (`nn.scan`: two runs of 3 layers)
  on 64x64 images, batch 8."""
  config = testing.config_for(
      'vit_imagenet', 'variant=L/16,num_tokens=16,tokenlearner_loc=3,'
      'image_size=64')
  config.model.num_layers = 6
  config.model.scan_layers = True
  config.batch_size = 8
  config.mesh.data, config.mesh.fsdp = -1, fsdp
  return config


def compiled_train(config, the_slice):
  s = aot.setup(config, the_slice)
  return s, aot.compile_train(s, the_slice, s.program.config.batch_size,
                              keep_hlo=True)


def _full_state_bytes(s) -> int:
  """Parameters + optimizer state, unsharded."""
  return sum(x.size * x.dtype.itemsize
             for x in jax.tree_util.tree_leaves((s.state.params,
                                                 s.state.opt_state)))


def _batch_gathers(hlo: str, batch: int):
  """All-gathers whose result has the whole global batch as its first dim."""
  return [g for g in all_gathers(hlo) if g[1][:1] == (batch,)]


def _largest_layer_param_bytes(s) -> int:
  """The largest parameter of one layer (a scanned stack's slice)."""
  largest = 0
  for path, x in jax.tree_util.tree_flatten_with_path(s.state.params)[0]:
    names = jax.tree_util.keystr(path)
    shape = x.shape[1:] if '_to_' in names else x.shape  # A scanned run.
    largest = max(largest, math.prod(shape) * x.dtype.itemsize)
  return largest


# One test per compiled model: pytest-xdist would compile a shared fixture
# once in each worker.
@pytest.mark.e2e
def test_demo_state_bytes_fall_as_fsdp_grows_and_the_batch_stays_split(tpu):
  (s, data_only), (_, fsdp) = [compiled_train(demo(n), tpu) for n in (1, 4)]
  full = _full_state_bytes(s)
  # Data parallel: every device holds the whole state.
  assert data_only.state_bytes == full
  assert data_only.argument_bytes >= full
  # FSDP over 4: the compiled program's arguments (TPU-tiled, so a little
  # more than the arrays' bytes) shrink with the state.
  assert fsdp.state_bytes < 0.5 * full
  assert fsdp.argument_bytes < data_only.argument_bytes - 0.4 * full
  # The batch arrives split over the 4 data shards (data x fsdp) ...
  batch, shape = s.program.config.batch_size, s.program.input_shape
  split = f'f32[{batch // 4},{",".join(map(str, shape))}]'
  for compiled in (data_only, fsdp):
    assert split in compiled.hlo
    # ... and is never gathered whole.
    assert not _batch_gathers(compiled.hlo, batch)
    assert compiled.fits and compiled.peak_bytes > compiled.argument_bytes
  # Replicated parameters are never gathered; FSDP gathers them, each at
  # most one layer's parameter at a time.
  assert not all_gathers(data_only.hlo)
  gathers = all_gathers(fsdp.hlo)
  assert gathers
  limit = _largest_layer_param_bytes(s)
  assert all(nbytes(*g) <= limit for g in gathers), gathers


@pytest.mark.e2e
def test_vit_l_fsdp_shards_the_state_and_the_batch_and_gathers_by_layer(tpu):
  s, compiled = compiled_train(vit_l(4), tpu)
  full = _full_state_bytes(s)
  assert full > 2**30 * 0.5  # With momentum: 2 x 4 bytes x ~77M.
  # Every leaf but the few that stay whole (norms, biases, the head's, ...)
  # is split over the 4 devices.
  whole = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(
      (s.state.params, s.state.opt_state)) if x.sharding.is_fully_replicated)
  assert whole < 0.05 * full
  assert compiled.state_bytes < (full - whole) / 4 * 1.02 + whole
  assert compiled.argument_bytes < (full - whole) / 4 * 1.05 + whole
  stacked = [x.shape for path, x in jax.tree_util.tree_flatten_with_path(
      s.state.params)[0] if '_to_' in jax.tree_util.keystr(path)]
  assert {shape[0] for shape in stacked} == {3}  # Two scanned runs of 3.
  # FSDP: kernels are gathered one layer at a time, never a stacked run ...
  limit = _largest_layer_param_bytes(s)
  for dtype, shape in all_gathers(compiled.hlo):
    assert nbytes(dtype, shape) <= limit, (dtype, shape)
    assert shape not in stacked, shape
  # ... and the batch stays split over the 4 devices: no activation is
  # gathered whole (`models.common.batch_split`).
  assert not _batch_gathers(compiled.hlo, s.program.config.batch_size)


@pytest.mark.e2e
def test_fast_compiles_pallas_attention_in_bf16_on_each_shard_under_fsdp(tpu):
  config = demo(4)
  config.fast = True  # The config's `fast` argument, on TPU devices.
  # 4 x 8 x 8 tubelets: 256 tokens, a kernel block (the demo's 64 are fewer
  # than one, which the einsum takes).
  config.model.tokenizer.patches.size = (4, 4, 2)
  s, compiled = compiled_train(config, tpu)
  assert (s.program.config.model.attention_impl,
          s.program.config.model_dtype_str) == ('splash', 'bfloat16')
  assert compiled.fits
  # The kernel (a TPU custom call) runs on each device's quarter of the
  # batch, which is never gathered.
  assert 'tpu_custom_call' in compiled.hlo
  assert not _batch_gathers(compiled.hlo, s.program.config.batch_size)


@pytest.mark.e2e
def test_a_scanned_steps_costs_come_from_its_unrolled_twin(tpu):
  config = demo(1)
  config.model.num_layers, config.model.tokenizer.tokenlearner_loc = 4, 2
  config.model.scan_layers = True  # Two runs of 2 layers.
  s = aot.setup(config, tpu)
  scanned = aot.compile_train(s, tpu, 8)
  twin = aot.compile_train(s, tpu, 8, costs_from=aot.unrolled_twin(s, tpu))
  # XLA counts each scanned body once; the twin counts every layer, as the
  # analytic count does.
  assert scanned.flops < 0.8 * scanned.model_flops
  assert 0.95 * twin.model_flops < twin.flops < 1.5 * twin.model_flops
  assert twin.estimate.endswith('(costs of the unrolled twin)')
  assert twin.temp_bytes == scanned.temp_bytes  # Memory: the scanned step's.
  assert aot.unrolled_twin(aot.setup(demo(1), tpu), tpu) is None


@pytest.mark.e2e
def test_a_step_too_large_for_hbm_does_not_fit_and_says_what_it_needs(tpu):
  # ViT-L/16 at 224, 16 images a chip: the compiler refuses it for HBM.
  config = testing.config_for(
      'vit_imagenet', 'variant=L/16,num_tokens=16,tokenlearner_loc=12')
  config.model.scan_layers = True
  config.mesh.data, config.mesh.fsdp = 1, 4
  config.batch_size = 64
  s = aot.setup(config, tpu)
  compiled = aot.compile_train(s, tpu, 64)
  assert not compiled.fits and 'RESOURCE_EXHAUSTED' in compiled.exhausted
  assert compiled.temp_bytes > tpu.device_hbm
  assert compiled.peak_bytes == compiled.state_bytes + compiled.temp_bytes
  text = aot.report(compiled, tpu)
  assert 'DOES NOT FIT' in text and aot._gib(compiled.temp_bytes) in text


def test_bad_topology_and_mesh_are_one_line_errors(tpu):
  with pytest.raises(aot.TopologyError, match='v9'):
    aot.tpu_slice('v9:2x2')
  with pytest.raises(aot.TopologyError, match='no such TPU slice'):
    aot.tpu_slice('v5e:3x7')
  config = demo(1)
  config.mesh.fsdp = 3
  with pytest.raises(errors.ConfigError, match='does not divide 4 devices'):
    aot.setup(config, tpu)
  config = demo(1)
  config.batch_size = 6
  s = aot.setup(config, tpu)
  with pytest.raises(errors.ConfigError, match='batch_size=6'):
    aot.compile_train(s, tpu, 6)


def test_max_batch_bisects_over_multiples_of_the_data_parallel_size(
    monkeypatch):
  compiled = []

  def fake_compile(s, the_slice, batch_size):
    del s, the_slice
    compiled.append(batch_size)
    return types.SimpleNamespace(fits=batch_size <= 44)

  monkeypatch.setattr(aot, 'compile_train', fake_compile)
  setup = types.SimpleNamespace(
      program=types.SimpleNamespace(data_parallel=4))
  largest, tried = aot.max_batch(setup, None, start=8)
  assert largest == 44
  assert all(b % 4 == 0 for b in compiled) and len(set(compiled)) == len(
      compiled)  # Each size compiled once.
  assert tried == {b: b <= 44 for b in compiled}
  assert aot.max_batch(setup, None, start=64)[0] == 44  # From above.
  monkeypatch.setattr(aot, 'compile_train', lambda *_: types.SimpleNamespace(
      fits=False))
  assert aot.max_batch(setup, None, start=8)[0] == 0


def test_largest_batch_stops_within_the_tolerance_and_reuses_known_sizes():
  calls = []

  def fits(batch):
    calls.append(batch)
    return batch <= 203

  # Known: 8 fits, 32 fits, 512 does not (as the benchmark's two line-fit
  # compiles and a third would give); 5% tolerance, in multiples of 4.
  tolerance = lambda b: max(4, int(b * 0.05) // 4 * 4)
  largest, tried = aot.largest_batch(
      fits, 4, start=180, tolerance=tolerance,
      tried={8: True, 32: True, 512: False})
  over = min(b for b, ok in tried.items() if not ok)
  assert largest <= 203 < over
  assert over - largest <= tolerance(largest)
  assert not {8, 32, 512} & set(calls) and len(set(calls)) == len(calls)
  assert all(b % 4 == 0 for b in calls)
  # The exact answer with the default tolerance (one unit), and the limit.
  assert aot.largest_batch(fits, 4, start=8)[0] == 200
  assert aot.largest_batch(lambda b: True, 4, start=8, limit=50)[0] == 48


@pytest.mark.e2e
def test_kernel_costs_add_the_products_and_the_streamed_side_per_block(tpu):
  # One splash attention, forward and backward, at 1,920 tokens: blocks of
  # 640 (`splash_block`), three query and three key blocks. XLA counts each
  # kernel operand once; the forward kernel reads keys and values (and the
  # keys' segment ids, s32[8, L]) once per query block, the backward one
  # queries, output gradients, the two f32[heads, 8, L] softmax statistics
  # and the queries' segment ids once per key block: 2 more reads of each.
  shape = (1, 1920, 2, 64)  # [B, L, N, H]
  assert (common.splash_length(1920), common.splash_block(1920)) == (1920,
                                                                     640)

  def loss(q, k, v):
    return jnp.sum(common.splash_attention(q, k, v).astype(jnp.float32))

  arg = jax.ShapeDtypeStruct(shape, jnp.bfloat16,
                             sharding=SingleDeviceSharding(tpu.devices[0]))
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
      arg, arg, arg).compile().as_text()
  assert 'splash_mha_fwd' in hlo and 'splash_mha_dkv' in hlo
  qkv, ids = nbytes('bf16', (2, 1920, 64)), nbytes('s32', (8, 1920))
  statistics = nbytes('f32', (2, 8, 1920))
  kernel_flops, rereads = aot.kernel_costs(hlo)
  assert rereads == 2 * (2 * qkv + ids) + 2 * (2 * qkv + 2 * statistics + ids)
  # 2 products forward, 5 backward, each 1,920 x 1,920 x 64 for 2 heads.
  assert kernel_flops == 2 * 7 * 2 * 1920 * 1920 * 64
  assert aot.kernel_costs(hlo.replace('splash_mha', 'other')) == (0, 0)
