"""Video classification from Kinetics-style SequenceExample TFRecords.

The reference's format (scenic ViViT's `video_tfrecord_dataset`, DMVR
MediaSequence): one `tf.train.SequenceExample` per video with a JPEG per frame
in the feature list 'image/encoded' and the label ids in the context
'clip/label/index' (what `scripts/make_video_tfrecords.py` writes). It reads
the reference's `dataset_configs` keys, so a Scenic user's config carries over:

  base_dir, tables ({split: 'name@N' for name-0000i-of-0000N, or a glob}),
  examples_per_subset, num_classes, num_frames, stride, min_resize, crop_size,
  zero_centering, augmentation_params (do_jitter_scale, scale_min_factor,
  scale_max_factor, prob_scale_jitter, do_color_augment, prob_color_augment,
  prob_color_drop), num_test_clips, do_three_spatial_crops, test_batch_size,
  label_offset, and ours: eval_split, test_split, shuffle_buffer_size,
  skip_corrupt_examples, clip_labels, test_pooling, test_crop_size.

Labels: the ids in 'clip/label/index' as a multi-hot vector (one-hot for one
id; a video with none is all zeros for a multi-label head, an error for a
softmax one). With `clip_labels='segments'` a train clip takes instead the
classes of the action segments it overlaps: the context's
'segment/label/index', 'segment/start' and 'segment/end' (seconds) and
'video/fps' (the stored frames' rate), as scripts/make_charades_tfrecords.py
writes them; a segment overlaps the clip if it starts at or before the time
of the clip's last frame and ends at or after that of its first (a clip that
wraps around covers the whole video). Eval and test always take the video's
labels, which the Charades evaluation scores.

Train: a random clip of `num_frames` frames `stride` apart, the smaller side
resized to `min_resize`, scale jitter, a random `crop_size` crop, a flip and
colour augmentation, each drawn from the example's stateless seed. Eval (during
training): the middle clip, centre crop. Test: `num_test_clips` evenly spaced
clips x 3 spatial crops (or the centre one) per video, as one example with a
views axis, so each video is counted exactly once; the test's crops are
`test_crop_size` (default `crop_size`) wide, as X3D tests at 256 what it
trains at 224. Clips longer than the video
wrap around to its start, as DMVR's samplers do.

A corrupt record or JPEG stops the run with an error naming the file; with
`skip_corrupt_examples=True` the example is skipped and counted instead. A
split with no readable example at all (every record skipped, or a train split
without records) stops with one line naming its files: 'no readable example
in FILE'.
"""

import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from tokenlearner_jax import errors
from tokenlearner_jax import metrics
from tokenlearner_jax.configs.data_config import AugmentationConfig
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import batching
from tokenlearner_jax.data import tfrecord_tables

FRAMES_KEY = 'image/encoded'
LABEL_KEY = 'clip/label/index'
SEGMENT_KEYS = {'segment_label': ('segment/label/index', tf.int64),
                'segment_start': ('segment/start', tf.float32),
                'segment_end': ('segment/end', tf.float32),
                'fps': ('video/fps', tf.float32)}


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          LABEL_KEY: tf.io.VarLenFeature(tf.int64),
          **{key: tf.io.VarLenFeature(dtype)
             for key, dtype in SEGMENT_KEYS.values()}},
      sequence_features={FRAMES_KEY: tf.io.FixedLenSequenceFeature(
          [], tf.string)})
  return {'frames': sequence[FRAMES_KEY],
          'label': tf.sparse.to_dense(context[LABEL_KEY]),
          **{name: tf.sparse.to_dense(context[key])
             for name, (key, _) in SEGMENT_KEYS.items()}}


def segment_labels(example: Dict[str, tf.Tensor], start: tf.Tensor,
                   span: int, length: tf.Tensor) -> tf.Tensor:
  """The classes of the segments overlapping frames `[start, start + span)`
  (frame k at k / fps seconds); all of them if the clip wraps around."""
  check = tf.debugging.assert_equal(
      tf.size(example['fps']), 1, message=(
          "dataset_configs.clip_labels='segments' needs 'video/fps' and "
          "'segment/*' in each record (scripts/make_charades_tfrecords.py "
          'writes them)'))
  with tf.control_dependencies([check]):
    fps = example['fps'][0]
  first = tf.cast(start, tf.float32) / fps
  last = tf.cast(start + span - 1, tf.float32) / fps
  wraps = start + span > length
  overlap = tf.logical_or(wraps, tf.logical_and(
      example['segment_start'] <= last, example['segment_end'] >= first))
  return tf.boolean_mask(example['segment_label'], overlap)


def clip_indices(length: tf.Tensor, starts: tf.Tensor, num_frames: int,
                 stride: int) -> tf.Tensor:
  """`[clips, num_frames]` frame indices, wrapping past the video's end."""
  steps = tf.range(num_frames) * stride  # [num_frames]
  return tf.math.floormod(starts[:, None] + steps[None], length)


def test_starts(length: tf.Tensor, num_clips: int, span: int) -> tf.Tensor:
  """Start frames of `num_clips` clips evenly spaced over the video."""
  last = tf.cast(tf.maximum(length - span, 0), tf.float32)
  return tf.cast(tf.round(tf.linspace(0.0, last, num_clips)), tf.int32)


def decode_frames(frames: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """Decodes `frames[indices]`: `[clips, T]` indices -> `[clips, T, H, W,
  3]`."""
  flat = tf.gather(frames, tf.reshape(indices, [-1]))  # [clips * T]
  video = tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3), flat,
                    fn_output_signature=tf.uint8)  # [clips * T, H, W, 3]
  shape = tf.concat([tf.shape(indices), tf.shape(video)[1:]], 0)
  return tf.reshape(video, shape)  # [clips, T, H, W, 3]


def resize_smallest(video: tf.Tensor, min_resize: int) -> tf.Tensor:
  """Bilinear resize of `[..., H, W, 3]` so that min(H, W) == `min_resize`."""
  size = tf.cast(tf.shape(video)[-3:-1], tf.float32)
  scale = min_resize / tf.reduce_min(size)
  new_size = tf.cast(tf.round(size * scale), tf.int32)
  return _resize(video, new_size)


def _resize(video: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  shape = tf.shape(video)
  frames = tf.reshape(video, tf.concat([[-1], shape[-3:]], 0))  # [N, H, W, 3]
  frames = tf.image.resize(frames, size)
  return tf.reshape(frames, tf.concat([shape[:-3], tf.shape(frames)[1:]], 0))


def scale_jitter(video: tf.Tensor, aug: AugmentationConfig,
                 crop_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Resizes `[T, H, W, 3]` by a random factor (scenic's scale jitter)."""
  apply_seed, factor_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  factor = tf.random.stateless_uniform(
      (), factor_seed, aug.scale_min_factor, aug.scale_max_factor)
  size = tf.cast(tf.shape(video)[1:3], tf.float32)
  new_size = tf.maximum(tf.cast(tf.round(size * factor), tf.int32), crop_size)
  apply = (tf.random.stateless_uniform((), apply_seed)
           < aug.prob_scale_jitter)
  return tf.cond(apply, lambda: _resize(video, new_size), lambda: video)


def color_augment(video: tf.Tensor, aug: AugmentationConfig,
                  seed: tf.Tensor) -> tf.Tensor:
  """DMVR's default colour jitter and colour drop on `[T, H, W, 3]` in [0, 1].

  One draw per video, so all frames change alike.
  """
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))

  def jitter(v):
    v = tf.image.stateless_random_brightness(v, 32.0 / 255.0, seeds[0])
    v = tf.image.stateless_random_saturation(v, 0.6, 1.4, seeds[1])
    v = tf.image.stateless_random_contrast(v, 0.6, 1.4, seeds[2])
    v = tf.image.stateless_random_hue(v, 0.2, seeds[3])
    return tf.clip_by_value(v, 0.0, 1.0)

  apply = (tf.random.stateless_uniform((), seeds[4])
           < aug.prob_color_augment)
  video = tf.cond(apply, lambda: jitter(video), lambda: video)
  drop = (tf.random.stateless_uniform((), seeds[5])
          < aug.prob_color_drop)
  return tf.cond(drop, lambda: tf.image.grayscale_to_rgb(
      tf.image.rgb_to_grayscale(video)), lambda: video)


def three_spatial_crops(video: tf.Tensor, crop_size: int) -> tf.Tensor:
  """`[T, H, W, 3]` -> `[3, T, crop, crop, 3]`: start, centre, end crops.

  Along the longer side; the shorter side is centred.
  """
  h, w = tf.shape(video)[1], tf.shape(video)[2]
  long_offsets = lambda n: tf.stack([0, (n - crop_size) // 2, n - crop_size])
  ys = tf.where(h > w, long_offsets(h), tf.fill([3], (h - crop_size) // 2))
  xs = tf.where(h > w, tf.fill([3], (w - crop_size) // 2), long_offsets(w))
  return tf.stack([video[:, ys[i]:ys[i] + crop_size, xs[i]:xs[i] + crop_size]
                   for i in range(3)])


def centre_crop(video: tf.Tensor, crop_size: int) -> tf.Tensor:
  """`[..., H, W, 3]` -> `[..., crop, crop, 3]`."""
  offset = (tf.shape(video)[-3:-1] - crop_size) // 2
  return video[..., offset[0]:offset[0] + crop_size,
               offset[1]:offset[1] + crop_size, :]


def labels(example: Dict[str, tf.Tensor], dc: DataConfig,
           allow_empty: bool = False,
           index: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Multi-hot `[num_classes]` (one-hot for one label), checked for range.

  Of `index` (default: the video's labels, `example['label']`); no label is
  an error unless `allow_empty` (a multi-label head).
  """
  index = (example['label'] if index is None else index) - dc.label_offset
  checks = [] if allow_empty else [
      tf.debugging.assert_greater(
          tf.size(index), 0, message='a video has no clip/label/index'),
      tf.debugging.assert_less_equal(
          tf.size(index), 1, message='a video has several labels under a '
          'softmax head: use a multi-label model_name (e.g. '
          'vivit_multilabel_classification) or one label per video')]
  checks += [
      tf.debugging.assert_less(
          index, tf.constant(dc.num_classes, tf.int64),
          message=f'label index >= dataset_configs.num_classes='
          f'{dc.num_classes} (after label_offset)'),
      tf.debugging.assert_non_negative(
          index, message='label index < 0 after dataset_configs.label_offset'),
  ]
  with tf.control_dependencies(checks):
    return tf.minimum(tf.reduce_sum(tf.one_hot(index, dc.num_classes,
                                               dtype=tf.float32), 0), 1.0)


def _scale(video: tf.Tensor, zero_centering: bool) -> tf.Tensor:
  """uint8 or float [0, 255] -> [-1, 1] (zero_centering) or [0, 1]."""
  video = tf.cast(video, tf.float32) / 255.0
  return video * 2.0 - 1.0 if zero_centering else video


def train_example(example, dc: DataConfig, seed: tf.Tensor,
                  allow_empty: bool = False):
  """One random augmented clip `[T, crop, crop, 3]` and its label (the
  video's, or with `clip_labels='segments'` the overlapping segments')."""
  clip_seed, jitter_seed, crop_seed, flip_seed, color_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 5))
  frames = example['frames']
  length = tf.shape(frames)[0]
  span = (dc.num_frames - 1) * dc.stride + 1
  start = tf.random.stateless_uniform(
      (1,), clip_seed, 0, tf.maximum(length - span, 0) + 1, tf.int32)
  indices = clip_indices(length, start, dc.num_frames, dc.stride)
  video = resize_smallest(decode_frames(frames, indices)[0], dc.min_resize)
  aug = dc.augmentation_params
  if aug.do_jitter_scale:
    video = scale_jitter(video, aug, dc.crop_size, jitter_seed)
  crop = (dc.num_frames, dc.crop_size, dc.crop_size, 3)
  video = tf.image.stateless_random_crop(video, crop, crop_seed)
  video = tf.cond(tf.random.stateless_uniform((), flip_seed) < 0.5,
                  lambda: tf.reverse(video, [2]), lambda: video)
  video = _scale(video, zero_centering=False)
  if aug.do_color_augment:
    video = color_augment(video, aug, color_seed)
  if dc.zero_centering:
    video = video * 2.0 - 1.0
  index = (segment_labels(example, start[0], span, length)
           if dc.clip_labels == 'segments' else None)
  return {'inputs': tf.ensure_shape(video, crop),
          'label': labels(example, dc, allow_empty, index)}


def eval_example(example, dc: DataConfig, num_clips: int,
                 three_crops: bool, allow_empty: bool = False,
                 crop_size: Optional[int] = None):
  """`[clips * crops, T, crop, crop, 3]` views of one video, and its label
  (`crop_size`: default `dc.crop_size`)."""
  crop_size = crop_size or dc.crop_size
  frames = example['frames']
  length = tf.shape(frames)[0]
  span = (dc.num_frames - 1) * dc.stride + 1
  if num_clips == 1:  # The middle clip.
    starts = tf.maximum(length - span, 0)[None] // 2
  else:
    starts = test_starts(length, num_clips, span)
  indices = clip_indices(length, starts, dc.num_frames, dc.stride)
  video = resize_smallest(decode_frames(frames, indices), dc.min_resize)
  if three_crops:
    views = tf.concat([three_spatial_crops(clip, crop_size)
                       for clip in tf.unstack(video, num_clips)], 0)
  else:
    views = centre_crop(video, crop_size)
  shape = (num_clips * (3 if three_crops else 1), dc.num_frames, crop_size,
           crop_size, 3)
  return {'inputs': tf.ensure_shape(_scale(views, dc.zero_centering),
                                     shape),
          'label': labels(example, dc, allow_empty)}


def _check_video_sizes(dc: DataConfig) -> None:
  """The clip sizes a video reader needs are set."""
  unset = [k for k in ('num_frames', 'min_resize', 'crop_size')
           if getattr(dc, k) is None]
  if unset:
    raise errors.ConfigError(
        f'dataset_configs.{unset[0]} must be set for video_tfrecord_dataset '
        '(configs/vivit_k400.py sets num_frames, min_resize and crop_size).')


def _records(files: List[str], shuffle_seed=None) -> tf.data.Dataset:
  if shuffle_seed is not None:
    files = tf.data.Dataset.from_tensor_slices(files).shuffle(
        len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=4,
                            num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
  return tf.data.TFRecordDataset(files)


def locate_corrupt_file(files: List[str], dc: DataConfig,
                        allow_empty: bool = False) -> Tuple[str, int, str]:
  """The first file, record index and error of a record that fails to read."""
  for path in files:
    index = 0
    try:
      for record in tf.data.TFRecordDataset(path):
        example = parse_example(record)
        if not int(tf.size(example['frames'])):
          return path, index, 'the video has no frames'
        sizes = [tuple(tf.io.decode_jpeg(frame, channels=3).shape[:2])
                 for frame in example['frames']]
        odd = [i for i, size in enumerate(sizes) if size != sizes[0]]
        if odd:
          return path, index, (
              f'frame {odd[0]} is {sizes[odd[0]][0]}x{sizes[odd[0]][1]}, '
              f'frame 0 {sizes[0][0]}x{sizes[0][1]}: the frames of a video '
              'must share one size')
        labels(example, dc, allow_empty)
        index += 1
    except (tf.errors.OpError, ValueError) as e:
      message = getattr(e, 'message', str(e)).strip().splitlines()
      return path, index, message[0] if message else type(e).__name__
  return '', -1, ''


def _named_errors(batches: Iterator[batching.Batch], files: List[str],
                  dc: DataConfig,
                  allow_empty: bool = False) -> Iterator[batching.Batch]:
  """Re-raises a data error with the file and record that cause it."""
  try:
    yield from batches
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    cause = _first_line(e.message)
    logging.error('Input error (%s); locating the record...', cause)
    path, index, error = locate_corrupt_file(files, dc, allow_empty)
    where = (f'{path}, record {index}: {_first_line(str(error))}' if path else
             f'{_file_names(files)} (the record could not be located again; '
             f'the input pipeline said: {cause})')
    raise CorruptExampleError(
        f'Corrupt or invalid video example in {where}. Set '
        'dataset_configs.skip_corrupt_examples=True to skip such examples.'
    ) from None


def _first_line(message: str) -> str:
  """The first non-empty line of a TensorFlow error message, without its
  function and op names ('{{function_node ...}}', '[Op:...]', '[[...]]')."""
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  line = (lines[0] if lines else message).split(' [[')[0]
  line = re.sub(r'\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]', '', line)
  return line.strip().rstrip('.')


class CorruptExampleError(errors.KnownFault, ValueError):
  """A record that does not read or does not fit the config (named)."""


def _file_names(files: Sequence[str], shown: int = 3) -> str:
  """'a, b, c' or 'a, b, c and 5 more files'."""
  names = ', '.join(files[:shown])
  more = len(files) - shown
  return f'{names} and {more} more files' if more > 0 else names


class NoReadableExampleError(errors.KnownFault, ValueError):
  """A split's files hold no example that reads."""

  def __init__(self, files: Sequence[str], skip: bool):
    why = (' (dataset_configs.skip_corrupt_examples=True skipped every '
           'record)' if skip else '')
    super().__init__(f'no readable example in {_file_names(files)}{why}.')


def _nonempty(batches: Iterator[batching.Batch], files: List[str],
              skip: bool, endless: bool) -> Iterator[batching.Batch]:
  """`batches`, raising `NoReadableExampleError` where there is no example:
  an `endless` (train) stream that ends, or eval batches whose only batch is
  all padding under `skip` (the padding `batching.padded` gives an empty
  split)."""
  seen = False
  for batch in batches:
    mask = batch.get('batch_mask')
    if not seen and skip and mask is not None and not mask.any():
      raise NoReadableExampleError(files, skip)
    seen = True
    yield batch
  if endless or (skip and not seen):
    raise NoReadableExampleError(files, skip)


INDEX = 'record_index'  # Each example's place in its stream, when skipping.


def _counted(batches: Iterator[batching.Batch], files: List[str],
             skipped: batching.SkippedExamples, endless: bool
             ) -> Iterator[batching.Batch]:
  """`batches` without their `INDEX`, counting the examples skipped (the
  gaps in the indices; for a finite pass also the records after the last
  example, counted when it ends) into `skipped`, with a warning line."""
  seen = -1  # The last index seen.
  in_pass = 0  # Skipped in this (finite) pass.
  for batch in batches:
    index = batch.pop(INDEX)
    mask = batch.get('batch_mask')
    index = index[mask > 0] if mask is not None else index
    if index.size:
      gaps = int(index[-1] - seen) - index.size
      seen = int(index[-1])
      if endless and gaps:
        skipped.train += gaps
        logging.warning('Skipped %d corrupt train examples so far '
                        '(dataset_configs.skip_corrupt_examples=True; each '
                        'named in the TensorFlow log) in %s.',
                        skipped.train, _file_names(files))
      in_pass += gaps
    yield batch
  if not endless:  # The records after the last example were skipped.
    tail = tf.data.TFRecordDataset(files).skip(seen + 1).ignore_errors()
    in_pass += int(tail.reduce(np.int64(0), lambda n, _: n + 1))
    skipped.last_pass = in_pass
    if in_pass:
      logging.warning('Skipped %d corrupt examples of %s in this pass '
                      '(dataset_configs.skip_corrupt_examples=True).', in_pass,
                      _file_names(files))


def get_data(config: ml_collections.ConfigDict, start_step: int = 0, *,
             train: bool = True) -> batching.Data:
  """`batching.Data` for `config.dataset_name='video_tfrecord_dataset'`.

  The train stream starts after `start_step` batches (for resuming). With
  `train=False` there is none (`train_iter` is None) and `tables` needs no
  'train' entry.
  """
  dc = DataConfig.from_config(config)
  _check_video_sizes(dc)
  skip = dc.skip_corrupt_examples
  skipped = batching.SkippedExamples() if skip else None
  # A multi-label (sigmoid) head takes videos without a label (all zeros).
  allow_empty = metrics.MODEL_NAMES.get(config.get('model_name'), False)

  def indexed(example, index):
    """`example` with its index in the stream, where skips are counted."""
    return {**example, INDEX: index} if skip else example

  def guarded(ds: tf.data.Dataset, split_files: List[str], batch_size: int,
              pad: bool) -> Iterator[batching.Batch]:
    if skip:
      ds = ds.ignore_errors(log_warning=True)
    ds = batching.with_options(ds, dc)
    batches = (batching.padded(ds, batch_size) if pad else
               batching.to_numpy(ds.batch(batch_size, drop_remainder=True)
                                 .prefetch(2)))
    if skip:
      batches = _counted(batches, split_files, skipped, endless=not pad)
    return _nonempty(_named_errors(batches, split_files, dc, allow_empty),
                     split_files, skip, endless=not pad)

  train_iter = None
  if train:
    train_files = tfrecord_tables.split_files(dc, 'train')
    train_ds = _records(train_files, config.rng_seed).map(parse_example)
    train_ds = batching.skip_to_step(
        train_ds.repeat().shuffle(dc.shuffle_buffer_size or 1024,
                                  seed=config.rng_seed).enumerate(),
        config.batch_size, start_step)
    train_ds = train_ds.map(
        lambda i, e: indexed(train_example(e, dc, batching.example_seed(
            config.rng_seed, i), allow_empty), i),
        num_parallel_calls=tf.data.AUTOTUNE)
    train_iter = guarded(
        train_ds, train_files,
        batching.per_process(config.batch_size, 'batch_size'), pad=False)

  def eval_batches(split: str, num_clips: int, three_crops: bool,
                   batch_size: int, views_axis: bool,
                   ) -> Iterator[batching.Batch]:
    split_files = (eval_files if split == eval_split else
                   tfrecord_tables.split_files(dc, split))
    ds = tf.data.TFRecordDataset(split_files).enumerate().map(
        lambda i, r: indexed(eval_example(
            parse_example(r), dc, num_clips, three_crops, allow_empty,
            test_crop if views_axis else None), i),
        num_parallel_calls=tf.data.AUTOTUNE)
    if not views_axis:  # One view, as the model takes it.
      ds = ds.map(lambda e: {**e, 'inputs': e['inputs'][0]})
    return guarded(ds, split_files, batch_size, pad=True)

  eval_split = dc.eval_split or 'validation'
  test_crop = dc.test_crop_size or dc.crop_size
  # Checked now, not at the first eval.
  eval_files = tfrecord_tables.split_files(dc, eval_split)
  num_clips = dc.num_test_clips
  three_crops = dc.do_three_spatial_crops
  eval_bs = batching.padded_eval_batch_size(config.eval_batch_size,
                                            'eval_batch_size')
  test_bs = batching.padded_eval_batch_size(
      dc.test_batch_size or config.eval_batch_size,
      'dataset_configs.test_batch_size')
  sizes = dc.examples_per_subset or {}
  return batching.Data(
      train_iter=train_iter,
      eval_batches=lambda: eval_batches(eval_split, 1, False, eval_bs, False),
      num_classes=dc.num_classes,
      input_shape=(dc.num_frames, dc.crop_size, dc.crop_size, 3),
      test_input_shape=(dc.num_frames, test_crop, test_crop, 3),
      num_train_examples=sizes.get('train', 0),
      num_eval_examples=sizes.get(eval_split, 0),
      test_batches=lambda split: eval_batches(split, num_clips, three_crops,
                                              test_bs, True),
      num_test_views=num_clips * (3 if three_crops else 1),
      skipped=skipped)
