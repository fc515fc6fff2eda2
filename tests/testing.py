"""Helpers shared by the tests: repository configs and scripts, the demo data
directory, run outputs, generated TFRecords, fresh train states and
checkpoints, and tiny models with their parameter trees."""

import contextlib
import dataclasses
import fcntl
import functools
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import types
import zlib
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Sequence,
                    Tuple)

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from tokenlearner_jax import checkpoint
from tokenlearner_jax import sharding
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import common
from tokenlearner_jax.configs import schema
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Set by tests/conftest.py for the whole test run (every worker and process).
TEST_DIR = os.environ.get('TOKENLEARNER_TEST_DIR') or os.path.join(
    tempfile.gettempdir(), 'tokenlearner_jax_tests')
RUN_DIR = os.environ.get('TOKENLEARNER_TEST_RUN_DIR') or os.path.join(
    TEST_DIR, 'run')
# The demo datasets, each built once (`prepare_datasets`) and read by all.
DATA_DIR = os.path.join(TEST_DIR, 'tfds')
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


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
  """Holds the file lock `name` of this test run (TEST_DIR/locks/NAME): one
  process of the run at a time, xdist workers and test subprocesses alike."""
  directory = os.path.join(TEST_DIR, 'locks')
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, name), 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def once(path: str, make: Callable[[str], Any]) -> str:
  """`path`, made by `make(path)` in the first process of the test run that
  asks for it; the others wait for it, then share it."""
  done = path + '.done'
  if not os.path.exists(done):
    with exclusive(path.replace(os.sep, '_')):
      if not os.path.exists(done):
        shutil.rmtree(path, ignore_errors=True)
        make(path)
        open(done, 'w').close()
  return path


def prepare_datasets(*names: str) -> None:
  """Builds the demo tfds datasets `names` ('moving_digits/small', ...) in
  DATA_DIR, each once per test run."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tokenlearner_jax.data import datasets as _  # pylint: disable=g-import-not-at-top,unused-import
  for name in names:
    once(os.path.join(TEST_DIR, 'prepared', name.replace('/', '_')),
         lambda marker, name=name: (
             tfds.builder(name, data_dir=DATA_DIR).download_and_prepare(),
             os.makedirs(marker)))


TYPO = 'config.lr_configs.warmup_stepz is not a known config key; did you ' \
       'mean config.lr_configs.warmup_steps?'


def typo_config_file(directory: str) -> str:
  """A config file: the demo's runlocal config with a misspelt key."""
  path = os.path.join(directory, 'typo_config.py')
  demo = os.path.join(ROOT, 'configs', 'demo_moving_digits.py')
  with open(path, 'w') as f:
    f.write(textwrap.dedent(f'''\
        from tokenlearner_jax.configs import common

        def get_config():
          config = common.load_config({demo!r}, 'runlocal')
          config.lr_configs.warmup_stepz = 5
          return config
        '''))
  return path


def demo_config(name: str = 'demo_moving_digits',
                **overrides: Any) -> ml_collections.ConfigDict:
  """`config_for(name)` of a demo config, reading DATA_DIR (its datasets
  built); `overrides` set top-level fields."""
  config = config_for(name)
  config.dataset_configs.data_dir = DATA_DIR
  names = [f'{config.dataset_name}/{config.dataset_configs.builder_config}']
  if 'fewshot' in config:
    names += [dataset for dataset, *_ in config.fewshot.datasets.values()]
  prepare_datasets(*names)
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
      positional_embed_size_change='', kernel_init_method='',
      restore_output_proj=False))
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


def host_devices_env(count: int, **variables: str) -> Dict[str, str]:
  """The environment of a process with `count` host CPU devices (the test
  run's XLA flags kept), with `variables` added."""
  flags = ' '.join(filter(None, [
      os.environ.get('XLA_FLAGS'),
      f'--xla_force_host_platform_device_count={count}']))
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags, **variables)


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
                          num_classes: int, num_frames: int = 6,
                          corrupt: int = 0) -> None:
  """BASE_DIR/SPLIT-00000-of-00001: `count` videos of `num_frames` random
  40x48 frames, labelled `i % num_classes`, then `corrupt` videos whose
  frames are not JPEGs."""
  rng = np.random.default_rng(0)
  write_records(
      os.path.join(base_dir, f'{split}-00000-of-00001'),
      [video_example([jpeg(rng.integers(0, 255, (40, 48, 3), np.uint8))
                      for _ in range(num_frames)], i % num_classes)
       for i in range(count)] +
      [video_example([b'not a jpeg'] * num_frames, 0)] * corrupt)


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
  """A config's step program and newly initialised train state.

  Attributes:
    program: The step program (`train_steps.build_program`).
    state: Its step-0 train state, placed on `program.shardings`.
  """
  program: train_steps.StepProgram
  state: Any


def fresh_state(config: ml_collections.ConfigDict,
                input_shape: Tuple[int, ...], num_classes: int,
                total_steps: int = 2) -> FreshState:
  """What a run of `config` starts from (before any checkpoint)."""
  program = train_steps.build_program(config, sharding.make_mesh(config),
                                      input_shape, num_classes, total_steps)
  return FreshState(program, program.init_state())


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


def vivit_tfrecords_config() -> ml_collections.ConfigDict:
  """`configs/vivit_k400.py:runlocal` on generated Kinetics-style TFRecords
  of 5 classes (written once per test run): 8 train videos, 3 validation
  (and a corrupt one, skipped: `skip_corrupt_examples`) and 5 test of 10-12
  frames, test batches of 2."""

  def write(base_dir):
    os.makedirs(base_dir)
    write_video_tfrecords(base_dir, 'train.tfrecord', 8, 5, num_frames=10)
    write_video_tfrecords(base_dir, 'validation', 3, 5, num_frames=10,
                          corrupt=1)
    write_video_tfrecords(base_dir, 'test', 5, 5, num_frames=12)

  config = config_for('vivit_k400')
  config.dataset_configs.base_dir = once(
      os.path.join(RUN_DIR, 'vivit_tfrecords_data'), write)
  config.dataset_configs.num_classes = 5
  config.dataset_configs.test_batch_size = 2
  config.dataset_configs.skip_corrupt_examples = True
  return config


# The trained runs that several tests read: name -> its config.
SHARED_RUNS = {
    'demo_moving_digits': demo_config,
    'demo_multi_digits': lambda: demo_config('demo_multi_digits'),
    'vivit_tfrecords': vivit_tfrecords_config,
}


def shared_run(name: str) -> Tuple[ml_collections.ConfigDict, str]:
  """(config, workdir) of `SHARED_RUNS[name]` trained to its end (runlocal:
  2 steps), once per test run by the first test that asks. Read it; to
  change it, work on a `copied_run`."""
  from tokenlearner_jax import train  # pylint: disable=g-import-not-at-top
  config = SHARED_RUNS[name]()
  workdir = once(os.path.join(RUN_DIR, 'shared_runs', name),
                 lambda w: train.train_and_evaluate(SHARED_RUNS[name](), w))
  return config, workdir


def copied_run(name: str, directory: str) -> Tuple[ml_collections.ConfigDict,
                                                   str]:
  """(config, a copy of `shared_run(name)`'s workdir in DIRECTORY/workdir)."""
  config, workdir = shared_run(name)
  copy = os.path.join(directory, 'workdir')
  shutil.copytree(workdir, copy)
  return config, copy


def train_command(workdir: str, *overrides: str) -> List[str]:
  """`python -m tokenlearner_jax.train` of the demo config (runlocal) on
  DATA_DIR, in WORKDIR, with `--config.` overrides."""
  return [sys.executable, '-m', 'tokenlearner_jax.train',
          f'--config={ROOT}/configs/demo_moving_digits.py:runlocal',
          f'--workdir={workdir}',
          f'--config.dataset_configs.data_dir={DATA_DIR}', *overrides]


def wait_until(condition: Callable[[], Any], process=None,
               timeout: float = 300) -> bool:
  """Polls `condition` until it holds, `process` (a Popen) has ended, or
  `timeout` seconds (a guard against a hang, not a time limit) have passed;
  returns whether it holds."""
  deadline = time.time() + timeout
  while not condition() and time.time() < deadline:
    if process is not None and process.poll() is not None:
      break
    time.sleep(0.02)
  return bool(condition())


def committed_steps(workdir: str) -> List[int]:
  """Checkpoint steps orbax has finished writing (no temporary suffix)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def steps_being_written(workdir: str) -> List[int]:
  """Checkpoint steps whose write has started but not been committed."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return [int(name.split('.')[0]) for name in os.listdir(directory)
          if '.orbax-checkpoint-tmp' in name]


# ---------------------------------------------------------------- studies


class FakeTrainer:
  """A study's trainer or evaluator process, faked (see `fake_runs`): the
  run's config is resolved as the trainer resolves it and checked as the
  trainer checks it (schema, model, an `init_from` run that has finished);
  then the files a finished run leaves are written: its `result`
  (final_metrics.json, or evaluate's --out) with the config's real GMACs per
  example and scores drawn from the file's name. Exit code 1, with the
  reason in its log, where the trainer would stop."""

  def __init__(self, run, log: Any = None):
    self.run = run
    self.returncode = self._run(log)

  def poll(self) -> int:
    return self.returncode

  def wait(self, timeout: float = None) -> int:
    del timeout
    return self.returncode

  def _run(self, log) -> int:
    from tokenlearner_jax import flops  # pylint: disable=g-import-not-at-top
    from tokenlearner_jax import models  # pylint: disable=g-import-not-at-top
    from tokenlearner_jax import summary  # pylint: disable=g-import-not-at-top
    try:
      config = schema.complete(self.run.resolved())
      schema.check_config(config)
      source = (config.get('init_from') or {}).get('checkpoint_path')
      if source and not os.path.exists(os.path.join(source,
                                                    'final_metrics.json')):
        raise ValueError(f'init_from.checkpoint_path={source}: no finished '
                         'run there.')
      shape = summary.example_input_shape(config)
      num_classes = summary.example_num_classes(config)
      models.model_config(config, num_classes)
      gmacs = flops.gmacs(config, shape, num_classes)
    except Exception as e:  # pylint: disable=broad-except
      if hasattr(log, 'write'):
        log.write(f'Error: {e}\n')
      return 1
    path = self.run.result
    score = 0.2 + 0.6 * (zlib.crc32(path.encode()) % 1000) / 1000
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'step': config.num_training_steps, 'loss': 1 - score,
                 'accuracy': score, 'accuracy_top_5': (1 + score) / 2,
                 'mean_average_precision': score, 'prec@1': score,
                 'gmacs_per_example': gmacs}, f)
    return 0


@contextlib.contextmanager
def fake_runs() -> Iterator[List[Any]]:
  """Within: every run the study runner starts (`studies.runs.start`) is a
  `FakeTrainer`. Yields the list the `Run`s are appended to, in the order
  they started."""
  from unittest import mock  # pylint: disable=g-import-not-at-top
  from tokenlearner_jax.studies import runs  # pylint: disable=g-import-not-at-top
  started = []

  def fake_start(run, log):
    started.append(run)
    return FakeTrainer(run, log)

  with mock.patch.object(runs, 'start', fake_start):
    yield started


SWEPT_DEMO = 'configs/demo_moving_digits.py:runlocal'


def sweep_record(point: Dict[str, str], *fixed: str) -> Dict[str, Any]:
  """The record the study runner keeps of `point` of a sweep of the demo
  config (runlocal) with `--set`s `fixed` ('key=value')."""
  from tokenlearner_jax.studies import study  # pylint: disable=g-import-not-at-top
  from tokenlearner_jax.studies import sweep  # pylint: disable=g-import-not-at-top
  return sweep.point_run('/run', SWEPT_DEMO, point,
                         study.set_overrides(fixed)).record()


def fake_finished_run(workdir: str, point_record: Dict[str, Any],
                      metrics: Dict[str, Any]) -> None:
  """A finished run's files, as a sweep would have left them."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'train.log'), 'w') as f:
    f.write('finished earlier\n')
  with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
    json.dump(metrics, f)
  if point_record is not None:
    from tokenlearner_jax.studies import runs  # pylint: disable=g-import-not-at-top
    with open(os.path.join(workdir, runs.RECORD), 'w') as f:
      json.dump(point_record, f)


# ---------------------------------------------------------------- steps


class Linear(flax.linen.Module):
  """logits = x @ kernel + bias: gradients with a closed form."""

  @flax.linen.compact
  def __call__(self, x, train: bool):
    del train
    return flax.linen.Dense(3)(x)


def example_data(num_examples: int = 16):
  """Parameters and a batch whose 2-example slices have growing scales."""
  rng = np.random.default_rng(0)
  params = {'Dense_0': {
      'kernel': rng.normal(size=(4, 3)).astype(np.float32),
      'bias': rng.normal(size=3).astype(np.float32)}}
  scale = np.repeat(np.linspace(0.1, 2.0, num_examples // 2), 2)[:, None]
  x = (rng.normal(size=(num_examples, 4)) * scale).astype(np.float32)
  y = np.eye(3, dtype=np.float32)[np.arange(num_examples) % 3]
  return params, x, y


def softmax_ce_grads(kernel, bias, x, y):
  """The gradient of the mean softmax cross-entropy of `x @ kernel + bias`."""
  z = x @ kernel + bias
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dz = (p - y) / len(x)
  return x.T @ dz, dz.sum(0)


def clipped(grads, max_norm):
  norm = np.sqrt(sum(np.sum(g**2) for g in grads))
  return [g * min(1.0, max_norm / norm) for g in grads], norm


def batchnorm_steps(config, devices, batches):
  """(losses, batch_stats as nested lists) of one `TinyBatchNormNet` train
  step per batch of `batches`, on a mesh of `devices`."""
  fresh = batchnorm_state(config, devices)
  batch_sharding = fresh.program.batch_sharding
  state, losses = fresh.state, []
  for batch in batches:
    state, step_metrics = fresh.program.train_step(
        state, jax.device_put(batch, batch_sharding))
    losses.append(float(step_metrics['loss']))
  stats = state.model_state['batch_stats']['BatchNorm_0']
  return losses, {k: np.asarray(v).tolist() for k, v in stats.items()}


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
      model_name='token_learner_classification', optimizer='sgd',
      rng_seed=0, batch_size=16,
      lr_configs=dict(learning_rate_schedule='compound', factors='constant',
                      base_learning_rate=0.1),
      mesh=dict(zip(sharding.MESH_AXES, mesh)),
      logical_axis_rules=sharding.DEFAULT_RULES))
  for key, value in overrides.items():
    config[key] = value
  return schema.complete(config)


def manager_config(checkpoint_steps: int) -> ml_collections.ConfigDict:
  """A completed config whose only set key is `checkpoint_steps`: what
  `checkpoint.make_manager` reads, the rest defaults."""
  return schema.complete(ml_collections.ConfigDict(
      dict(checkpoint_steps=checkpoint_steps)))


def batchnorm_state(config: ml_collections.ConfigDict,
                    devices: Sequence[Any]) -> FreshState:
  """A fresh `TinyBatchNormNet` train state of `config` on a mesh of
  `devices` (which `config.mesh` must fit)."""
  shape = sharding.mesh_shape(config.mesh, len(devices))
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(shape),
                           sharding.MESH_AXES)
  program = train_steps.build_program(config, mesh, BATCHNORM_INPUT_SHAPE, 3,
                                      10, model=TinyBatchNormNet())
  return FreshState(program, program.init_state())


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
