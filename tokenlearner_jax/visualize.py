r"""Renders what each learned token attends to, frame by frame.

  python -m tokenlearner_jax.visualize --config=configs/demo_moving_digits.py \
      --workdir=/tmp/demo_moving_digits [--num_clips=4] [--tokenlearner=0]

For the latest checkpoint under WORKDIR and the first `--num_clips` examples
of the eval split, writes under WORKDIR/visualizations/:
  * clip_<i>.png: a grid with one column per frame; the top row is the clip,
    each further row one token: the frame with that token's spatial weights
    (the TokenLearner's `attention_maps`, the map of the frame's temporal
    slice, upsampled) overlaid in red, scaled by the token's largest weight
    over the clip so that changes over time show;
  * clip_<i>.gif: the same, animated: one frame per clip frame, the clip and
    the tokens side by side;
  * index.json: per clip, its files, label and the model's prediction.
Images (ViT) are clips of one frame. `--tokenlearner` picks which
TokenLearner of a TokenFuser model (one per later layer) to show. Only the
eval side of the data pipeline is built: the train split need not exist. A
`--workdir` that does not exist (a mistyped path) stops it at once with one
line naming it, and nothing is created.
"""

import json
import os
from typing import Dict, List

from absl import app
from absl import flags
import flax.linen as nn
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image

from tokenlearner_jax import checkpoint
from tokenlearner_jax import errors
from tokenlearner_jax import layer_layout
from tokenlearner_jax import runtime
from tokenlearner_jax.configs import schema
from tokenlearner_jax.data import input_pipeline
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import ModelConfig
from tokenlearner_jax.models import X2PLUS1D_NAMES

SCALE = 4  # Pixels per input pixel in the rendered images.
OPACITY = 0.7  # Of the red overlay where a token's weight is largest.


def define_flags() -> None:
  """The command-line flags (defined only when run as the entry point)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to visualise.')
  flags.DEFINE_integer('num_clips', 4, 'Eval examples to render.')
  flags.DEFINE_integer('tokenlearner', 0,
                       'Which TokenLearner (its index k) to show.')


def attention_maps(model, variables, inputs: np.ndarray, config:
                   ml_collections.ConfigDict, index: int = 0):
  """(logits `[B, classes]`, maps `[B, T, S, h, w]`) of TokenLearner `index`
  in the model of `variables` (`{'params': ..., **model_state}`).

  `inputs` are `[B, H, W, 3]` images (T=1) or `[B, F, H, W, 3]` videos (T
  temporal slices of F / T frames each); h x w is the token grid of a slice.
  """
  logits, state = model.apply(variables, inputs, train=False,
                              mutable=['intermediates'])
  encoder = state['intermediates']['Transformer']
  names = [f'TokenLearnerModuleV11_{index}', f'TokenLearnerModule_{index}']
  found = [n for n in names if n in encoder]
  if not found:
    raise ValueError(f'--tokenlearner={index}: the model has no {names[0]} or '
                     f'{names[1]} (it has {sorted(encoder)}).')
  weights = np.asarray(encoder[found[0]]['attention_maps'][0])  # [B*T, S, HW]
  grid = model.config.token_grid(inputs.shape[1:], warn=False)
  maps = weights.reshape(inputs.shape[0], grid.time, weights.shape[1],
                         grid.height, grid.width)  # [B, T, S, h, w]
  return np.asarray(logits), maps


def check_fits(model, params, inputs: np.ndarray, workdir: str) -> None:
  """Raises a `CheckpointError` naming the first parameter whose shape (or
  presence) differs between the checkpoint's `params` and the config's
  model (`checkpoint.check_shapes`)."""
  wanted = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), inputs[:1], train=False))['params']
  checkpoint.check_shapes(
      {'params': params}, {'params': nn.unbox(wanted)},
      f'The checkpoint of --workdir={workdir} (trained with '
      f'{workdir}/config.json)')


def overlay(frame: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """A frame `[H, W, 3]` in [-1, 1] with `weight` `[h, w]` in [0, 1] in red.

  Returns uint8 `[H * SCALE, W * SCALE, 3]`.
  """
  height, width = frame.shape[0] * SCALE, frame.shape[1] * SCALE
  image = np.asarray(Image.fromarray(
      np.uint8(np.clip((frame + 1) * 127.5, 0, 255))).resize(
          (width, height), Image.NEAREST), np.float32)
  alpha = np.asarray(Image.fromarray(np.float32(weight), mode='F').resize(
      (width, height), Image.BILINEAR))[..., None] * OPACITY  # [H', W', 1]
  red = np.array([255.0, 0.0, 0.0], np.float32)
  return np.uint8(np.clip(image * (1 - alpha) + red * alpha, 0, 255))


def render_frames(clip: np.ndarray, maps: np.ndarray) -> List[np.ndarray]:
  """Per frame, a column `[(S + 1) * H', W', 3]`: the frame, then each token.

  `clip` `[F, H, W, 3]`, `maps` `[T, S, h, w]` (frame f shows slice
  f * T // F); each token's maps are divided by their maximum over the clip.
  """
  frames, slices = clip.shape[0], maps.shape[0]
  peak = maps.max(axis=(0, 2, 3), keepdims=True)  # [1, S, 1, 1]
  maps = maps / np.maximum(peak, 1e-12)
  columns = []
  for f in range(frames):
    t = f * slices // frames
    rows = [overlay(clip[f], np.zeros(maps.shape[2:]))]
    rows += [overlay(clip[f], maps[t, s]) for s in range(maps.shape[1])]
    columns.append(np.concatenate(rows, axis=0))
  return columns


def save_clip(columns: List[np.ndarray], path_png: str, path_gif: str) -> None:
  """The PNG grid (frames left to right) and the GIF (one frame per column,
  the column laid out as a row)."""
  gap = np.full((columns[0].shape[0], 2, 3), 255, np.uint8)
  grid = np.concatenate([x for c in columns for x in (c, gap)][:-1], axis=1)
  Image.fromarray(grid).save(path_png)
  cell = columns[0].shape[1]  # Square cells: the column's rows, side by side.
  frames = [Image.fromarray(np.concatenate(np.split(c, c.shape[0] // cell),
                                           axis=1)) for c in columns]
  frames[0].save(path_gif, save_all=True, append_images=frames[1:],
                 duration=250, loop=0)


def visualize(config: ml_collections.ConfigDict, workdir: str,
              num_clips: int = 4, tokenlearner: int = 0) -> List[Dict]:
  """Renders `num_clips` eval examples; returns the entries of index.json."""
  errors.require_workdir(workdir, 'visualise')
  config = schema.complete(config)
  if config.get('model_name') in X2PLUS1D_NAMES:
    raise errors.ConfigError(
        f"config.model_name={config.model_name!r}: visualize draws the "
        'TokenLearner maps of the ViT/ViViT models; the X(2+1)D network '
        'sows its maps as `attention_maps` intermediates (apply with '
        "mutable=['intermediates']).")
  model_config = ModelConfig.from_config(config, num_classes=1)
  if (not model_config.tokenlearner_on or
      model_config.token_reduction != 'tokenlearner'):
    raise ValueError('model.tokenizer: the model has no TokenLearner to '
                     'visualise (tokenlearner_loc is None, tokenizer.type is '
                     "'patch' or token_reduction is not 'tokenlearner').")
  step = checkpoint.step_to_read(workdir)
  config = config.copy_and_resolve_references()
  config.model.scan_layers = False  # The checkpoint is read per layer.
  data = input_pipeline.get_data(config, train=False)
  model = build_model(config, data.num_classes)
  variables = checkpoint.restore_variables(workdir, step)
  variables['params'] = layer_layout.per_layer(variables['params'])
  batch = next(iter(data.eval_batches()))
  inputs = batch['inputs'][:num_clips]
  check_fits(model, variables['params'], inputs, workdir)
  labels = batch['label'][:num_clips].argmax(-1)
  logits, maps = attention_maps(model, variables, inputs, config,
                                tokenlearner)
  out_dir = os.path.join(workdir, 'visualizations')
  os.makedirs(out_dir, exist_ok=True)
  entries = []
  for i in range(inputs.shape[0]):
    clip = inputs[i] if inputs.ndim == 5 else inputs[i][None]  # [F, H, W, 3]
    png, gif = f'clip_{i}.png', f'clip_{i}.gif'
    save_clip(render_frames(clip, maps[i]), os.path.join(out_dir, png),
              os.path.join(out_dir, gif))
    entries.append({'png': png, 'gif': gif, 'label': int(labels[i]),
                    'prediction': int(logits[i].argmax())})
  with open(os.path.join(out_dir, 'index.json'), 'w') as f:
    json.dump(entries, f, indent=1)
  return entries


def main(argv) -> None:
  del argv
  runtime.initialize_runtime()
  if not flags.FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  entries = errors.exit_on_known_fault(
      visualize, flags.FLAGS.config, flags.FLAGS.workdir,
      flags.FLAGS.num_clips, flags.FLAGS.tokenlearner)
  print(f'Wrote {len(entries)} clips to '
        f'{os.path.join(flags.FLAGS.workdir, "visualizations")}.')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  errors.run(main)
