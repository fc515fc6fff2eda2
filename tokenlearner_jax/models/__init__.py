"""TokenLearner models: `ModelConfig`, the modules and `build_model`.

  model = build_model(config, num_classes)  # config.model -> a Flax module
  logits = model.apply({'params': params}, x, train=False)

`MODELS` maps `ModelConfig.attention_type` to its module class; every module
takes the one `ModelConfig`.
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

MODELS = {'spacetime': TokenLearnerViT,
          'factorized_encoder': FactorisedEncoderViViT}


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The Flax module `config.model` describes (checked before any compile).

  `model.apply({'params': p}, x, train=False)` maps images `[B, H, W, 3]` or
  videos `[B, T, H, W, 3]` to logits `[B, num_classes]`.
  """
  model_config = ModelConfig.from_config(config, num_classes)
  if (model_config.attention_impl == 'cudnn' and
      jax.default_backend() != 'gpu'):
    raise ValueError(
        "model.attention_impl='cudnn' (cuDNN flash attention) needs a CUDA "
        f"GPU; jax's backend here is {jax.default_backend()!r}.")
  return MODELS[model_config.attention_type](model_config)


__all__ = [
    'FactorisedEncoderViViT', 'MODELS', 'ModelConfig', 'TokenFuser',
    'TokenLearnerEncoder', 'TokenLearnerModule', 'TokenLearnerModuleV11',
    'TokenLearnerViT', 'build_model',
]
