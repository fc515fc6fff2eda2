"""`python -m tokenlearner_jax.visualize` on a short demo run."""

import json
import os

from absl.testing import absltest
import numpy as np
import pytest
from PIL import Image

from tests import testing
from tests.testing import config_for
from tests.testing import save_fresh_checkpoint
from tests.testing import write_video_tfrecords
from tokenlearner_jax import checkpoint
from tokenlearner_jax import layer_layout
from tokenlearner_jax import visualize
from tokenlearner_jax.models import build_model


class OverlayTest(absltest.TestCase):

  def test_red_where_the_weight_is(self):
    frame = np.zeros((8, 8, 3), np.float32)  # Mid grey.
    weight = np.zeros((2, 2), np.float32)
    weight[0, 1] = 1.0  # The top-right patch.
    out = visualize.overlay(frame, weight).astype(int)
    side = 8 * visualize.SCALE
    self.assertEqual(out.shape, (side, side, 3))
    top_right, bottom_left = out[2, side - 3], out[side - 3, 2]
    np.testing.assert_array_equal(bottom_left, [127, 127, 127])
    self.assertGreater(top_right[0], 200)
    self.assertLess(top_right[1], 60)


class VisualizeTest(absltest.TestCase):

  @pytest.mark.e2e
  def test_renders_every_token_and_frame_of_a_trained_run(self):
    config, workdir = testing.copied_run('demo_moving_digits',
                                         self.create_tempdir().full_path)
    entries = visualize.visualize(config, workdir, num_clips=2)
    self.assertLen(entries, 2)
    out = os.path.join(workdir, 'visualizations')
    with open(os.path.join(out, 'index.json')) as f:
      self.assertEqual(json.load(f), entries)
    frames, size = 8, 32 * visualize.SCALE
    tokens = config.model.tokenizer.num_tokens
    png = Image.open(os.path.join(out, 'clip_0.png'))
    # One column per frame (2-pixel gaps), the clip and one row per token.
    self.assertEqual(png.size, (frames * size + 2 * (frames - 1),
                                (tokens + 1) * size))
    gif = Image.open(os.path.join(out, 'clip_1.gif'))
    self.assertEqual(gif.n_frames, frames)
    self.assertEqual(gif.size, ((tokens + 1) * size, size))
    # The maps are v1.1's softmax over each slice's 4x4 grid.
    _, maps = visualize.attention_maps(
        build_model(config, 40),
        {'params': layer_layout.per_layer(checkpoint.restore_params(workdir))},
        np.zeros((1, 8, 32, 32, 3), np.float32), config)
    self.assertEqual(maps.shape, (1, 4, tokens, 4, 4))
    np.testing.assert_allclose(maps.sum((3, 4)), 1.0, rtol=1e-5)

  @pytest.mark.e2e
  def test_a_video_run_whose_data_has_no_train_split(self):
    config = config_for('vivit_k400')
    base_dir = self.create_tempdir().full_path
    config.dataset_configs.base_dir = base_dir
    config.dataset_configs.num_classes = 5
    write_video_tfrecords(base_dir, 'validation', 3, 5)  # No train files.
    workdir = self.create_tempdir().full_path
    dc = config.dataset_configs
    save_fresh_checkpoint(config, workdir,
                          (dc.num_frames, dc.crop_size, dc.crop_size, 3), 5)
    entries = visualize.visualize(config, workdir, num_clips=3)
    self.assertEqual([e['label'] for e in entries], [0, 1, 2])
    png = Image.open(os.path.join(workdir, 'visualizations', 'clip_2.png'))
    tokens, size = config.model.tokenizer.num_tokens, 32 * visualize.SCALE
    self.assertEqual(png.size, (dc.num_frames * size + 2 * (dc.num_frames - 1),
                                (tokens + 1) * size))
    # A config that does not fit the checkpoint is named in one line.
    config.model.tokenizer.num_tokens = tokens + 1
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'The checkpoint of --workdir=.* does not fit '
                                'this run: .*TokenLearner'):
      visualize.visualize(config, workdir, num_clips=1)

  def test_a_model_without_tokenlearner_is_named(self):
    config = config_for('demo_moving_digits')
    config.model.tokenizer.tokenlearner_loc = None
    with self.assertRaisesRegex(ValueError, 'model.tokenizer'):
      visualize.visualize(config, self.create_tempdir().full_path)

  def test_the_x2plus1d_network_is_named(self):
    with self.assertRaisesRegex(ValueError, 'X\\(2\\+1\\)D network'):
      visualize.visualize(config_for('charades_x2plus1d_tl'),
                          self.create_tempdir().full_path)


if __name__ == '__main__':
  absltest.main()
