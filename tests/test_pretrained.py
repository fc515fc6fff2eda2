"""Tests of `tokenlearner_jax.pretrained`: every checkpoint format round-trips
into our layout, and the fine-tuning surgery (head, pre_logits, cls, kernel
inflation, position-embedding resize/tile) does what it says, on tiny models."""

import functools
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from tokenlearner_jax.configs import common as config_lib
from tokenlearner_jax import pretrained
from tokenlearner_jax import train
from tokenlearner_jax import train_steps
from tokenlearner_jax.models import build_model

NUM_CLASSES = 5
IMAGE = (16, 16, 3)  # 4x4 patches of 4x4.
VIDEO = (4, 16, 16, 3)  # 2x4x4 tubelets of (h, w, t) = (4, 4, 2).
POSEMB = pretrained.POSEMB
# Our encoder-block children -> the pre-linen names of vision_transformer.
TO_VIT_JAX = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
    'LayerNorm_1': 'LayerNorm_2',
    'MlpBlock_0': 'MlpBlock_3',
}


def make_config(tokenizer_type: str = 'patch', *, patch: int = 4,
                tokenlearner_loc=None, **kwargs) -> ml_collections.ConfigDict:
  """Width 16, 2 blocks, 2 heads; kwargs go to `config_lib.model_config`."""
  config = ml_collections.ConfigDict()
  config.model = config_lib.model_config(
      f'mu/{patch}', tokenizer_type, num_tokens=2,
      tokenlearner_loc=tokenlearner_loc, **kwargs)
  config.model.hidden_size = 16
  config.model.mlp_dim = 32
  config.init_from = ml_collections.ConfigDict(dict(
      checkpoint_path='', checkpoint_format='tokenlearner_jax',
      positional_embed_size_change='', kernel_init_method=''))
  return config


@functools.lru_cache(maxsize=None)
def _init_cached(config_json, input_shape, seed, num_classes):
  config = ml_collections.ConfigDict(json.loads(config_json))
  model = build_model(config, num_classes)
  params = jax.jit(lambda r: model.init(r, jnp.zeros((1,) + input_shape),
                                        train=False))(
                                            jax.random.PRNGKey(seed))['params']
  return model, flax.core.unfreeze(flax.linen.meta.unbox(params))


def init(config, input_shape, seed=0, num_classes=NUM_CLASSES):
  """The model of `config` and its parameters (a fresh dict, cached)."""
  model, params = _init_cached(config.to_json(), tuple(input_shape), seed,
                               num_classes)
  return model, jax.tree_util.tree_map(lambda x: x, params)


def flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


def randomized(params, seed=1):
  """`params` with every array redrawn (so zero-initialised ones, like the
  head and `cls`, carry information too)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_unflatten(
      treedef, [rng.normal(size=x.shape).astype(np.float32) for x in leaves])


def assert_trees_equal(test, actual, expected):
  actual, expected = flat(actual), flat(expected)
  test.assertEqual(sorted(actual), sorted(expected))
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)


def embed(model, params, x):
  """The output of the `embedding` conv of `model` on `x`."""
  _, state = model.apply(
      {'params': params}, x, train=False,
      capture_intermediates=lambda m, _: m.name == 'embedding',
      mutable=['intermediates'])
  return state['intermediates']['embedding']['__call__'][0]


def to_vit_jax(params):
  """Flat vision_transformer names: pre-linen blocks, `head`."""
  out = {}
  for name, value in flat(params).items():
    parts = name.split('/')
    if parts[0] == 'output_projection':
      parts[0] = 'head'
    if parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
      parts[2] = TO_VIT_JAX[parts[2]]
    out['/'.join(parts)] = np.asarray(value)
  return out


def to_big_vision(params, scanned: bool, num_layers: int = 2):
  """Flat big_vision names: top-level `pos_embedding`, `head`, optionally
  scanned blocks `[depth, ...]`."""
  out = {}
  for name, value in flat(params).items():
    if name == POSEMB:
      name = 'pos_embedding'
    elif name.startswith('output_projection/'):
      name = 'head/' + name[len('output_projection/'):]
    out[name] = np.asarray(value)
  if scanned:
    blocks = [{k[len(f'Transformer/encoderblock_{i}/'):]: out.pop(k)
               for k in list(out)
               if k.startswith(f'Transformer/encoderblock_{i}/')}
              for i in range(num_layers)]
    for rest in blocks[0]:
      out[f'Transformer/encoderblock/{rest}'] = np.stack(
          [block[rest] for block in blocks])  # [depth, ...]
  return out


class LoadParamsTest(parameterized.TestCase):
  """Each format, written as its producer writes it, loads to our arrays."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    config = make_config('dynamic', tokenlearner_loc=1)
    cls.params = randomized(init(config, IMAGE)[1])

  def load(self, path, fmt):
    return pretrained.load_params(ml_collections.ConfigDict(dict(
        checkpoint_path=path, checkpoint_format=fmt)))

  def test_our_workdir_latest_checkpoint_params_only(self):
    workdir = self.create_tempdir().full_path
    manager = train.checkpoint_manager(
        workdir, ml_collections.ConfigDict(dict(checkpoint_steps=1)))
    tx = optax.adam(1e-3)
    for step, params in ((1, jax.tree_util.tree_map(np.zeros_like,
                                                    self.params)),
                         (2, self.params)):
      state = train_steps.TrainState(step=jnp.asarray(step), params=params,
                                     opt_state=tx.init(params),
                                     rng=jax.random.PRNGKey(0))
      manager.save(step, args=ocp.args.StandardSave(
          flax.serialization.to_state_dict(state)))
    manager.wait_until_finished()
    loaded = pretrained.load_params(
        ml_collections.ConfigDict(dict(checkpoint_path=workdir)))
    assert_trees_equal(self, loaded, self.params)
    self.assertIsInstance(loaded['embedding']['kernel'], np.ndarray)

  @parameterized.parameters('params', 'optimizer.target')
  def test_scenic_msgpack(self, layout):
    if layout == 'params':
      tree = {'global_step': 3, 'params': self.params,
              'opt_state': {'mu': self.params}}
    else:
      tree = {'optimizer': {'target': self.params, 'state': {'step': 3}}}
    path = self.create_tempfile(
        'checkpoint_3', content=flax.serialization.msgpack_serialize(tree),
        mode='wb').full_path
    assert_trees_equal(self, self.load(path, 'scenic'), self.params)

  def test_scenic_directory_reads_the_largest_step(self):
    directory = self.create_tempdir()
    for step in (9, 10):
      params = self.params if step == 10 else randomized(self.params, step)
      directory.create_file(
          f'checkpoint_{step}', mode='wb',
          content=flax.serialization.msgpack_serialize({'params': params}))
    assert_trees_equal(self, self.load(directory.full_path, 'scenic'),
                       self.params)

  def write_npz(self, arrays):
    path = os.path.join(self.create_tempdir().full_path, 'ckpt.npz')
    np.savez(path, **arrays)
    return path

  def test_vision_transformer_npz_with_cls_and_pre_logits(self):
    config = make_config('patch', classifier='token', representation_size=8)
    params = randomized(init(config, IMAGE)[1])
    path = self.write_npz(to_vit_jax(params))
    self.assertIn('Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel',
                  np.load(path).files)
    assert_trees_equal(self, self.load(path, 'big_vision'), params)

  @parameterized.parameters(False, True)
  def test_big_vision_npz(self, scanned):
    arrays = to_big_vision(self.params, scanned)
    arrays = {f'params/{k}': v for k, v in arrays.items()}
    arrays['opt/mu/embedding/kernel'] = np.ones(3)  # Not parameters: dropped.
    assert_trees_equal(self, self.load(self.write_npz(arrays), 'big_vision'),
                       self.params)

  def test_big_vision_cls_gets_a_zero_position(self):
    """big_vision adds the embedding before prepending `cls`; we add it after,
    so the `cls` row must be zero (an old combined `1 + s*s` one is kept)."""
    config = make_config('patch', classifier='token')
    params = flat(randomized(init(config, IMAGE)[1]))
    arrays = to_big_vision(flax.traverse_util.unflatten_dict(params, sep='/'),
                           scanned=True)
    combined = self.load(self.write_npz(arrays), 'big_vision')
    np.testing.assert_array_equal(combined['Transformer']['posembed_input'][
        'pos_embedding'], params[POSEMB])  # 1 + 16 rows: kept.
    arrays['pos_embedding'] = arrays['pos_embedding'][:, 1:]  # 16 rows.
    loaded = self.load(self.write_npz(arrays), 'big_vision')
    posemb = loaded['Transformer']['posembed_input']['pos_embedding']
    np.testing.assert_array_equal(posemb[:, 0], 0.0)
    np.testing.assert_array_equal(posemb[:, 1:], params[POSEMB][:, 1:])
    np.testing.assert_array_equal(loaded['cls'], params['cls'])

  def test_big_vision_bfloat16_arrays(self):
    arrays = to_big_vision(self.params, scanned=False)
    arrays['embedding/kernel'] = arrays['embedding/kernel'].astype(
        jnp.bfloat16)
    loaded = self.load(self.write_npz(arrays), 'big_vision')
    self.assertEqual(loaded['embedding']['kernel'].dtype, jnp.bfloat16)
    np.testing.assert_array_equal(loaded['embedding']['kernel'],
                                  arrays['embedding/kernel'])

  def test_unknown_format(self):
    with self.assertRaisesRegex(
        ValueError, r"init_from.checkpoint_format must be one of "
        r"\('tokenlearner_jax', 'scenic', 'big_vision'\), got 'torch'"):
      self.load('/tmp/x', 'torch')

  @parameterized.parameters('tokenlearner_jax', 'scenic', 'big_vision')
  def test_missing_path(self, fmt):
    path = os.path.join(self.create_tempdir().full_path, 'nothing_here')
    with self.assertRaisesRegex(FileNotFoundError, 'nothing_here'):
      self.load(path, fmt)

  def test_workdir_without_checkpoints(self):
    workdir = self.create_tempdir()
    workdir.mkdir('checkpoints')
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint in'):
      self.load(workdir.full_path, 'tokenlearner_jax')

  def test_unset_path(self):
    with self.assertRaisesRegex(ValueError, 'init_from.checkpoint_path'):
      pretrained.load_params(ml_collections.ConfigDict(dict(
          checkpoint_path=None)))


class SurgeryFunctionsTest(absltest.TestCase):

  def test_inflate_average(self):
    kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 8))
    inflated = pretrained.inflate_kernel(kernel, 3, 'average_frame_initializer')
    self.assertEqual(inflated.shape, (3, 4, 4, 3, 8))
    np.testing.assert_allclose(inflated.sum(0), kernel, rtol=1e-6)
    np.testing.assert_allclose(inflated[2], kernel / 3)

  def test_inflate_central_on_the_time_axis(self):
    kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 8))
    for time in (2, 3, 4):
      inflated = pretrained.inflate_kernel(kernel, time,
                                           'central_frame_initializer')
      nonzero = [t for t in range(time) if np.any(inflated[t])]
      self.assertEqual(nonzero, [time // 2])
      np.testing.assert_array_equal(inflated[time // 2], kernel)

  def test_inflate_unknown(self):
    with self.assertRaisesRegex(ValueError, 'got \'nearest\''):
      pretrained.inflate_kernel(np.zeros((2, 2, 3, 4)), 2, 'nearest')

  def test_resize_2x2_to_4x4_is_bilinear_with_aligned_corners(self):
    corners = np.array([[0.0, 1.0], [2.0, 4.0]])  # [s, s] for one channel.
    grid = np.stack([corners, -corners], -1).reshape(4, 2)  # [s*s, D]
    resized = pretrained.resize_posemb(grid, 4, 4).reshape(4, 4, 2)
    u = np.arange(4) / 3  # Output i samples input coordinate i * (2-1)/(4-1).
    expected = ((1 - u)[:, None] * (1 - u)[None] * corners[0, 0] +
                (1 - u)[:, None] * u[None] * corners[0, 1] +
                u[:, None] * (1 - u)[None] * corners[1, 0] +
                u[:, None] * u[None] * corners[1, 1])
    np.testing.assert_allclose(resized[..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(resized[..., 1], -expected, atol=1e-6)

  def test_resize_constant_stays_constant_and_non_square(self):
    grid = np.tile(np.arange(5.0)[None], (9, 1))  # [3*3, 5]
    resized = pretrained.resize_posemb(grid, 4, 7)
    self.assertEqual(resized.shape, (28, 5))
    np.testing.assert_allclose(resized, np.tile(np.arange(5.0), (28, 1)),
                               atol=1e-6)
    with self.assertRaisesRegex(ValueError, 'square source grid, got 8'):
      pretrained.resize_posemb(np.zeros((8, 5)), 4, 4)

  def test_tile_is_t_major(self):
    grid = np.arange(12.0).reshape(6, 2)
    tiled = pretrained.tile_posemb(grid, 3)
    np.testing.assert_array_equal(tiled.reshape(3, 6, 2), [grid] * 3)

  def test_big_vision_names(self):
    self.assertEqual(pretrained.big_vision_name('pos_embedding'), POSEMB)
    self.assertEqual(pretrained.big_vision_name('head/bias'),
                     'output_projection/bias')
    self.assertEqual(
        pretrained.big_vision_name(
            'Transformer/encoderblock_3/MultiHeadDotProductAttention_1/out/'
            'kernel'),
        'Transformer/encoderblock_3/MultiHeadDotProductAttention_0/out/kernel')
    self.assertEqual(
        pretrained.big_vision_name('Transformer/encoderblock_0/LayerNorm_1/'
                                   'scale'),
        'Transformer/encoderblock_0/LayerNorm_1/scale')


class InitParamsTest(parameterized.TestCase):

  def source(self, config=None, input_shape=IMAGE, seed=1):
    config = config or make_config('patch')
    return flat(randomized(init(config, input_shape)[1], seed))

  def test_head_is_new_and_everything_else_copied(self):
    source = self.source()
    config = make_config('patch')
    _, new = init(config, IMAGE, seed=3, num_classes=7)
    out = flat(pretrained.init_params(new, unflat(source), config, IMAGE))
    for name, value in flat(new).items():
      if name.startswith('output_projection/'):
        np.testing.assert_array_equal(out[name], value)
      else:
        np.testing.assert_array_equal(out[name], source[name], err_msg=name)

  def test_pre_logits_cases(self):
    with_rep = make_config('patch', representation_size=8)
    without = make_config('patch')
    # Both: copied.
    source = self.source(with_rep)
    _, new = init(with_rep, IMAGE, seed=3)
    out = flat(pretrained.init_params(new, unflat(source), with_rep, IMAGE))
    np.testing.assert_array_equal(out['pre_logits/kernel'],
                                  source['pre_logits/kernel'])
    # Only the target: kept new.
    _, new = init(with_rep, IMAGE, seed=3)
    out = flat(pretrained.init_params(new, unflat(self.source(without)),
                                      with_rep, IMAGE))
    np.testing.assert_array_equal(out['pre_logits/kernel'],
                                  new['pre_logits']['kernel'])
    # Only the source: dropped (and logged).
    _, new = init(without, IMAGE, seed=3)
    with self.assertLogs('absl', level='INFO') as logs:
      out = pretrained.init_params(new, unflat(source), without, IMAGE)
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
    out = pretrained.init_params(new, unflat(source), config, VIDEO)
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
      pretrained.init_params(new, unflat(self.source()), config, VIDEO)

  def test_posemb_tile(self):
    source = self.source()
    config = make_config('video')
    config.init_from.positional_embed_size_change = 'tile'
    _, new = init(config, VIDEO)
    out = pretrained.init_params(new, unflat(source), config, VIDEO)
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
    out = pretrained.init_params(new, unflat(source), config, IMAGE)
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
    out = pretrained.init_params(new, unflat(source), config, video)
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
      pretrained.init_params(new, unflat(source), config, video)
    config.init_from.positional_embed_size_change = 'resize_tile'
    out = pretrained.init_params(new, unflat(source), config, video)
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    per_slice = pretrained.resize_posemb(source[POSEMB][0], 4, 4)  # [16, D]
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
      pretrained.init_params(new, unflat(self.source()), config, VIDEO)

  @parameterized.parameters('', 'bilinear')
  def test_posemb_bad_or_unset_method(self, method):
    config = make_config('patch')
    config.init_from.positional_embed_size_change = method
    _, new = init(config, (32, 32, 3))
    with self.assertRaisesRegex(
        ValueError, r'init_from.positional_embed_size_change must be one of '
        r"\('resize', 'tile', 'resize_tile'\).*\(1, 16, 16\).*\(1, 64, 16\)"):
      pretrained.init_params(new, unflat(self.source()), config, (32, 32, 3))

  def test_posemb_non_square_source(self):
    config = make_config('patch')
    source = self.source(config, (8, 16, 3))  # 2x4 grid.
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, IMAGE)
    with self.assertRaisesRegex(
        ValueError, r'positional_embed_size_change: a resize needs a square '
        r'source grid, got 8 positions.*\(1, 8, 16\)'):
      pretrained.init_params(new, unflat(source), config, IMAGE)

  def test_cls_in_both(self):
    config = make_config('patch', classifier='token')
    source = self.source(config)  # 1 + 4x4.
    config.init_from.positional_embed_size_change = 'resize'
    _, new = init(config, (32, 32, 3))  # 1 + 8x8.
    out = pretrained.init_params(new, unflat(source), config, (32, 32, 3))
    posemb = np.asarray(out['Transformer']['posembed_input']['pos_embedding'])
    self.assertEqual(posemb.shape, (1, 65, 16))
    np.testing.assert_array_equal(posemb[0, 0], source[POSEMB][0, 0])
    np.testing.assert_allclose(
        posemb[0, 1:], pretrained.resize_posemb(source[POSEMB][0, 1:], 8, 8))
    np.testing.assert_array_equal(out['cls'], source['cls'])

  def test_cls_only_in_source_is_dropped(self):
    source = self.source(make_config('patch', classifier='token'))
    config = make_config('patch')
    _, new = init(config, IMAGE)
    out = pretrained.init_params(new, unflat(source), config, IMAGE)
    self.assertNotIn('cls', out)
    np.testing.assert_array_equal(
        out['Transformer']['posembed_input']['pos_embedding'],
        source[POSEMB][:, 1:])

  def test_cls_only_in_target_keeps_its_initial_position(self):
    source = self.source()
    config = make_config('video', classifier='token')
    config.init_from.positional_embed_size_change = 'tile'
    _, new = init(config, VIDEO)
    out = pretrained.init_params(new, unflat(source), config, VIDEO)
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
    out = pretrained.init_params(new, unflat(source), config, VIDEO)
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
      pretrained.init_params(new, unflat(source), config, IMAGE)
    wide = make_config('patch')
    wide.model.mlp_dim = 48
    with self.assertRaisesRegex(
        ValueError, r'init_from: parameter Transformer/encoderblock_0/'
        r'MlpBlock_0/Dense_0/bias \(32,\) is \(48,\) in the pretrained'):
      pretrained.init_params(new, unflat(self.source(wide)), config, IMAGE)

  def test_tokenlearner_target_needs_tokenlearner_source(self):
    config = make_config('dynamic', tokenlearner_loc=1)
    _, new = init(config, IMAGE)
    with self.assertRaisesRegex(ValueError, 'TokenLearnerModuleV11_0.*missing'):
      pretrained.init_params(new, unflat(self.source()), config, IMAGE)
    config.init_from = ml_collections.ConfigDict(
        dict(init_missing_from_scratch=True))
    out = flat(pretrained.init_params(new, unflat(self.source()), config,
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
    out = pretrained.init_params(new, unflat(self.source()), config, IMAGE)
    for name, value in flat(out).items():
      self.assertEqual(value.dtype, jnp.bfloat16, name)
      self.assertEqual(value.sharding, flat(new)[name].sharding, name)


def unflat(flat_params):
  return flax.traverse_util.unflatten_dict(flat_params, sep='/')


if __name__ == '__main__':
  absltest.main()
