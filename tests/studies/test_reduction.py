"""studies.reduction: matched budgets, its runs' configs (from
scratch and fine-tuned, images and video), the off-the-shelf evaluations, its
report, and a pass with its runs faked."""

import json
import os

from absl.testing import absltest
import pytest

from tests import testing
from tests.testing import DATA_DIR
from tokenlearner_jax import flops
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.studies import reduction as study
IMAGES, VIDEO = study.DATASETS['multi_digits'], study.DATASETS['moving_digits']


def write_metrics(path, value, gmacs, metric='mean_average_precision'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({metric: value, 'prec@1': 0.5, 'gmacs_per_example': gmacs}, f)


class ReductionStudyTest(absltest.TestCase):

  def test_each_method_is_trained_within_eight_percent_of_its_budget(self):
    for data in (IMAGES, VIDEO):
      table = study.variants([50, 75], finetune=True, data=data)
      plain = study.gmacs_of(study.base_config(False, data=data), data)
      # plain, plain_ft; per budget: 5 methods and EViT and ATS in every
      # block, from scratch and fine-tuned; ToMe and both ATS off the shelf
      # of plain and of plain_ft.
      self.assertLen(table, 2 + 2 * (2 * 7 + 2 * 3))
      for name, variant in table.items():
        if variant.method is None or variant.offshelf:
          continue
        config = study.train_run(name, variant, 1, '/tmp/x', 500, False,
                                 data=data).resolved()
        model = ModelConfig.from_config(config, data.num_classes)
        self.assertEqual(model.token_reduction, variant.method, name)
        self.assertEqual(model.classifier, 'token')
        self.assertEqual((model.hidden_size, model.num_layers), (64, 4))
        for key, value in variant.setting:
          self.assertEqual(getattr(model, key), value, name)
        self.assertEqual((config.rng_seed, config.num_training_steps),
                         (1, 500))
        self.assertEqual(config.init_from.get('checkpoint_path'),
                         '/tmp/x/plain_seed1' if variant.finetuned else None,
                         name)
        ratio = flops.gmacs(config, data.shape, data.num_classes) / plain
        self.assertAlmostEqual(ratio, variant.pct / 100, delta=0.08,
                               msg=f'{data.name} {name}')

  def test_evit_in_every_block_meets_its_authors_recipe_at_75_percent(self):
    # EViT's own recipe (a keep rate of 0.7 at three blocks) is 75% of the
    # image model's multiply-adds; one block cannot keep more than 20%.
    table = study.variants([75], methods=['evit'])
    self.assertEqual(dict(table['evit_multi_75'].setting),
                     {'tokenlearner_loc': 1, 'pooling_locs': (2, 3),
                      'keep_rate': 0.7})
    self.assertEqual(study.describe(table['evit_multi_75']),
                     'blocks 1 to 3, keep_rate=0.7')
    self.assertLessEqual(dict(table['evit_75'].setting)['keep_rate'], 0.2)

  def test_ats_keeps_its_authors_minimum(self):
    for data in (IMAGES, VIDEO):
      for multi in (False, True):
        sizes = {dict(s)['num_tokens']
                 for s in study.candidates('ats', 4, multi)}
        self.assertEqual(min(sizes), 7)
      table = study.variants([50, 75], methods=['ats'], data=data)
      for variant in table.values():
        if variant.method:
          self.assertGreaterEqual(dict(variant.setting)['num_tokens'], 7)

  def test_the_video_runs_train_the_demo_vivit_on_moving_digits(self):
    table = study.variants([50], data=VIDEO)
    config = study.train_run('plain', study.Variant(), 0, '/tmp/x', 1000,
                             False, data=VIDEO).resolved()
    self.assertEqual((config.dataset_name, config.model.tokenizer.type),
                     ('moving_digits', 'video'))
    self.assertEqual(config.lr_configs.warmup_steps, 100)
    self.assertNotIn('fewshot', config)
    self.assertEqual(table['tome_50'].setting[0], ('tokenlearner_loc', 0))

  def test_off_the_shelf_evaluates_the_plain_run_with_the_method(self):
    table = study.variants([50], finetune=True)
    run = study.eval_run('ats_multi_50_offshelf_ft',
                         table['ats_multi_50_offshelf_ft'], 2, '/tmp', False)
    # Of plain_ft: as many steps as the fine-tuned methods it is compared to.
    self.assertEqual((run.entry, run.workdir, run.out),
                     ('evaluate', '/tmp/plain_ft_seed2',
                      '/tmp/offshelf/ats_multi_50_offshelf_ft_seed2.json'))
    self.assertEqual(run.resolved().model.tokenizer.pooling_locs, (2, 3))
    variant = table['tome_50_offshelf']
    run = study.eval_run('tome_50_offshelf', variant, 2, '/tmp', False)
    self.assertEqual((run.entry, run.workdir, run.out),
                     ('evaluate', '/tmp/plain_seed2',
                      '/tmp/offshelf/tome_50_offshelf_seed2.json'))
    config = run.resolved()
    schema.check_config(schema.complete(config))  # What evaluate checks.
    self.assertEqual(config.model.tokenizer.token_reduction, 'tome')
    self.assertEqual(config.model.tokenizer.tome_r,
                     dict(variant.setting)['tome_r'])

  def test_fine_tuning_waits_for_the_plain_run_of_its_seed(self):
    root = self.create_tempdir().full_path
    table = study.variants([50], methods=['tokenlearner'], finetune=True)
    write_metrics(os.path.join(root, 'plain_seed1', 'final_metrics.json'),
                  0.5, 0.01)
    runs = study.finetune_runs(root, table, [0, 1], 30, False, {}, IMAGES)
    self.assertEqual([os.path.basename(r.workdir) for r in runs],
                     ['plain_ft_seed1', 'tokenlearner_50_ft_seed1'])
    config = runs[1].resolved()
    self.assertEqual(config.init_from.checkpoint_path,
                     os.path.join(root, 'plain_seed1'))
    self.assertTrue(config.init_from.init_missing_from_scratch)
    self.assertTrue(config.init_from.restore_output_proj)  # The same classes.
    self.assertEqual((config.num_training_steps, config.fewshot.log_steps),
                     (30, 30))

  def test_report_verdicts(self):
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    table = study.variants([50], finetune=True)
    folder = os.path.join(root, 'multi_digits')
    for seed in (0, 1):
      for name, variant in table.items():
        # TokenLearner 0.50/0.52; ToMe trained 0.40/0.41; fine-tuned ToMe
        # 0.56/0.57; the rest 0.45ish.
        value = {'plain': 0.55, 'tokenlearner_50': 0.50, 'tome_50': 0.40,
                 'tome_50_ft': 0.56}.get(name, 0.45) + seed * 0.01 * (
                     2 if name == 'tokenlearner_50' else 1)
        path = (study.offshelf_path(folder, name, seed) if variant.offshelf
                else os.path.join(folder, f'{name}_seed{seed}',
                                  'final_metrics.json'))
        write_metrics(path, value, 0.01 if name == 'plain' else 0.005)
        if variant.method is None:  # Evaluated beside the off-the-shelf.
          write_metrics(study.offshelf_path(folder, name, seed), value, 0.01)
    with open(os.path.join(folder, 'step_times.json'), 'w') as f:
      json.dump({'plain': 0.020, 'tokenlearner_50': 0.012}, f)
    argv = [f'--workdir={root}', f'--out={out}', '--seeds=0,1',
            '--budgets=50', '--datasets=multi_digits', '--report_only']
    self.assertEqual(study.main(argv), 0)
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertIn('Trained from scratch for 500 steps of 64 and fine-tuned '
                  'for 125 more, tested by mAP.', text)
    self.assertIn('| TokenLearner @ 50% | loc=1, num_tokens=16 | 5.00 | 12.0 '
                  '| 0.60x | 51.0 ± 1.4 | 50.0, 52.0 |', text)
    self.assertIn('| no reduction | 64 tokens throughout | 10.00 | 20.0 | '
                  '1.00x | 55.5 ± 0.7 |', text)
    # Fine-tuned: the program of the same method from scratch.
    self.assertIn('| TokenLearner fine-tuned @ 50% | loc=1, num_tokens=16 | '
                  '5.00 | 12.0 | 0.60x | 45.5 ± 0.7 |', text)
    # Two seeds: the t factor is 12.7; d = 10.5 +- 6.4.
    self.assertIn('* TokenLearner @ 50% beats ToMe @ 50% — agrees (d = +10.5 '
                  'points, 95% interval [+4.1, +16.9]', text)
    self.assertIn('* TokenLearner fine-tuned @ 50% beats ToMe fine-tuned @ '
                  '50% — disagrees (d = -11.0 points', text)
    # Off the shelf against as many training steps: plain_ft's evaluation.
    self.assertIn('* TokenLearner fine-tuned @ 50% beats ToMe off the shelf '
                  'of plain fine-tuned @ 50% — cannot tell (d = +0.0', text)
    self.assertIn('* TokenLearner @ 50% beats ToMe off the shelf @ 50% — '
                  'cannot tell (d = +5.5', text)
    self.assertNotIn('* TokenLearner fine-tuned @ 50% beats ToMe off the '
                     'shelf @ 50%', text)
    self.assertNotIn('* TokenLearner @ 50% beats ToMe fine-tuned', text)
    self.assertIn('* ATS every block off the shelf of plain fine-tuned @ 50% '
                  'keeps the fine-tuned plain model\'s mAP', text)
    # d is the method's score minus the plain model's: a loss reads as one.
    self.assertIn('* ToMe off the shelf @ 50% keeps the plain model\'s mAP — '
                  'disagrees (d = -10.0', text)
    self.assertIn('(d: the first-named model\'s score minus the second\'s, per '
                  'seed, in points. 24 verdicts at 95% each, not corrected for '
                  'multiple comparisons: with no true difference about 1.2 of '
                  'them would exclude 0 by chance alone.)', text)
    self.assertTrue(os.path.exists(os.path.join(out, IMAGES.plot)))

  @pytest.mark.e2e
  def test_a_pass_trains_fine_tunes_evaluates_and_times(self):
    # ATS on video: trained from scratch, fine-tuned from the plain run, and
    # the plain run evaluated with it (the other methods' runs are the same
    # code path; their configs are checked above and their models in
    # tests/models/test_reduction.py). The runs are faked (a real sweep of
    # trainer processes: tests/integration/test_sweep_run.py); the step times
    # are real.
    root = self.create_tempdir().full_path
    argv = [f'--workdir={root}', '--budgets=50', '--seeds=0', '--runlocal',
            '--methods=ats', '--datasets=moving_digits',
            '--finetune_steps=2', f'--set=dataset_configs.data_dir={DATA_DIR}']
    with testing.fake_runs() as started:
      self.assertEqual(study.main(argv), 0)
    folder = os.path.join(root, 'moving_digits')
    self.assertEqual(
        [(r.entry, os.path.basename(r.workdir)) for r in started],
        # runlocal's 2 blocks: no ATS in every block (tested above).
        [('train', 'plain_seed0'), ('train', 'ats_50_seed0'),
         ('train', 'plain_ft_seed0'), ('train', 'ats_50_ft_seed0')] +
        [('evaluate', f'plain{ft}_seed0') for _ in range(2)
         for ft in ('', '_ft')])
    table = study.variants([50], True, ['ats'], finetune=True, data=VIDEO)
    runs = study.results(folder, table, [0])
    for name in ('plain', 'plain_evaluated', 'plain_ft', 'plain_ft_evaluated',
                 'ats_50', 'ats_50_ft', 'ats_50_offshelf',
                 'ats_50_offshelf_ft'):
      self.assertLen(runs[name], 1, name)
    self.assertLess(runs['ats_50_offshelf'][0]['gmacs_per_example'],
                    runs['plain'][0]['gmacs_per_example'])
    with open(os.path.join(folder, 'step_times.json')) as f:
      times = json.load(f)
    self.assertEqual(set(times), {'plain', 'ats_50'})
    with open(os.path.join(root, 'results.md')) as f:
      text = f.read()
    self.assertIn('| ATS fine-tuned @ 50% |', text)
    self.assertIn('### moving_digits', text)

if __name__ == '__main__':
  absltest.main()
