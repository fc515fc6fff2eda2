"""scripts/benchmark.py on 'mu' models: every part runs and its figures add up."""

import json
import os
import tempfile
from unittest import mock

from absl.testing import absltest

from tests.scripts import load_script

benchmark = load_script('benchmark')

TINY = [  # Also in ALL_SPECS for --max_batch.
    benchmark.vit('mu_vit', 'mu/8', (32, 32, 3)),
    benchmark.vit('mu_vit_tl4at1', 'mu/8', (32, 32, 3), 'mu_vit',
                  tokenlearner_loc=1, num_tokens=4),
]
TINY_COMPILE = benchmark.Spec('mu_vit_4layers', 'mu/8', (32, 32, 3),
                              dict(tokenizer_type='dynamic'), num_layers=4)


class BenchmarkTest(absltest.TestCase):

  def test_models_speedup_and_compile_parts(self):
    out = os.path.join(tempfile.mkdtemp(), 'bench.json')
    with mock.patch.dict(benchmark.MODEL_SETS, {'small': TINY}), \
         mock.patch.dict(benchmark.ALL_SPECS, {s.name: s for s in TINY}), \
         mock.patch.dict(benchmark.COMPILE_SETS, {'small': TINY_COMPILE}), \
         mock.patch.object(benchmark, 'matmul_peak', return_value=1e10):
      results = benchmark.main(['--small', '--steps=2', '--warmup=1',
                                '--batch=4', '--skip=demo,input',
                                '--max_batch=mu_vit_tl4at1',
                                '--max_batch_remat=nothing_saveable',
                                '--max_batch_multiple=4',
                                '--memory_limit_gib=0.03', f'--out={out}'])
    with open(out) as f:
      self.assertEqual(json.load(f)['models'], results['models'])
    base, tl = results['models']
    self.assertEqual([base['model'], tl['model']], ['mu_vit', 'mu_vit_tl4at1'])
    for row in (base, tl):
      self.assertGreater(row['step_s'], 0)
      self.assertAlmostEqual(row['examples_per_s'], 4 / row['step_s'])
      # 6 FLOPs per multiply-add per example, against the patched 10 GFLOP/s.
      self.assertAlmostEqual(
          row['mfu'], 6 * row['gmacs'] * 1e9 * 4 / row['step_s'] / 1e10,
          places=6)
      self.assertGreater(row['peak_memory_mib'], 0)
    self.assertLess(tl['gmacs'], base['gmacs'])
    (speedup,) = results['speedups']
    self.assertAlmostEqual(speedup['gmac_ratio'], base['gmacs'] / tl['gmacs'])
    self.assertAlmostEqual(speedup['efficiency'],
                           speedup['wall_ratio'] / speedup['gmac_ratio'])
    # The largest batch fits the limit; the next one tried (at most 5% or one
    # multiple more) does not; one real step ran at it.
    (largest,) = results['max_batch']
    self.assertEqual(largest['remat'], 'nothing_saveable')
    self.assertEqual(largest['batch'] % 4, 0)
    self.assertLessEqual(largest['peak_memory_mib'], 0.03 * 1024)
    self.assertGreater(largest['over_peak_memory_mib'], 0.03 * 1024)
    self.assertLessEqual(largest['over_batch'] - largest['batch'],
                         max(4, 0.05 * largest['batch']))
    self.assertGreater(largest['examples_per_s'], 0)
    compile_result = results['compile']
    self.assertEqual(compile_result['num_layers'], 4)
    self.assertGreater(compile_result['unrolled_compile_s'], 0)
    self.assertGreater(compile_result['scan_compile_s'], 0)

  def test_matmul_peak_is_a_rate(self):
    self.assertGreater(benchmark.matmul_peak('float32', sizes=(128,)), 1e6)

  def test_unknown_model_or_remat_policy_is_named(self):
    with self.assertRaisesRegex(ValueError, 'vit_z99.*vit_b16'):
      benchmark.main(['--models=vit_z99', '--skip=demo,input,compile'])
    with self.assertRaisesRegex(ValueError, '--max_batch: .*vit_z99'):
      benchmark.main(['--max_batch=vit_z99', '--skip=models,demo,input'])
    with self.assertRaisesRegex(ValueError, "remat.*'dots'.*nothing_saveable"):
      benchmark.main(['--max_batch=vit_b16', '--max_batch_remat=dots',
                      '--skip=models,demo,input'])


if __name__ == '__main__':
  absltest.main()
