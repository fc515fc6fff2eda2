"""Offline demo datasets, registered with tfds on import."""

from tokenlearner_jax.data.datasets.moving_digits import MovingDigits
from tokenlearner_jax.data.datasets.multi_digits import MultiDigits

__all__ = ['MovingDigits', 'MultiDigits']
