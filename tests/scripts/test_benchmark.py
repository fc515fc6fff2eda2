"""scripts/benchmark.py on 'mu' models: every part runs and its figures add up."""

import json
import os
import tempfile
from unittest import mock

from absl.testing import absltest

from tests.scripts import load_script

benchmark = load_script('benchmark')

TINY = [
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
         mock.patch.dict(benchmark.COMPILE_SETS, {'small': TINY_COMPILE}), \
         mock.patch.object(benchmark, 'matmul_peak', return_value=1e10):
      results = benchmark.main(['--small', '--steps=2', '--warmup=1',
                                '--batch=4', '--skip=demo,input',
                                f'--out={out}'])
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
    compile_result = results['compile']
    self.assertEqual(compile_result['num_layers'], 4)
    self.assertGreater(compile_result['unrolled_compile_s'], 0)
    self.assertGreater(compile_result['scan_compile_s'], 0)

  def test_matmul_peak_is_a_rate(self):
    self.assertGreater(benchmark.matmul_peak('float32', sizes=(128,)), 1e6)

  def test_unknown_model_is_named(self):
    with self.assertRaisesRegex(ValueError, 'vit_z99.*vit_b16'):
      benchmark.main(['--models=vit_z99', '--skip=demo,input,compile'])


if __name__ == '__main__':
  absltest.main()
