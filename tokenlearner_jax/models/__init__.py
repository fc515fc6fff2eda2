"""TokenLearner models: their configs, the modules and `build_model`.

  model = build_model(config, num_classes)  # config.model -> a Flax module
  logits = model.apply(variables, x, train=False)

`config.model_name` picks the family: the ViT/ViViT models (`ModelConfig`;
`MODELS` maps its `attention_type` to the module class) or, for
`x2plus1d_*`, the paper's Section 6 X(2+1)D network (`X2Plus1DConfig`).
Every module takes its one config.
"""

import jax
import ml_collections

from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.models.encoder import TokenLearnerEncoder
from tokenlearner_jax.models.tokenlearner import TokenFuser
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.vit import TokenLearnerViT
from tokenlearner_jax.models.vivit import FactorisedEncoderViViT
from tokenlearner_jax.models.x2plus1d import X2Plus1D
from tokenlearner_jax.models.x2plus1d_config import (
    MODEL_NAMES as X2PLUS1D_NAMES)
from tokenlearner_jax.models.x2plus1d_config import X2Plus1DConfig

MODELS = {'spacetime': TokenLearnerViT,
          'factorized_encoder': FactorisedEncoderViViT}


def model_config(config: ml_collections.ConfigDict, num_classes: int):
  """`config.model` read and checked: an `X2Plus1DConfig` for the
  `x2plus1d_*` model names, else a `ModelConfig`."""
  if config.get('model_name') in X2PLUS1D_NAMES:
    return X2Plus1DConfig.from_config(config, num_classes)
  return ModelConfig.from_config(config, num_classes)


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The Flax module `config.model` describes (checked before any compile).

  `model.apply(variables, x, train=False)` maps images `[B, H, W, 3]` or
  videos `[B, T, H, W, 3]` to logits `[B, num_classes]`.
  """
  checked = model_config(config, num_classes)
  if isinstance(checked, X2Plus1DConfig):
    return X2Plus1D(checked)
  if checked.attention_impl == 'cudnn' and jax.default_backend() != 'gpu':
    raise ValueError(
        "model.attention_impl='cudnn' (cuDNN flash attention) needs a CUDA "
        f"GPU; jax's backend here is {jax.default_backend()!r}.")
  return MODELS[checked.attention_type](checked)


__all__ = [
    'FactorisedEncoderViViT', 'MODELS', 'ModelConfig', 'TokenFuser',
    'TokenLearnerEncoder', 'TokenLearnerModule', 'TokenLearnerModuleV11',
    'TokenLearnerViT', 'X2PLUS1D_NAMES', 'X2Plus1D', 'X2Plus1DConfig',
    'build_model',
    'model_config',
]
