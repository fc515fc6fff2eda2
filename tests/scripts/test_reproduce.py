"""scripts/reproduce.py: the studies' configs, verdicts, report, and a run
through it with its trainer faked."""

import os

from absl.testing import absltest

from tests import testing
from tests.testing import DATA_DIR
from tests.testing import load_script
from tests.testing import parsed_config
from tokenlearner_jax import flops

reproduce = load_script('reproduce')
CLIP = (8, 32, 32, 3)  # moving_digits.


class StudiesTest(absltest.TestCase):

  def test_claims_name_variants_of_their_study(self):
    for study in reproduce.STUDIES.values():
      for name in study.variants:
        self.assertIn(name, reproduce.VARIANTS)
      for claim in study.claims:
        self.assertIn(claim.a, study.variants)
        self.assertIn(claim.b, study.variants)
        self.assertIn(claim.relation, ('higher', 'similar'))

  def test_every_variant_runs_the_config_it_names(self):
    configs = {}
    for variant in reproduce.needed_variants(
        list(reproduce.STUDIES.values())):
      command = reproduce.command(variant, 1, '/w', '/root', 300, False)
      config = configs[variant.name] = parsed_config(command)
      self.assertEqual(config.rng_seed, 1)
      self.assertEqual(config.num_training_steps, 300)
      self.assertEqual(config.dataset_name, 'multi_digits' if variant.pretrain
                       else 'moving_digits')
    model = lambda name: configs[name].model  # pylint: disable=unnecessary-lambda-assignment
    self.assertIsNone(model('no_tl').tokenizer.tokenlearner_loc)
    self.assertEqual([model(f'tl8_at{x}').tokenizer.tokenlearner_loc
                      for x in ('0', '025', '05', '075')], [0, 1, 2, 3])
    self.assertEqual(model('tl16_at05').tokenizer.num_tokens, 16)
    self.assertFalse(model('tl8_v10').tokenizer.use_v11)
    self.assertEqual(model('tl8_unpool').tokenizer.fuser_type, 'unpool')
    self.assertEqual(model('pool2x2_at05').tokenizer.token_reduction,
                     'pooling')
    self.assertEqual(model('dense8_at05').tokenizer.token_reduction, 'dense')
    # Pre-training uses the fine-tuned model's shape, on 2-D patches.
    for field in ('hidden_size', 'num_heads', 'mlp_dim', 'num_layers'):
      self.assertEqual(model('pretrain_multi')[field], model('tl8_at05')[field])
    self.assertEqual(model('pretrain_multi').tokenizer.tokenlearner_loc, 2)
    self.assertEqual(configs['tl8_finetuned'].init_from.checkpoint_path,
                     '/root/pretrain_multi_seed1')
    # The location study spans compute: later TokenLearner, more GMACs.
    macs = [flops.gmacs(configs[name], CLIP) for name in
            reproduce.STUDIES['location'].variants[1:] + ('no_tl',)]
    self.assertEqual(macs, sorted(macs))
    self.assertLess(macs[2], 0.85 * macs[-1])  # At 0.5: 9.5 vs 12.1 MMACs.

  def test_only_variants_keeps_their_claims(self):
    study = reproduce.only_variants(reproduce.STUDIES['location'],
                                    ['tl8_at05', 'no_tl', 'tl8_at0'])
    self.assertEqual(study.variants, ('no_tl', 'tl8_at0', 'tl8_at05'))
    self.assertEqual([(c.a, c.b) for c in study.claims],
                     [('tl8_at05', 'no_tl'), ('tl8_at05', 'tl8_at0')])
    with self.assertRaisesRegex(ValueError, r"--variants: unknown \['tl9'\]"):
      reproduce.only_variants(study, ['tl9'])

  def test_verdicts_pair_seeds(self):
    higher = reproduce.Claim('a', 'b', 'higher', 'x')
    similar = reproduce.Claim('a', 'b', 'similar', 'x')
    seeds = lambda *v: dict(enumerate(v))  # pylint: disable=unnecessary-lambda-assignment
    # Seeds move both alike (seed 2 is easy): paired, +5, +4, +4 is clear.
    self.assertEqual(
        reproduce.verdict(higher, seeds(0.40, 0.39, 0.45),
                          seeds(0.35, 0.35, 0.41)),
        'agrees (d = +4.3 points, 95% interval [+2.9, +5.8] over 3 seeds)')
    self.assertStartsWith(reproduce.verdict(
        higher, seeds(0.35, 0.35, 0.41), seeds(0.40, 0.39, 0.45)), 'disagrees')
    self.assertStartsWith(reproduce.verdict(
        higher, seeds(0.40, 0.30, 0.45), seeds(0.35, 0.35, 0.41)),
                          'cannot tell')
    self.assertStartsWith(reproduce.verdict(
        similar, seeds(0.400, 0.391, 0.452), seeds(0.401, 0.390, 0.450)),
                          'agrees')
    self.assertStartsWith(reproduce.verdict(
        similar, seeds(0.40, 0.39, 0.45), seeds(0.35, 0.35, 0.41)),
                          'disagrees')
    self.assertStartsWith(reproduce.verdict(
        similar, seeds(0.40, 0.30, 0.45), seeds(0.40, 0.35, 0.41)),
                          'cannot tell')
    # Only seeds both have count; one is not enough.
    self.assertEqual(reproduce.verdict(higher, {0: 0.6, 1: 0.6}, {1: 0.5}),
                     'not enough seeds')


class ReproduceRunTest(absltest.TestCase):

  def test_transfer_study_runs_pretraining_first_and_reports(self):
    # The fine-tuned variant alone (and the pre-training it needs: 2 runs),
    # one seed (the verdicts need two or more); the runs faked.
    root = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    argv = [f'--workdir={root}', f'--out={out}', '--studies=transfer',
            '--variants=tl8_finetuned', '--seeds=0', '--runlocal',
            f'--set=dataset_configs.data_dir={DATA_DIR}']
    with testing.fake_runs() as started:
      self.assertEqual(reproduce.main(argv), 0)
    pretrain, finetune = started
    self.assertIn(f'--workdir={root}/pretrain_multi_seed0', pretrain)
    self.assertIn(f'--workdir={root}/tl8_finetuned_seed0', finetune)
    self.assertEqual(parsed_config(finetune).init_from.checkpoint_path,
                     os.path.join(root, 'pretrain_multi_seed0'))
    self.assertFalse(os.path.exists(os.path.join(root, 'tl8_at05_seed0')))
    with open(os.path.join(out, 'results.md')) as f:
      text = f.read()
    self.assertIn('| TL 8 at 0.5, pre-trained | loc 0.5, init_from '
                  'pretrain_multi |', text)
    self.assertIn('pre-training on multi_digits (the same model', text)
    with open(os.path.join(out, 'results_transfer.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    # Everything finished: a second call trains nothing and reports again.
    final = os.path.join(root, 'tl8_finetuned_seed0', 'final_metrics.json')
    mtime = os.path.getmtime(final)
    with testing.fake_runs() as started:
      self.assertEqual(reproduce.main(argv + ['--report_only']), 0)
    self.assertEqual((started, mtime), ([], os.path.getmtime(final)))

if __name__ == '__main__':
  absltest.main()
