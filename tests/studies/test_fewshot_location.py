"""studies.fewshot_location: its runs' configs, its report section in
results.md, its verdicts."""

import json
import os

from absl.testing import absltest

from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import fewshot_location as study
from tokenlearner_jax.studies import report


def write_run(root, name, seed, five_shot, gmacs):
  workdir = report.run_dir(root, name, seed)
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
    json.dump({'step': 500, 'mean_average_precision': 0.5,
               'fewshot_digits_1shot': five_shot - 0.1,
               'fewshot_digits_5shot': five_shot,
               'fewshot_digits_10shot': five_shot + 0.05,
               'fewshot_digits_25shot': five_shot + 0.1,
               'gmacs_per_example': gmacs}, f)


class FewshotLocationTest(absltest.TestCase):

  def test_each_variant_pretrains_with_its_location_and_a_fewshot_end(self):
    for name in study.NAMES:
      loc = ablations.VARIANTS[name].loc
      run = study.run(name, 1, '/tmp/x', 500, False)
      self.assertEqual(run.overrides['fewshot.log_steps'], 500)
      config = run.resolved()
      model = ModelConfig.from_config(config, num_classes=10)
      self.assertEqual(config.dataset_name, 'multi_digits')
      self.assertEqual(model.num_layers, 4)
      self.assertEqual(model.hidden_size, 64)
      self.assertEqual(model.tokenlearner_on, loc is not None)
      if loc is not None:
        self.assertEqual(model.tokenlearner_loc, round(4 * loc))
        self.assertEqual(model.num_tokens, 8)
      self.assertEqual(config.rng_seed, 1)
      self.assertEqual(config.num_training_steps, 500)
      self.assertEqual(config.fewshot.log_steps, 500)
      self.assertIn(5, config.fewshot.shots)

  def test_report_section_and_verdicts(self):
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    # TL at 0.75 beats no TL by 10 and 12 points; at 0 it is far worse.
    five_shot = {'no_tl': (0.50, 0.52), 'tl8_at0': (0.20, 0.22),
                 'tl8_at025': (0.55, 0.56), 'tl8_at05': (0.505, 0.515),
                 'tl8_at075': (0.60, 0.64)}
    for name, values in five_shot.items():
      for seed, value in enumerate(values):
        write_run(root, name, seed, value, 0.01 if name == 'no_tl' else 0.005)
    argv = [f'--workdir={root}', f'--out={out}', '--report_only']
    self.assertEqual(study.main(argv), 0)
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertEqual(text.count(f'<!-- {study.SECTION} -->'), 1)
    self.assertIn('| TL 8 at 0.75 | 3 of 4 | 5.00 | 62.0 ± 2.8 | 60.0, 64.0 |',
                  text)
    self.assertIn('| no TokenLearner | none | 10.00 | 51.0 ± 1.4 |', text)
    # Two seeds: the t factor is 12.7, the interval [-1.7, +23.7].
    self.assertIn('TL 8 at 0.75 beats no TokenLearner — cannot tell (d = '
                  '+11.0 points, 95% interval [-1.7, +23.7] over 2 seeds)',
                  text)
    self.assertIn('TL 8 at 0.5 beats TL 8 at 0 — agrees (d = +30.0', text)
    self.assertIn(f'`python scripts/fewshot_location.py --workdir={root} '
                  f'--out={out}`', text)
    self.assertTrue(os.path.exists(
        os.path.join(out, 'results_fewshot_location.png')))


if __name__ == '__main__':
  absltest.main()
