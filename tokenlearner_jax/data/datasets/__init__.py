"""Offline demo datasets, registered with tfds on import."""

from tokenlearner_jax.data.datasets.event_digits import EventDigits
from tokenlearner_jax.data.datasets.fewshot_digits import FewshotDigits
from tokenlearner_jax.data.datasets.moving_digits import MovingDigits
from tokenlearner_jax.data.datasets.multi_digits import MultiDigits

__all__ = ['EventDigits', 'FewshotDigits', 'MovingDigits', 'MultiDigits']
