"""Input shapes and class counts of datasets by name, for tools that need a
model's input without reading any data (`tokenlearner_jax.summary`).

The reference's ImageNet config sets neither `dataset_configs.image_size` nor
`num_classes`: scenic's 'imagenet' dataset crops to 224 and has 1000 classes.
"""

from typing import Dict, Tuple

# dataset_name: (one example's input shape, number of classes).
KNOWN: Dict[str, Tuple[Tuple[int, ...], int]] = {
    'imagenet': ((224, 224, 3), 1000),
    'imagenet2012': ((224, 224, 3), 1000),
    'imagenet2012_real': ((224, 224, 3), 1000),
    'imagenet21k': ((224, 224, 3), 21843),
}
