"""Encoder speed options change no number: `scan_layers` (and the loader between
the stacked and per-layer layouts), `remat_policy`, `attention_impl='fused'`
(and 'cudnn', on a GPU), bf16 compute with fp32 parameters, and a donated
train state."""

import functools
import re

from absl.testing import absltest
from absl.testing import parameterized
import flax
import flax.linen as nn
import jax
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tests import testing
from tests.testing import model_only_config
from tests.testing import perturbed
from tokenlearner_jax import errors
from tokenlearner_jax import layer_layout
from tokenlearner_jax import surgery
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import common
from tokenlearner_jax.models.encoder import scan_segments

NUM_CLASSES = 5
VIDEO = (2, 4, 16, 16, 3)  # [B, T, H, W, 3]: 2 temporal slices of 4x4 tokens.


def video_config(**kwargs):
  """A 4-block 'mu' ViViT; kwargs go to `model_config`."""
  return model_only_config('video', num_layers=4, num_tokens=3, **kwargs)


def init(config, x):
  model = build_model(config, NUM_CLASSES)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False))
  return model, perturbed(params['params'], scale=0.05)


def to_layout(params, target):
  """`params` moved into `target`'s layout (stacked or per layer)."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  flat = layer_layout.stack_layers(layer_layout.unstack_layers(flat),
                                   flax.traverse_util.flatten_dict(
                                       target, sep='/'))
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def outputs(model, params, x):
  """(eval logits, training loss, its gradients) of one compiled program."""
  labels = jax.nn.one_hot(jnp.arange(x.shape[0]) % NUM_CLASSES, NUM_CLASSES)

  def loss_fn(p):
    logits = model.apply({'params': p}, x, train=True,
                         rngs={'dropout': jax.random.PRNGKey(1)})
    return optax.softmax_cross_entropy(logits, labels).mean()

  def run(p):
    return (model.apply({'params': p}, x, train=False),
            *jax.value_and_grad(loss_fn)(p))

  return jax.jit(run)(params)


def assert_trees_close(test, a, b, rtol, atol):
  flat_a = flax.traverse_util.flatten_dict(a, sep='/')
  flat_b = flax.traverse_util.flatten_dict(b, sep='/')
  test.assertEqual(sorted(flat_a), sorted(flat_b))
  for name in flat_a:
    np.testing.assert_allclose(flat_a[name], flat_b[name], rtol=rtol,
                               atol=atol, err_msg=name)


SCAN = dict(scan_layers=True)
SCAN_REMAT = dict(scan_layers=True, remat_policy='dots_saveable')
REMAT = dict(remat_policy='nothing_saveable')
# Every segment kind and option once (CI), then more combinations (slow).
LAYOUTS = [
    (dict(tokenlearner_loc=2), REMAT),
    (dict(tokenlearner_loc=1, use_tokenfuse=True), SCAN_REMAT),
    (dict(tokenlearner_loc=0, use_tokenfuse=True, use_v11=False,
          classifier='token'), SCAN),
    (dict(tokenlearner_loc=2, use_v11=False), SCAN),
    (dict(tokenlearner_loc=1, use_tokenfuse=True, fuser_type='reprojection'),
     SCAN),
]
MORE_LAYOUTS = [
    (dict(tokenlearner_loc=None), SCAN),
    (dict(tokenlearner_loc=0), SCAN_REMAT),
    (dict(tokenlearner_loc=2, use_tokenfuse=True), REMAT),
    (dict(tokenlearner_loc=1, use_tokenfuse=True, fuser_type='unpool'), SCAN),
    (dict(tokenlearner_loc=1, use_tokenfuse=True, token_reduction='dense'),
     SCAN),
]


class ScanRematTest(parameterized.TestCase):

  @parameterized.parameters(*LAYOUTS)
  def test_scanned_and_remat_match_the_unrolled_model(self, layout, options):
    self.check_against_unrolled(layout, options)

  @parameterized.parameters(*MORE_LAYOUTS)
  @pytest.mark.slow  # Innermost: the generated tests copy the mark.
  def test_more_layouts_match_the_unrolled_model(self, layout, options):
    self.check_against_unrolled(layout, options)

  def check_against_unrolled(self, layout, options):
    x = jax.random.normal(jax.random.PRNGKey(2), VIDEO)
    model, params = init(video_config(**layout), x)
    fast, fast_params = init(video_config(**layout, **options), x)
    fast_params = to_layout(params, fast_params)
    logits, loss, grads = outputs(model, params, x)
    fast_logits, fast_loss, fast_grads = outputs(fast, fast_params, x)
    np.testing.assert_allclose(fast_logits, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast_loss, loss, rtol=1e-5)
    # Gradients, compared in the per-layer layout.
    assert_trees_close(self, to_layout(fast_grads, grads), grads, rtol=2e-4,
                       atol=1e-6)

  def test_segments_and_stacked_names(self):
    self.assertEqual(
        [s.name for s in scan_segments(6, 2, use_tokenfuse=False)],
        ['encoderblock_0_to_1', 'encoderblock_2_to_5'])
    self.assertEqual(
        [s.name for s in scan_segments(6, 0, use_tokenfuse=True)],
        ['fuserlayer_0_to_5'])
    self.assertEqual([s.name for s in scan_segments(6, None, False)],
                     ['encoderblock_0_to_5'])
    x = jnp.zeros(VIDEO)
    _, params = init(video_config(tokenlearner_loc=1, use_tokenfuse=True,
                                  scan_layers=True), x)
    fuser = params['Transformer']['fuserlayer_1_to_3']
    self.assertEqual(sorted(fuser), ['TokenFuser', 'TokenLearnerModuleV11',
                                     'encoderblock'])
    # [layers, C, heads, head_dim]
    self.assertEqual(
        fuser['encoderblock']['MultiHeadDotProductAttention_0']['query'][
            'kernel'].shape, (3, 32, 2, 16))
    self.assertEqual(params['Transformer']['encoderblock_0_to_0']['LayerNorm_0']
                     ['scale'].shape, (1, 32))

  def test_unstack_then_stack_is_the_identity_and_bad_shapes_are_named(self):
    x = jnp.zeros(VIDEO)
    _, stacked = init(video_config(tokenlearner_loc=2, use_tokenfuse=True,
                                   scan_layers=True), x)
    flat = flax.traverse_util.flatten_dict(stacked, sep='/')
    per_layer = layer_layout.unstack_layers(flat)
    self.assertIn('Transformer/TokenFuser_1/Dense_0/kernel', per_layer)
    self.assertIn('Transformer/encoderblock_3/LayerNorm_0/scale', per_layer)
    again = layer_layout.stack_layers(per_layer, flat)
    self.assertEqual(sorted(again), sorted(flat))
    for name in flat:
      np.testing.assert_array_equal(again[name], flat[name])
    bad = {'Transformer/encoderblock_0_to_1/LayerNorm_0/scale': np.zeros(
        (3, 32))}
    with self.assertRaisesRegex(ValueError, 'encoderblock_0_to_1.*3, 32'):
      layer_layout.unstack_layers(bad)

  def test_init_from_per_layer_checkpoint_into_scanned_model(self):
    x = jnp.zeros(VIDEO)
    config = video_config(tokenlearner_loc=2)
    model, params = init(config, x)
    scanned_config = video_config(tokenlearner_loc=2, scan_layers=True)
    scanned, new = init(scanned_config, x)
    scanned_config.init_from = schema.complete(
        ml_collections.ConfigDict()).init_from  # Every default.
    loaded = surgery.init_params(new, params, scanned_config, VIDEO[1:])
    xr = jax.random.normal(jax.random.PRNGKey(3), VIDEO)
    out = scanned.apply({'params': loaded}, xr, train=False)
    # The head stays new (zero-initialised): compare the encoder outputs.
    features = lambda m, p: jax.jit(lambda p: m.apply(  # pylint: disable=g-long-lambda
        {'params': p}, xr, train=False, capture_intermediates=True)[1][
            'intermediates']['Transformer']['__call__'][0])(p)
    np.testing.assert_allclose(features(scanned, loaded),
                               features(model, params), rtol=1e-5, atol=1e-6)
    self.assertEqual(out.shape, (2, NUM_CLASSES))

  def test_stochastic_depth_under_scan_draws_per_layer(self):
    x = jax.random.normal(jax.random.PRNGKey(2), VIDEO)
    config = video_config(tokenlearner_loc=2, scan_layers=True,
                          stochastic_depth=0.5)
    model, params = init(config, x)
    train_apply = jax.jit(lambda rng: model.apply(
        {'params': params}, x, train=True, rngs={'dropout': rng}))
    outs = [train_apply(jax.random.PRNGKey(seed)) for seed in range(3)]
    self.assertTrue(all(np.isfinite(o).all() for o in outs))
    self.assertFalse(np.allclose(outs[0], outs[1]))  # Branches were dropped.
    eval_out = model.apply({'params': params}, x, train=False)
    unrolled, unrolled_params = init(video_config(
        tokenlearner_loc=2, stochastic_depth=0.5), x)
    np.testing.assert_allclose(
        unrolled.apply({'params': to_layout(params, unrolled_params)}, x,
                       train=False), eval_out, rtol=1e-5, atol=1e-6)


class AttentionAndPrecisionTest(parameterized.TestCase):

  def assert_matches_einsum(self, attention_impl, dtype, rtol, atol,
                            grads_rtol=None):
    """`attention_impl`'s logits, loss (and gradients) vs the einsum's."""
    x = jax.random.normal(jax.random.PRNGKey(2), VIDEO)
    config = video_config(tokenlearner_loc=1)
    config.model_dtype_str = dtype
    model, params = init(config, x)
    config.model.attention_impl = attention_impl
    other = build_model(config, NUM_CLASSES)
    logits, loss, grads = outputs(model, params, x)
    other_logits, other_loss, other_grads = outputs(other, params, x)
    np.testing.assert_allclose(other_logits, logits, rtol=rtol, atol=atol)
    np.testing.assert_allclose(other_loss, loss, rtol=rtol)
    if grads_rtol:
      assert_trees_close(self, other_grads, grads, rtol=grads_rtol, atol=atol)

  def test_fused_attention_matches_einsum(self):
    self.assert_matches_einsum('fused', 'float32', rtol=1e-5, atol=1e-6,
                               grads_rtol=2e-4)

  @parameterized.parameters(
      ('pallas_attention', jnp.float32, 140, 1e-5),
      ('pallas_attention', jnp.bfloat16, 256, 2e-2),
      ('splash_attention', jnp.float32, 140, 1e-5),
      ('splash_attention', jnp.bfloat16, 1280, 2e-2))
  def test_pallas_attention_matches_einsum(self, impl, dtype, length, tol):
    # Pallas's TPU kernels in their interpret mode; 140 tokens are padded to
    # 256 and masked; 256 and 1,280 are not padded, and span blocks (flash's
    # two of 128, splash's two of 640).
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, length, 2, 16),
                                 dtype) for i in range(3))
    weights = jnp.arange(16, dtype=dtype)
    attention = getattr(common, impl)

    def loss(attention, q, k, v):
      return jnp.sum(attention(q, k, v).astype(jnp.float32) * weights)

    with pltpu.force_tpu_interpret_mode():
      got = jax.jit(attention)(q, k, v)
      got_grads = jax.grad(functools.partial(loss, attention),
                           argnums=(0, 1, 2))(q, k, v)
    want = nn.dot_product_attention(q, k, v)
    want_grads = jax.grad(functools.partial(loss, nn.dot_product_attention),
                          argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol,
                               atol=tol)
    for g, w in zip(got_grads, want_grads):
      np.testing.assert_allclose(np.float32(g), np.float32(w), rtol=tol,
                                 atol=tol * np.abs(np.float32(w)).max())

  def test_pallas_attention_with_a_class_token_matches_einsum(self):
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 48, 48, 3))
    # 1 + 144 tokens (the kernel, padded to 256), then 1 + 8 (the einsum).
    config = model_only_config('dynamic', tokenlearner_loc=1,
                               classifier='token')
    model, params = init(config, x)
    config.model.attention_impl = 'pallas'
    with pltpu.force_tpu_interpret_mode():
      other = outputs(build_model(config, NUM_CLASSES), params, x)
    logits, loss, grads = outputs(model, params, x)
    np.testing.assert_allclose(other[0], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other[1], loss, rtol=1e-5)
    assert_trees_close(self, other[2], grads, rtol=2e-4, atol=1e-6)

  def test_splash_pads_to_blocks_of_at_least_512(self):
    # (tokens, padded, block): a multiple of 128 whose largest dividing block
    # up to 1024 is at least 512, or the whole sequence where shorter.
    for n, padded, block in ((20, 128, 128), (197, 256, 256),
                             (3137, 3200, 640), (7745, 8064, 896),
                             (1024, 1024, 1024), (2048, 2048, 1024)):
      self.assertEqual((common.splash_length(n),
                        common.splash_block(common.splash_length(n))),
                       (padded, block))

  @parameterized.parameters('pallas', 'splash')
  def test_pallas_attention_needs_tpu_devices(self, impl):
    config = schema.complete(testing.config_for('demo_moving_digits'))
    config.model.attention_impl = impl
    with self.assertRaisesRegex(errors.ConfigError,
                                f"attention_impl='{impl}'.*cpu devices"):
      train_steps.build_program(config, sharding.make_mesh(config),
                                (8, 32, 32, 3), 10, 1)

  def test_fused_attention_with_attention_dropout_is_refused(self):
    config = video_config(tokenlearner_loc=1, attention_impl='fused',
                          attention_dropout_rate=0.1)
    with self.assertRaisesRegex(ValueError, 'attention_dropout_rate'):
      build_model(config, NUM_CLASSES)

  def test_cudnn_attention_needs_bf16_and_a_gpu(self):
    config = video_config(tokenlearner_loc=1, attention_impl='cudnn')
    with self.assertRaisesRegex(ValueError, "model_dtype_str='bfloat16'"):
      build_model(config, NUM_CLASSES)
    config.model_dtype_str = 'bfloat16'
    if jax.default_backend() != 'gpu':
      with self.assertRaisesRegex(ValueError, 'attention_impl.*CUDA GPU.*cpu'):
        build_model(config, NUM_CLASSES)

  @absltest.skipIf(jax.default_backend() != 'gpu', 'cuDNN needs a CUDA GPU.')
  def test_cudnn_attention_matches_einsum_in_bf16(self):
    self.assert_matches_einsum('cudnn', 'bfloat16', rtol=2e-2, atol=2e-2)

  @parameterized.parameters(
      ('remat_policy', 'dots', 'model.remat_policy'),
      ('attention_impl', 'flash', 'model.attention_impl'))
  def test_bad_options_are_named(self, field, value, message):
    config = video_config(tokenlearner_loc=1)
    config.model[field] = value
    with self.assertRaisesRegex(ValueError, message):
      build_model(config, NUM_CLASSES)

  def test_bfloat16_computes_in_bf16_with_fp32_parameters(self):
    x = jax.random.normal(jax.random.PRNGKey(2), VIDEO)
    config = video_config(tokenlearner_loc=1, use_tokenfuse=True)
    model, params = init(config, x)
    config.model_dtype_str = 'bfloat16'
    bf16 = build_model(config, NUM_CLASSES)
    bf16_params = nn.unbox(bf16.init(jax.random.PRNGKey(0), x, train=False))
    self.assertEqual({p.dtype for p in jax.tree_util.tree_leaves(bf16_params)},
                     {jnp.dtype(jnp.float32)})
    _, inter = bf16.apply({'params': params}, x, train=False,
                          capture_intermediates=True)
    block = inter['intermediates']['Transformer']['encoderblock_0']
    self.assertEqual(block['MlpBlock_0']['Dense_0']['__call__'][0].dtype,
                     jnp.bfloat16)
    logits = bf16.apply({'params': params}, x, train=False)
    self.assertEqual(logits.dtype, jnp.float32)
    reference = model.apply({'params': params}, x, train=False)
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(logits, reference, atol=0.03 * scale)


class ActivationShardingTest(absltest.TestCase):
  """`common.batch_split` constrains the residual stream (and TokenLearner /
  TokenFuser outputs) only inside `activation_sharding` with a 'batch' rule."""

  def constraints(self, rules=None):
    x = jnp.zeros(VIDEO)
    model, params = init(video_config(tokenlearner_loc=1, use_tokenfuse=True),
                         x)
    apply = lambda p, x: model.apply({'params': p}, x, train=False)
    if rules is not None:
      mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                               ('data', 'fsdp', 'model'))
      apply = train_steps.traced_under_mesh(apply, mesh, rules)
    text = jax.jit(apply).lower(params, x).as_text()
    # Shardy's `sdy.sharding_constraint %x <@mesh, [dims]>`: the dims.
    return re.findall(r'sharding_constraint \S+ <@\w+, (\[.*?\])>', text)

  def test_each_block_and_the_token_learner_and_fuser_outputs(self):
    found = self.constraints((('batch', ('data', 'fsdp')),))
    # The encoder's input, 4 blocks, TokenLearner and TokenFuser at blocks
    # 1-3: 1 + 4 + 3 + 3.
    self.assertEqual(found, ['[{"data", "fsdp"}, {}, {}]'] * 11)

  def test_none_outside_the_steps_or_without_a_batch_rule(self):
    self.assertEqual(self.constraints(), [])
    self.assertEqual(self.constraints((('embed', 'fsdp'),)), [])


class DonationTest(absltest.TestCase):

  def test_donated_and_undonated_steps_agree(self):
    x = jax.random.normal(jax.random.PRNGKey(2), VIDEO)
    config = video_config(tokenlearner_loc=1)
    model, params = init(config, x)
    config.mixup = ml_collections.ConfigDict(dict(alpha=None))
    config.label_smoothing = None
    tx = optax.adam(1e-3)
    batch = {'inputs': x, 'label': jax.nn.one_hot(jnp.array([0, 3]),
                                                  NUM_CLASSES)}
    step = functools.partial(train_steps.train_step, model=model, tx=tx,
                             schedule=lambda s: 1e-3, config=config,
                             multilabel=False)

    def run(donate):
      state = train_steps.TrainState(
          step=jnp.zeros((), jnp.int32),
          params=jax.tree_util.tree_map(jnp.array, params),
          opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
      jitted = jax.jit(step, donate_argnums=0 if donate else ())
      for _ in range(3):
        state, metrics = jitted(state, batch)
      return state.params, metrics['loss']

    donated, donated_loss = run(True)
    kept, kept_loss = run(False)
    self.assertEqual(float(donated_loss), float(kept_loss))
    assert_trees_close(self, donated, kept, rtol=0, atol=0)


if __name__ == '__main__':
  absltest.main()
