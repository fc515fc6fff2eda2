"""Partition specs of every parameter, and what FSDP saves per device."""

import os
import re

from absl import logging
from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections
from jax.sharding import PartitionSpec as P
import numpy as np

from tokenlearner_jax.configs.common import load_module as load
from tokenlearner_jax import sharding
from tokenlearner_jax import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    'vit_l16_tl_fuser': ('vit_imagenet', 'variant=L/16,num_tokens=16,'
                         'tokenlearner_loc=12,use_tokenfuse=True'),
    'vivit_l16_tl': ('vivit_k400', 'row=L16_8at18'),
}

# Pinned specs on a (data, fsdp, model) mesh with the default rules: the first
# pattern that matches a parameter's path gives its spec.
BLOCK = r'Transformer/encoderblock_\d+/'
EXPECTED = (
    (BLOCK + r'MultiHeadDotProductAttention_0/(query|key|value)/kernel',
     P('fsdp', 'model', None)),
    (BLOCK + r'MultiHeadDotProductAttention_0/out/kernel',
     P('model', None, 'fsdp')),
    (BLOCK + r'MultiHeadDotProductAttention_0/\w+/bias', P()),
    (BLOCK + r'MlpBlock_0/Dense_0/kernel', P('fsdp', 'model')),
    (BLOCK + r'MlpBlock_0/Dense_0/bias', P('model')),
    (BLOCK + r'MlpBlock_0/Dense_1/kernel', P('model', 'fsdp')),
    (BLOCK + r'MlpBlock_0/Dense_1/bias', P('fsdp')),
    (r'Transformer/(TokenLearnerModule|TokenFuser)_\d+/token_masking/Dense_0/'
     r'kernel', P('fsdp', 'model')),
    (r'Transformer/(TokenLearnerModule|TokenFuser)_\d+/token_masking/Dense_0/'
     r'bias', P('model')),
    (r'Transformer/(TokenLearnerModule|TokenFuser)_\d+/token_masking/Dense_1/'
     r'kernel', P('model', None)),
    (r'Transformer/(TokenLearnerModule|TokenFuser)_\d+/token_masking/Dense_1/'
     r'bias', P(None)),
    (r'Transformer/TokenLearnerModule_\d+/Conv_0/kernel',
     P(None, None, 'fsdp', None)),
    (r'Transformer/TokenLearnerModule_\d+/Conv_[123]/kernel', P()),
    (r'Transformer/TokenFuser_\d+/Dense_0/(kernel|bias)', P()),
    (r'.*(LayerNorm_\d+|encoder_norm|fuser_mix_norm\d)/(scale|bias)', P()),
    (r'Transformer/posembed_input/pos_embedding', P(None, None, 'fsdp')),
    (r'embedding/kernel', P(*[None] * 3, 'fsdp')),  # ViT: [ph, pw, 3, D].
    (r'embedding/kernel', P(*[None] * 4, 'fsdp')),  # ViViT: [pt, ph, pw, 3, D].
    (r'embedding/bias|cls|output_projection/bias', P()),
    (r'output_projection/kernel', P(None, None)),
)


def model_summary(name: str, fsdp: int, model: int):
  path, arg = MODELS[name]
  config = load(os.path.join(ROOT, 'configs', f'{path}.py')).get_config(arg)
  config.mesh.data, config.mesh.fsdp, config.mesh.model = 2, fsdp, model
  return summary.summarize(config)


def flat_specs(specs):
  leaves = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, P))[0]
  return {'/'.join(k.key for k in path): spec for path, spec in leaves}


class PartitionSpecTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(name, name) for name in MODELS])
  def test_every_parameter_has_its_pinned_spec(self, name):
    specs = flat_specs(model_summary(name, fsdp=2, model=2)['param_specs'])
    self.assertGreater(len(specs), 100)
    for path, spec in specs.items():
      candidates = [want for pattern, want in EXPECTED
                    if re.fullmatch(pattern, path)]
      self.assertNotEmpty(candidates, f'{path} is not pinned')
      self.assertIn(spec, candidates, path)
    if name == 'vit_l16_tl_fuser':  # TokenFuser's MLP is tensor parallel.
      self.assertTrue(any('token_masking/Dense_0/kernel' in p and
                          s == P('fsdp', 'model') for p, s in specs.items()))

  @parameterized.named_parameters(*[(name, name) for name in MODELS])
  def test_fsdp_divides_the_bytes_per_device(self, name):
    plain = model_summary(name, fsdp=1, model=2)['state_bytes_per_device']
    fsdp = model_summary(name, fsdp=2, model=2)['state_bytes_per_device']
    alone = model_summary(name, fsdp=1, model=1)['state_bytes_per_device']
    logging.info('%s parameters + optimizer state per device: %.1f MiB alone, '
                 '%.1f MiB with model=2, %.1f MiB with fsdp=2, model=2', name,
                 alone / 2**20, plain / 2**20, fsdp / 2**20)
    # Only small arrays (norms, biases, the head, TokenLearner's 3x3 convs)
    # stay replicated: each axis of size 2 nearly halves the bytes.
    self.assertBetween(plain / fsdp, 1.95, 2.0)
    self.assertBetween(alone / plain, 1.95, 2.0)


class MeshShapeTest(absltest.TestCase):

  def mesh(self, **sizes):
    return ml_collections.ConfigDict(sizes)

  def test_minus_one_takes_the_remaining_devices(self):
    self.assertEqual(sharding.mesh_shape(self.mesh(data=-1, model=2), 8),
                     (4, 1, 2))

  def test_sizes_that_do_not_fit_the_devices_are_named(self):
    with self.assertRaisesRegex(ValueError,
                                r'config.mesh .* does not divide 8'):
      sharding.mesh_shape(self.mesh(data=-1, model=3), 8)
    with self.assertRaisesRegex(ValueError, r'config.mesh .* needs 6 devices'):
      sharding.mesh_shape(self.mesh(data=3, model=2), 8)
    with self.assertRaisesRegex(ValueError, r'at most one -1'):
      sharding.mesh_shape(self.mesh(data=-1, model=-1), 8)


class BytesPerDeviceTest(absltest.TestCase):

  def test_hand_counted(self):
    params = {'a': np.zeros((4, 6), np.float32), 'b': np.zeros(3, np.float32)}
    specs = {'a': P('fsdp', 'model'), 'b': P()}
    self.assertEqual(
        sharding.bytes_per_device(params, specs, {'fsdp': 2, 'model': 3}),
        4 * 6 * 4 // 6 + 3 * 4)


if __name__ == '__main__':
  absltest.main()
