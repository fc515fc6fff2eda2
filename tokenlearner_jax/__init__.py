"""tokenlearner_jax: TokenLearner (Ryoo et al., NeurIPS 2021) in JAX/Flax."""

import gc as _gc
import sys as _sys

__version__ = '0.1.0'

# `python -m tokenlearner_jax.<command>` imports this package first, while
# `sys.argv[0]` is still '-m': the command's imports (TensorFlow's and jax's
# million objects) then run without the cyclic collector, which would walk
# them again and again (about a second of CPU); `errors.run`, which every
# command's `__main__` calls, freezes them and turns it back on.
if _sys.argv[:1] == ['-m']:
  _gc.disable()
