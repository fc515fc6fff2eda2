"""models.token_reduction: the flat tokenizer keys read into one typed
reduction, what it does at each block, and the keys it refuses."""

from absl.testing import absltest

from tests.testing import model_only_config
from tokenlearner_jax import errors
from tokenlearner_jax.models import token_reduction
from tokenlearner_jax.models.config import ModelConfig


def reduction(num_layers=6, **tokenizer):
  config = model_only_config('dynamic', num_layers=num_layers,
                             classifier='token', **tokenizer)
  return ModelConfig.from_config(config, num_classes=3).reduction


class TokenReductionTest(absltest.TestCase):

  def test_each_method_is_its_own_kind_with_its_own_settings(self):
    self.assertEqual(reduction(), token_reduction.NoReduction())
    learned = reduction(tokenlearner_loc=2, num_tokens=4)
    self.assertEqual((learned.method, learned.loc, learned.num_tokens,
                      learned.fuser), ('tokenlearner', 2, 4, None))
    pooled = reduction(tokenlearner_loc=1, token_reduction='pooling',
                       pooling_window=4, pooling_locs=(3,))
    self.assertEqual((pooled.window, pooled.again_at), (4, (3,)))
    tome = reduction(tokenlearner_loc=2, token_reduction='tome', tome_r=5)
    self.assertIsInstance(tome, token_reduction.InBlockReduction)
    self.assertEqual((tome.first, tome.blocks, tome.amount),
                     (2, (2, 3, 4, 5), 5))
    evit = reduction(tokenlearner_loc=1, token_reduction='evit',
                     keep_rate=0.5, pooling_locs=(4,))
    self.assertEqual((evit.blocks, evit.amount), ((1, 4), 0.5))
    ats = reduction(tokenlearner_loc=1, token_reduction='ats', num_tokens=9)
    self.assertEqual((ats.blocks, ats.amount, ats.protects_first_token),
                     ((1,), 9, True))

  def test_the_encoder_asks_what_each_block_does(self):
    pooled = reduction(tokenlearner_loc=1, token_reduction='pooling',
                       pooling_locs=(3, 5))
    self.assertEqual([pooled.learner_before(i) for i in range(6)],
                     [None, 0, None, 1, None, 2])
    fused = reduction(tokenlearner_loc=2, use_tokenfuse=True)
    self.assertEqual([fused.learner_before(i) for i in range(6)],
                     [None, None, 0, 1, 2, 3])
    evit = reduction(tokenlearner_loc=1, token_reduction='evit',
                     pooling_locs=(4,))
    self.assertEqual([evit.at_block(i).method for i in range(1, 6)],
                     ['evit', 'none', 'none', 'evit', 'none'])

  def test_a_key_of_another_method_is_refused(self):
    for tokenizer, message in (
        (dict(token_reduction='evit', tome_r=4),
         r"tome_r=4 is read by token_reduction='tome' only \(it is 'evit'\)"),
        (dict(keep_rate=0.5), r"keep_rate=0.5 is read by "
         r"token_reduction='evit' only \(it is 'tokenlearner'\)"),
        (dict(token_reduction='tome', pooling_window=4),
         r"pooling_window=4 is read by token_reduction='pooling' only"),
        (dict(token_reduction='ats', tome_prop_attn=False),
         r"tome_prop_attn=False is read by token_reduction='tome' only")):
      with self.assertRaisesRegex(errors.ConfigError, message):
        reduction(tokenlearner_loc=1, **tokenizer)
    # With TokenLearner off, nothing reads them: nothing is refused.
    self.assertEqual(reduction(keep_rate=0.5), token_reduction.NoReduction())


if __name__ == '__main__':
  absltest.main()
