"""Tests of `tokenlearner_jax.surgery`: the fine-tuning surgery (head,
pre_logits, cls, kernel inflation, position-embedding resize/tile) does what it
says, on tiny models."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tests.testing import NUM_CLASSES
from tests.testing import flat
from tests.testing import init
from tests.testing import mu_config as make_config
from tests.testing import randomized
from tests.testing import unflat
from tokenlearner_jax import errors
from tokenlearner_jax import surgery
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models.config import TUBELET_INITIALIZERS

IMAGE = (16, 16, 3)  # 4x4 patches of 4x4.
VIDEO = (4, 16, 16, 3)  # 2x4x4 tubelets of (h, w, t) = (4, 4, 2).
POSEMB = surgery.POSEMB


def embed(model, params, x):
  """The output of the `embedding` conv of `model` on `x`."""
  _, state = model.apply(
      {'params': params}, x, train=False,
      capture_intermediates=lambda m, _: m.name == 'embedding',
      mutable=['intermediates'])
  return state['intermediates']['embedding']['__call__'][0]


class SurgeryFunctionsTest(absltest.TestCase):

  def test_inflate_average(self):
    kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 8))
    inflated = surgery.inflate_kernel(kernel, 3, 'average_frame_initializer')
    self.assertEqual(inflated.shape, (3, 4, 4, 3, 8))
    np.testing.assert_allclose(inflated.sum(0), kernel, rtol=1e-6)
    np.testing.assert_allclose(inflated[2], kernel / 3)

  def test_inflate_central_on_the_time_axis(self):
    kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 8))
    for time in (2, 3, 4):
      inflated = surgery.inflate_kernel(kernel, time,
                                           'central_frame_initializer')
      nonzero = [t for t in range(time) if np.any(inflated[t])]
      self.assertEqual(nonzero, [time // 2])
      np.testing.assert_array_equal(inflated[time // 2], kernel)

  def test_inflate_unknown(self):
    with self.assertRaisesRegex(ValueError, 'got \'nearest\''):
      surgery.inflate_kernel(np.zeros((2, 2, 3, 4)), 2, 'nearest')

  def test_resize_2x2_to_4x4_is_bilinear_with_aligned_corners(self):
    corners = np.array([[0.0, 1.0], [2.0, 4.0]])  # [s, s] for one channel.
    grid = np.stack([corners, -corners], -1).reshape(4, 2)  # [s*s, D]
    resized = surgery.resize_posemb(grid, 4, 4).reshape(4, 4, 2)
    u = np.arange(4) / 3  # Output i samples input coordinate i * (2-1)/(4-1).
    expected = ((1 - u)[:, None] * (1 - u)[None] * corners[0, 0] +
                (1 - u)[:, None] * u[None] * corners[0, 1] +
                u[:, None] * (1 - u)[None] * corners[1, 0] +
                u[:, None] * u[None] * corners[1, 1])
    np.testing.assert_allclose(resized[..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(resized[..., 1], -expected, atol=1e-6)

  def test_resize_constant_stays_constant_and_non_square(self):
    grid = np.tile(np.arange(5.0)[None], (9, 1))  # [3*3, 5]
    resized = surgery.resize_posemb(grid, 4, 7)
    self.assertEqual(resized.shape, (28, 5))
    np.testing.assert_allclose(resized, np.tile(np.arange(5.0), (28, 1)),
                               atol=1e-6)
    with self.assertRaisesRegex(ValueError, 'square source grid, got 8'):
      surgery.resize_posemb(np.zeros((8, 5)), 4, 4)

  def test_tile_is_t_major(self):
    grid = np.arange(12.0).reshape(6, 2)
    tiled = surgery.tile_posemb(grid, 3)
    np.testing.assert_array_equal(tiled.reshape(3, 6, 2), [grid] * 3)

  def test_every_tubelet_initializer_inflates_as_one_method(self):
    for name in TUBELET_INITIALIZERS:
      config = make_config('video', kernel_init_method=name)
      self.assertIn(surgery.kernel_init_method(config),
                    surgery.INFLATION_METHODS, name)


class InitParamsTest(parameterized.TestCase):

  def source(self, config=None, input_shape=IMAGE, seed=1):
    config = config or make_config('patch')
    return flat(randomized(init(config, input_shape)[1], seed))

  def test_head_is_new_and_everything_else_copied(self):
    source = self.source()
    config = make_config('patch')
    _, new = init(config, IMAGE, seed=3, num_classes=7)
    out = flat(surgery.init_params(new, unflat(source), config, IMAGE))
    for name, value in flat(new).items():
      if name.startswith('output_projection/'):
        np.testing.assert_array_equal(out[name], value)
      else:
        np.testing.assert_array_equal(out[name], source[name], err_msg=name)

  def test_restore_output_proj_copies_the_head_of_the_same_classes(self):
    source = self.source()
    config = make_config('patch')
    config.init_from.restore_output_proj = True
    _, new = init(config, IMAGE, seed=3)
    out = flat(surgery.init_params(new, unflat(source), config, IMAGE))
    self.assertEqual(set(out), set(source))
    for name, value in source.items():
      np.testing.assert_array_equal(out[name], value, err_msg=name)
    _, other = init(config, IMAGE, seed=3, num_classes=7)
    with self.assertRaisesRegex(ValueError, r'output_projection/\w+ \(.*7.*\) '
                                'is .* in the pretrained checkpoint'):
      surgery.init_params(other, unflat(source), config, IMAGE)

  @parameterized.parameters(
      ('restore_positional_embedding', 'Transformer/posembed_input/'),
      ('restore_input_embedding', 'embedding/'))
  def test_restore_switch_off_keeps_the_new_embedding(self, switch, prefix):
    source = self.source()
    config = make_config('patch')
    config.init_from[switch] = False
    _, new = init(config, IMAGE, seed=3, num_classes=7)
    out = flat(surgery.init_params(new, unflat(source), config, IMAGE))
    checked = 0
    for name, value in flat(new).items():
      if name.startswith(prefix) or name.startswith('output_projection/'):
        np.testing.assert_array_equal(out[name], value, err_msg=name)
        checked += name.startswith(prefix)
      else:
        np.testing.assert_array_equal(out[name], source[name], err_msg=name)
    self.assertGreaterEqual(checked, 1)

  def test_pre_logits_cases(self):
    with_rep = make_config('patch', representation_size=8)
    without = make_config('patch')
    # Both: copied.
    source = self.source(with_rep)
    _, new = init(with_rep, IMAGE, seed=3)
    out = flat(surgery.init_params(new, unflat(source), with_rep, IMAGE))
    np.testing.assert_array_equal(out['pre_logits/kernel'],
                                  source['pre_logits/kernel'])
    # Only the target: kept new.
    _, new = init(with_rep, IMAGE, seed=3)
    out = flat(surgery.init_params(new, unflat(self.source(without)),
                                      with_rep, IMAGE))
    np.testing.assert_array_equal(out['pre_logits/kernel'],
                                  new['pre_logits']['kernel'])
    # Only the source: dropped (and logged).
    _, new = init(without, IMAGE, seed=3)
    with self.assertLogs('absl', level='INFO') as logs:
      out = surgery.init_params(new, unflat(source), without, IMAGE)
    self.assertNotIn('pre_logits', out)
    self.assertEqual(sorted(flat(out)), sorted(flat(new)))
    self.assertTrue(any('pre_logits/kernel' in line and 'ignored' in line
                        for line in logs.output))

  @parameterized.parameters(
      ('average_frame_initializer', None),
      (None, 'average_frame_initializer'),
      (None, None),  # The default.
      ('central_frame_initializer', None),
      (None, 'central_frame_initializer'),
      ('central_frame_initializer_scenic', None))
  def test_kernel_inflation(self, model_method, init_from_method):
    source = self.source()
    config = make_config('video', kernel_init_method=model_method)
    config.init_from.kernel_init_method = init_from_method
    config.init_from.positional_embed_size_change = 'tile'
    model, new = init(config, VIDEO)
    out = surgery.init_params(new, unflat(source), config, VIDEO)
    kernel = np.asarray(out['embedding']['kernel'])  # [2, 4, 4, 3, 16]
    src = source['embedding/kernel']
    method = model_method or init_from_method or 'average_frame_initializer'
    if method == 'average_frame_initializer':
      np.testing.assert_allclose(kernel.sum(0), src, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(kernel[0], kernel[1])
    else:
      np.testing.assert_array_equal(kernel[0], 0.0)
      np.testing.assert_array_equal(kernel[1], src)
    # A video of identical frames embeds, per slice, as the image model does.
    frame = np.random.default_rng(0).normal(size=(2,) + IMAGE).astype(
        np.float32)
    video = np.repeat(frame[:, None], VIDEO[0], axis=1)
    image_model = build_model(make_config('patch'), NUM_CLASSES)
    expected = embed(image_model, unflat(source), frame)  # [B, 4, 4, 16]
    actual = embed(model, out, video)  # [B, 2, 4, 4, 16]
    for t in range(actual.shape[1]):
      np.testing.assert_allclose(actual[:, t], expected, rtol=1e-5, atol=1e-5)

  def test_kernel_spatial_patch_mismatch(self):
    config = make_config('video', patch=8)
    config.init_from.positional_embed_size_change = 'resize_tile'
    _, new = init(config, VIDEO)
    with self.assertRaisesRegex(
        ValueError, r'embedding/kernel \(2, 8, 8, 3, 16\) cannot be inflated '
        r'from the pretrained \(4, 4, 3, 16\)'):
      surgery.init_params(new, unflat(self.source()), config, VIDEO)

  def test_posemb_tile(self):
    source = self.source()
    config = make_config('video')
    config.init_from.positional_embed_size_change = 'tile'
    _, new = init(config, VIDEO)
    out = surgery.init_params(new, unflat(source), config, VIDEO)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    self.assertEqual(posemb.shape, (1, 2 * 16, 16))
    for t in range(2):
      np.testing.assert_array_equal(posemb[0, 16 * t:16 * (t + 1)],
                                    source[POSEMB][0])

  def test_posemb_resize_2x2_to_4x4(self):
    config = make_config('patch')
    source = self.source(config, (8, 8, 3))  # 2x2 grid.
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, IMAGE)  # 4x4 grid.
    out = surgery.init_params(new, unflat(source), config, IMAGE)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    corners = source[POSEMB][0].reshape(2, 2, 16)
    u = (np.arange(4) / 3)[:, None]
    for i in range(4):
      for j in range(4):
        expected = ((1 - u[i]) * (1 - u[j]) * corners[0, 0] +
                    (1 - u[i]) * u[j] * corners[0, 1] +
                    u[i] * (1 - u[j]) * corners[1, 0] +
                    u[i] * u[j] * corners[1, 1])
        np.testing.assert_allclose(posemb[0, 4 * i + j], expected, rtol=1e-5,
                                   atol=1e-5)

  def test_posemb_resize_constant_and_resize_tile(self):
    source = self.source()  # 4x4 grid.
    source[POSEMB] = np.tile(source[POSEMB][:, :1], (1, 16, 1))  # Constant.
    config = make_config('video')
    config.init_from.positional_embed_size_change = 'resize_tile'
    video = (4, 24, 32, 3)  # 2 x 6x8.
    _, new = init(config, video)
    out = surgery.init_params(new, unflat(source), config, video)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    self.assertEqual(posemb.shape, (1, 2 * 48, 16))
    np.testing.assert_allclose(posemb, np.tile(source[POSEMB][:, :1],
                                               (1, 96, 1)), atol=1e-6)

  def test_posemb_image_to_video_of_equal_length_is_resized_and_tiled(self):
    source = self.source(make_config('patch'), (32, 32, 3))  # 8x8 = 64.
    config = make_config('video')
    video = (8, 16, 16, 3)  # 4 slices x 4x4 = 64 positions, like the source.
    _, new = init(config, video)
    config.init_from.positional_embed_size_change = None
    with self.assertRaisesRegex(ValueError, r'must be one of .*\(1, 64, 16\)'):
      surgery.init_params(new, unflat(source), config, video)
    config.init_from.positional_embed_size_change = 'resize_tile'
    out = surgery.init_params(new, unflat(source), config, video)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    per_slice = surgery.resize_posemb(source[POSEMB][0], 4, 4)  # [16, D]
    self.assertEqual(posemb.shape, (1, 64, 16))
    for t in range(4):
      np.testing.assert_allclose(posemb[0, 16 * t:16 * (t + 1)], per_slice,
                                 rtol=1e-6)

  def test_posemb_resize_refuses_video(self):
    config = make_config('video')
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, VIDEO)
    with self.assertRaisesRegex(
        ValueError, r"positional_embed_size_change='resize' .* 2 time slices"
        r".*'resize_tile'.*\(1, 16, 16\)"):
      surgery.init_params(new, unflat(self.source()), config, VIDEO)

  def test_posemb_unset_method_is_named_with_the_shapes(self):
    config = make_config('patch')
    config.init_from.positional_embed_size_change = ''
    _, new = init(config, (32, 32, 3))
    with self.assertRaisesRegex(
        ValueError, r'init_from.positional_embed_size_change must be one of '
        r"\('resize', 'tile', 'resize_tile'\).*\(1, 16, 16\).*\(1, 64, 16\)"):
      surgery.init_params(new, unflat(self.source()), config, (32, 32, 3))
    config.init_from.positional_embed_size_change = 'bilinear'
    with self.assertRaisesRegex(  # A typo: refused by the config's check.
        errors.ConfigError, r"config.init_from.positional_embed_size_change "
        r"must be one of \(None, '', 'resize', 'tile', 'resize_tile'\), got "
        "'bilinear'"):
      schema.check_config(config)

  def test_posemb_non_square_source(self):
    config = make_config('patch')
    source = self.source(config, (8, 16, 3))  # 2x4 grid.
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, IMAGE)
    with self.assertRaisesRegex(
        ValueError, r'positional_embed_size_change: a resize needs a square '
        r'source grid, got 8 positions.*\(1, 8, 16\)'):
      surgery.init_params(new, unflat(source), config, IMAGE)

  def test_cls_in_both(self):
    config = make_config('patch', classifier='token')
    source = self.source(config)  # 1 + 4x4.
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, (32, 32, 3))  # 1 + 8x8.
    out = surgery.init_params(new, unflat(source), config, (32, 32, 3))
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    self.assertEqual(posemb.shape, (1, 65, 16))
    np.testing.assert_array_equal(posemb[0, 0], source[POSEMB][0, 0])
    np.testing.assert_allclose(
        posemb[0, 1:], surgery.resize_posemb(source[POSEMB][0, 1:], 8, 8))
    np.testing.assert_array_equal(out['cls'], source['cls'])

  def test_cls_only_in_source_is_dropped(self):
    source = self.source(make_config('patch', classifier='token'))
    config = make_config('patch')
    _, new = init(config, IMAGE)
    out = surgery.init_params(new, unflat(source), config, IMAGE)
    self.assertNotIn('cls', out)
    np.testing.assert_array_equal(
        out['Transformer']['posembed_input']['pos_embedding'],
        source[POSEMB][:, 1:])

  def test_cls_only_in_target_keeps_its_initial_position(self):
    source = self.source()
    config = make_config('video', classifier='token')
    config.init_from.positional_embed_size_change = 'tile'
    _, new = init(config, VIDEO)
    out = surgery.init_params(new, unflat(source), config, VIDEO)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    new_posemb = new['Transformer']['posembed_input']['pos_embedding']
    np.testing.assert_array_equal(posemb[0, 0], new_posemb[0, 0])
    np.testing.assert_array_equal(posemb[0, 1:17], source[POSEMB][0])
    np.testing.assert_array_equal(posemb[0, 17:], source[POSEMB][0])
    np.testing.assert_array_equal(out['cls'], new['cls'])

  def test_image_tokenlearner_into_video_gives_the_same_logits(self):
    """central_frame + tile: on a video of identical frames, each time slice
    sees the image's tokens; attention over T identical copies and average
    pooling are invariant to the copies, so the logits are the image's."""
    image_config = make_config('dynamic', tokenlearner_loc=1)
    source = self.source(image_config)
    config = make_config('video', tokenlearner_loc=1,
                         kernel_init_method='central_frame_initializer')
    config.init_from.positional_embed_size_change = 'tile'
    model, new = init(config, VIDEO)
    out = surgery.init_params(new, unflat(source), config, VIDEO)
    out['output_projection'] = unflat(source)['output_projection']
    frame = np.random.default_rng(0).normal(size=(2,) + IMAGE).astype(
        np.float32)
    video = np.repeat(frame[:, None], VIDEO[0], axis=1)
    image_model = build_model(image_config, NUM_CLASSES)
    expected = jax.jit(lambda p, x: image_model.apply(
        {'params': p}, x, train=False))(unflat(source), frame)
    actual = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))(
        out, video)
    self.assertGreater(float(jnp.abs(expected).max()), 0.1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)

  def test_missing_and_mismatched_parameters_are_named(self):
    config = make_config('patch')
    _, new = init(config, IMAGE)
    source = self.source()
    del source['Transformer/encoderblock_1/LayerNorm_0/scale']
    with self.assertRaisesRegex(
        ValueError, r'init_from: parameter Transformer/encoderblock_1/'
        r'LayerNorm_0/scale \(16,\) is missing'):
      surgery.init_params(new, unflat(source), config, IMAGE)
    wide = make_config('patch')
    wide.model.mlp_dim = 48
    with self.assertRaisesRegex(
        ValueError, r'init_from: parameter Transformer/encoderblock_0/'
        r'MlpBlock_0/Dense_0/bias \(32,\) is \(48,\) in the pretrained'):
      surgery.init_params(new, unflat(self.source(wide)), config, IMAGE)

  def test_tokenlearner_target_needs_tokenlearner_source(self):
    config = make_config('dynamic', tokenlearner_loc=1)
    _, new = init(config, IMAGE)
    with self.assertRaisesRegex(ValueError, 'TokenLearnerModuleV11_0.*missing'):
      surgery.init_params(new, unflat(self.source()), config, IMAGE)
    config.init_from.init_missing_from_scratch = True
    out = flat(surgery.init_params(new, unflat(self.source()), config,
                                      IMAGE))
    source = self.source()
    for name, value in flat(new).items():
      if name.startswith('Transformer/TokenLearnerModuleV11_0/'):
        np.testing.assert_array_equal(out[name], value)  # Kept new.
      elif not name.startswith('output_projection/'):
        np.testing.assert_array_equal(out[name], source[name])

  def test_dtype_and_sharding_follow_the_new_params(self):
    config = make_config('patch')
    _, new = init(config, IMAGE)
    new = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), new)
    out = surgery.init_params(new, unflat(self.source()), config, IMAGE)
    for name, value in flat(out).items():
      self.assertEqual(value.dtype, jnp.bfloat16, name)
      self.assertEqual(value.sharding, flat(new)[name].sharding, name)


if __name__ == '__main__':
  absltest.main()
