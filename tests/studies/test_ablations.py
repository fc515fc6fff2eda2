"""studies.ablations: the studies' runs, claims and report, and a run
through it with its trainer faked."""

import os

from absl.testing import absltest

from tests import testing
from tests.testing import DATA_DIR
from tokenlearner_jax import flops
from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import stats

CLIP = (8, 32, 32, 3)  # moving_digits.


class StudiesTest(absltest.TestCase):

  def test_claims_name_variants_of_their_study(self):
    for study in ablations.STUDIES.values():
      for name in study.variants:
        self.assertIn(name, ablations.VARIANTS)
      for claim in study.claims:
        self.assertIn(claim.a, study.variants)
        self.assertIn(claim.b, study.variants)

  def test_every_variant_runs_the_config_it_names(self):
    runs = {v.name: ablations.run(v, 1, '/root', 300, False)
            for v in ablations.needed_variants(
                list(ablations.STUDIES.values()))}
    self.assertEqual(runs['tl8_unpool'].overrides, {
        'model.tokenizer.use_tokenfuse': True,
        'model.tokenizer.fuser_type': 'unpool', 'rng_seed': 1,
        'num_training_steps': 300, 'log_eval_steps': 300,
        'checkpoint_steps': 300, 'lr_configs.warmup_steps': 60})
    self.assertEqual(runs['tl8_finetuned'].overrides[
        'init_from.checkpoint_path'], '/root/pretrain_multi_seed1')
    self.assertEqual(runs['tl8_at05'].workdir, '/root/tl8_at05_seed1')
    configs = {name: run.resolved() for name, run in runs.items()}
    for name, config in configs.items():
      self.assertEqual((config.rng_seed, config.num_training_steps),
                       (1, 300))
      self.assertEqual(config.dataset_name, 'multi_digits'
                       if name == 'pretrain_multi' else 'moving_digits')
    model = lambda name: configs[name].model  # pylint: disable=unnecessary-lambda-assignment
    self.assertIsNone(model('no_tl').tokenizer.tokenlearner_loc)
    self.assertEqual([model(f'tl8_at{x}').tokenizer.tokenlearner_loc
                      for x in ('0', '025', '05', '075')], [0, 1, 2, 3])
    self.assertEqual(model('tl16_at05').tokenizer.num_tokens, 16)
    self.assertFalse(model('tl8_v10').tokenizer.use_v11)
    self.assertEqual(model('pool2x2_at05').tokenizer.token_reduction,
                     'pooling')
    self.assertEqual(model('dense8_at05').tokenizer.token_reduction, 'dense')
    # Pre-training uses the fine-tuned model's shape, on 2-D patches.
    for field in ('hidden_size', 'num_heads', 'mlp_dim', 'num_layers'):
      self.assertEqual(model('pretrain_multi')[field], model('tl8_at05')[field])
    self.assertEqual(model('pretrain_multi').tokenizer.tokenlearner_loc, 2)
    # The location study spans compute: later TokenLearner, more GMACs.
    macs = [flops.gmacs(configs[name], CLIP) for name in
            ablations.STUDIES['location'].variants[1:] + ('no_tl',)]
    self.assertEqual(macs, sorted(macs))
    self.assertLess(macs[2], 0.85 * macs[-1])  # At 0.5: 9.5 vs 12.1 MMACs.

  def test_only_variants_keeps_their_claims(self):
    study = ablations.only_variants(ablations.STUDIES['location'],
                                    ['tl8_at05', 'no_tl', 'tl8_at0'])
    self.assertEqual(study.variants, ('no_tl', 'tl8_at0', 'tl8_at05'))
    self.assertEqual([(c.a, c.b) for c in study.claims],
                     [('tl8_at05', 'no_tl'), ('tl8_at05', 'tl8_at0')])
    with self.assertRaisesRegex(ValueError, r"--variants: unknown \['tl9'\]"):
      ablations.only_variants(study, ['tl9'])

  def test_claims_quote_the_papers_rows(self):
    claim = ablations.STUDIES['fuser'].claims[2]
    self.assertEqual(claim.source, (
        'Fuser fig., ImageNet top-1: "B/16 @384, 8-TL at 6 + reprojection" '
        '83.65 vs "B/16 @384, 8-TL at 6 + TokenFuser" 83.7, at 32.7 vs 28.6 '
        'GFLOPs'))
    self.assertIs(ablations.STUDIES['location'].claims,
                  stats.LOCATION_CLAIMS)


class AblationsRunTest(absltest.TestCase):

  def test_transfer_study_runs_pretraining_first_and_reports(self):
    # The fine-tuned variant alone (and the pre-training it needs: 2 runs),
    # one seed (the verdicts need two or more); the runs faked.
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    argv = [f'--workdir={root}', f'--out={out}', '--studies=transfer',
            '--variants=tl8_finetuned', '--seeds=0', '--runlocal',
            f'--set=dataset_configs.data_dir={DATA_DIR}']
    with testing.fake_runs() as started:
      self.assertEqual(ablations.main(argv), 0)
    pretrain, finetune = started
    self.assertEqual(pretrain.workdir, f'{root}/pretrain_multi_seed0')
    self.assertEqual(finetune.workdir, f'{root}/tl8_finetuned_seed0')
    self.assertEqual(finetune.overrides['init_from.checkpoint_path'],
                     os.path.join(root, 'pretrain_multi_seed0'))
    self.assertFalse(os.path.exists(os.path.join(root, 'tl8_at05_seed0')))
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertIn('| TL 8 at 0.5, pre-trained | loc 0.5, init_from '
                  'pretrain_multi |', text)
    self.assertIn('pre-training on multi_digits (the same model', text)
    self.assertEqual(text.count('<!-- ablations_transfer -->'), 1)
    with open(os.path.join(out, 'results_transfer.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    # Everything finished: a second call trains nothing and reports again.
    final = os.path.join(root, 'tl8_finetuned_seed0', 'final_metrics.json')
    mtime = os.path.getmtime(final)
    with testing.fake_runs() as started:
      self.assertEqual(ablations.main(argv + ['--report_only']), 0)
    self.assertEqual((started, mtime), ([], os.path.getmtime(final)))


if __name__ == '__main__':
  absltest.main()
