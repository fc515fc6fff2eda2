"""scripts/make_video_tfrecords.py: shards, label ids, resampling, bad input."""

import io
import math
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Sequence, Tuple
from unittest import mock

from absl import flags
from absl.testing import absltest
import av
import numpy as np
import tensorflow as tf

from tests.testing import load_script
from tests.testing import script_path

SCRIPT = script_path('make_video_tfrecords')
mvt = load_script('make_video_tfrecords')

HEIGHT, WIDTH, RATE = 32, 48, 10
# (path in the CSV, label, frames at RATE fps); labels out of sorted order.
VIDEOS = [('walk.mp4', 'walking', 20), ('sub/run.mp4', 'running', 10),
          ('ABSOLUTE/swim.mp4', 'swimming', 12), ('jump.mp4', 'jumping', 15)]
SORTED_LABELS = ['jumping', 'running', 'swimming', 'walking']


def write_video(path: str, num_frames: int) -> None:
  """A RATE fps grey video whose frame i has brightness 10 * i."""
  codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=RATE)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    for i in range(num_frames):
      frame = av.VideoFrame.from_ndarray(
          np.full((HEIGHT, WIDTH, 3), 10 * i, np.uint8), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_csv(directory: str, name: str,
              rows: Sequence[Tuple[str, str]]) -> str:
  """A `path,label` CSV of `rows` in `directory`; returns its path."""
  path = os.path.join(directory, name)
  with open(path, 'w') as f:
    f.write('path,label\n')
    f.writelines(f'{p},{label}\n' for p, label in rows)
  return path


def read_records(paths: Sequence[str]) -> List[Dict[str, Any]]:
  """The examples of `paths` in order, parsed as the input pipeline does."""
  records = []
  for path in paths:
    for serialized in tf.data.TFRecordDataset(path):
      context, sequence = tf.io.parse_single_sequence_example(
          serialized,
          context_features={'clip/label/index': tf.io.VarLenFeature(
              tf.int64)},
          sequence_features={'image/encoded': tf.io.FixedLenSequenceFeature(
              [], tf.string)})
      example = tf.train.SequenceExample.FromString(serialized.numpy())
      features = example.context.feature
      records.append(dict(
          shard=os.path.basename(path),
          label=tf.sparse.to_dense(context['clip/label/index']).numpy(),
          text=features['clip/label/text'].bytes_list.value[0].decode(),
          media_id=features['clip/media_id'].bytes_list.value[0].decode(),
          frames=sequence['image/encoded']))
  return records


def levels(frames: tf.Tensor) -> List[int]:
  """Each JPEG frame's brightness / 10, rounded: its source frame index."""
  return [int(round(float(tf.reduce_mean(tf.cast(
      tf.io.decode_jpeg(f), tf.float32))) / 10)) for f in frames]


class LabelMapTest(absltest.TestCase):

  def test_build_sorts_distinct_labels(self):
    self.assertEqual(mvt.build_label_map(['b', 'a', 'c', 'a']),
                     {'a': 0, 'b': 1, 'c': 2})


class ResampleTest(absltest.TestCase):

  def test_constant_rate(self):
    times = [i / 10 for i in range(20)]
    self.assertEqual(mvt.resample_times(times, 2.0, 25.0),
                     [math.floor(k * 10 / 25) for k in range(50)])
    self.assertEqual(mvt.resample_times(times, 2.0, 5.0), list(range(0, 20, 2)))
    self.assertEqual(mvt.resample_times(times, 2.0, 0.0), list(range(20)))

  def test_variable_rate_takes_the_latest_earlier_frame(self):
    self.assertEqual(mvt.resample_times([0.0, 0.05, 0.3], 0.4, 10.0),
                     [0, 1, 1, 2])
    # Unknown end: at least up to the last frame.
    self.assertEqual(mvt.resample_times([0.0], 0.0, 25.0), [0])
    self.assertEqual(mvt.resample_times([0.0, 0.5], 0.5, 4.0), [0, 0, 1])

  def test_resized_shape(self):
    self.assertEqual(mvt.resized_shape(32, 48, 16), (16, 24))
    self.assertEqual(mvt.resized_shape(48, 32, 16), (24, 16))
    self.assertEqual(mvt.resized_shape(32, 48, 0), (32, 48))


class ConvertTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.video_dir = os.path.join(cls.root, 'videos')
    cls.rows = []
    for path, label, num_frames in VIDEOS:
      if path.startswith('ABSOLUTE/'):
        path = os.path.join(cls.root, 'elsewhere', os.path.basename(path))
        write_video(path, num_frames)
      else:
        write_video(os.path.join(cls.video_dir, path), num_frames)
      cls.rows.append((path, label))
    cls.csv = write_csv(cls.root, 'train.csv', cls.rows)
    cls.walk_csv = write_csv(cls.root, 'walk.csv', cls.rows[:1])

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root)
    super().tearDownClass()

  def convert(self, csv_path=None, **kwargs):
    output_dir = self.create_tempdir().full_path
    summary = mvt.convert(csv_path or self.csv, output_dir,
                          video_dir=self.video_dir, **kwargs)
    return output_dir, summary

  def test_shards_labels_and_every_video_once(self):
    output_dir, summary = self.convert(num_shards=3)
    names = [f'train-0000{i}-of-00003' for i in range(3)]
    self.assertEqual(sorted(os.listdir(output_dir)), ['label_map.csv'] + names)
    paths = [os.path.join(output_dir, name) for name in names]
    self.assertEqual(summary.shard_paths, paths)
    self.assertEqual(summary.shard_counts, [2, 1, 1])
    records = read_records(paths)
    self.assertCountEqual([r['media_id'] for r in records],
                          [path for path, _ in self.rows])
    # Round robin in CSV order: shard 0 holds the 1st and 4th videos.
    self.assertEqual([(r['shard'], r['media_id']) for r in records],
                     [(names[0], self.rows[0][0]), (names[0], self.rows[3][0]),
                      (names[1], self.rows[1][0]), (names[2], self.rows[2][0])])
    for record in records:
      self.assertEqual(record['label'].tolist(),
                       [SORTED_LABELS.index(record['text'])])
    # At 25 fps: 2 s, 1.5 s, 1 s and 1.2 s.
    self.assertEqual([len(r['frames']) for r in records], [50, 38, 25, 30])
    self.assertEqual(summary.total_frames, 143)
    self.assertEqual(summary.num_classes, 4)
    with open(os.path.join(output_dir, 'label_map.csv')) as f:
      self.assertEqual(
          f.read(), 'index,label\n0,jumping\n1,running\n2,swimming\n'
          '3,walking\n')
    text = mvt.format_summary(summary)
    self.assertIn('Wrote 4 videos (143 frames, 4 classes) to 3 shards', text)
    self.assertIn(f'{paths[0]}: 2 videos', text)

  def test_same_inputs_give_identical_files(self):
    first, _ = self.convert(num_shards=2)
    second, _ = self.convert(num_shards=2)
    self.assertEqual(sorted(os.listdir(first)), sorted(os.listdir(second)))
    for name in os.listdir(first):
      with open(os.path.join(first, name), 'rb') as a, open(
          os.path.join(second, name), 'rb') as b:
        self.assertEqual(a.read(), b.read(), name)

  def test_fps_resamples_in_source_order(self):
    for fps, expected in [(25.0, [math.floor(k * 0.4) for k in range(50)]),
                          (5.0, list(range(0, 20, 2))),
                          (0.0, list(range(20)))]:
      output_dir, _ = self.convert(self.walk_csv, num_shards=1, fps=fps)
      (record,) = read_records([os.path.join(output_dir,
                                             'train-00000-of-00001')])
      got = levels(record['frames'])
      self.assertEqual(got, expected, f'fps={fps}')
      self.assertEqual(got, sorted(got))

  def test_frame_size_and_min_resize(self):
    for min_resize, shape in [(0, (HEIGHT, WIDTH, 3)), (16, (16, 24, 3)),
                              (40, (40, 60, 3))]:
      output_dir, _ = self.convert(self.walk_csv, num_shards=1, fps=5.0,
                                   min_resize=min_resize)
      (record,) = read_records([os.path.join(output_dir,
                                             'train-00000-of-00001')])
      for frame in record['frames']:
        self.assertEqual(tuple(tf.io.decode_jpeg(frame).shape), shape)

  def test_label_map_reuse_and_unknown_label(self):
    train_dir, _ = self.convert(num_shards=1, fps=5.0)
    label_map = os.path.join(train_dir, 'label_map.csv')
    val_csv = write_csv(self.create_tempdir().full_path, 'val.csv',
                        [self.rows[3], self.rows[0]])
    val_dir, summary = self.convert(val_csv, split='validation', num_shards=1,
                                    fps=5.0, label_map_path=label_map)
    self.assertEqual(os.listdir(val_dir), ['validation-00000-of-00001'])
    self.assertFalse(summary.label_map_written)
    self.assertEqual(summary.num_classes, 4)
    records = read_records(summary.shard_paths)
    self.assertEqual([(r['text'], r['label'].tolist()) for r in records],
                     [('jumping', [0]), ('walking', [3])])
    bad_csv = write_csv(self.create_tempdir().full_path, 'bad.csv',
                        [self.rows[0], (self.rows[1][0], 'dancing')])
    with self.assertRaisesRegex(
        mvt.ConversionError,
        re.escape(f"{bad_csv} line 3: label 'dancing' is not in "
                  f'--label_map={label_map} (4 labels)')):
      self.convert(bad_csv, label_map_path=label_map)

  def test_bad_video_stops_or_is_skipped(self):
    bad = os.path.join(self.create_tempdir().full_path, 'bad.mp4')
    with open(bad, 'wb') as f:
      f.write(np.random.default_rng(0).bytes(4096))
    csv_path = write_csv(self.create_tempdir().full_path, 'bad.csv',
                         [self.rows[0], (bad, 'walking'), self.rows[1]])
    output_dir = self.create_tempdir().full_path
    with self.assertRaisesRegex(mvt.BadVideoError,
                                re.escape(f'line 3: {bad}: cannot decode')):
      mvt.convert(csv_path, output_dir, video_dir=self.video_dir,
                  num_shards=2)
    self.assertEmpty(os.listdir(output_dir))  # No partial shard left.
    _, summary = self.convert(csv_path, num_shards=2, fps=5.0,
                              skip_bad_videos=True)
    self.assertLen(summary.skipped, 1)
    self.assertIn(bad, summary.skipped[0])
    self.assertEqual(summary.shard_counts, [1, 1])
    self.assertIn(f'Skipped 1 bad videos:\n  {bad}',
                  mvt.format_summary(summary))
    with self.assertRaisesRegex(mvt.BadVideoError, 'no such video file'):
      mvt.decode_frames_pyav(bad + '.missing')
    with self.assertRaisesRegex(mvt.BadVideoError, 'x.mp4: no video frame'):
      mvt.make_video([], [], None, 'x.mp4')

  def test_pyav_missing_says_pip_install_av(self):
    with mock.patch.dict(sys.modules, {'av': None}):
      with self.assertRaisesRegex(ImportError, 'pip install av'):
        mvt.decode_frames_pyav(os.path.join(self.video_dir, 'walk.mp4'))

  def test_ffmpeg_decoder(self):
    with mock.patch.object(mvt.shutil, 'which', return_value=None):
      with self.assertRaisesRegex(FileNotFoundError,
                                  'ffmpeg binary is not on the PATH'):
        self.convert(decoder='ffmpeg')
    if shutil.which('ffmpeg') is None:
      self.skipTest('no ffmpeg binary on the PATH')
    path = os.path.join(self.video_dir, 'walk.mp4')
    ours, theirs = mvt.decode_frames_pyav(path), mvt.decode_frames_ffmpeg(path)
    np.testing.assert_allclose(theirs.times, ours.times, atol=1e-6)
    self.assertAlmostEqual(theirs.end, ours.end, places=6)
    np.testing.assert_allclose(np.stack(theirs.frames), np.stack(ours.frames),
                               atol=2)
    _, summary = self.convert(num_shards=2, decoder='ffmpeg')
    self.assertEqual(summary.total_frames, 143)

  def run_command_line(self, *args: str) -> str:
    """Runs the script's flag parsing and `run` in this process; its stdout."""
    flag_values = flags.FlagValues()
    mvt.define_flags(flag_values)
    flag_values([SCRIPT, *args])
    with mock.patch('sys.stdout', new_callable=io.StringIO) as stdout:
      mvt.run(flag_values)
    return stdout.getvalue()

  def test_command_line(self):
    output_dir = self.create_tempdir().full_path
    args = [f'--csv={self.csv}', f'--video_dir={self.video_dir}',
            f'--output_dir={output_dir}', '--split=test', '--num_shards=2',
            '--fps=5', '--min_resize=16']
    missing = os.path.join(self.root, 'missing.csv')
    with self.assertRaises(SystemExit) as raised:
      self.run_command_line(*args, f'--label_map={missing}')
    self.assertEqual(str(raised.exception), 'make_video_tfrecords: error: '
                     f'--label_map={missing}: no such file.')
    with self.assertRaisesRegex(flags.IllegalFlagValueError, 'decoder'):
      self.run_command_line(*args, '--decoder=opencv')
    stdout = self.run_command_line(*args)
    self.assertIn('Wrote 4 videos (29 frames, 4 classes) to 2 shards', stdout)
    records = read_records([os.path.join(output_dir, f'test-0000{i}-of-00002')
                            for i in range(2)])
    self.assertLen(records, 4)
    self.assertEqual(tuple(tf.io.decode_jpeg(records[0]['frames'][0]).shape),
                     (16, 24, 3))

if __name__ == '__main__':
  absltest.main()
