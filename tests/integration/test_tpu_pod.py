"""Two CPU processes posing as the two hosts of a Cloud TPU pod slice join one
jax job through `runtime.initialize_runtime()`, with no flags (the two tasks
of a SLURM step, as `srun` starts them: test_trainer_processes.py's
MultiProcessTest, whose 2-process job joins that way).

`JAX_FORCE_TPU_INIT` makes `import jax` take the Cloud TPU VM path without
chips, and each host's facts come from where jax reads them on that platform
(GCE: its metadata server, here one per host on localhost; GKE: the variables
GKE sets).
"""

import http.server
import os
import subprocess
import sys
import threading
from typing import Dict

from absl.testing import absltest

from tests.testing import ROOT
from tests.testing import free_port
from tests.testing import host_devices_env


def serve_metadata(attributes: Dict[str, str]) -> http.server.HTTPServer:
  """A GCE metadata server on localhost answering `instance/attributes/KEY`
  as a Cloud TPU VM's does (404 for anything else)."""

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      key = self.path.rsplit('/', 1)[-1]
      if (self.headers.get('Metadata-Flavor') != 'Google' or
          not self.path.startswith('/computeMetadata/v1/instance/attributes/')
          or key not in attributes):
        self.send_response(404)
        self.end_headers()
        return
      body = attributes[key].encode()
      self.send_response(200)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      del args

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


class TpuPodTest(absltest.TestCase):

  JOIN = (
      'import os, jax\n'
      # jax sets this when it finds no TPU chips; a real TPU VM has them.
      'if os.environ.pop("UNSET_SKIP_MDS", None):\n'
      '  os.environ.pop("TPU_SKIP_MDS_QUERY", None)\n'
      'from jax.experimental import multihost_utils\n'
      'from tokenlearner_jax import runtime\n'
      'runtime.initialize_runtime()\n'
      'peers = multihost_utils.process_allgather(jax.numpy.array(\n'
      '    jax.process_index()))\n'
      'with open(os.environ["JOINED_FILE"], "w") as f:\n'
      '  print(jax.process_count(), jax.process_index(), jax.device_count(),\n'
      '        peers.tolist(), file=f)\n')

  def start_pod(self, platform: str):
    """The two hosts of a pod slice on `platform` ('gce' or 'gke'), started:
    (their processes, their metadata servers, where each writes what it
    joined)."""
    port = free_port()
    joined = self.create_tempdir().full_path
    processes, servers = [], []
    for worker in range(2):
      env = host_devices_env(4, JAX_FORCE_TPU_INIT='1',
                             JAX_COORDINATOR_PORT=str(port),
                             JOINED_FILE=os.path.join(joined, str(worker)))
      if platform == 'gce':
        attributes = {'agent-worker-number': str(worker),
                      'worker-network-endpoints': 'localhost,localhost',
                      'tpu-env': ''}
        env['UNSET_SKIP_MDS'] = '1'
      else:
        attributes = {'tpu-env': ''}
        env.update(TPU_WORKER_HOSTNAMES='localhost,localhost',
                   TPU_WORKER_ID=str(worker))
      servers.append(serve_metadata(attributes))
      env['GCE_METADATA_IP'] = f'127.0.0.1:{servers[-1].server_address[1]}'
      processes.append(subprocess.Popen(
          [sys.executable, '-c', self.JOIN], env=env, cwd=ROOT,
          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return processes, servers, joined

  def test_the_hosts_of_a_pod_join_one_job_each(self):
    pods = {platform: self.start_pod(platform)
            for platform in ('gce', 'gke')}
    try:
      outcomes = {platform: [p.communicate(timeout=300)[1] for p in processes]
                  for platform, (processes, _, _) in pods.items()}
    finally:
      for processes, servers, _ in pods.values():
        for process in processes:
          process.kill()
        for server in servers:
          server.shutdown()
    for platform, (processes, _, joined) in pods.items():
      for worker, (process, stderr) in enumerate(zip(processes,
                                                     outcomes[platform])):
        self.assertEqual(process.returncode, 0, f'{platform}: '
                         f'{stderr[-3000:]}')
        # 2 processes, this one's index, 8 devices in all, both peers seen.
        with open(os.path.join(joined, str(worker))) as f:
          self.assertEqual(f.read(), f'2 {worker} 8 [0, 1]\n', platform)

if __name__ == '__main__':
  absltest.main()
