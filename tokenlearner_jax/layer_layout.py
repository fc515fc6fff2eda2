"""Layer layouts: the scanned and the per-layer names of a model's layers.

With `model.scan_layers=True` each run of identical layers is one `nn.scan`
whose parameters carry a leading layer axis (see
`models.encoder.scan_segments`):

    per-layer (reference) layout -> scanned layout, under `Transformer/`:
    encoderblock_{i}/X -> encoderblock_{a}_to_{b}/X `[b-a+1, ...]`
    encoderblock_{loc+j}/X -> fuserlayer_{loc}_to_{b}/encoderblock/X
    TokenLearnerModuleV11_{j}/X ->
        fuserlayer_{loc}_to_{b}/TokenLearnerModuleV11/X
    TokenFuser_{j}/X -> fuserlayer_{loc}_to_{b}/TokenFuser/X

(the same under `SpatialTransformer`/`TemporalTransformer` of ViViT model
2). The per-layer layout is the canonical one: `unstack_layers` maps
scanned names to it, `stack_layers` maps it onto a model's scanned names,
so that checkpoints of either kind load into models of either kind.
big_vision's scanned `Transformer/encoderblock/X` goes through the same
two functions (`checkpoint_formats.from_big_vision`).
"""

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import flax
import numpy as np

Params = Dict[str, Any]
SEGMENT = re.compile(r'(encoderblock|fuserlayer)_(\d+)_to_(\d+)')


def _segment(parts: List[str]) -> Optional[Tuple[int, str, int, int]]:
  """(position, kind, first, last) of the first scanned segment in `parts`."""
  for i, part in enumerate(parts):
    match = SEGMENT.fullmatch(part)
    if match:
      return i, match.group(1), int(match.group(2)), int(match.group(3))
  return None


def _layer_name(parts: List[str], segment: Tuple[int, str, int, int],
                j: int) -> str:
  """The per-layer name of layer `first + j` of a scanned parameter's path."""
  i, kind, first, _ = segment
  if kind == 'encoderblock':
    return '/'.join(parts[:i] + [f'encoderblock_{first + j}'] + parts[i + 1:])
  child = parts[i + 1]  # encoderblock, TokenLearnerModule(V11) or TokenFuser.
  child = (f'encoderblock_{first + j}' if child == 'encoderblock'
           else f'{child}_{j}')
  return '/'.join(parts[:i] + [child] + parts[i + 2:])


def unstack_layers(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """'/'-joined parameters in the per-layer layout (scanned ones split).

  Raises:
    ValueError: for a scanned parameter without its leading layer axis, or a
      layer that is both scanned and per-layer.
  """
  out: Dict[str, Any] = {}
  for name, value in flat.items():
    parts = name.split('/')
    segment = _segment(parts)
    if segment is None:
      out[name] = value
      continue
    depth = segment[3] - segment[2] + 1
    if np.ndim(value) == 0 or np.shape(value)[0] != depth:
      raise ValueError(f'Scanned parameter {name} has shape {np.shape(value)}, '
                       f'not a leading layer axis of {depth}.')
    for j in range(depth):
      layer = _layer_name(parts, segment, j)
      if layer in flat:
        raise ValueError(f'{layer} is both scanned ({name}) and per-layer.')
      out[layer] = value[j]  # Layer j of [depth, ...].
  return out


def stack_layers(flat: Mapping[str, Any],
                 target_names: Iterable[str]) -> Dict[str, Any]:
  """`flat` (per-layer layout) with layers stacked where `target_names` are.

  A scanned target name whose layers are all in `flat` gets them stacked
  `[layers, ...]`; the layers are then left out. Every other entry of `flat` is
  kept as it is (missing ones are the caller's to report).
  """
  out = dict(flat)
  for name in target_names:
    parts = name.split('/')
    segment = _segment(parts)
    if segment is None:
      continue
    sources = [_layer_name(parts, segment, j)
               for j in range(segment[3] - segment[2] + 1)]
    if all(source in flat for source in sources):
      out[name] = np.stack([np.asarray(flat[s]) for s in sources])  # [L, ...]
      for source in sources:
        out.pop(source, None)
  return out


def per_layer(params: Params) -> Params:
  """A nested parameter tree in the per-layer layout."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  return flax.traverse_util.unflatten_dict(unstack_layers(flat), sep='/')
