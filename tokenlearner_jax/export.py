r"""A trained workdir as a model that serves without this package.

  python -m tokenlearner_jax.export --config=configs/demo_moving_digits.py \
      --workdir=/tmp/demo_moving_digits --out=/tmp/demo_export \
      [--format=stablehlo|savedmodel] [--batch=N] [--step=N] [--overwrite]

The checkpoint's parameters and model state (BatchNorm statistics) are
restored as `evaluate` restores them, onto the config's model. The exported
model takes the config's input as **uint8 pixels** `[B, H, W, 3]` (images) or
`[B, T, H, W, 3]` (clips), values 0..255, already resized and cropped to the
config's input size, and returns float32 logits `[B, num_classes]`; the value
scaling the input pipeline applies (`x / 127.5 - 1`, or `x / 255` for video
TFRecords with `zero_centering=False`) is inside, BatchNorm runs in
inference mode. `--batch=0` (the default) leaves the batch size symbolic;
`--batch=N` fixes it.

`--format=stablehlo` (default) writes `OUT/model.stablehlo`, a serialised
`jax.export.Exported` with the parameters inside: `jax.export.deserialize`
and `.call(pixels)` run it with jax alone. `--format=savedmodel` writes a
TensorFlow SavedModel in `OUT/` (jax2tf; the parameters as variables;
signature `serving_default`: `inputs` -> `logits`), what TF Serving loads.
Both write `OUT/model.json`: the input shape and dtype, the classes and,
where the dataset has one, the label map. docs/training.md, "Export", has a
loading example for each.
"""

import json
import os
import shutil
from typing import (Any, Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import metrics
from tokenlearner_jax import runtime
from tokenlearner_jax import sharding
from tokenlearner_jax import summary
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.models import build_model

FORMATS = ('stablehlo', 'savedmodel')
STABLEHLO_FILE = 'model.stablehlo'
METADATA_FILE = 'model.json'


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to export.')
  flags.DEFINE_string('out', None, 'The directory to write.')
  flags.DEFINE_enum('format', 'stablehlo', FORMATS, 'What to write.')
  flags.DEFINE_integer('batch', 0, 'Batch size; 0: symbolic.', lower_bound=0)
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
  flags.DEFINE_list('platforms', None, "Platforms to serve on, e.g. "
                    "'cpu,cuda,tpu' (default: this machine's).")


def pixel_scale(config: ml_collections.ConfigDict) -> Tuple[float, float]:
  """(scale, offset): the input pipeline's `x * scale + offset` of uint8
  pixels."""
  if (config.get('dataset_name') == 'video_tfrecord_dataset' and
      not DataConfig.from_config(config).zero_centering):
    return 1 / 255, 0.0
  return 1 / 127.5, -1.0


class Restored(NamedTuple):
  """A checkpoint of a run, ready to serve.

  Attributes:
    model: The config's model.
    variables: Its variables, numpy arrays.
    step: The checkpoint's step.
    input_shape: One example's shape, as the model takes it.
    num_classes: The logits' width.
  """
  model: Any
  variables: Dict[str, Any]
  step: int
  input_shape: Tuple[int, ...]
  num_classes: int


def restore(config: ml_collections.ConfigDict, workdir: str,
            step: Optional[int]) -> Restored:
  """A checkpoint of `workdir` (the latest, or `step`), checked against the
  config's model."""
  step = checkpoint.step_to_read(workdir, step)
  input_shape = tuple(summary.example_input_shape(config))
  num_classes = summary.example_num_classes(config)
  model = build_model(config, num_classes)
  target, _ = train_steps.abstract_variables(
      config, model, input_shape, sharding.make_mesh(config))
  variables = checkpoint.restore_variables(workdir, step, target)
  return Restored(model, jax.device_get(variables), step, input_shape,
                  num_classes)


def serving_fn(model, config: ml_collections.ConfigDict
               ) -> Callable[[Dict[str, Any], jax.Array], jax.Array]:
  """`(variables, uint8 pixels) -> float32 logits` in inference mode."""
  scale, offset = pixel_scale(config)

  def serve(variables, pixels):
    inputs = pixels.astype(jnp.float32) * scale + offset
    return model.apply(variables, inputs, train=False).astype(jnp.float32)

  return serve


def label_names(config: ml_collections.ConfigDict) -> Optional[List[str]]:
  """The class names, where the dataset has them: a tfds `ClassLabel`'s, or
  the `label_map.csv` beside video TFRecords; else None."""
  base_dir = DataConfig.from_config(config).base_dir
  if base_dir:
    # TensorFlow (tf.io.gfile), only for records' configs.
    from tokenlearner_jax.data import tfrecord_tables  # pylint: disable=g-import-not-at-top
    path = os.path.join(base_dir, tfrecord_tables.LABEL_MAP_FILE)
    if not os.path.exists(path):
      return None
    label_map = tfrecord_tables.read_label_map(path)
    return sorted(label_map, key=label_map.get)
  try:
    info = summary._builder_info(config)  # pylint: disable=protected-access
  except ValueError:
    return None
  feature = info.features[info.supervised_keys[1]] if info.supervised_keys \
      else None
  feature = getattr(feature, 'feature', feature)  # A Sequence's items.
  names = getattr(feature, 'names', None)
  return list(names) if names else None


def input_spec(shape: Sequence[int], batch: int) -> jax.ShapeDtypeStruct:
  """The uint8 input `[B, *shape]`, B symbolic when `batch` is 0."""
  lead = jax.export.symbolic_shape('b') if batch == 0 else (batch,)
  return jax.ShapeDtypeStruct(tuple(lead) + tuple(shape), jnp.uint8)


def export_stablehlo(serve, variables, shape: Sequence[int], batch: int,
                     out: str, platforms: Optional[Sequence[str]] = None
                     ) -> str:
  """Writes `OUT/model.stablehlo` (the parameters inside); its path."""
  constants = jax.tree_util.tree_map(jnp.asarray, variables)
  exported = jax.export.export(jax.jit(lambda x: serve(constants, x)),
                               platforms=platforms)(input_spec(shape, batch))
  path = os.path.join(out, STABLEHLO_FILE)
  with open(path, 'wb') as f:
    f.write(exported.serialize())
  return path


def export_savedmodel(serve, variables, shape: Sequence[int], batch: int,
                      out: str, platforms: Optional[Sequence[str]] = None
                      ) -> str:
  """Writes a TF SavedModel to `out` (the parameters as variables); `out`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree_util.tree_flatten(variables)
  module = tf.Module()
  module.weights = [tf.Variable(np.asarray(leaf), trainable=False)
                    for leaf in leaves]
  dims = ', '.join(str(d) for d in shape)
  polymorphic = f'(b, {dims})' if batch == 0 else None
  converted = jax2tf.convert(
      lambda weights, x: serve(jax.tree_util.tree_unflatten(treedef, weights),
                               x),
      polymorphic_shapes=[None, polymorphic], with_gradient=False,
      native_serialization_platforms=platforms)

  @tf.function(autograph=False, input_signature=[tf.TensorSpec(
      (None if batch == 0 else batch,) + tuple(shape), tf.uint8,
      name='inputs')])
  def serving_default(inputs):
    return {'logits': converted(module.weights, inputs)}

  module.serving_default = serving_default
  tf.saved_model.save(module, out,
                      signatures={'serving_default': serving_default})
  return out


def export_workdir(config: ml_collections.ConfigDict, workdir: str, out: str,
                   fmt: str = 'stablehlo', batch: int = 0,
                   step: Optional[int] = None, overwrite: bool = False,
                   platforms: Optional[Sequence[str]] = None
                   ) -> Dict[str, Any]:
  """Exports a checkpoint of `workdir` to `out`; returns `model.json`'s
  contents. Bad input (no workdir or checkpoint, an `out` that exists
  without `overwrite`, a config that does not fit the checkpoint) raises a
  `KnownFault` before anything is written."""
  errors.require_workdir(workdir, 'export')
  if fmt not in FORMATS:
    raise errors.UsageError(f'--format={fmt}: one of {FORMATS}.')
  if os.path.exists(out) and not overwrite:
    raise errors.UsageError(f'--out={out} exists; pass --overwrite to '
                            'replace it, or name another directory.')
  config = schema.complete(config)
  model, variables, step, shape, num_classes = restore(config, workdir, step)
  serve = serving_fn(model, config)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  write = export_stablehlo if fmt == 'stablehlo' else export_savedmodel
  write(serve, variables, shape, batch, out,
        tuple(platforms) if platforms else None)
  meta = {
      'format': fmt, 'workdir': os.path.abspath(workdir), 'step': step,
      'input': {'shape': ['batch' if batch == 0 else batch, *shape],
                'dtype': 'uint8', 'values': '0..255, resized and cropped '
                'to the shape; the model scales them'},
      'output': {'name': 'logits', 'shape': ['batch' if batch == 0 else
                                             batch, num_classes],
                 'dtype': 'float32',
                 'multilabel': metrics.is_multilabel(config.model_name)},
      'platforms': list(platforms or [jax.default_backend()]),
      'num_classes': num_classes, 'labels': label_names(config),
      'model_name': config.model_name,
  }
  with open(os.path.join(out, METADATA_FILE), 'w') as f:
    json.dump(meta, f, indent=1)
  logging.info('Exported step %d of %s to %s (%s).', step, workdir, out, fmt)
  return meta


def main(argv) -> None:
  del argv
  runtime.initialize_runtime()
  f = flags.FLAGS

  def run():
    for name in ('workdir', 'out'):
      if not f[name].value:
        raise errors.UsageError(f'--{name} is required.')
    return export_workdir(f.config, f.workdir, f.out, f.format, f.batch,
                          f.step, f.overwrite, f.platforms)

  errors.exit_on_known_fault(run)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
