"""The token reductions that came after TokenLearner (`models.reduction`):
ToMe, EViT, ATS and PatchMerger against independent float64 NumPy
transcriptions of their papers (tests/numpy_reference.py), block by block and
in the whole ViT, plus the plain model they reduce to, size-weighted pooling,
config checks and gradients."""

import re

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np

from tests import numpy_reference as ref
from tests.testing import as_numpy
from tests.testing import flat
from tests.testing import init
from tests.testing import model_only_config
from tests.testing import perturbed
from tokenlearner_jax import errors
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import ModelConfig
from tokenlearner_jax.models import reduction
from tokenlearner_jax.models.common import pool

NUM_CLASSES = 5
IMAGES = jax.random.normal(jax.random.PRNGKey(7), (2, 32, 32, 3))  # 64 tokens.


def normal(seed, shape):
  """float32 standard normal draws of `shape`."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def f64(x):
  return np.asarray(x, np.float64)


def vit_config(**kwargs):
  """Width 32, 4 blocks, 2 heads, no dropout; kwargs go to `model_config`."""
  return model_only_config('dynamic', num_layers=4, **kwargs)


def init_params(config, seed=0):
  """`config`'s model and its initial parameters (unboxed; a fresh tree of
  the arrays initialised once per config and seed)."""
  return init(config, IMAGES.shape[1:], seed, NUM_CLASSES)


def abstract_params(config):
  """`config`'s model and the shapes of its parameters (nothing compiled)."""
  model = build_model(config, NUM_CLASSES)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), IMAGES,
                                             train=False))['params']
  return model, flax.core.unfreeze(flax.linen.meta.unbox(params))


def logits_and_sizes(model, params):
  """The logits of `model` and the sizes `[B, N']` of the tokens leaving its
  encoder."""
  def apply(p):
    logits, state = model.apply({'params': p}, IMAGES, train=False,
                                capture_intermediates=True)
    return logits, state['intermediates']['Transformer']['__call__'][0][1]

  return jax.jit(apply)(params)


def logits_of(model, params):
  return jax.jit(lambda p: model.apply({'params': p}, IMAGES, train=False))(
      params)


class TomeMergeTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('class_token_odd', 17, True, 5),
      ('class_token_even', 16, True, 3),
      ('no_class_token_even', 16, False, 6),
      ('no_class_token_odd', 17, False, 4),
      ('r_clamped_class_token', 17, True, 100),  # At most (17 - 1) // 2 = 8.
      ('r_clamped', 16, False, 100),  # At most 16 // 2 = 8.
  )
  def test_matches_numpy(self, n, class_token, r):
    x, metric = normal(0, (2, n, 8)), normal(1, (2, n, 6))
    sizes = np.random.default_rng(2).integers(1, 5, (2, n)).astype(np.float32)
    merged, new_sizes = reduction.tome_merge(
        jnp.asarray(x), jnp.asarray(sizes), jnp.asarray(metric), r,
        class_token)
    want, want_sizes = ref.tome_merge(f64(x), f64(sizes), f64(metric), r,
                                      class_token)
    kept = n - min(r, (n - int(class_token)) // 2)
    self.assertEqual(merged.shape, (2, kept, 8))
    np.testing.assert_allclose(merged, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_sizes, want_sizes)
    # Every input patch is accounted for once.
    np.testing.assert_allclose(new_sizes.sum(-1), sizes.sum(-1))
    if class_token:
      np.testing.assert_allclose(merged[:, 0], x[:, 0], rtol=1e-6)

  def test_r_zero_is_the_identity(self):
    x, sizes = jnp.asarray(normal(0, (2, 9, 4))), jnp.ones((2, 9))
    merged, new_sizes = reduction.tome_merge(x, sizes, x, 0, True)
    self.assertIs(merged, x)
    self.assertIs(new_sizes, sizes)


class EvitKeepTest(parameterized.TestCase):

  @parameterized.parameters(0.5, 0.7, 0.1)
  def test_matches_numpy(self, keep_rate):
    x = normal(0, (2, 17, 8))
    attention = np.asarray(jax.nn.softmax(normal(1, (2, 16))))  # [B, N - 1]
    out = reduction.evit_keep(jnp.asarray(x), jnp.asarray(attention),
                              keep_rate)
    want = ref.evit_keep(f64(x), f64(attention), keep_rate)
    self.assertEqual(out.shape, (2, 1 + int(np.ceil(keep_rate * 16)) + 1, 8))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(1.0, 0.99)  # ceil(0.99 * 16) = 16: all kept.
  def test_keeping_all_tokens_is_the_identity(self, keep_rate):
    x = jnp.asarray(normal(0, (2, 17, 8)))
    attention = jax.nn.softmax(jnp.asarray(normal(1, (2, 16))))
    self.assertIs(reduction.evit_keep(x, attention, keep_rate), x)
    self.assertEqual(ref.evit_keep(f64(x), f64(attention), keep_rate).shape,
                     x.shape)


class AtsTest(parameterized.TestCase):

  def test_scores_match_numpy(self):
    attention = np.asarray(jax.nn.softmax(normal(0, (2, 3, 17, 17))))
    value = normal(1, (2, 17, 3, 4))
    scores = reduction.ats_scores(jnp.asarray(attention), jnp.asarray(value))
    want = ref.ats_scores(f64(attention), f64(value))
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)

  @parameterized.named_parameters(
      ('spread', 16, 8, None),
      ('all_points', 16, 16, None),
      ('dominant_score', 16, 8, 5),  # One token takes most of the mass.
  )
  def test_sample_matches_numpy(self, n, k, dominant):
    x = normal(0, (2, 1 + n, 8))
    sizes = np.random.default_rng(1).integers(1, 4, (2, 1 + n))
    sizes = sizes.astype(np.float32)
    scores = np.abs(normal(2, (2, n))) + 0.05
    if dominant is not None:
      scores[:, dominant] = 100.0
    scores /= scores.sum(-1, keepdims=True)
    out, new_sizes = reduction.ats_sample(
        jnp.asarray(x), jnp.asarray(sizes), jnp.asarray(scores), k)
    want, want_sizes = ref.ats_sample(f64(x), f64(sizes), f64(scores), k)
    self.assertEqual(out.shape, (2, 1 + k, 8))
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_array_equal(new_sizes, want_sizes)
    if dominant is not None:
      # Most points fall on the dominant token: its duplicates leave empty
      # slots (zeros of size 0) at the end, after the dominant token itself.
      for b in range(2):
        empty = np.asarray(new_sizes[b]) == 0
        self.assertTrue(empty.any())
        first = int(np.argmax(empty))
        self.assertTrue(empty[first:].all())
        np.testing.assert_array_equal(out[b, first:], 0)
        np.testing.assert_array_equal(out[b, first - 1], x[b, 1 + dominant])

  def test_sample_skips_empty_slots(self):
    x = normal(0, (1, 9, 4))
    sizes = np.array([[1, 2, 0, 1, 0, 3, 1, 0, 1]], np.float32)
    scores = np.abs(normal(1, (1, 8))) + 0.1
    scores[sizes[:, 1:] == 0] = 0.0  # An empty slot gets no attention.
    scores /= scores.sum(-1, keepdims=True)
    out, new_sizes = reduction.ats_sample(
        jnp.asarray(x), jnp.asarray(sizes), jnp.asarray(scores), 8)
    want, want_sizes = ref.ats_sample(f64(x), f64(sizes), f64(scores), 8)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_array_equal(new_sizes, want_sizes)
    # Empty inputs never come back as tokens.
    self.assertEqual(int((np.asarray(new_sizes) > 0).sum()), 1 + 5)


class PatchMergerTest(absltest.TestCase):

  def test_matches_numpy(self):
    x = jnp.asarray(normal(0, (2, 16, 8)))
    module = reduction.PatchMerger(3)
    params = perturbed(module.init(jax.random.PRNGKey(1), x)['params'],
                       scale=0.5)
    out = module.apply({'params': params}, x)
    want = ref.patch_merger(f64(x), as_numpy(params))
    self.assertEqual(out.shape, (2, 3, 8))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


class ReducingBlockTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('tome', 'tome', 4, True, True, 'counts'),
      ('tome_no_class_token', 'tome', 5, False, True, 'counts'),
      ('tome_without_prop_attn', 'tome', 4, True, False, 'counts'),
      ('evit', 'evit', 0.5, True, True, 'ones'),
      ('evit_keep_all', 'evit', 1.0, True, True, 'ones'),
      ('ats', 'ats', 6, True, True, 'empty'),
      ('ats_all_points', 'ats', 16, True, True, 'ones'),
      ('none_with_empty_slots', 'none', 0, True, True, 'empty'),
  )
  def test_matches_numpy(self, method, amount, class_token, prop_attention,
                         sizes_kind):
    x = normal(0, (2, 17, 32))
    rng = np.random.default_rng(1)
    sizes = {'ones': np.ones((2, 17)),
             'counts': rng.integers(1, 5, (2, 17)),
             'empty': rng.integers(0, 3, (2, 17)) * (np.arange(17) > 0)
                      + (np.arange(17) == 0)}[sizes_kind]
    sizes = sizes.astype(np.float32)
    block = reduction.ReducingBlock(
        mlp_dim=64, num_heads=2,
        reduction=reduction.Reduction(method, amount, class_token),
        dropout_rate=0.0, attention_dropout_rate=0.0,
        prop_attention=prop_attention)
    variables = block.init(jax.random.PRNGKey(2), jnp.asarray(x),
                           jnp.asarray(sizes), True)
    params = perturbed(variables['params'], scale=0.2)
    out, new_sizes = jax.jit(
        lambda p, x, s: block.apply({'params': p}, x, s, True))(
            params, jnp.asarray(x), jnp.asarray(sizes))
    want, want_sizes = ref.reducing_block(
        f64(x), f64(sizes), as_numpy(params), method, amount, class_token,
        prop_attention)
    self.assertEqual(out.shape, want.shape)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(new_sizes, want_sizes)

  def test_has_the_plain_blocks_parameters(self):
    block = reduction.ReducingBlock(mlp_dim=64, num_heads=2)
    x = jnp.zeros((1, 5, 32))
    params = block.init(jax.random.PRNGKey(0), x, jnp.ones((1, 5)), True)
    _, vit_params = init_params(vit_config(classifier='token'))
    block_shapes = {k: v.shape for k, v in flat(
        flax.linen.meta.unbox(params['params'])).items()}
    vit_shapes = {k: v.shape for k, v in flat(
        vit_params['Transformer']['encoderblock_0']).items()}
    self.assertEqual(block_shapes, vit_shapes)


# The whole ViT: 64 patch tokens (+ a class token) of 32x32 images, reduced
# from block 1 on.
VIT_CASES = (
    ('tome', dict(token_reduction='tome', tome_r=8, classifier='token'),
     65 - 3 * 8),
    ('tome_gap', dict(token_reduction='tome', tome_r=10, classifier='gap'),
     64 - 3 * 10),
    ('tome_gmp_no_prop_attn', dict(token_reduction='tome', tome_r=6,
                                   classifier='gmp', tome_prop_attn=False),
     64 - 3 * 6),
    ('evit', dict(token_reduction='evit', keep_rate=0.5, pooling_locs=(3,),
                  classifier='token'), 1 + 17 + 1),  # 64 -> 32 + 1 -> 17 + 1.
    ('ats', dict(token_reduction='ats', num_tokens=16, pooling_locs=(3,),
                 classifier='token'), 1 + 16),
)


class ReducedViTTest(parameterized.TestCase):

  @parameterized.named_parameters(*VIT_CASES)
  def test_matches_numpy(self, kwargs, tokens_left):
    config = vit_config(tokenlearner_loc=1, **kwargs)
    model, params = init_params(config)
    params = perturbed(params, scale=0.2)
    logits, sizes = logits_and_sizes(model, params)
    self.assertEqual(logits.shape, (2, NUM_CLASSES))
    want = ref.reduced_vit(np.asarray(IMAGES), as_numpy(params),
                           config.model.to_dict())
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    self.assertEqual(sizes.shape, (2, tokens_left))
    if kwargs['token_reduction'] == 'ats':  # Duplicates left empty slots.
      self.assertTrue(np.any(np.asarray(sizes) == 0))
    if kwargs['token_reduction'] != 'evit':  # EViT's fused token has size 1.
      expected = 64 + int(kwargs['classifier'] == 'token')
      self.assertTrue(np.all(np.asarray(sizes).sum(-1) <= expected))
      if kwargs['token_reduction'] == 'tome':
        np.testing.assert_array_equal(np.asarray(sizes).sum(-1), expected)

  @parameterized.named_parameters(
      ('tome', dict(token_reduction='tome', tome_r=0)),
      ('evit', dict(token_reduction='evit', keep_rate=1.0)),
      ('evit_pooling_locs', dict(token_reduction='evit', keep_rate=1.0,
                                 pooling_locs=(2, 3))),
  )
  def test_no_reduction_is_the_plain_model(self, kwargs):
    plain_model, plain = init_params(vit_config(classifier='token'))
    plain = perturbed(plain, scale=0.2)
    model, params = abstract_params(
        vit_config(classifier='token', tokenlearner_loc=1, **kwargs))
    self.assertEqual(jax.tree_util.tree_structure(params),
                     jax.tree_util.tree_structure(plain))
    np.testing.assert_array_equal(logits_of(model, plain),
                                  logits_of(plain_model, plain))

  def test_tome_merging_duplicates_is_exact_with_proportional_attention(self):
    # Without position embeddings, an image of two colours makes tokens of
    # two kinds, 48 and 16 copies (then 32 and 32). ToMe merges copies with
    # copies; with proportional attention and size-weighted pooling a merged
    # token stands exactly for the copies it replaced, so the logits are the
    # plain model's. Without it the kinds' attention weights change.
    images = np.zeros((2, 32, 32, 3), np.float32)
    images[0, :16, :16] = 1.0  # 16 of the 64 4x4 patches.
    images[1, :, 16:] = 0.5  # 32 of them.
    plain_model, params = init_params(vit_config(classifier='gap'))
    params = perturbed(params, scale=0.2)
    params['Transformer']['posembed_input']['pos_embedding'] *= 0.0
    apply = lambda model: jax.jit(lambda p: model.apply(  # pylint: disable=g-long-lambda
        {'params': p}, images, train=False))(params)
    want = apply(plain_model)
    for prop_attn in (True, False):
      got = apply(build_model(vit_config(
          classifier='gap', tokenlearner_loc=0, token_reduction='tome',
          tome_r=8, tome_prop_attn=prop_attn), NUM_CLASSES))
      if prop_attn:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
      else:
        self.assertGreater(np.abs(np.asarray(got - want))[0].max(), 1e-3)

  @parameterized.parameters('tome', 'evit', 'ats')
  def test_plain_parameters_load(self, method):
    _, plain = init_params(vit_config(classifier='token'))
    amount = {'tome': dict(tome_r=8), 'evit': dict(keep_rate=0.5),
              'ats': dict(num_tokens=8)}[method]
    model, params = abstract_params(vit_config(
        classifier='token', tokenlearner_loc=1, token_reduction=method,
        **amount))
    self.assertEqual(jax.tree_util.tree_structure(params),
                     jax.tree_util.tree_structure(plain))
    self.assertEqual({k: v.shape for k, v in flat(params).items()},
                     {k: v.shape for k, v in flat(plain).items()})
    logits = logits_of(model, perturbed(plain, scale=0.2))
    self.assertTrue(np.all(np.isfinite(logits)))


class SizedPoolTest(absltest.TestCase):

  def test_gap_of_exact_averages_is_the_mean_over_patches(self):
    patches = normal(0, (2, 12, 6))
    # Tokens averaging the patch groups {0, 1, 2}, {3}, {4..8}, {9, 10, 11},
    # and an empty slot.
    groups = [(0, 3), (3, 4), (4, 9), (9, 12)]
    tokens = np.stack([patches[:, a:b].mean(1) for a, b in groups] +
                      [np.full((2, 6), 50.0, np.float32)], 1)
    sizes = np.array([[3, 1, 5, 3, 0]] * 2, np.float32)
    np.testing.assert_allclose(pool(jnp.asarray(tokens), 'gap',
                                    jnp.asarray(sizes)),
                               patches.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pool(jnp.asarray(tokens), 'gsp',
                                    jnp.asarray(sizes)),
                               patches.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        pool(jnp.asarray(tokens), 'gap', jnp.asarray(sizes)),
        ref.sized_pool(f64(tokens), 'gap', f64(sizes)), rtol=1e-5, atol=1e-6)

  def test_gmp_ignores_empty_slots(self):
    tokens = normal(0, (2, 5, 6))
    tokens[:, 3] = 100.0  # Would win the max, but the slot is empty.
    sizes = np.array([[1, 2, 1, 0, 1], [0, 1, 1, 0, 4]], np.float32)
    out = pool(jnp.asarray(tokens), 'gmp', jnp.asarray(sizes))
    for b in range(2):
      live = sizes[b] > 0
      np.testing.assert_array_equal(out[b], tokens[b, live].max(0))
    np.testing.assert_allclose(out, ref.sized_pool(f64(tokens), 'gmp',
                                                   f64(sizes)))

  def test_without_sizes_is_the_plain_pooling(self):
    tokens = jnp.asarray(normal(0, (2, 5, 6)))
    np.testing.assert_array_equal(pool(tokens, 'gap'), tokens.mean(1))
    np.testing.assert_array_equal(pool(tokens, 'gmp'), tokens.max(1))


class ConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('evit_gap', dict(token_reduction='evit', classifier='gap'),
       'model.classifier'),
      ('ats_gap', dict(token_reduction='ats', classifier='gap'),
       'model.classifier'),
      ('tome_scan', dict(token_reduction='tome', scan_layers=True),
       'model.scan_layers'),
      ('tome_fuser', dict(token_reduction='tome', use_tokenfuse=True),
       'model.tokenizer.use_tokenfuse'),
      ('keep_rate_zero', dict(token_reduction='evit', classifier='token',
                              keep_rate=0), 'model.tokenizer.keep_rate'),
      ('keep_rate_above_one', dict(token_reduction='evit', classifier='token',
                                   keep_rate=1.5), 'model.tokenizer.keep_rate'),
      ('tome_r_negative', dict(token_reduction='tome', tome_r=-1),
       'model.tokenizer.tome_r'),
      ('pooling_locs_tome', dict(token_reduction='tome', pooling_locs=(2,)),
       'model.tokenizer.pooling_locs'),
      ('tome_fused_attention', dict(token_reduction='tome',
                                    attention_impl='fused'),
       'model.attention_impl'),
      ('tome_r_without_tome', dict(token_reduction='tokenlearner', tome_r=8),
       'model.tokenizer.tome_r'),
      ('keep_rate_without_evit', dict(token_reduction='ats',
                                      classifier='token', keep_rate=0.5),
       'model.tokenizer.keep_rate'),
      # ATS's authors keep at least 8 tokens, the class token included.
      ('ats_below_its_minimum', dict(token_reduction='ats', num_tokens=6,
                                     classifier='token'),
       'model.tokenizer.num_tokens=6'),
  )
  def test_rejected_naming_the_key(self, kwargs, key):
    config = vit_config(tokenlearner_loc=1, **kwargs)
    with self.assertRaisesRegex(errors.ConfigError, re.escape(key)) as caught:
      ModelConfig.from_config(config, NUM_CLASSES)
    self.assertNotIn('\n', str(caught.exception))
    with self.assertRaisesRegex(errors.ConfigError, re.escape(key)):
      build_model(config, NUM_CLASSES)

  @parameterized.parameters(
      dict(token_reduction='tome', tome_r=4, classifier='gap'),
      dict(token_reduction='evit', keep_rate=0.7, classifier='token',
           pooling_locs=(2,)),
      dict(token_reduction='ats', num_tokens=7, classifier='token'),
      dict(token_reduction='patchmerger', num_tokens=8, classifier='gap'))
  def test_accepted(self, **kwargs):
    ModelConfig.from_config(vit_config(tokenlearner_loc=1, **kwargs),
                            NUM_CLASSES)


class GradientTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('tome', dict(token_reduction='tome', tome_r=8, classifier='gap')),
      ('evit', dict(token_reduction='evit', keep_rate=0.5, pooling_locs=(3,),
                    classifier='token')),
      ('ats', dict(token_reduction='ats', num_tokens=16, pooling_locs=(3,),
                   classifier='token')),
      ('patchmerger', dict(token_reduction='patchmerger', num_tokens=8,
                           classifier='gap')),
  )
  def test_gradients_flow_in_training(self, kwargs):
    config = vit_config(tokenlearner_loc=1, **kwargs)
    model, params = init_params(config)
    params = perturbed(params, scale=0.2)

    def loss(p):
      logits = model.apply({'params': p}, IMAGES, train=True,
                           rngs={'dropout': jax.random.PRNGKey(3)})
      return jnp.sum(logits**2)

    grads = flat(jax.jit(jax.grad(loss))(params))
    kernels = {k: v for k, v in grads.items()
               if k.startswith('Transformer/encoderblock_') and
               k.endswith('kernel')}
    self.assertLen(kernels, 4 * 6)  # q, k, v, out, two MLP kernels a block.
    for name, grad in grads.items():
      self.assertTrue(np.all(np.isfinite(grad)), name)
    for name, grad in kernels.items():
      self.assertGreater(float(np.abs(grad).max()), 0.0, name)


if __name__ == '__main__':
  absltest.main()
