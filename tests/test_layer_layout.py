"""Tests of `tokenlearner_jax.layer_layout`: the per-layer <-> scanned
parameter layouts."""

from absl.testing import absltest
import numpy as np

from tokenlearner_jax import layer_layout


class LayerLayoutTest(absltest.TestCase):

  SCANNED = {
      'Transformer/encoderblock_0_to_1/LayerNorm_0/scale': np.arange(4.0)
                                                           .reshape(2, 2),
      'Transformer/fuserlayer_2_to_3/encoderblock/MlpBlock_0/bias':
          np.arange(6.0).reshape(2, 3),
      'Transformer/fuserlayer_2_to_3/TokenFuser/Dense_0/bias': np.ones((2, 1)),
      'embedding/bias': np.zeros(3),
  }

  def test_unstack_names_every_layer_and_stack_inverts_it(self):
    per_layer = layer_layout.unstack_layers(self.SCANNED)
    self.assertEqual(sorted(per_layer), [
        'Transformer/TokenFuser_0/Dense_0/bias',
        'Transformer/TokenFuser_1/Dense_0/bias',
        'Transformer/encoderblock_0/LayerNorm_0/scale',
        'Transformer/encoderblock_1/LayerNorm_0/scale',
        'Transformer/encoderblock_2/MlpBlock_0/bias',
        'Transformer/encoderblock_3/MlpBlock_0/bias',
        'embedding/bias'])
    np.testing.assert_array_equal(
        per_layer['Transformer/encoderblock_3/MlpBlock_0/bias'], [3, 4, 5])
    stacked = layer_layout.stack_layers(per_layer, self.SCANNED)
    self.assertEqual(sorted(stacked), sorted(self.SCANNED))
    for name, value in self.SCANNED.items():
      np.testing.assert_array_equal(stacked[name], value)

  def test_a_missing_layer_axis_or_a_layer_in_both_layouts_is_named(self):
    with self.assertRaisesRegex(ValueError, r'encoderblock_0_to_1/x has shape '
                                r'\(3,\), not a leading layer axis of 2'):
      layer_layout.unstack_layers({'Transformer/encoderblock_0_to_1/x':
                                       np.zeros(3)})
    with self.assertRaisesRegex(ValueError, 'encoderblock_1/x is both scanned'):
      layer_layout.unstack_layers({
          'Transformer/encoderblock_0_to_1/x': np.zeros((2, 3)),
          'Transformer/encoderblock_1/x': np.zeros(3)})


if __name__ == '__main__':
  absltest.main()
