"""scripts/benchmark.py on 'mu' models: every part runs and its figures add
up."""

import json
import os
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np
import pytest

from tests.testing import load_script
from tokenlearner_jax import errors
from tokenlearner_jax import step_timing

benchmark = load_script('benchmark')

TINY = [  # Timed, and in ALL_SPECS for --max_batch.
    benchmark.vit('mu_vit', 'mu/8', (32, 32, 3)),
    benchmark.vit('mu_vit_tl4at1', 'mu/8', (32, 32, 3), 'mu_vit',
                  tokenlearner_loc=1, num_tokens=4),
]
TIMED = TINY
TINY_LAYOUTS = [  # TokenLearner at 1 of 2 blocks, without and with TokenFuser.
    benchmark.vit('mu_vit_tl4at1', 'mu/8', (32, 32, 3), tokenlearner_loc=1,
                  num_tokens=4),
    benchmark.vit('mu_vit_tl4at1_fuser', 'mu/8', (32, 32, 3), 'mu_vit_tl4at1',
                  tokenlearner_loc=1, num_tokens=4, use_tokenfuse=True),
]
TINY_COMPILE = benchmark.Spec('mu_vit_4layers', 'mu/8', (32, 32, 3),
                              dict(tokenizer_type='dynamic'), num_layers=4)


class BenchmarkTest(absltest.TestCase):

  @pytest.mark.e2e
  def test_models_speedup_and_compile_parts(self):
    out = os.path.join(tempfile.mkdtemp(), 'bench.json')
    argv = ['--small', '--steps=2', '--warmup=1', '--batch=4',
            '--skip=demo,input', '--max_batch=mu_vit_tl4at1',
            '--max_batch_remat=nothing_saveable', '--max_batch_multiple=4',
            '--memory_limit_gib=0.003', '--layouts=2', f'--out={out}']
    start = time.monotonic()
    with mock.patch.dict(benchmark.MODEL_SETS, {'small': TIMED}), \
         mock.patch.dict(benchmark.ALL_SPECS, {s.name: s for s in TINY}), \
         mock.patch.dict(benchmark.COMPILE_SETS, {'small': TINY_COMPILE}), \
         mock.patch.dict(benchmark.LAYOUT_SETS, {'default': TINY_LAYOUTS}), \
         mock.patch.object(benchmark, 'matmul_peak', return_value=1e10):
      results = benchmark.main(argv)
    wall = time.monotonic() - start
    with open(out) as f:
      self.assertEqual(json.load(f)['models'], results['models'])
    base, tl = results['models']
    self.assertEqual([base['model'], tl['model']], ['mu_vit', 'mu_vit_tl4at1'])
    args = benchmark.parse_args(argv)
    timed = 0.0  # Seconds of what the benchmark timed, one after the other.
    for spec, row in zip(TIMED, (base, tl)):
      # Two timed steps: their median is their mean.
      low, high = row['step_s_spread']
      self.assertBetween(low, 0, high)
      self.assertAlmostEqual(row['step_s'], (low + high) / 2)
      self.assertBetween(row['compile_s'], 0, wall)
      timed += row['compile_s'] + low + high
      self.assertEqual(row['examples_per_s'], 4 / row['step_s'])
      # 6 FLOPs per multiply-add per example, against the patched 10 GFLOP/s.
      self.assertAlmostEqual(
          row['mfu'], 6 * row['gmacs'] * 1e9 * 4 / row['step_s'] / 1e10,
          places=6)
      # XLA's peak holds at least the step's arguments: the parameters, the
      # optimizer state and the batch.
      program = step_timing.train_step_program(
          benchmark.spec_config(spec, args), spec.input_shape,
          benchmark.NUM_CLASSES)
      argument_bytes = sum(
          np.prod(x.shape, dtype=int) * np.dtype(x.dtype).itemsize
          for x in jax.tree_util.tree_leaves(
              (program.abstract_state, program.abstract_batch(4))))
      self.assertGreaterEqual(row['peak_memory_mib'] * 2**20, argument_bytes)
    # 4 tokens from block 1 on: fewer multiply-adds than the plain model.
    self.assertGreater(base['gmacs'], tl['gmacs'])
    (speedup,) = results['speedups']
    self.assertAlmostEqual(speedup['gmac_ratio'], base['gmacs'] / tl['gmacs'])
    self.assertAlmostEqual(speedup['wall_ratio'],
                           base['step_s'] / tl['step_s'])
    self.assertAlmostEqual(speedup['efficiency'],
                           speedup['wall_ratio'] / speedup['gmac_ratio'])
    # The largest batch fits the limit; the next one tried (at most 5% or one
    # multiple more) does not; one real step ran at it.
    (largest,) = results['max_batch']
    self.assertEqual(largest['remat'], 'nothing_saveable')
    self.assertEqual(largest['batch'] % 4, 0)
    self.assertLessEqual(largest['peak_memory_mib'], 0.003 * 1024)
    self.assertGreater(largest['over_peak_memory_mib'], 0.003 * 1024)
    self.assertLessEqual(largest['over_batch'] - largest['batch'],
                         max(4, 0.05 * largest['batch']))
    self.assertEqual(largest['examples_per_s'],
                     largest['batch'] / largest['step_s'])
    timed += 2 * largest['step_s']  # The faster of its 2 timed steps.
    compile_result = results['compile']
    self.assertEqual(compile_result['num_layers'], 4)
    # Both layouts compiled, each within the run.
    unrolled = compile_result['unrolled_compile_s']
    scan = compile_result['scan_compile_s']
    self.assertBetween(unrolled, 0, wall)
    self.assertBetween(scan, 0, wall)
    self.assertEqual(compile_result['ratio'], scan / unrolled)
    steps = compile_result['unrolled_step_s'], compile_result['scan_step_s']
    self.assertEqual(compile_result['step_ratio'], steps[1] / steps[0])
    timed += unrolled + scan + 2 * sum(steps)  # 2 timed steps each, at least.
    self.assertLess(timed, wall)
    # Both layouts of each model at 2 layers; TokenFuser against the same
    # TokenLearner without it, in step time and in multiply-adds.
    plain, fuser = results['layouts']
    self.assertEqual([(r['model'], r['num_layers']) for r in (plain, fuser)],
                     [('mu_vit_tl4at1', 2), ('mu_vit_tl4at1_fuser', 2)])
    for row in (plain, fuser):
      self.assertEqual(row['scan_ratio'],
                       row['scan_step_s'] / row['unrolled_step_s'])
    self.assertEqual(fuser['baseline'], 'mu_vit_tl4at1')
    self.assertGreater(fuser['gmacs'], plain['gmacs'])  # The fuser's MLPs.
    self.assertEqual(fuser['gmac_ratio'], fuser['gmacs'] / plain['gmacs'])
    for kind in ('unrolled', 'scan'):
      ratio = fuser[f'{kind}_step_s'] / plain[f'{kind}_step_s']
      self.assertEqual(fuser[f'{kind}_over_baseline'], ratio)
      self.assertEqual(fuser[f'{kind}_over_baseline_per_gmac'],
                       ratio / fuser['gmac_ratio'])

  def test_the_x2plus1d_set_builds_the_x2plus1d_network(self):
    args = benchmark.parse_args(['--set=x2plus1d'])
    for spec in benchmark.MODEL_SETS['x2plus1d']:
      config = benchmark.spec_config(spec, args)
      self.assertEqual(config.model_name, 'x2plus1d_classification')
      self.assertEqual(tuple(config.model.module.parts),
                       spec.kwargs.get('parts', ()))

  def test_matmul_peak_is_a_rate(self):
    self.assertGreater(benchmark.matmul_peak('float32', sizes=(128,)), 1e6)

  def test_unknown_model_or_remat_policy_is_named(self):
    with self.assertRaisesRegex(ValueError, 'vit_z99.*vit_b16'):
      benchmark.main(['--models=vit_z99', '--skip=demo,input,compile'])
    with self.assertRaisesRegex(ValueError, '--max_batch: .*vit_z99'):
      benchmark.main(['--max_batch=vit_z99', '--skip=models,demo,input'])
    with self.assertRaisesRegex(ValueError, '--layouts=5: .* more than 6'):
      benchmark.main(['--layouts=5', '--skip=models,demo,input,compile'])
    with self.assertRaisesRegex(ValueError, "remat.*'dots'.*nothing_saveable"):
      benchmark.main(['--max_batch=vit_b16', '--max_batch_remat=dots',
                      '--skip=models,demo,input'])
    # Known faults, so the script says them in one `Error:` line.
    with self.assertRaisesRegex(errors.UsageError, '--reference: needs '
                                '--layouts'):
      benchmark.main(['--reference=/nowhere', '--skip=models,demo,input'])
    with self.assertRaisesRegex(errors.UsageError, '--reference=/nowhere: no '
                                'scenic/projects/token_learner/model.py'):
      benchmark.main(['--reference=/nowhere', '--layouts=12',
                      '--skip=models,demo,input,compile'])




if __name__ == '__main__':
  absltest.main()
