"""studies.events: its runs' configs, its report section and verdicts, and a
run through it with its trainer faked."""

import json
import os

from absl.testing import absltest

from tests import testing
from tests.testing import DATA_DIR
from tokenlearner_jax import models
from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import events as study


def write_run(root, row, seed, mean_ap, gmacs):
  workdir = os.path.join(root, f'{row}_seed{seed}')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
    json.dump({'step': 400, 'mean_average_precision': mean_ap,
               'prec@1': mean_ap + 0.1, 'gmacs_per_example': gmacs}, f)


class EventStudyTest(absltest.TestCase):

  def test_each_row_trains_its_module_on_event_digits(self):
    for row in study.ROWS:
      run = study.run(row, 2, '/tmp/x', 300, False)
      self.assertEqual(run.workdir, f'/tmp/x/{row}_seed2')
      self.assertEqual(run.overrides['rng_seed'], 2)
      config = run.resolved()
      model = models.model_config(config, 20)
      self.assertEqual(config.dataset_name, 'event_digits')
      self.assertEqual(model.parts, ablations.load_config(
          'configs/charades_x2plus1d_tl.py', f'row={row}').model.module.parts)
      self.assertEqual(model.stage, 3)
      self.assertEqual(config.rng_seed, 2)
      self.assertEqual(config.num_training_steps, 300)
      self.assertEqual(config.log_eval_steps, 300)
    self.assertEqual(study.module_mmacs('backbone'), 0.0)
    self.assertLess(study.module_mmacs('tokenlearner'),
                    study.module_mmacs('mhsa'))

  def test_report_section_and_verdicts(self):
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    # Conv2D + TL beats MHSA by 10 and 11 points; TL vs MHSA is noise.
    mean_ap = {'backbone': (0.30, 0.34), 'mhsa': (0.40, 0.41),
               'tokenlearner': (0.38, 0.44),
               'conv2d_tokenlearner': (0.50, 0.52)}
    for row, values in mean_ap.items():
      for seed, value in enumerate(values):
        write_run(root, row, seed, value, 0.02)
    argv = [f'--workdir={root}', f'--out={out}', '--seeds=0,1',
            '--report_only']
    self.assertEqual(study.main(argv), 0)
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertEqual(text.count(f'<!-- {study.SECTION} -->'), 1)
    self.assertIn('| Conv2D + TokenLearner | 20.00 |', text)
    self.assertIn('| 51.0 ± 1.4 | 50.0, 52.0 | 61.0 ± 1.4 |', text)
    # Two seeds: the t factor is 12.7, the interval 10.5 +- 6.4.
    self.assertIn('Conv2D + TokenLearner beats joint space-time MHSA — '
                  'agrees (d = +10.5 points, 95% interval [+4.1, +16.9]',
                  text)
    self.assertIn('TokenLearner beats joint space-time MHSA — cannot tell',
                  text)
    self.assertTrue(os.path.exists(
        os.path.join(out, 'results_event_study.png')))

  def test_a_run_reaches_the_report(self):
    root = self.create_tempdir().full_path
    argv = [f'--workdir={root}', '--rows=tokenlearner', '--seeds=0',
            '--runlocal', f'--set=dataset_configs.data_dir={DATA_DIR}']
    with testing.fake_runs() as started:
      self.assertEqual(study.main(argv), 0)
    self.assertEqual([r.resolved().model.module.parts for r in started],
                     [('tokenlearner',)])
    with open(os.path.join(root, 'results.md')) as f:
      text = f.read()
    self.assertRegex(text, r'\| TokenLearner \| [0-9.]+ \| [0-9.]+ \| '
                     r'[0-9.]+ \| [0-9.]+ \|')
    self.assertIn('not enough seeds', text)

if __name__ == '__main__':
  absltest.main()
