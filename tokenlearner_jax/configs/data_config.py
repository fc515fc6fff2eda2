"""`config.dataset_configs`, the data source's settings, as a typed section.

Each key the input pipelines read is one `fields.field` of `DataConfig` (its
videos' train augmentations: `AugmentationConfig`, under
`dataset_configs.augmentation_params`) with its default and check, and its
line in the `Attributes:` docstring; `configs.schema` takes the section's
keys from them. The readers (`data.input_pipeline`, `data.image_tfrecords`,
`data.video_tfrecords`, `data.image_preprocessing`, `data.batching`,
`evaluate`, `export`, `summary`) take `DataConfig.from_config(config)` and
read nothing else. The reference's keys that no reader acts on (its
multi-crop test's, the augmentations not implemented) stay rows of the
schema alone.
"""

import dataclasses
from typing import Dict, Optional

import ml_collections

from tokenlearner_jax.configs import fields

SECTION = 'dataset_configs'
AUGMENTATION = 'augmentation_params'
_VIDEO = 'data.video_tfrecords'
_TABLES = 'data.tfrecord_tables'
_IMAGE = 'data.image_preprocessing'


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
  """Train augmentations of videos (`data.video_tfrecords`).

  Attributes:
    do_jitter_scale: Random scale jitter.
    scale_min_factor: Smallest scale factor.
    scale_max_factor: Largest scale factor.
    prob_scale_jitter: Probability of the scale jitter.
    do_color_augment: Colour augmentation.
    prob_color_augment: Probability of the colour augmentation.
    prob_color_drop: Probability of dropping the colour (grey clip).
  """
  do_jitter_scale: bool = fields.field('do_jitter_scale', False,
                                       check='bool', reference=True)
  scale_min_factor: float = fields.field('scale_min_factor', 0.9,
                                         check='number', reference=True)
  scale_max_factor: float = fields.field('scale_max_factor', 1.33,
                                         check='number', reference=True)
  prob_scale_jitter: float = fields.field('prob_scale_jitter', 1.0,
                                          reference=True)
  do_color_augment: bool = fields.field('do_color_augment', False,
                                        check='bool', reference=True)
  prob_color_augment: float = fields.field('prob_color_augment', 0.8,
                                           reference=True)
  prob_color_drop: float = fields.field('prob_color_drop', 0.0,
                                        reference=True)

  def __post_init__(self):
    fields.check_fields(self, f'{SECTION}.{AUGMENTATION}')
    for name in ('prob_scale_jitter', 'prob_color_augment', 'prob_color_drop'):
      value = getattr(self, name)
      fields.require(
          fields.is_number(value) and 0.0 <= value <= 1.0,
          f'config.{SECTION}.{AUGMENTATION}.{name} must be in [0, 1], got '
          f'{value!r}.')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data source's settings; each reader takes the keys of its source.

  Attributes:
    num_classes: Classes of the dataset.
    data_dir: tfds data directory.
    builder_config: tfds builder config name.
    cache: Cache the decoded tfds splits in memory.
    crop_padding: Random translations of tfds videos by up to this many
      pixels in training.
    global_order: Every process reads the whole tfds train split in one
      order.
    label_key: The tfds label feature (unset: the supervised one).
    eval_dataset_name: Evaluate on another tfds dataset.
    eval_label_key: The label feature of `eval_dataset_name`.
    eval_split: The split evaluated during training (unset: a tfds dataset's
      'test' where it has one, else 'validation').
    test_split: The split `tokenlearner_jax.evaluate` tests.
    shuffle_buffer_size: Examples in the train shuffle buffer (unset: 10,000
      images, 1,024 videos).
    autotune: tf.data's autotuning of parallelism and buffers.
    image_size: Side of the images (unset: as stored).
    inception_crop: Inception crop in training; else a plain resize.
    eval_crop_fraction: Central crop fraction in evaluation; 1.0 is a plain
      resize.
    random_flip: Horizontal flips of images in training.
    base_dir: Directory of the TFRecord tables.
    tables: Split -> 'name@N' or a glob.
    examples_per_subset: Split -> examples (for epochs and eval sizes).
    label_offset: Subtracted from the stored labels (1 for 1-based ids).
    num_frames: Frames per clip.
    stride: Frames between a clip's frames.
    min_resize: Smaller side resized to this before cropping.
    crop_size: Side of the square crop.
    zero_centering: Values in [-1, 1] (else [0, 1]).
    num_test_clips: Clips per video in the test.
    do_three_spatial_crops: Three spatial crops per test clip.
    test_batch_size: Videos per test batch (unset: eval_batch_size).
    test_crop_size: Side of the test's spatial crops (unset: crop_size).
    skip_corrupt_examples: Skip (and count) corrupt records instead of
      stopping.
    clip_labels: A train clip's labels: 'video' (clip/label/index) or
      'segments' (the classes of the action segments it overlaps).
    test_pooling: The test's views of a video combined: 'mean' of the logits
      or each class's 'max'.
    augmentation_params: Train augmentations of videos
      (`AugmentationConfig`).
  """
  num_classes: Optional[int] = fields.field(
      'num_classes', None, check='optional_positive', reference=True)
  data_dir: Optional[str] = fields.field('data_dir', None)
  builder_config: Optional[str] = fields.field('builder_config', None)
  cache: bool = fields.field('cache', True, check='bool')
  crop_padding: int = fields.field('crop_padding', 0)
  global_order: bool = fields.field('global_order', False, check='bool')
  label_key: Optional[str] = fields.field('label_key', None)
  eval_dataset_name: Optional[str] = fields.field('eval_dataset_name', None)
  eval_label_key: Optional[str] = fields.field('eval_label_key', None)
  eval_split: Optional[str] = fields.field('eval_split', None)
  test_split: str = fields.field('test_split', 'test', reader='evaluate')
  shuffle_buffer_size: Optional[int] = fields.field(
      'shuffle_buffer_size', None, check='optional_positive')
  autotune: bool = fields.field('autotune', True, check='bool',
                                reader='data.batching')
  image_size: Optional[int] = fields.field(
      'image_size', None, check='optional_positive', reader=_IMAGE)
  inception_crop: bool = fields.field('inception_crop', True, check='bool',
                                      reader=_IMAGE)
  eval_crop_fraction: float = fields.field(
      'eval_crop_fraction', 0.875, check='number', reader=_IMAGE)
  random_flip: bool = fields.field('random_flip', True, check='bool',
                                   reader=_IMAGE)
  base_dir: Optional[str] = fields.field('base_dir', None, reader=_TABLES,
                                         reference=True)
  tables: Optional[Dict[str, str]] = fields.field(
      'tables', None, reader=_TABLES, reference=True)
  examples_per_subset: Optional[Dict[str, int]] = fields.field(
      'examples_per_subset', None, reader=_VIDEO, reference=True)
  label_offset: int = fields.field('label_offset', 0, reader=_VIDEO)
  num_frames: Optional[int] = fields.field(
      'num_frames', None, check='optional_positive', reader=_VIDEO,
      reference=True)
  stride: int = fields.field('stride', 1, check='positive', reader=_VIDEO,
                             reference=True)
  min_resize: Optional[int] = fields.field(
      'min_resize', None, check='optional_positive', reader=_VIDEO,
      reference=True)
  crop_size: Optional[int] = fields.field(
      'crop_size', None, check='optional_positive', reader=_VIDEO,
      reference=True)
  zero_centering: bool = fields.field('zero_centering', True, check='bool',
                                      reader=_VIDEO, reference=True)
  num_test_clips: int = fields.field('num_test_clips', 1, check='positive',
                                     reader=_VIDEO, reference=True)
  do_three_spatial_crops: bool = fields.field(
      'do_three_spatial_crops', False, check='bool', reader=_VIDEO,
      reference=True)
  test_batch_size: Optional[int] = fields.field(
      'test_batch_size', None, check='optional_positive', reader=_VIDEO,
      reference=True)
  test_crop_size: Optional[int] = fields.field(
      'test_crop_size', None, check='optional_positive', reader=_VIDEO)
  skip_corrupt_examples: bool = fields.field(
      'skip_corrupt_examples', False, check='bool', reader=_VIDEO)
  clip_labels: str = fields.field('clip_labels', 'video',
                                  choices=('video', 'segments'),
                                  reader=_VIDEO)
  test_pooling: str = fields.field('test_pooling', 'mean',
                                   choices=('mean', 'max'), reader='evaluate')
  augmentation_params: AugmentationConfig = fields.field(
      AUGMENTATION, AugmentationConfig(), reader=_VIDEO, reference=True)

  def __post_init__(self):
    fields.check_fields(self, SECTION)
    for name in ('tables', 'examples_per_subset'):
      value = getattr(self, name)
      fields.require(value is None or isinstance(value, dict),
                     f'config.{SECTION}.{name} must map split names to '
                     f'values, got {value!r}.')
    fields.require(fields.is_int(self.crop_padding) and self.crop_padding >= 0,
                   f'config.{SECTION}.crop_padding must be an integer >= 0, '
                   f'got {self.crop_padding!r}.')

  @property
  def is_video(self) -> bool:
    """Clips (`num_frames` set), not images."""
    return self.num_frames is not None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'DataConfig':
    """`config.dataset_configs` (which may be unset), checked, with its
    defaults."""
    values = fields.read(cls, config, SECTION)
    for name in ('tables', 'examples_per_subset'):
      if isinstance(values.get(name), ml_collections.ConfigDict):
        values[name] = values[name].to_dict()
    augmentation = values.pop('augmentation_params', None) or {}
    if isinstance(augmentation, ml_collections.ConfigDict):
      augmentation = augmentation.to_dict()
    known = {f.metadata['key']: f.name
             for f in dataclasses.fields(AugmentationConfig)}
    return cls(**values, augmentation_params=AugmentationConfig(**{
        known[k]: v for k, v in augmentation.items()
        if k in known and v is not None}))

