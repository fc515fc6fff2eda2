"""Helpers shared by the tests: repository configs and scripts, the demo data
directory, run outputs, generated TFRecords, fresh train states and
checkpoints, and tiny models with their parameter trees."""

import dataclasses
import functools
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import types
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from tokenlearner_jax import checkpoint
from tokenlearner_jax import optim
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import common
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One directory per pytest-xdist worker: two processes preparing the same tfds
# dataset at once would race.
DATA_DIR = os.path.join(tempfile.gettempdir(), 'tokenlearner_jax_test_tfds',
                        os.environ.get('PYTEST_XDIST_WORKER', 'main'))
NUM_CLASSES = 5


def config_for(name: str, arg: str = 'runlocal') -> ml_collections.ConfigDict:
  """`get_config(arg)` of `configs/<name>.py`."""
  return common.load_config(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


def script_path(name: str) -> str:
  """The path of `scripts/<name>.py`."""
  return os.path.join(ROOT, 'scripts', f'{name}.py')


def load_script(name: str) -> types.ModuleType:
  """Imports `scripts/<name>.py` (files, not a package) as a module."""
  return common.load_module(script_path(name))


def parsed_config(command: Sequence[str]) -> ml_collections.ConfigDict:
  """The config a `python -m tokenlearner_jax.train` command line (as the
  study scripts build it) would run: its --config* flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = [command[0]] + list(command[3:])
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', flag_values=values)
  values(argv)
  return values.config


def demo_config(name: str = 'demo_moving_digits',
                **overrides: Any) -> ml_collections.ConfigDict:
  """`config_for(name)` of a demo config, reading DATA_DIR; `overrides` set
  top-level fields."""
  config = config_for(name)
  config.dataset_configs.data_dir = DATA_DIR
  for key, value in overrides.items():
    config[key] = value
  return config


def final_metrics(workdir: str) -> Dict[str, Any]:
  """WORKDIR/final_metrics.json, what a finished run writes."""
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    return json.load(f)


def read_jsonl(workdir: str) -> List[Dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl; none before it exists, and not a
  last line still being written."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith('\n')]


def mu_config(tokenizer_type: str = 'patch', *, patch: int = 4,
              tokenlearner_loc=None, **kwargs) -> ml_collections.ConfigDict:
  """Width 16, 2 blocks, 2 heads, an unset `init_from`; kwargs go to
  `configs.common.model_config`."""
  config = ml_collections.ConfigDict()
  config.model = common.model_config(
      f'mu/{patch}', tokenizer_type, num_tokens=2,
      tokenlearner_loc=tokenlearner_loc, **kwargs)
  config.model.hidden_size = 16
  config.model.mlp_dim = 32
  config.init_from = ml_collections.ConfigDict(dict(
      checkpoint_path='', checkpoint_format='tokenlearner_jax',
      positional_embed_size_change='', kernel_init_method=''))
  return config


@functools.lru_cache(maxsize=None)
def _init_cached(config_json, input_shape, seed, num_classes):
  config = ml_collections.ConfigDict(json.loads(config_json))
  model = build_model(config, num_classes)
  params = jax.jit(lambda r: model.init(r, jnp.zeros((1,) + input_shape),
                                        train=False))(
                                            jax.random.PRNGKey(seed))['params']
  return model, flax.core.unfreeze(flax.linen.meta.unbox(params))


def init(config, input_shape, seed=0, num_classes=NUM_CLASSES):
  """The model of `config` and its parameters (a fresh dict, cached)."""
  model, params = _init_cached(config.to_json(), tuple(input_shape), seed,
                               num_classes)
  return model, jax.tree_util.tree_map(lambda x: x, params)


def flat(tree) -> Dict[str, Any]:
  """'/'-joined names -> arrays."""
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


def unflat(flat_params: Dict[str, Any]) -> Dict[str, Any]:
  return flax.traverse_util.unflatten_dict(flat_params, sep='/')


def randomized(params, seed=1):
  """`params` with every array redrawn (so zero-initialised ones, like the
  head and `cls`, carry information too)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_unflatten(
      treedef, [rng.normal(size=x.shape).astype(np.float32) for x in leaves])


def assert_trees_equal(test, actual, expected) -> None:
  """The same names and bit-identical arrays."""
  actual, expected = flat(actual), flat(expected)
  test.assertEqual(sorted(actual), sorted(expected))
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)


def free_port() -> int:
  """A TCP port free on localhost now."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


# ---------------------------------------------------------------- data


def jpeg(image: np.ndarray, quality: int = 75) -> bytes:
  """`image` (uint8 `[H, W, 3]`) as JPEG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def video_example(frames: Sequence[bytes], label: int) -> bytes:
  """A Kinetics-style `tf.train.SequenceExample`: a JPEG per frame under
  'image/encoded' and the label under 'clip/label/index'."""
  example = tf.train.SequenceExample()
  example.context.feature['clip/label/index'].int64_list.value.append(label)
  feature_list = example.feature_lists.feature_list['image/encoded']
  for frame in frames:
    feature_list.feature.add().bytes_list.value.append(frame)
  return example.SerializeToString()


def image_example(seed: int, labels: Sequence[int],
                  shape: Tuple[int, int, int] = (20, 30, 3)) -> bytes:
  """A JFT-style `tf.train.Example`: a random JPEG of `shape` (from `seed`)
  under 'image/encoded' and the class ids under 'image/class/label'."""
  image = np.random.default_rng(seed).integers(0, 255, shape, np.uint8)
  feature = {
      'image/encoded': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[jpeg(image)])),
      'image/class/label': tf.train.Feature(
          int64_list=tf.train.Int64List(value=labels))}
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def write_records(path: str, records: Iterable[bytes]) -> None:
  """A TFRecord file of `records`."""
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def write_video_tfrecords(base_dir: str, split: str, count: int,
                          num_classes: int, num_frames: int = 6) -> None:
  """BASE_DIR/SPLIT-00000-of-00001: `count` videos of `num_frames` random
  40x48 frames, labelled `i % num_classes`."""
  rng = np.random.default_rng(0)
  write_records(
      os.path.join(base_dir, f'{split}-00000-of-00001'),
      [video_example([jpeg(rng.integers(0, 255, (40, 48, 3), np.uint8))
                      for _ in range(num_frames)], i % num_classes)
       for i in range(count)])


CHARADES_COLUMNS = ('id', 'subject', 'scene', 'quality', 'relevance',
                    'verified', 'script', 'objects', 'descriptions', 'actions',
                    'length')


def write_charades_folder(directory: str,
                          videos: Dict[str, Sequence[Tuple[str, str]]],
                          seconds: float = 2.0, rate: int = 24,
                          ) -> Tuple[str, Dict[str, str]]:
  """Charades as shipped, in miniature: `directory/videos/<id>.mp4` (random
  40x48 frames, `seconds` long at `rate` fps, made with PyAV) and
  `directory/Charades_v1_<split>.csv` in the official layout (quoted free-text
  columns with commas) for each split of `videos` = {split: [(id, actions)]}.

  Returns the video folder and {split: CSV path}.
  """
  import av  # pylint: disable=g-import-not-at-top
  import csv  # pylint: disable=g-import-not-at-top
  video_dir = os.path.join(directory, 'videos')
  os.makedirs(video_dir, exist_ok=True)
  codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
  rng = np.random.default_rng(0)
  csvs = {}
  for split, rows in videos.items():
    csvs[split] = os.path.join(directory, f'Charades_v1_{split}.csv')
    with open(csvs[split], 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(CHARADES_COLUMNS)
      for video_id, actions in rows:
        writer.writerow([video_id, 'S1', 'Kitchen', '6', '7', 'Yes',
                         'A person opens a door, then sits.', 'door;chair',
                         'A person walks in, sits down.', actions,
                         f'{seconds:.2f}'])
        with av.open(os.path.join(video_dir, f'{video_id}.mp4'), 'w') as out:
          stream = out.add_stream(codec, rate=rate)
          stream.width, stream.height, stream.pix_fmt = 48, 40, 'yuv420p'
          for _ in range(int(seconds * rate)):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (40, 48, 3), np.uint8), format='rgb24')
            out.mux(stream.encode(frame))
          out.mux(stream.encode())
  return video_dir, csvs


# ---------------------------------------------------------------- runs


@dataclasses.dataclass
class FreshState:
  """A config's model, optimizer and newly initialised train state.

  Attributes:
    model: The model (`build_model`).
    tx: Its optimizer.
    schedule: The learning-rate schedule.
    mesh: The config's mesh.
    state: The train state, placed on `shardings`.
    shardings: Where each leaf of `state` is.
  """
  model: Any
  tx: Any
  schedule: Any
  mesh: Any
  state: Any
  shardings: Any


def fresh_state(config: ml_collections.ConfigDict,
                input_shape: Tuple[int, ...], num_classes: int,
                total_steps: int = 2) -> FreshState:
  """What a run of `config` starts from (before any checkpoint)."""
  model = build_model(config, num_classes)
  tx, schedule = optim.make_optimizer(config, total_steps)
  mesh = sharding.make_mesh(config)
  state, shardings = train_steps.create_train_state(config, model, tx,
                                                    input_shape, mesh)
  return FreshState(model, tx, schedule, mesh, state, shardings)


def save_fresh_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                          input_shape: Tuple[int, ...],
                          num_classes: int) -> None:
  """WORKDIR/checkpoints with the step-0 checkpoint of a fresh state, as a
  run writes it (without training: for tests of what reads checkpoints)."""
  manager = checkpoint.make_manager(workdir, config)
  checkpoint.save(manager, 0,
                  fresh_state(config, input_shape, num_classes).state,
                  force=True)
  manager.close()


# ---------------------------------------------------------------- models


def model_only_config(tokenizer_type: str = 'dynamic', *, patch: int = 4,
                      num_layers: int = 3,
                      **kwargs) -> ml_collections.ConfigDict:
  """A config with only `model`: 'mu' width 32, `num_layers` blocks, no
  dropout; kwargs go to `configs.common.model_config`."""
  config = ml_collections.ConfigDict()
  config.model = common.model_config(
      f'mu/{patch}', tokenizer_type,
      **{'dropout_rate': 0.0, 'attention_dropout_rate': 0.0, **kwargs})
  config.model.num_layers = num_layers
  return config


def perturbed(params, seed=1, scale=0.1):
  """Adds noise to every leaf, so zero-initialised kernels are exercised too."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(x + scale * rng.standard_normal(x.shape), x.dtype),
      flax.linen.meta.unbox(params))


def as_numpy(tree):
  """Float64 NumPy leaves (for the NumPy reference forward passes)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                flax.linen.meta.unbox(tree))


def param_shapes(params) -> Dict[str, Tuple[int, ...]]:
  """'/'-joined parameter names -> shapes."""
  return {k: tuple(v.shape)
          for k, v in flat(flax.linen.meta.unbox(params)).items()}


class TinyBatchNormNet(flax.linen.Module):
  """conv -> BatchNorm -> ReLU -> mean pool -> dense: a model with a
  `batch_stats` collection, taking `train=` as the project's models. The
  conv and dense kernels carry logical axis names (sharded over `model` and
  `fsdp`); the BatchNorm's variables carry none (replicated).

  Attributes:
    num_classes: The logits' size.
    momentum: The BatchNorm's running-average momentum.
  """
  num_classes: int = 3
  momentum: float = 0.5

  @flax.linen.compact
  def __call__(self, x, train: bool):
    nn = flax.linen
    x = nn.Conv(4, (3, 3), kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, 'mlp')))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x)
    x = nn.relu(x).mean((1, 2))  # [B, H, W, 4] -> [B, 4]
    return nn.Dense(self.num_classes, name='output_projection',
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(),
                        ('embed', 'classes')))(x)


BATCHNORM_INPUT_SHAPE = (6, 6, 3)


def batchnorm_config(mesh: Tuple[int, int, int] = (1, 1, 1),
                     **overrides: Any) -> ml_collections.ConfigDict:
  """A train config for `TinyBatchNormNet`: SGD at rate 0.1, batch 16, on a
  (data, fsdp, model) `mesh`; `overrides` set top-level keys."""
  config = ml_collections.ConfigDict(dict(
      optimizer='sgd', rng_seed=0, batch_size=16,
      lr_configs=dict(learning_rate_schedule='compound', factors='constant',
                      base_learning_rate=0.1),
      mesh=dict(zip(sharding.MESH_AXES, mesh)),
      logical_axis_rules=sharding.DEFAULT_RULES))
  for key, value in overrides.items():
    config[key] = value
  return config


def batchnorm_state(config: ml_collections.ConfigDict,
                    devices: Sequence[Any]) -> FreshState:
  """A fresh `TinyBatchNormNet` train state of `config` on a mesh of
  `devices` (which `config.mesh` must fit)."""
  model = TinyBatchNormNet()
  tx, schedule = optim.make_optimizer(config, 10)
  shape = sharding.mesh_shape(config.mesh, len(devices))
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(shape),
                           sharding.MESH_AXES)
  state, shardings = train_steps.create_train_state(
      config, model, tx, BATCHNORM_INPUT_SHAPE, mesh)
  return FreshState(model, tx, schedule, mesh, state, shardings)


def batchnorm_batch(seed: int, batch_size: int = 16) -> Dict[str, np.ndarray]:
  """Random `inputs` (mean 1, so that the batch statistics move) and one-hot
  labels of 3 classes for `TinyBatchNormNet`."""
  rng = np.random.default_rng(seed)
  return {'inputs': rng.normal(1.0, 2.0, (batch_size,) +
                               BATCHNORM_INPUT_SHAPE).astype(np.float32),
          'label': np.eye(3, dtype=np.float32)[rng.integers(0, 3,
                                                            batch_size)]}


def tiny_x2plus1d(**fields):
  """A small `X2Plus1DConfig` (the module slot in res5's second block, at
  width 36): `fields` override."""
  from tokenlearner_jax.models import X2Plus1DConfig  # pylint: disable=g-import-not-at-top
  values = dict(num_classes=NUM_CLASSES, depths=(1, 1, 1, 2),
                widths=(8, 8, 16, 16), stem_width=8, head_width=32,
                attention_dim=16, num_heads=2, num_tokens=4)
  return X2Plus1DConfig(**{**values, **fields})


def on_eight_devices(test, code: str, stdin: str = None) -> Any:
  """Runs Python `code` in a process with 8 host CPU devices (from the
  repository root), asserts that it succeeds and returns the JSON of its
  last line of output."""
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, text=True, input=stdin,
      capture_output=True, check=False, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=8'))
  test.assertEqual(result.returncode, 0, result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])
