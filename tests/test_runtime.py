"""Tests of `tokenlearner_jax.runtime`: which environments join a
multi-process job (two processes posing as a TPU pod's hosts joining one:
tests/integration/test_tpu_pod.py)."""

import os
from unittest import mock

from absl import app
from absl.testing import absltest

from tokenlearner_jax import runtime


class CloudTpuVmTest(absltest.TestCase):

  def test_chips_and_libtpu_or_the_force_variable(self):
    dev, vfio = self.create_tempdir(), self.create_tempdir()
    vfio.create_file('vfio/0')  # TPU v5e and newer.
    with mock.patch.dict(os.environ), mock.patch.object(
        runtime, 'libtpu_available', return_value=True):
      os.environ.pop('JAX_FORCE_TPU_INIT', None)
      self.assertFalse(runtime.on_cloud_tpu_vm(dev.full_path))  # No chips.
      self.assertTrue(runtime.on_cloud_tpu_vm(vfio.full_path))
      dev.create_file('accel0')  # TPU v4 and older.
      self.assertTrue(runtime.on_cloud_tpu_vm(dev.full_path))
      with mock.patch.object(runtime, 'libtpu_available', return_value=False):
        self.assertFalse(runtime.on_cloud_tpu_vm(dev.full_path))
      os.environ['JAX_FORCE_TPU_INIT'] = '1'
      self.assertTrue(runtime.on_cloud_tpu_vm(self.create_tempdir().full_path))

  def test_libtpu_found_where_jax_looks(self):
    library = self.create_tempfile('libtpu.so').full_path
    with mock.patch.dict(os.environ, TPU_LIBRARY_PATH=library):
      self.assertTrue(runtime.libtpu_available())
    with mock.patch.dict(os.environ, TPU_LIBRARY_PATH=library + '.missing'), \
         mock.patch('importlib.util.find_spec', return_value=None):
      self.assertFalse(runtime.libtpu_available())


class TpuPodDetectionTest(absltest.TestCase):
  """Which environments make the runtime setup join a job."""

  def test_which_environments_join_a_job(self):
    cases = [  # (on a Cloud TPU VM, environment, joins)
        (False, {}, False),
        (False, {'SLURM_NTASKS': '1'}, False),
        (False, {'SLURM_NTASKS': '4'}, True),
        (False, {'JAX_COORDINATOR_ADDRESS': 'host:1234'}, True),
        (False, {'TPU_WORKER_HOSTNAMES': 'a,b'}, False),  # Not a TPU VM.
        (True, {}, True),  # GCE: the metadata server lists the workers.
        (True, {'TPU_SKIP_MDS_QUERY': '1'}, False),
        (True, {'TPU_SKIP_MDS_QUERY': '1', 'TPU_WORKER_HOSTNAMES': 'a'}, True),
        (True, {'TPU_SKIP_MDS_QUERY': '1', 'TPU_PROCESS_ADDRESSES': 'a'},
         True),
    ]
    names = ('SLURM_NTASKS', 'JAX_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES',
             'TPU_PROCESS_ADDRESSES', 'TPU_SKIP_MDS_QUERY')
    for tpu_vm, environment, joins in cases:
      cleared = {name: environment.get(name) for name in names}
      with mock.patch.object(runtime, 'on_cloud_tpu_vm',
                             return_value=tpu_vm), mock.patch.dict(os.environ):
        for name, value in cleared.items():
          os.environ.pop(name, None)
          if value is not None:
            os.environ[name] = value
        self.assertEqual(runtime.in_cluster(), joins, (tpu_vm, environment))


  def test_bad_job_flags_are_usage_errors_naming_the_flag(self):
    with self.assertRaisesRegex(app.UsageError,
                                '--heartbeat_timeout_seconds=0: must be > 0'):
      runtime.initialize_runtime(heartbeat_timeout_seconds=0)
    with self.assertRaisesRegex(app.UsageError,
                                '--coordinator_address needs --num_processes'):
      runtime.initialize_runtime('localhost:1234', num_processes=2)


if __name__ == '__main__':
  absltest.main()
