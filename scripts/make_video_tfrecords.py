r"""Converts a folder of videos listed in a CSV to sharded video TFRecords.

Writes the format the reference's ViViT reads (scenic's
`video_tfrecord_dataset`, DMVR MediaSequence), as
`tokenlearner_jax.data.video_tfrecords` does: one `tf.train.SequenceExample` per
video with

  sequence 'image/encoded':    one JPEG per frame, in time order;
  context  'clip/label/index': [the label id];
           'clip/label/text':  [the label name];
           'clip/media_id':    [the video's path as written in the CSV];

in `{output_dir}/{split}-{i:05d}-of-{num_shards:05d}`, so a config's
`tables={'train': 'train@8'}` finds them. The CSV has a header with the columns
`path` (relative to `--video_dir`, or absolute) and `label` (a class name):

  python scripts/make_video_tfrecords.py --csv=train.csv \
      --video_dir=/data/k400/videos --output_dir=/data/k400/tfrecords \
      --split=train --num_shards=1024
  python scripts/make_video_tfrecords.py --csv=val.csv \
      --video_dir=/data/k400/videos --output_dir=/data/k400/tfrecords \
      --split=validation --num_shards=64 \
      --label_map=/data/k400/tfrecords/label_map.csv

Label ids: without `--label_map` the CSV's labels sorted by name get the ids
0, 1, ... (the same CSV always gives the same ids) and the map is written to
`{output_dir}/label_map.csv` (`index,label` lines under a header); pass that
file as `--label_map` for the other splits so they share the ids.

Frames are resampled to `--fps` (25 by default, `--fps=0` keeps every decoded
frame) by timestamp: output frame k, at k / fps seconds from the first frame,
is the latest frame shown at or before that time, up to the video's end.
Videos are decoded with PyAV (`--decoder=pyav`, `pip install av`) or the
`ffmpeg` binary (`--decoder=ffmpeg`); both apply the display rotation stored
in the file. The i-th video written goes to shard i % num_shards, so the same
inputs give byte-identical files. Each video's decoded frames are held in
memory while it is converted (fine for clips of a few minutes).
"""

import csv
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from typing import (Dict, Iterable, List, NamedTuple, Optional, Sequence,
                    Tuple)

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from tokenlearner_jax.data import tfrecord_tables

DECODERS = ('pyav', 'ffmpeg')
# Timestamps closer than this (in seconds) count as equal when resampling.
TIME_EPSILON = 1e-6


class ConversionError(ValueError):
  """A problem with the inputs; its message names the file and field."""


class BadVideoError(ConversionError):
  """A video that cannot be read, fails to decode or has no frame."""


class Row(NamedTuple):
  """One video of the CSV: `path` as written, `label`, and its CSV line."""
  path: str
  label: str
  line: int


class Video(NamedTuple):
  """Decoded frames in time order.

  Attributes:
    frames: `[height, width, 3]` uint8 RGB arrays.
    times: each frame's time in seconds from the first frame (non-decreasing).
    end: when the last frame stops being shown, in seconds.
  """
  frames: List[np.ndarray]
  times: List[float]
  end: float


@dataclasses.dataclass
class Summary:
  """What a conversion wrote."""
  shard_paths: List[str]
  shard_counts: List[int]
  num_classes: int
  total_frames: int
  label_map_path: str
  label_map_written: bool
  skipped: List[str]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The command-line flags (defined only when run as the entry point)."""
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string('csv', None, 'CSV with the header columns path,label.',
                      required=True, **fv)
  flags.DEFINE_string('video_dir', '', 'Directory the CSV paths are relative '
                      'to (absolute CSV paths ignore it).', **fv)
  flags.DEFINE_string('output_dir', None, 'Where the shards (and the label '
                      'map, if built) are written.', required=True, **fv)
  flags.DEFINE_string('split', 'train', 'Split name: the shard file prefix.',
                      **fv)
  flags.DEFINE_integer('num_shards', 8, 'Number of shard files.', **fv)
  flags.DEFINE_string('label_map', None, 'An existing label map (index,label '
                      'lines) to reuse; by default one is built from the '
                      'sorted CSV labels and written to the output_dir.', **fv)
  flags.DEFINE_float('fps', 25.0, 'Output frame rate; 0 keeps every frame.',
                     **fv)
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality, 1 to 100.', **fv)
  flags.DEFINE_integer('min_resize', 0, 'If > 0, resize each frame so its '
                       'smaller side is this long (keeping the aspect).', **fv)
  flags.DEFINE_enum('decoder', 'pyav', DECODERS, 'Video decoder.', **fv)
  flags.DEFINE_bool('skip_bad_videos', False, 'Skip (and count) videos that '
                    'fail to decode or have no frame, instead of stopping.',
                    **fv)


def read_rows(csv_path: str) -> List[Row]:
  """The `path,label` rows of `csv_path` (other columns are ignored)."""
  if not tf.io.gfile.exists(csv_path):
    raise ConversionError(f'--csv={csv_path}: no such file.')
  with tf.io.gfile.GFile(csv_path, 'r') as f:
    reader = csv.DictReader(f)
    missing = [c for c in ('path', 'label')
               if c not in (reader.fieldnames or [])]
    if missing:
      raise ConversionError(
          f'--csv={csv_path}: the header {reader.fieldnames} lacks the '
          f'column(s) {missing}; expected a header line "path,label".')
    rows = []
    for record in reader:
      path = (record['path'] or '').strip()
      label = (record['label'] or '').strip()
      if not path or not label:
        raise ConversionError(f'--csv={csv_path} line {reader.line_num}: '
                              f'empty path or label in {record}.')
      rows.append(Row(path, label, reader.line_num))
  if not rows:
    raise ConversionError(f'--csv={csv_path}: no video listed.')
  return rows


def build_label_map(labels: Iterable[str]) -> Dict[str, int]:
  """Ids 0, 1, ... for the distinct `labels` sorted by name (deterministic)."""
  return {label: i for i, label in enumerate(sorted(set(labels)))}


def check_labels(rows: Sequence[Row], label_map: Dict[str, int],
                 csv_path: str, label_map_path: str) -> None:
  """Raises naming the first CSV label (and its line) not in `label_map`."""
  for row in rows:
    if row.label not in label_map:
      raise ConversionError(
          f'--csv={csv_path} line {row.line}: label {row.label!r} is not in '
          f'--label_map={label_map_path} ({len(label_map)} labels).')


def fill_times(times: List[Optional[float]], rate: Optional[float],
               path: str) -> List[float]:
  """`times`, or frame index / `rate` for all frames if any time is missing."""
  if all(t is not None for t in times):
    return times
  if not rate:
    raise BadVideoError(f'{path}: frames without timestamps and no frame '
                        'rate to derive them from.')
  return [i / rate for i in range(len(times))]


def make_video(frames: List[np.ndarray], times: List[float],
               last_duration: Optional[float], path: str) -> Video:
  """Sorts the frames by time, from 0 at the first, and finds the end time.

  The end is the last frame's time plus its duration; if that is unknown, plus
  the median gap between frames (0 for a single frame).
  """
  if not frames:
    raise BadVideoError(f'{path}: no video frame decoded.')
  order = np.argsort(np.asarray(times, np.float64), kind='stable')
  start = times[order[0]]
  times = [times[i] - start for i in order]
  frames = [frames[i] for i in order]
  if not last_duration or last_duration <= 0:
    gaps = np.diff(times)
    last_duration = float(np.median(gaps)) if len(gaps) else 0.0
  return Video(frames, times, times[-1] + last_duration)


def rotate(frame: np.ndarray, degrees: float) -> np.ndarray:
  """Turns `frame` counterclockwise by `degrees` (a multiple of 90)."""
  turns = int(round(degrees / 90)) % 4
  return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def import_av():
  """The PyAV module (an optional dependency); raises saying how to get it."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--decoder=pyav needs PyAV: pip install av (or use '
                      '--decoder=ffmpeg).') from e
  return av


def decode_frames_pyav(path: str) -> Video:
  """Decodes the first video stream of `path` with PyAV (`pip install av`)."""
  av = import_av()
  if not os.path.isfile(path):
    raise BadVideoError(f'{path}: no such video file.')
  frames, times = [], []
  last_duration = None
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise BadVideoError(f'{path}: no video stream.')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      rate = stream.average_rate or stream.guessed_rate
      for frame in container.decode(stream):
        frames.append(rotate(frame.to_ndarray(format='rgb24'),
                             getattr(frame, 'rotation', 0)))
        times.append(None if frame.pts is None
                     else float(frame.pts * frame.time_base))
        last_duration = (float(frame.duration * frame.time_base)
                         if frame.duration else None)
  except av.error.FFmpegError as e:
    raise BadVideoError(f'{path}: cannot decode: {e}') from e
  times = fill_times(times, float(rate) if rate else None, path)
  return make_video(frames, times, last_duration, path)


def ffmpeg_binary() -> str:
  """The path of the `ffmpeg` binary; raises if it is not on the PATH."""
  binary = shutil.which('ffmpeg')
  if binary is None:
    raise FileNotFoundError(
        '--decoder=ffmpeg: the ffmpeg binary is not on the PATH; install it '
        '(e.g. apt-get install ffmpeg) or use --decoder=pyav.')
  return binary


def decode_frames_ffmpeg(path: str) -> Video:
  """Decodes the first video stream of `path` with the `ffmpeg` binary.

  ffmpeg pipes raw RGB frames and its `showinfo` filter logs each frame's
  timestamp in microseconds (`settb=AVTB`), so no frame is dropped or
  repeated before our own resampling.
  """
  binary = ffmpeg_binary()
  if not os.path.isfile(path):
    raise BadVideoError(f'{path}: no such video file.')
  command = [binary, '-nostdin', '-hide_banner', '-loglevel', 'info',
             '-i', path, '-map', '0:v:0', '-vf', 'settb=AVTB,showinfo',
             '-pix_fmt', 'rgb24', '-f', 'rawvideo', 'pipe:1']
  result = subprocess.run(command, capture_output=True, check=False)
  log = result.stderr.decode('utf-8', 'replace')
  if result.returncode:
    tail = ' | '.join(log.strip().splitlines()[-3:])
    raise BadVideoError(f'{path}: ffmpeg cannot decode it (exit '
                        f'{result.returncode}): {tail}')
  infos = re.findall(r'\] n:\s*\d+\s+pts:\s*(-?\d+|NOPTS)\s.*?'
                     r'(?:duration:\s*(\d+)\s.*?)?\bs:(\d+)x(\d+)\s', log)
  if not infos:
    raise BadVideoError(f'{path}: no video frame decoded.')
  height, width = int(infos[0][3]), int(infos[0][2])
  frame_bytes = height * width * 3
  if len(result.stdout) != len(infos) * frame_bytes:
    raise BadVideoError(
        f'{path}: ffmpeg sent {len(result.stdout)} bytes for {len(infos)} '
        f'frames of {width}x{height}.')
  pixels = np.frombuffer(result.stdout, np.uint8).reshape(
      len(infos), height, width, 3)
  frames = list(pixels)
  times = [None if pts == 'NOPTS' else int(pts) / 1e6
           for pts, _, _, _ in infos]
  rate = re.search(r'config in time_base: \S+ frame_rate: (\d+)/(\d+)', log)
  rate = int(rate[1]) / int(rate[2]) if rate and int(rate[2]) else None
  times = fill_times(times, rate, path)
  last_duration = int(infos[-1][1]) / 1e6 if infos[-1][1] else None
  return make_video(frames, times, last_duration, path)


def decode_frames(path: str, decoder: str) -> Video:
  """Decodes `path` with `decoder`, one of `DECODERS`."""
  if decoder == 'pyav':
    return decode_frames_pyav(path)
  if decoder == 'ffmpeg':
    return decode_frames_ffmpeg(path)
  raise ValueError(f'--decoder={decoder!r}: expected one of {DECODERS}.')


def resample_times(times: Sequence[float], end: float,
                   fps: float) -> List[int]:
  """The source frame of each output frame at `fps` (0: every source frame).

  Output frame k, at time k / fps, is the latest source frame whose time is
  at most k / fps (nearest previous); output frames run while k / fps < `end`,
  and at least to the last source frame.

  Args:
    times: the source frames' times in seconds, non-decreasing, from 0.
    end: when the last source frame stops being shown, in seconds.
    fps: the output frame rate; 0 keeps the source frames as they are.

  Returns:
    One index into `times` per output frame.
  """
  if fps < 0:
    raise ValueError(f'--fps={fps}: must be >= 0.')
  if not times:
    return []
  if fps == 0:
    return list(range(len(times)))
  times = np.asarray(times, np.float64)
  last = max(end, times[-1]) * fps
  count = max(int(np.ceil(last - TIME_EPSILON)),
              int(np.floor(times[-1] * fps + TIME_EPSILON)) + 1)
  targets = np.arange(count) / fps + TIME_EPSILON
  indices = np.searchsorted(times, targets, side='right') - 1
  return [int(i) for i in np.maximum(indices, 0)]


def resized_shape(height: int, width: int,
                  min_resize: int) -> Tuple[int, int]:
  """`(height, width)` with the smaller side `min_resize` (0: unchanged)."""
  if not min_resize:
    return height, width
  if height <= width:
    return min_resize, max(min_resize, width * min_resize // height)
  return max(min_resize, height * min_resize // width), min_resize


def encode_jpeg(frame: np.ndarray, min_resize: int, quality: int) -> bytes:
  """One `[H, W, 3]` uint8 frame, resized (see `resized_shape`), as JPEG."""
  shape = resized_shape(frame.shape[0], frame.shape[1], min_resize)
  image = tf.convert_to_tensor(frame)
  if shape != tuple(frame.shape[:2]):
    image = tf.image.resize(image, shape, method='bilinear', antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.io.encode_jpeg(image, quality=quality).numpy()


def video_jpegs(video: Video, fps: float, min_resize: int,
                quality: int) -> List[bytes]:
  """The JPEG frames of `video` resampled to `fps` (each encoded once)."""
  cache = {}
  jpegs = []
  for index in resample_times(video.times, video.end, fps):
    if index not in cache:
      cache[index] = encode_jpeg(video.frames[index], min_resize, quality)
    jpegs.append(cache[index])
  return jpegs


def encode_example(jpegs: Sequence[bytes], label_index: int, label: str,
                   media_id: str) -> bytes:
  """A serialized `tf.train.SequenceExample` of one video."""

  def bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  context = tf.train.Features(feature={
      'clip/label/index': tf.train.Feature(
          int64_list=tf.train.Int64List(value=[label_index])),
      'clip/label/text': bytes_feature(label.encode('utf-8')),
      'clip/media_id': bytes_feature(media_id.encode('utf-8')),
  })
  frames = tf.train.FeatureList(feature=[bytes_feature(j) for j in jpegs])
  example = tf.train.SequenceExample(
      context=context,
      feature_lists=tf.train.FeatureLists(
          feature_list={'image/encoded': frames}))
  return example.SerializeToString()


def shard_paths(output_dir: str, split: str, num_shards: int) -> List[str]:
  """`{output_dir}/{split}-{i:05d}-of-{num_shards:05d}`, i < num_shards."""
  return [os.path.join(output_dir, f'{split}-{i:05d}-of-{num_shards:05d}')
          for i in range(num_shards)]


def write_shards(examples: Iterable[bytes], paths: Sequence[str]) -> List[int]:
  """Writes the i-th example to `paths[i % len(paths)]`; returns the counts.

  Each shard is written to a temporary file renamed at the end, so a failed
  run leaves no partial shard under the final names.
  """
  temps = [f'{path}.incomplete' for path in paths]
  counts = [0] * len(paths)
  writers = [tf.io.TFRecordWriter(temp) for temp in temps]
  try:
    for i, example in enumerate(examples):
      writers[i % len(paths)].write(example)
      counts[i % len(paths)] += 1
  except BaseException:
    for writer, temp in zip(writers, temps):
      writer.close()
      tf.io.gfile.remove(temp)
    raise
  for writer, temp, path in zip(writers, temps, paths):
    writer.close()
    tf.io.gfile.rename(temp, path, overwrite=True)
  return counts


def convert(csv_path: str, output_dir: str, video_dir: str = '',
            split: str = 'train', num_shards: int = 8,
            label_map_path: Optional[str] = None, fps: float = 25.0,
            jpeg_quality: int = 95, min_resize: int = 0,
            decoder: str = 'pyav', skip_bad_videos: bool = False) -> Summary:
  """Converts the videos of `csv_path` to shards; see the module docstring."""
  if num_shards < 1:
    raise ConversionError(f'--num_shards={num_shards}: must be >= 1.')
  if fps < 0:
    raise ConversionError(f'--fps={fps}: must be >= 0.')
  if not 1 <= jpeg_quality <= 100:
    raise ConversionError(f'--jpeg_quality={jpeg_quality}: must be in '
                          '[1, 100].')
  if min_resize < 0:
    raise ConversionError(f'--min_resize={min_resize}: must be >= 0.')
  if decoder not in DECODERS:
    raise ConversionError(f'--decoder={decoder!r}: expected one of '
                          f'{DECODERS}.')
  # Fail now rather than at the first video.
  if decoder == 'pyav':
    import_av()
  else:
    ffmpeg_binary()
  rows = read_rows(csv_path)
  if label_map_path:
    label_map = tfrecord_tables.read_label_map(label_map_path)
    check_labels(rows, label_map, csv_path, label_map_path)
  else:
    label_map = build_label_map(row.label for row in rows)
  tf.io.gfile.makedirs(output_dir)
  paths = shard_paths(output_dir, split, num_shards)
  skipped, total_frames = [], 0

  def examples() -> Iterable[bytes]:
    nonlocal total_frames
    for done, row in enumerate(rows):
      if done and done % 100 == 0:
        logging.info('%d of %d videos converted.', done, len(rows))
      try:
        video = decode_frames(os.path.join(video_dir, row.path), decoder)
      except BadVideoError as e:
        if not skip_bad_videos:
          raise BadVideoError(f'--csv={csv_path} line {row.line}: {e} '
                              '(--skip_bad_videos skips such videos).') from e
        logging.warning('Skipping %s', e)
        skipped.append(str(e))
        continue
      jpegs = video_jpegs(video, fps, min_resize, jpeg_quality)
      total_frames += len(jpegs)
      yield encode_example(jpegs, label_map[row.label], row.label, row.path)

  counts = write_shards(examples(), paths)
  written = not label_map_path
  if written:
    label_map_path = os.path.join(output_dir, tfrecord_tables.LABEL_MAP_FILE)
    tfrecord_tables.write_label_map(label_map, label_map_path)
  return Summary(paths, counts, len(label_map), total_frames, label_map_path,
                 written, skipped)


def format_summary(summary: Summary) -> str:
  """The end-of-run report: videos per shard, classes, frames, skipped."""
  lines = [f'Wrote {sum(summary.shard_counts)} videos '
           f'({summary.total_frames} frames, {summary.num_classes} classes) '
           f'to {len(summary.shard_paths)} shards:']
  lines += [f'  {path}: {count} videos'
            for path, count in zip(summary.shard_paths, summary.shard_counts)]
  how = 'written' if summary.label_map_written else 'reused'
  lines.append(f'Label map ({how}): {summary.label_map_path}')
  if summary.skipped:
    lines.append(f'Skipped {len(summary.skipped)} bad videos:')
    lines += [f'  {reason}' for reason in summary.skipped]
  if 0 in summary.shard_counts:
    lines.append('Warning: some shards are empty; use fewer --num_shards.')
  return '\n'.join(lines)


def run(flag_values: flags.FlagValues) -> None:
  """Converts as the parsed `flag_values` say, prints the summary.

  Exits with a one-line message on an input error.
  """
  f = flag_values
  try:
    summary = convert(f.csv, f.output_dir, f.video_dir, f.split, f.num_shards,
                      f.label_map, f.fps, f.jpeg_quality, f.min_resize,
                      f.decoder, f.skip_bad_videos)
  except (ConversionError, tfrecord_tables.LabelMapError, FileNotFoundError,
          ImportError) as e:
    sys.exit(f'make_video_tfrecords: error: {e}')
  print(format_summary(summary))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  run(flags.FLAGS)


if __name__ == '__main__':
  define_flags()
  app.run(main)
