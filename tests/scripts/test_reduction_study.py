"""scripts/reduction_study.py: matched budgets, its runs' configs, the
off-the-shelf evaluations, its report, and one real (runlocal) pass."""

import json
import os

from absl.testing import absltest

from tests.testing import DATA_DIR
from tests.testing import load_script
from tests.testing import parsed_config
from tokenlearner_jax import flops
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models.config import ModelConfig

study = load_script('reduction_study')


def write_metrics(path, mean_ap, gmacs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'mean_average_precision': mean_ap, 'prec@1': 0.5,
               'gmacs_per_example': gmacs}, f)


class ReductionStudyTest(absltest.TestCase):

  def test_each_method_is_trained_within_eight_percent_of_its_budget(self):
    table = study.variants([50, 75])
    plain = study.gmacs_of(study.base_config(False))
    self.assertLen(table, 1 + 2 * (len(study.METHODS) + 2))
    for name, variant in table.items():
      if variant.method is None:
        continue
      config = parsed_config(study.train_command(
          variant.method, variant.setting, 1, '/tmp/x', 500, False))
      model = ModelConfig.from_config(config, 10)
      self.assertEqual(model.token_reduction, variant.method, name)
      self.assertEqual(model.classifier, 'token')
      self.assertEqual((model.hidden_size, model.num_layers), (64, 4))
      for key, value in variant.setting:
        self.assertEqual(getattr(model, key), value, name)
      self.assertEqual((config.rng_seed, config.num_training_steps), (1, 500))
      ratio = flops.gmacs(config, study.IMAGE, 10) / plain
      self.assertAlmostEqual(ratio, variant.pct / 100, delta=0.08, msg=name)

  def test_off_the_shelf_evaluates_the_plain_run_with_the_method(self):
    variant = study.variants([50])['tome_50_offshelf']
    command = study.eval_command(variant.method, variant.setting, 2,
                                 '/tmp/plain_seed2', '/tmp/out.json', False)
    self.assertEqual(command[1:3], ['-m', 'tokenlearner_jax.evaluate'])
    self.assertIn('--workdir=/tmp/plain_seed2', command)
    self.assertEqual(command[-1], '--out=/tmp/out.json')
    config = parsed_config(command[:-1])
    schema.check_config(schema.complete(config))  # What evaluate checks.
    self.assertEqual(config.model.tokenizer.token_reduction, 'tome')
    self.assertEqual(config.model.tokenizer.tome_r,
                     dict(variant.setting)['tome_r'])

  def test_report_verdicts(self):
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    table = study.variants([50])
    for seed in (0, 1):
      for name, variant in table.items():
        # TokenLearner 0.50/0.52; ToMe trained 0.40/0.41; the rest 0.45ish.
        value = {'plain': 0.55, 'tokenlearner_50': 0.50,
                 'tome_50': 0.40}.get(name, 0.45) + seed * 0.01 * (
                     2 if name == 'tokenlearner_50' else 1)
        path = (study.offshelf_path(root, name, seed) if variant.offshelf
                else os.path.join(root, f'{name}_seed{seed}',
                                  'final_metrics.json'))
        write_metrics(path, value, 0.01 if name == 'plain' else 0.005)
        if name == 'plain':  # Its evaluation beside the off-the-shelf ones.
          write_metrics(study.offshelf_path(root, name, seed), value, 0.01)
    with open(os.path.join(root, 'step_times.json'), 'w') as f:
      json.dump({'plain': 0.020, 'tokenlearner_50': 0.012}, f)
    argv = [f'--workdir={root}', f'--out={out}', '--seeds=0,1',
            '--budgets=50', '--report_only']
    self.assertEqual(study.main(argv), 0)
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertIn('| TokenLearner @ 50% | loc=1, num_tokens=16 | 5.00 | 12.0 '
                  '| 0.60x | 51.0 ± 1.4 | 50.0, 52.0 |', text)
    self.assertIn('| plain ViT | 64 tokens throughout | 10.00 | 20.0 | '
                  '1.00x | 55.5 ± 0.7 |', text)
    # Two seeds: the t factor is 12.7; d = 10.5 +- 6.4.
    self.assertIn('* TokenLearner @ 50% beats ToMe @ 50% — agrees (d = +10.5 '
                  'points, 95% interval [+4.1, +16.9]', text)
    self.assertIn('* ToMe off the shelf @ 50% keeps the plain model\'s mAP — '
                  'disagrees (d = +10.0', text)
    self.assertTrue(os.path.exists(
        os.path.join(out, 'results_reduction_study.png')))

  def test_a_runlocal_pass_trains_evaluates_off_the_shelf_and_times(self):
    # ATS: a trained run and the off-the-shelf evaluation of the plain run
    # (the other methods' runs are the same code path; their configs are
    # checked above and their models in tests/models/test_reduction.py).
    root = self.create_tempdir().full_path
    argv = [f'--workdir={root}', '--budgets=50', '--seeds=0', '--runlocal',
            '--methods=ats', f'--set=dataset_configs.data_dir={DATA_DIR}']
    self.assertEqual(study.main(argv), 0)
    runs = study.results(root, study.variants([50], True, ['ats']), [0])
    for name in ('plain', 'plain_evaluated', 'ats_50', 'ats_50_offshelf'):
      self.assertLen(runs[name], 1, name)
      self.assertBetween(runs[name][0]['mean_average_precision'], 0.0, 1.0)
    self.assertLess(runs['ats_50_offshelf'][0]['gmacs_per_example'],
                    runs['plain'][0]['gmacs_per_example'])
    with open(os.path.join(root, 'step_times.json')) as f:
      self.assertEqual(set(json.load(f)), {'plain', 'ats_50'})
    with open(os.path.join(root, 'results.md')) as f:
      self.assertIn('| ATS off the shelf @ 50% |', f.read())


if __name__ == '__main__':
  absltest.main()
