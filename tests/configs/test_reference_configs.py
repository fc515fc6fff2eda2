"""The reference's own config files, unchanged: their models' exact sizes
through `summary` (no data read), and the ViViT-B Kinetics-400 file trains on
Kinetics-format TFRecords with only data paths and sizes (and its depth)
overridden."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from tests import testing
from tokenlearner_jax import summary
from tokenlearner_jax import train
from tokenlearner_jax.configs import common

REFERENCE = os.path.join(testing.ROOT, 'tests', 'testdata',
                         'reference_configs')
# File: (parameters, input shape per example), as `python -m
# tokenlearner_jax.summary --config=<file>` prints them.
SIZES = {
    'token_learner/im1k_token_learner_config.py': (86_617_912, (224, 224, 3)),
    'vivit/kinetics400/vivit_base_k400.py': (88_954_000, (32, 224, 224, 3)),
    'vivit/kinetics400/vivit_base_factorised_encoder.py':
        (115_062_928, (32, 224, 224, 3)),
    'vivit/kinetics400/vivit_large_factorised_encoder.py':
        (606_827_920, (32, 224, 224, 3)),
    'vivit/kinetics600/vivit_large_factorised_encoder.py':
        (607_032_920, (32, 224, 224, 3)),
}


class ReferenceConfigFilesTest(parameterized.TestCase):

  @parameterized.parameters(*SIZES)
  def test_summary_without_data(self, name):
    config = common.load_config(os.path.join(REFERENCE, name))
    info = summary.summarize(config)
    self.assertEqual((info['num_params'], info['input_shape']), SIZES[name])

  @pytest.mark.e2e
  def test_vivit_base_k400_trains_with_data_paths_and_sizes_overridden(self):
    data_dir = self.create_tempdir().full_path
    sizes = {'train': 8, 'validation': 4, 'test': 4}
    for split, count in sizes.items():
      testing.write_video_tfrecords(data_dir, split, count, num_classes=400,
                                    num_frames=8)
    config = common.load_config(
        os.path.join(REFERENCE, 'vivit/kinetics400/vivit_base_k400.py'))
    data = config.dataset_configs
    data.base_dir = data_dir
    data.tables = {split: f'{split}-00000-of-00001' for split in sizes}
    data.examples_per_subset = sizes
    data.num_frames, data.crop_size, data.min_resize = 4, 32, 36
    data.test_batch_size = 2
    config.batch_size = 2
    config.num_training_epochs = 1
    # 2 of its 12 layers: what runs (the reference's keys, its data and
    # evaluation schedule) does not depend on the depth; the 12-layer model's
    # size is test_summary_without_data's.
    config.model.num_layers = 2
    config.init_from.checkpoint_path = None
    workdir = self.create_tempdir().full_path
    final = train.train_and_evaluate(config, workdir)
    # One epoch of 8 clips at batch 2; an evaluation (the reference's default:
    # one per epoch) of the 4 validation clips.
    self.assertEqual(final['step'], 4)
    self.assertEqual(final['num_examples'], 4)
    self.assertEqual(sorted(final), ['accuracy', 'accuracy_top_5',
                                     'gmacs_per_example', 'loss',
                                     'num_examples', 'step'])
    steps = [row['step'] for row in testing.read_jsonl(workdir)]
    self.assertEqual(steps, [4, 4])  # Summary and eval, each once an epoch.


if __name__ == '__main__':
  absltest.main()
