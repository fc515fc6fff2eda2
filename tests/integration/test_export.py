"""`tokenlearner_jax.export`: each format, loaded by a process that has only
jax (StableHLO) or only TensorFlow (SavedModel), gives the package's logits
for a ViT + TokenLearner image model, a ViViT + TokenLearner clip model and
the X(2+1)D network (BatchNorm in inference mode); bad input in one line."""

import functools
import json
import os
import subprocess
import sys

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from tests import testing
from tests.testing import ROOT
from tests.testing import config_for
from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import export
from tokenlearner_jax import summary
from tokenlearner_jax.configs import schema

MODELS = {'vit_tl': 'demo_multi_digits', 'vivit_tl': 'demo_moving_digits',
          'x2plus1d': 'charades_x2plus1d_tl'}
BATCH = 3  # Served with a batch size no trace saw (the batch is symbolic).
# What a user's process does: no module of this package is imported.
LOAD_STABLEHLO = """
import sys
import numpy as np
from jax import export
for out in sys.argv[1:]:
  with open(out + '/model.stablehlo', 'rb') as f:
    exported = export.deserialize(f.read())
  logits = exported.call(np.load(out + '/inputs.npy'))
  np.save(out + '/served.npy', np.asarray(logits))
assert not [m for m in sys.modules if m.startswith('tokenlearner_jax')]
"""
LOAD_SAVEDMODEL = """
import sys
import numpy as np
import tensorflow as tf
for out in sys.argv[1:]:
  serve = tf.saved_model.load(out).signatures['serving_default']
  logits = serve(inputs=tf.constant(np.load(out + '/inputs.npy')))['logits']
  np.save(out + '/served.npy', logits.numpy())
assert not [m for m in sys.modules if m.startswith('tokenlearner_jax')]
"""


def random_checkpoint(config, workdir: str) -> None:
  """A step-0 checkpoint whose parameters and BatchNorm statistics are all
  drawn at random (a fresh head is zero: its logits would say nothing)."""
  shape = summary.example_input_shape(config)
  fresh = testing.fresh_state(config, shape,
                              summary.example_num_classes(config))
  rng = np.random.default_rng(0)
  draw = lambda x, low: jnp.asarray(  # pylint: disable=g-long-lambda
      low + np.abs(rng.normal(size=x.shape)) if low else
      0.1 * rng.normal(size=x.shape), x.dtype)
  state = fresh.state.replace(
      params=jax.tree_util.tree_map(lambda x: draw(x, 0.0),
                                    fresh.state.params),
      model_state=jax.tree_util.tree_map_with_path(
          lambda path, x: draw(x, 0.5 if 'var' in str(path) else 0.0),
          fresh.state.model_state))
  manager = checkpoint.make_manager(workdir, config)
  checkpoint.save(manager, 0, state, force=True)
  manager.close()


class ExportTest(absltest.TestCase):

  def test_each_format_serves_the_packages_logits_without_the_package(self):
    root = self.create_tempdir().full_path
    outs = {'stablehlo': [], 'savedmodel': []}
    expected = {}
    for name, config_name in MODELS.items():
      config = config_for(config_name)
      workdir = os.path.join(root, name)
      random_checkpoint(config, workdir)
      # The package's own forward pass.
      model, variables, _, shape, _ = export.restore(
          schema.complete(config), workdir, None)
      pixels = np.random.default_rng(1).integers(
          0, 256, (BATCH,) + shape, dtype=np.uint8)
      scale, offset = export.pixel_scale(config)
      expected[name] = np.asarray(jax.jit(functools.partial(
          model.apply, train=False))(
              variables, pixels.astype(np.float32) * scale + offset))
      for fmt in outs:
        out = os.path.join(root, f'{name}_{fmt}')
        if (name, fmt) == ('vivit_tl', 'stablehlo'):  # The command line.
          subprocess.run(
              [sys.executable, '-m', 'tokenlearner_jax.export',
               f'--config={ROOT}/configs/{config_name}.py:runlocal',
               f'--workdir={workdir}', f'--out={out}'], cwd=ROOT,
              check=True, capture_output=True)
        else:
          export.export_workdir(config, workdir, out, fmt)
        with open(os.path.join(out, export.METADATA_FILE)) as f:
          meta = json.load(f)
        self.assertEqual(meta['input'], {
            'shape': ['batch', *shape], 'dtype': 'uint8',
            'values': meta['input']['values']})
        self.assertEqual(meta['output']['shape'],
                         ['batch', expected[name].shape[1]])
        np.save(os.path.join(out, 'inputs.npy'), pixels)
        outs[fmt].append(out)
    for fmt, loader in (('stablehlo', LOAD_STABLEHLO),
                        ('savedmodel', LOAD_SAVEDMODEL)):
      result = subprocess.run([sys.executable, '-c', loader, *outs[fmt]],
                              cwd=root, capture_output=True, text=True)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    for name in MODELS:
      scale = float(np.abs(expected[name]).max())
      self.assertGreater(float(np.std(expected[name])), 1e-3 * scale)
      for fmt in outs:
        served = np.load(os.path.join(root, f'{name}_{fmt}', 'served.npy'))
        self.assertEqual(served.shape, expected[name].shape)
        np.testing.assert_allclose(served, expected[name],
                                   atol=1e-4 * scale, err_msg=(name, fmt))
    # The class names of a tfds dataset come along (multi_digits' multi-hot
    # labels have none).
    for name, fmt in (('vivit_tl', 'stablehlo'), ('vit_tl', 'savedmodel')):
      with open(os.path.join(root, f'{name}_{fmt}', export.METADATA_FILE)) as f:
        labels = json.load(f)['labels']
      if name == 'vit_tl':
        self.assertIsNone(labels)
      else:
        self.assertLen(labels, expected[name].shape[1])

  def test_bad_input_is_one_known_fault_and_nothing_is_overwritten(self):
    config = config_for('demo_moving_digits')
    workdir = self.create_tempdir().full_path
    out = os.path.join(self.create_tempdir().full_path, 'export')
    with self.assertRaisesRegex(errors.MissingFileError,
                                '--workdir: no checkpoint under'):
      export.export_workdir(config, workdir, out)
    random_checkpoint(config, workdir)
    other = config_for('demo_moving_digits')
    other.model.hidden_size = 2 * config.model.hidden_size
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'does not fit this run'):
      export.export_workdir(other, workdir, out)
    self.assertFalse(os.path.exists(out))
    os.makedirs(out)
    with open(os.path.join(out, 'keep'), 'w') as f:
      f.write('mine')
    with self.assertRaisesRegex(errors.UsageError,
                                f'--out={out} exists; pass --overwrite'):
      export.export_workdir(config, workdir, out)
    with open(os.path.join(out, 'keep')) as f:
      self.assertEqual(f.read(), 'mine')


if __name__ == '__main__':
  absltest.main()
