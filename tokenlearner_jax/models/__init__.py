"""TokenLearner models: modules, `build_model` and reference-checkpoint loading."""

from tokenlearner_jax.models.build import build_model
from tokenlearner_jax.models.build import validate_model_config
from tokenlearner_jax.models.encoder import TokenLearnerEncoder
from tokenlearner_jax.models.scenic_params import from_scenic_params
from tokenlearner_jax.models.tokenlearner import TokenFuser
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.vit import TokenLearnerViT
from tokenlearner_jax.models.vivit import FactorisedEncoderViViT

__all__ = [
    'FactorisedEncoderViViT', 'TokenFuser', 'TokenLearnerEncoder',
    'TokenLearnerModule', 'TokenLearnerModuleV11', 'TokenLearnerViT',
    'build_model', 'from_scenic_params', 'validate_model_config',
]
