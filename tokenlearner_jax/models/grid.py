"""Token-grid geometry: which tokens a stem makes from an input shape.

Shared by the models (checked at trace time, before any compile) and by
`tokenlearner_jax.flops`, so both agree on every count and raise the same
errors.
"""

import dataclasses
from typing import Optional, Sequence

from absl import logging
import numpy as np

TOKENIZER_TYPES = ('patch', 'dynamic', 'video')
TEMPORAL_ENCODINGS = ('3d_conv', 'temporal_sampling')


@dataclasses.dataclass(frozen=True)
class TokenGrid:
  """Tokens per example as `time x height x width`.

  Attributes:
    time: Temporal slices (1 for images); TokenLearner runs once per slice.
    height: Token rows per slice.
    width: Token columns per slice.
  """
  time: int
  height: int
  width: int

  @property
  def per_slice(self) -> int:
    return self.height * self.width

  @property
  def total(self) -> int:
    return self.time * self.height * self.width


def sampled_frame_indices(num_frames: int, n_sampled_frames: int) -> np.ndarray:
  """Frame indices of the reference's uniform `temporal_sampling`."""
  if n_sampled_frames < num_frames:
    start = step = num_frames / (n_sampled_frames + 1)
  else:
    start, step = 0, 1
  indices = np.round(np.arange(start, num_frames, step)).astype(np.int32)
  return np.minimum(indices, num_frames - 1)


def token_grid(input_shape: Sequence[int], patch_size: Sequence[int],
               tokenizer_type: str, temporal_encoding: str = '3d_conv',
               n_sampled_frames: Optional[int] = None,
               warn: bool = True) -> TokenGrid:
  """Returns the token grid for one example of shape `input_shape`.

  Args:
    input_shape: `(H, W, C)` for images or `(T, H, W, C)` for videos.
    patch_size: `(h, w)`, or `(h, w, t)` for video tubelets (reference order).
    tokenizer_type: One of `TOKENIZER_TYPES`.
    temporal_encoding: One of `TEMPORAL_ENCODINGS` (videos only).
    n_sampled_frames: Frames kept by `temporal_sampling`.
    warn: Log a warning naming any border that the patching drops.

  Raises:
    ValueError: naming the shape, when the input has the wrong rank, is smaller
      than one patch or tubelet, or the encoding is unknown.
  """
  input_shape = tuple(int(d) for d in input_shape)
  if tokenizer_type not in TOKENIZER_TYPES:
    raise ValueError(f'model.tokenizer.type must be one of {TOKENIZER_TYPES}, '
                     f'got {tokenizer_type!r}.')
  video = tokenizer_type == 'video'
  want_rank = 4 if video else 3
  if len(input_shape) != want_rank:
    kind = '(T, H, W, C) video' if video else '(H, W, C) image'
    raise ValueError(f'tokenizer.type={tokenizer_type!r} takes a {kind} input '
                     f'per example, got shape {input_shape}.')
  frames = input_shape[0] if video else 1
  height, width = input_shape[-3], input_shape[-2]
  fh, fw = int(patch_size[0]), int(patch_size[1])
  ft = 1
  if video:
    if temporal_encoding not in TEMPORAL_ENCODINGS:
      raise ValueError(
          'model.tokenizer.temporal_encoding_config.method must be one of '
          f'{TEMPORAL_ENCODINGS}, got {temporal_encoding!r}.')
    if temporal_encoding == '3d_conv':
      if len(patch_size) != 3:
        raise ValueError('model.tokenizer.patches.size must be (h, w, t) for '
                         f'3d_conv video tubelets, got {tuple(patch_size)}.')
      ft = int(patch_size[2])
    else:
      if not n_sampled_frames or n_sampled_frames < 1:
        raise ValueError('model.tokenizer.temporal_encoding_config.'
                         'n_sampled_frames must be >= 1 for temporal_sampling, '
                         f'got {n_sampled_frames!r}.')
      if height % fh:
        raise ValueError(
            f'temporal_sampling stacks frames along the height, so the input '
            f'height {height} must be divisible by the patch height {fh} '
            f'(else patches straddle two frames); input shape {input_shape}.')
      frames = len(sampled_frame_indices(frames, n_sampled_frames))
  if frames < ft or height < fh or width < fw:
    raise ValueError(
        f'Input shape {input_shape} is smaller than one '
        f'{"tubelet" if ft > 1 else "patch"} of model.tokenizer.patches.size='
        f'{tuple(patch_size)}.')
  grid = TokenGrid(frames // ft, height // fh, width // fw)
  if warn:
    dropped = {'frames': frames % ft, 'bottom rows': height % fh,
               'right columns': width % fw}
    dropped = {k: v for k, v in dropped.items() if v}
    if dropped:
      logging.warning(
          'Input %s is not divisible by patch size %s: the patch embedding '
          'drops the last %s.', input_shape, tuple(patch_size),
          ', '.join(f'{v} {k}' for k, v in dropped.items()))
  return grid
