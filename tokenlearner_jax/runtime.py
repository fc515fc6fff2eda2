"""Process-wide setup of the entry points: joining a multi-process job.

`initialize_runtime` is what `train`, `evaluate` and `visualize` call first:
it joins a multi-process job through `jax.distributed` when given a
coordinator, or when `in_cluster` says that jax can find the job's peers by
itself (TPU pods, SLURM), and keeps TensorFlow (the input pipelines) off the
GPUs.
"""

import glob
import importlib.util
import os
from typing import Optional

from absl import app
import jax

# Where a Cloud TPU VM's chips appear: `/dev/accel*` (TPU v2-v4) or VFIO
# groups `/dev/vfio/<n>` (v5e and later).
TPU_DEVICE_PATTERNS = ('accel*', 'vfio/[0-9]*')


def libtpu_available() -> bool:
  """Whether the TPU runtime is installed, where jax looks for it: the file
  `TPU_LIBRARY_PATH` names, or the `libtpu` package."""
  path = os.environ.get('TPU_LIBRARY_PATH')
  if path and os.path.isfile(path):
    return True
  return importlib.util.find_spec('libtpu') is not None


def on_cloud_tpu_vm(dev: str = '/dev') -> bool:
  """Whether this is a Cloud TPU VM as `import jax` sees one.

  jax treats a machine as a Cloud TPU VM (and then reads its pod's workers
  from GCE's metadata server or GKE's variables) when TPU chips and libtpu
  are present, or when `JAX_FORCE_TPU_INIT` is set. The same facts from
  public places: TPU chip device files under `dev` and `libtpu_available`.
  """
  if 'JAX_FORCE_TPU_INIT' in os.environ:
    return True
  chips = any(glob.glob(os.path.join(dev, pattern))
              for pattern in TPU_DEVICE_PATTERNS)
  return chips and libtpu_available()


def in_cluster() -> bool:
  """Whether `jax.distributed.initialize()` can find this job's peers itself.

  The signals its cluster detection reads: `JAX_COORDINATOR_ADDRESS`; a SLURM
  step of several tasks; a Cloud TPU VM (`on_cloud_tpu_vm`) that is on GKE
  (`TPU_WORKER_HOSTNAMES` or `TPU_PROCESS_ADDRESSES`) or may ask GCE's
  metadata server for its workers (`TPU_SKIP_MDS_QUERY` unset; jax sets it
  when it finds no TPU chips). A single-host TPU VM joins a 1-process job.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  if not on_cloud_tpu_vm():
    return False
  return bool(os.environ.get('TPU_WORKER_HOSTNAMES') or
              os.environ.get('TPU_PROCESS_ADDRESSES') or
              not os.environ.get('TPU_SKIP_MDS_QUERY'))


def initialize_runtime(coordinator_address: Optional[str] = None,
                       num_processes: Optional[int] = None,
                       process_id: Optional[int] = None,
                       heartbeat_timeout_seconds: int = 30) -> None:
  """Process-wide setup shared by the command-line entry points.

  Joins a multi-process job when given its coordinator (or when running on a
  TPU pod or SLURM job, which `jax.distributed` detects); a dead peer then
  stops this process within about twice `heartbeat_timeout_seconds` instead
  of a hang.
  """
  jax.config.update('jax_threefry_partitionable', True)
  if heartbeat_timeout_seconds <= 0:
    raise app.UsageError(f'--heartbeat_timeout_seconds='
                         f'{heartbeat_timeout_seconds}: must be > 0.')
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise app.UsageError('--coordinator_address needs --num_processes and '
                           '--process_id.')
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  elif in_cluster():
    jax.distributed.initialize(
        heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # Keep TensorFlow off the GPUs.
