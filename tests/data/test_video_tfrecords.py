"""Kinetics-style SequenceExample TFRecords: clips, crops, views, bad input."""

import json
import os
import shutil

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
from ml_collections import config_flags
import numpy as np
import pytest
import tensorflow as tf

from tests import testing
from tests.testing import ROOT
from tests.testing import config_for
from tests.testing import jpeg
from tests.testing import video_example
from tests.testing import write_records
from tokenlearner_jax import errors
from tokenlearner_jax import evaluate
from tokenlearner_jax import fewshot
from tokenlearner_jax import visualize
from tokenlearner_jax.configs import schema
from tokenlearner_jax.data import video_tfrecords

HEIGHT, WIDTH = 24, 40


def frame_jpeg(level: int) -> bytes:
  """A uniform grey frame: its brightness tells which frame it is."""
  return jpeg(np.full((HEIGHT, WIDTH, 3), level, np.uint8), quality=100)


def textured_jpeg(seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  return jpeg(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8),
              quality=100)


def level_video(length: int, label: int) -> bytes:
  """Frame i has brightness 10 * i."""
  return video_example([frame_jpeg(10 * i) for i in range(length)], label)


def frame_numbers(clip: np.ndarray, zero_centering: bool = True) -> np.ndarray:
  """The frame index each frame of a `[T, H, W, 3]` clip shows."""
  values = (clip + 1.0) * 127.5 if zero_centering else clip * 255.0
  return np.round(values.mean(axis=(1, 2, 3)) / 10.0).astype(int)


def dataset_config(base_dir: str, **overrides) -> ml_collections.ConfigDict:
  dc = ml_collections.ConfigDict(dict(
      base_dir=base_dir,
      tables=dict(train='train@2', validation='validation@1',
                  test='test-*'),
      examples_per_subset=dict(train=4, validation=3, test=7),
      num_classes=5, num_frames=4, stride=3, min_resize=HEIGHT,
      crop_size=HEIGHT, zero_centering=True, num_test_clips=3,
      do_three_spatial_crops=True, test_batch_size=2,
      shuffle_buffer_size=8))
  dc.update(overrides)
  return dc


def data_config(dc: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """What the input pipeline reads of a config, with `dc` as its
  `dataset_configs`."""
  return schema.complete(ml_collections.ConfigDict(dict(
      dataset_name='video_tfrecord_dataset', dataset_configs=dc,
      batch_size=2, eval_batch_size=2, rng_seed=0)))


class VideoTfrecordsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.base_dir = self.create_tempdir().full_path
    for name, videos in (
        ('train-00000-of-00002', [level_video(20, 0), level_video(20, 1)]),
        ('train-00001-of-00002', [level_video(20, 2), level_video(7, 3)]),
        ('validation-00000-of-00001', [level_video(20, i) for i in range(3)]),
        ('test-a', [video_example([textured_jpeg(i)] * 20, i % 5)
                    for i in range(4)]),
        ('test-b', [video_example([textured_jpeg(i)] * 20, i % 5)
                    for i in range(4, 7)])):
      write_records(os.path.join(self.base_dir, name), videos)

  def data(self, **overrides):
    return video_tfrecords.get_data(data_config(
        dataset_config(self.base_dir, **overrides)))

  def test_eval_takes_the_middle_clip_at_the_stride(self):
    batch = next(self.data().eval_batches())
    self.assertEqual(batch['inputs'].shape, (2, 4, HEIGHT, HEIGHT, 3))
    # 20 frames, span (4 - 1) * 3 + 1 = 10: the middle clip starts at 5.
    np.testing.assert_array_equal(frame_numbers(batch['inputs'][0]),
                                  [5, 8, 11, 14])
    np.testing.assert_array_equal(batch['label'][:, :3], np.eye(2, 3))

  def test_train_clips_follow_the_stride_and_wrap_around(self):
    data = self.data()
    starts, labels = set(), set()
    for _ in range(8):
      batch = next(data.train_iter)
      self.assertEqual(batch['inputs'].shape, (2, 4, HEIGHT, HEIGHT, 3))
      for clip, label in zip(batch['inputs'], batch['label']):
        numbers = frame_numbers(clip)
        label = int(np.argmax(label))
        labels.add(label)
        length = 7 if label == 3 else 20
        start = numbers[0]
        np.testing.assert_array_equal(
            numbers, (start + 3 * np.arange(4)) % length)
        if length == 20:
          starts.add(start)
          self.assertLessEqual(start, 10)
    self.assertSetEqual(labels, {0, 1, 2, 3})
    self.assertGreater(len(starts), 2)  # Random clips.

  def test_train_stream_depends_only_on_the_seed(self):
    aug = dict(do_jitter_scale=True, scale_min_factor=1.0,
               scale_max_factor=1.5, do_color_augment=True,
               prob_color_augment=1.0, prob_color_drop=0.5)
    a = [next(self.data(augmentation_params=aug).train_iter) for _ in range(3)]
    b = [next(self.data(augmentation_params=aug).train_iter) for _ in range(3)]
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x['inputs'], y['inputs'])
    self.assertLessEqual(np.abs(a[0]['inputs']).max(), 1.0)

  def test_test_views_are_clips_times_three_crops(self):
    data = self.data()
    self.assertEqual(data.num_test_views, 9)
    batch = next(data.test_batches('test'))
    self.assertEqual(batch['inputs'].shape, (2, 9, 4, HEIGHT, HEIGHT, 3))
    decoded = tf.io.decode_jpeg(textured_jpeg(0)).numpy() / 127.5 - 1.0
    # Along the longer side (width 40, crop 24): offsets 0, 8 and 16.
    for view, offset in zip(batch['inputs'][0][:3], (0, 8, 16)):
      np.testing.assert_allclose(view[0], decoded[:, offset:offset + HEIGHT],
                                 atol=1e-5)

  def test_records_not_there_say_what_to_do(self):
    # The design card's command on a machine without Kinetics.
    missing = os.path.join(self.create_tempdir().full_path, 'kinetics')
    with self.assertRaisesRegex(
        errors.MissingFileError, f'dataset_configs.base_dir={missing} does '
        'not exist: .*docs/data.md.*configs/demo_moving_digits.py'):
      video_tfrecords.get_data(data_config(dataset_config(missing)))
    with self.assertRaisesRegex(errors.MissingFileError,
                                "'train@3': 3 of 3 shards are missing"):
      self.data(tables=dict(train='train@3', validation='validation@1',
                            test='test-*'))

  def test_the_test_crops_at_its_own_size(self):
    # X3D's protocol: train (and evaluate during training) on 16-pixel
    # crops, test on 24 (the whole smaller side).
    data = self.data(crop_size=16, test_crop_size=HEIGHT,
                     do_three_spatial_crops=False)
    self.assertEqual(data.input_shape, (4, 16, 16, 3))
    self.assertEqual(data.test_input_shape, (4, HEIGHT, HEIGHT, 3))
    self.assertEqual(next(data.train_iter)['inputs'].shape, (2, 4, 16, 16, 3))
    self.assertEqual(next(data.eval_batches())['inputs'].shape,
                     (2, 4, 16, 16, 3))
    batch = next(data.test_batches('test'))
    self.assertEqual(batch['inputs'].shape, (2, 3, 4, HEIGHT, HEIGHT, 3))
    decoded = tf.io.decode_jpeg(textured_jpeg(0)).numpy() / 127.5 - 1.0
    # The centre 24 x 24 of the 24 x 40 frame: columns 8 to 32.
    np.testing.assert_allclose(batch['inputs'][0][0][0], decoded[:, 8:32],
                               atol=1e-5)

  def test_test_clips_are_evenly_spaced(self):
    # Level videos: clip starts at linspace(0, 20 - 10, 3) = 0, 5, 10.
    data = self.data(tables=dict(train='train@2', test='validation@1'),
                     do_three_spatial_crops=False)
    batch = next(data.test_batches('test'))
    self.assertEqual(batch['inputs'].shape, (2, 3, 4, HEIGHT, HEIGHT, 3))
    np.testing.assert_array_equal(
        [frame_numbers(clip)[0] for clip in batch['inputs'][0]], [0, 5, 10])

  @parameterized.parameters(1, 2, 3, 4, 7, 8)
  def test_every_test_video_counts_exactly_once(self, test_batch_size):
    data = self.data(test_batch_size=test_batch_size)
    batches = list(data.test_batches('test'))
    masks = np.concatenate([b['batch_mask'] for b in batches])
    labels = np.concatenate([b['label'] for b in batches])[masks > 0]
    self.assertEqual(masks.sum(), 7)
    self.assertLen(masks, -(-7 // test_batch_size) * test_batch_size)
    np.testing.assert_array_equal(np.argmax(labels, -1),
                                  [i % 5 for i in range(7)])

  def test_missing_shard_and_empty_glob_are_named(self):
    with self.assertRaisesRegex(
        FileNotFoundError,
        r'tables.train.*3 of 3 shards.*train-00000-of-00003'):
      self.data(tables=dict(train='train@3'))
    data = self.data(tables=dict(train='train@2', test='nothing-*'))
    with self.assertRaisesRegex(FileNotFoundError, r'tables.test.*nothing-\*'):
      data.test_batches('test')
    dc = dataset_config(self.base_dir)
    dc.tables = dict(train='train@2')
    with self.assertRaisesRegex(ValueError, r"no 'validation' entry"):
      video_tfrecords.get_data(data_config(dc))

  def test_the_eval_side_alone_needs_no_train_split(self):
    for name in os.listdir(self.base_dir):
      if name.startswith('train-'):
        os.remove(os.path.join(self.base_dir, name))
    with self.assertRaisesRegex(FileNotFoundError, r'tables.train'):
      self.data()
    data = video_tfrecords.get_data(
        data_config(dataset_config(self.base_dir)), train=False)
    self.assertIsNone(data.train_iter)
    self.assertEqual(data.input_shape, (4, HEIGHT, HEIGHT, 3))
    batches = list(data.eval_batches())
    self.assertEqual(sum(b['batch_mask'].sum() for b in batches), 3)
    np.testing.assert_array_equal(frame_numbers(batches[0]['inputs'][0]),
                                  [5, 8, 11, 14])
    # Nor does `tables` need a 'train' entry.
    dc = dataset_config(self.base_dir)
    dc.tables = dict(validation='validation@1', test='test-*')
    data = video_tfrecords.get_data(data_config(dc), train=False)
    batches = list(data.test_batches('test'))
    self.assertEqual(sum(b['batch_mask'].sum() for b in batches), 7)
    self.assertEqual(batches[0]['inputs'].shape[1], data.num_test_views)

  def test_unsupported_augmentation_is_named(self):
    with self.assertRaisesRegex(ValueError, r'do_rand_augment'):
      self.data(augmentation_params=dict(do_rand_augment=True))

  def test_label_out_of_range_is_an_error(self):
    with self.assertRaisesRegex(ValueError, r'num_classes=2'):
      list(self.data(num_classes=2).eval_batches())

  def test_corrupt_jpeg_names_the_file_or_is_skipped(self):
    bad = video_example([b'not a jpeg'] * 20, 1)
    write_records(os.path.join(self.base_dir, 'validation-00000-of-00001'),
                  [level_video(20, 0), bad, level_video(20, 2)])
    with self.assertRaisesRegex(
        ValueError, r'validation-00000-of-00001, record 1'):
      list(self.data().eval_batches())
    batches = list(self.data(skip_corrupt_examples=True).eval_batches())
    self.assertEqual(sum(b['batch_mask'].sum() for b in batches), 2)

  @parameterized.named_parameters(
      ('no_frames', lambda: video_example([], 1), 'the video has no frames'),
      ('two_sizes', lambda: video_example(
          [frame_jpeg(0)] * 10 + [jpeg(np.zeros((30, 50, 3), np.uint8))] * 10,
          1), 'frame 10 is 30x50, frame 0 24x40: the frames of a video must '
       'share one size'),
      ('label_past_the_classes', lambda: level_video(20, 7),
       r'label index >= dataset_configs.num_classes=5 \(after '
       r'label_offset\)'))
  def test_a_bad_record_is_named_with_its_cause_in_one_line(self, bad, cause):
    write_records(os.path.join(self.base_dir, 'validation-00000-of-00001'),
                  [level_video(20, 0), bad(), level_video(20, 2)])
    with self.assertRaisesRegex(
        video_tfrecords.CorruptExampleError,
        rf'^Corrupt or invalid video example in \S+validation-00000-of-00001, '
        rf'record 1: {cause}\. Set dataset_configs.skip_corrupt_examples=True'
    ) as raised:
      list(self.data().eval_batches())
    self.assertNotIn('\n', str(raised.exception))
    self.assertIsInstance(raised.exception, errors.KnownFault)

  def test_files_without_a_readable_example_are_named_in_one_line(self):
    for name in ('train-00000-of-00002', 'train-00001-of-00002',
                 'validation-00000-of-00001'):
      with open(os.path.join(self.base_dir, name), 'wb') as f:
        f.write(b'not a TFRecord file' * 10)
    data = self.data(skip_corrupt_examples=True)
    with self.assertRaisesRegex(
        ValueError, r'^no readable example in \S*/validation-00000-of-00001 '
        r'\(dataset_configs.skip_corrupt_examples=True skipped every '
        r'record\).$'):
      list(data.eval_batches())
    with self.assertRaisesRegex(
        ValueError, r'^no readable example in \S*/train-00000-of-00002, '
        r'\S*/train-00001-of-00002 \(dataset_configs'):
      next(data.train_iter)
    # Without skipping, the first corrupt record stops the run, named.
    with self.assertRaisesRegex(ValueError, r'train-00000-of-00002, record 0'):
      next(self.data().train_iter)

  def test_skipped_examples_are_counted_per_pass_and_in_the_train_stream(
      self):
    bad = video_example([b'not a jpeg'] * 20, 1)
    # Eval: one skipped between two examples, one after the last.
    write_records(os.path.join(self.base_dir, 'validation-00000-of-00001'),
                  [level_video(20, 0), bad, level_video(20, 2), bad])
    # Train: one file in order (a shuffle buffer of 1), 1 example in 4.
    write_records(os.path.join(self.base_dir, 'one-train'),
                  [bad, level_video(20, 0), bad, bad])
    data = self.data(skip_corrupt_examples=True, shuffle_buffer_size=1,
                     tables=dict(train='one-train',
                                 validation='validation@1'))
    self.assertEqual(data.skipped.last_pass, 0)
    with self.assertLogs(level='WARNING') as logs:
      batches = list(data.eval_batches())
    self.assertEqual(sum(b['batch_mask'].sum() for b in batches), 2)
    self.assertEqual(data.skipped.last_pass, 2)
    self.assertTrue(any('Skipped 2 corrupt examples of ' in line
                        for line in logs.output), logs.output)
    self.assertNotIn(video_tfrecords.INDEX, batches[0])
    # The stream is b g b b b g b b ...: two batches of 2 end with the 4th
    # example, at index 13; the other 10 of the first 14 were skipped.
    for _ in range(2):
      batch = next(data.train_iter)
    self.assertNotIn(video_tfrecords.INDEX, batch)
    self.assertEqual(data.skipped.train, 10)

  def test_a_garbage_file_among_readable_ones_is_skipped(self):
    with open(os.path.join(self.base_dir, 'train-00001-of-00002'), 'wb') as f:
      f.write(b'not a TFRecord file' * 10)
    data = self.data(skip_corrupt_examples=True)
    labels = {int(np.argmax(label)) for _ in range(4)
              for label in next(data.train_iter)['label']}
    self.assertEqual(labels, {0, 1})  # The first shard's videos only.

  def test_skip_corrupt_examples_defaults_to_false_and_is_overridable(self):
    self.assertIs(config_for('vivit_k400').dataset_configs
                  .skip_corrupt_examples, False)
    # Overridable on the command line, as the entry points parse it.
    argv = ['train', f'--config={ROOT}/configs/vivit_k400.py:runlocal',
            '--config.dataset_configs.skip_corrupt_examples=True']
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=flag_values,
                                    sys_argv=argv)
    flag_values(argv)
    self.assertIs(flag_values.config.dataset_configs.skip_corrupt_examples,
                  True)

  @parameterized.parameters(0, -8)
  def test_a_test_batch_size_not_above_zero_is_named(self, size):
    config = config_for('vivit_k400')
    config.dataset_configs.test_batch_size = size
    with self.assertRaisesRegex(
        ValueError, rf'config.dataset_configs.test_batch_size={size}: must '
        r'be a number > 0'):
      evaluate.evaluate_checkpoint(config, self.base_dir)

  def test_truncated_file_names_the_file(self):
    path = os.path.join(self.base_dir, 'validation-00000-of-00001')
    with open(path, 'rb') as f:
      content = f.read()
    with open(path, 'wb') as f:
      f.write(content[:len(content) - 100])
    with self.assertRaisesRegex(ValueError, r'validation-00000-of-00001'):
      list(self.data().eval_batches())


def segment_video(length: int, labels, fps: float, segments) -> bytes:
  """`level_video` with Charades' context: the video's `labels`, `fps` and
  `segments` [(class, start, end)] (scripts/make_charades_tfrecords.py)."""
  example = tf.train.SequenceExample.FromString(level_video(length, 0))
  context = example.context.feature
  del context['clip/label/index'].int64_list.value[:]
  context['clip/label/index'].int64_list.value.extend(labels)
  context['video/fps'].float_list.value.append(fps)
  context['segment/label/index'].int64_list.value.extend(
      c for c, _, _ in segments)
  context['segment/start'].float_list.value.extend(s for _, s, _ in segments)
  context['segment/end'].float_list.value.extend(e for _, _, e in segments)
  return example.SerializeToString()


class ClipLabelsTest(parameterized.TestCase):
  """Multi-hot video labels, segment labels of train clips, videos without
  a label."""

  SEGMENTS = [(3, 0.0, 1.0), (4, 2.0, 4.0), (1, 5.0, 6.0)]

  @parameterized.parameters(
      (0, 4, 20, {3}),  # Frames 0-3: 0.0-1.5 s.
      (2, 4, 20, {3, 4}),  # 1.0-2.5 s: class 3 ends at 1.0 s.
      (4, 4, 20, {4}),  # 2.0-3.5 s.
      (10, 4, 20, {1}),  # 5.0-6.5 s.
      (14, 4, 20, set()),  # 7.0-8.5 s: no action.
      (0, 8, 6, {1, 3, 4}))  # Wraps around: the whole video.
  def test_segments_overlapping_the_clip(self, start, span, length, expected):
    example = video_tfrecords.parse_example(tf.constant(segment_video(
        length, [1, 3, 4], 2.0, self.SEGMENTS)))
    index = video_tfrecords.segment_labels(
        example, tf.constant(start), span, tf.constant(length))
    self.assertSetEqual(set(index.numpy().tolist()), expected)

  def test_train_clips_take_the_segments_eval_and_test_the_video(self):
    base_dir = self.create_tempdir().full_path
    # 4 frames at 2 fps, clips of 4 frames: always frames 0-3 (0.0-1.5 s).
    for split in ('train-00000-of-00001', 'validation-00000-of-00001',
                  'test-a'):
      write_records(os.path.join(base_dir, split), [
          segment_video(4, [1, 3, 4], 2.0, self.SEGMENTS),
          segment_video(4, [], 2.0, [])])
    overrides = dict(tables=dict(train='train@1', validation='validation@1',
                                 test='test-*'),
                     stride=1, do_three_spatial_crops=False, num_test_clips=2)
    video_labels = [[0, 1, 0, 1, 1], [0] * 5]
    for clip_labels, train_labels in (('video', video_labels),
                                      ('segments', [[0, 0, 0, 1, 0],
                                                    [0] * 5])):
      config = data_config(dataset_config(base_dir, clip_labels=clip_labels,
                                          **overrides))
      config.model_name = 'x2plus1d_multilabel_classification'
      data = video_tfrecords.get_data(config)
      batch = next(data.train_iter)
      self.assertCountEqual(batch['label'].tolist(), train_labels)
      np.testing.assert_array_equal(next(data.eval_batches())['label'],
                                    video_labels)
      np.testing.assert_array_equal(next(data.test_batches('test'))['label'],
                                    video_labels)

  def test_a_video_without_label_is_an_error_for_a_softmax_head(self):
    base_dir = self.create_tempdir().full_path
    write_records(os.path.join(base_dir, 'validation-00000-of-00001'),
                  [segment_video(4, [], 2.0, [])])
    config = data_config(dataset_config(base_dir, stride=1))
    config.model_name = 'x2plus1d_classification'
    with self.assertRaisesRegex(ValueError, 'a video has no clip/label/index'):
      next(video_tfrecords.get_data(config, train=False).eval_batches())

  def test_a_video_with_two_labels_is_an_error_for_a_softmax_head(self):
    base_dir = self.create_tempdir().full_path
    write_records(os.path.join(base_dir, 'validation-00000-of-00001'),
                  [segment_video(4, [1, 3], 2.0, [])])
    config = data_config(dataset_config(base_dir, stride=1))
    config.model_name = 'x2plus1d_classification'
    with self.assertRaisesRegex(ValueError, 'several labels under a softmax '
                                'head: use a multi-label model_name'):
      next(video_tfrecords.get_data(config, train=False).eval_batches())
    config.model_name = 'x2plus1d_multilabel_classification'
    batch = next(video_tfrecords.get_data(config, train=False).eval_batches())
    np.testing.assert_array_equal(batch['label'][0], [0, 1, 0, 1, 0])

  def test_an_unset_clip_size_is_named(self):
    dc = dataset_config(self.create_tempdir().full_path)
    del dc['min_resize']
    with self.assertRaisesRegex(errors.ConfigError,
                                r'^dataset_configs\.min_resize must be set'):
      video_tfrecords.get_data(data_config(dc))

  @parameterized.parameters(('clip_labels', 'frames'), ('test_pooling', 'sum'))
  def test_unknown_choice_is_named(self, key, value):
    # Refused with the config, before any data is read.
    with self.assertRaisesRegex(
        errors.ConfigError,
        rf"^config\.dataset_configs\.{key} must be one of .*, got '{value}'"):
      video_tfrecords.get_data(data_config(dataset_config(
          self.create_tempdir().full_path, **{key: value})))


@pytest.mark.e2e
class EvaluateCheckpointTest(absltest.TestCase):

  def test_multi_view_eval_of_a_trained_run(self):
    config, trained = testing.shared_run('vivit_tfrecords')
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(trained, workdir)
    # Evaluating reads the test split only: the train split may be gone.
    base_dir = self.create_tempdir().full_path
    for split in ('validation', 'test'):
      shutil.copy(os.path.join(config.dataset_configs.base_dir,
                               f'{split}-00000-of-00001'), base_dir)
    config.dataset_configs.base_dir = base_dir
    results = evaluate.evaluate_checkpoint(config, workdir)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      self.assertEqual(json.load(f), results)
    self.assertEqual(results['num_examples'], 5)
    self.assertEqual(results['skipped_examples'], 0)  # It skips; none bad.
    self.assertEqual(results['views_per_example'], 12)  # 4 clips x 3 crops.
    self.assertEqual(results['step'], 2)
    self.assertBetween(results['accuracy'], 0.0, 1.0)
    with self.assertRaisesRegex(errors.MissingFileError,
                                r'--step=7: no checkpoint at step 7'):
      evaluate.evaluate_checkpoint(config, workdir, step=7)

  def test_a_missing_workdir_is_named_and_not_created(self):
    # The entry points' one line: tests/integration/test_entry_points.py.
    parent = self.create_tempdir().full_path
    missing = os.path.join(parent, 'mistyped', 'path')
    config = config_for('vivit_k400')
    for verb, run in (
        ('evaluate',
         lambda: evaluate.evaluate_checkpoint(config, missing, step=2)),
        ('visualise', lambda: visualize.visualize(config, missing)),
        ('fewshot', lambda: fewshot.evaluate_checkpoint(
            config_for('demo_multi_digits'), missing))):
      message = f'--workdir={missing} does not exist (no run to {verb} there).'
      with self.assertRaisesWithLiteralMatch(errors.WorkdirNotFoundError,
                                             message):
        run()
      self.assertEqual(os.listdir(parent), [])

if __name__ == '__main__':
  absltest.main()
