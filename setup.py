"""tokenlearner_jax: TokenLearner (NeurIPS 2021) in JAX/Flax."""

import setuptools

setuptools.setup(
    name='tokenlearner_jax',
    version='0.1.0',
    description=('TokenLearner / TokenFuser with ViT and ViViT in JAX/Flax, '
                 'faithful to the reference (scenic) implementation.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['tokenlearner_jax',
                                               'tokenlearner_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.7',
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'tensorflow-cpu>=2.16; platform_machine=="x86_64"',
        'tensorflow>=2.16; platform_machine!="x86_64"',
        'tensorflow-datasets>=4.9.7',
        'ml-collections>=0.1.1',
        'clu>=0.0.12',
        'absl-py',
        'numpy',
        # Undeclared needs of the above: clu's TensorBoard writer and tfds
        # builders.
        'tensorboard',
        'importlib_resources',
        # Ships the digits images the offline demo datasets are made from.
        'scikit-learn',
        # Renders the attention maps (tokenlearner_jax.visualize).
        'Pillow',
        # Plots of scripts/reproduce.py.
        'matplotlib',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist', 'pytest-timeout', 'filelock',
                 'av', 'submitit'],
        # Sweeps whose points are SLURM jobs (scripts/sweep.py
        # --launcher=slurm).
        'cluster': ['submitit'],
        # libtpu: the TPU compiler for `tokenlearner_jax.aot` and
        # tests/test_aot.py (compile-only TPU devices; no TPU needed). jax's
        # own extra pins the libtpu built for the installed jax (jax 0.10.2:
        # libtpu 0.0.42.1, what the tests and docs/performance.md used).
        'tpu': ['jax[tpu]'],
    },
)
