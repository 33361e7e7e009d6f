"""Multi-process set-up from the environment, and the Slurm and TPU-pod launchers.

`launch/slurm.sbatch` runs under a stand-in `srun` that starts the job's tasks
on this machine with the variables Slurm gives each task; jax's own Slurm
detection then joins them (JAXRL_POST_DISTRIBUTED=auto). `launch/tpu_pod.sh`
runs against a stand-in `gcloud` that records its arguments and runs each
worker's remote command here; those workers join through the same detection,
standing in for a TPU VM's metadata server, which only exists on Google Cloud.
"""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap

import pytest
from absl import app

from launch import common
from tests import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(ROOT, "launch", "slurm.sbatch")
TPU_POD = os.path.join(ROOT, "launch", "tpu_pod.sh")

# One process of a cluster: joins it through launch.common, checks that the
# processes really talk (an all-gather of their indices) and writes what it
# saw to $JOIN_OUT/<process index> (the processes share one stdout).
JOIN = textwrap.dedent("""
    import json, os, sys
    from launch import common
    common.init_runtime()
    import jax, jax.numpy as jnp
    from jax.experimental import multihost_utils
    ids = multihost_utils.process_allgather(jnp.array([jax.process_index()]))
    with open(os.path.join(os.environ["JOIN_OUT"], str(jax.process_index())), "w") as f:
      json.dump([jax.process_index(), jax.process_count(), jax.device_count(),
                 ids.ravel().tolist(), sys.argv[1:]], f)
    """)


def _joined(out_dir) -> list:
  """What each process of a JOIN run saw, by process index."""
  return [tuple(json.loads(p.read_text())) for p in sorted(out_dir.iterdir())]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _executable(path, text: str) -> str:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


# --------------------------------------------------------------------------
# launch.common.distributed_args / init_distributed
# --------------------------------------------------------------------------


def test_distributed_args_from_the_environment():
  assert common.distributed_args({}) is None
  assert common.distributed_args({"JAXRL_POST_DISTRIBUTED": "auto"}) == {}
  assert common.distributed_args({"JAXRL_POST_DISTRIBUTED": " AUTO "}) == {}
  assert common.distributed_args({
      "JAXRL_POST_COORDINATOR": "10.0.0.1:1234", "JAXRL_POST_NUM_PROCESSES": "4",
      "JAXRL_POST_PROCESS_ID": "3"}) == {
          "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}


@pytest.mark.parametrize("env, message", [
    ({"JAXRL_POST_DISTRIBUTED": "yes"}, "expected 'auto'"),
    ({"JAXRL_POST_DISTRIBUTED": "auto", "JAXRL_POST_COORDINATOR": "h:1",
      "JAXRL_POST_NUM_PROCESSES": "2", "JAXRL_POST_PROCESS_ID": "0"}, "both set"),
    ({"JAXRL_POST_COORDINATOR": "h:1", "JAXRL_POST_NUM_PROCESSES": "2"},
     "$JAXRL_POST_PROCESS_ID must be a non-negative integer"),
    ({"JAXRL_POST_COORDINATOR": "h:1", "JAXRL_POST_NUM_PROCESSES": "two",
      "JAXRL_POST_PROCESS_ID": "0"}, "$JAXRL_POST_NUM_PROCESSES must be"),
    ({"JAXRL_POST_COORDINATOR": "h:1", "JAXRL_POST_NUM_PROCESSES": "2",
      "JAXRL_POST_PROCESS_ID": "2"}, "0 <= process id < number of processes"),
    ({"JAXRL_POST_COORDINATOR": "host-without-port", "JAXRL_POST_NUM_PROCESSES": "2",
      "JAXRL_POST_PROCESS_ID": "0"}, "expected host:port"),
    ({"JAXRL_POST_PROCESS_ID": "1"}, "$JAXRL_POST_COORDINATOR (host:port) is not"),
])
def test_bad_distributed_settings_name_the_variable(env, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    common.distributed_args(env)
  with pytest.raises(app.UsageError):  # what a launch tool reports, before any jax call
    common.init_distributed(env)


def test_auto_without_a_cluster_is_a_clear_error():
  # A subprocess: jax.distributed must be set up before jax computes anything.
  env = {k: v for k, v in _env.subprocess_env().items() if not k.startswith("SLURM_")}
  env["JAXRL_POST_DISTRIBUTED"] = "auto"
  r = subprocess.run([sys.executable, "-c", "from launch import common; common.init_runtime()"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "JAXRL_POST_DISTRIBUTED=auto, but jax detected no cluster" in r.stderr, r.stderr[-2000:]


# --------------------------------------------------------------------------
# launch/slurm.sbatch
# --------------------------------------------------------------------------

# Stand-in for `srun` inside an sbatch job on one node: starts $SLURM_NTASKS
# tasks with the per-task variables Slurm sets, records its own options, and
# exits with the first failing task's status (as --kill-on-bad-exit would).
FAKE_SRUN = textwrap.dedent("""\
    #!{python}
    import json, os, subprocess, sys
    args = sys.argv[1:]
    n_options = next(i for i, a in enumerate(args) if not a.startswith("--"))
    options, command = args[:n_options], args[n_options:]
    with open(os.environ["FAKE_SRUN_LOG"], "w") as f:
      json.dump({{"options": options, "command": command, "cwd": os.getcwd()}}, f)
    n = int(os.environ["SLURM_NTASKS"])
    tasks = [subprocess.Popen(command, env=dict(
        os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_STEP_NODELIST="localhost",
        SLURM_STEP_NUM_NODES="1")) for i in range(n)]
    codes = [t.wait() for t in tasks]
    sys.exit(next((c for c in codes if c), 0))
    """)


def _slurm_env(tmp_path, tasks: int) -> dict:
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  _executable(bin_dir / "srun", FAKE_SRUN.format(python=sys.executable))
  env = {k: v for k, v in _env.subprocess_env(2).items() if not k.startswith("SLURM_")}
  env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_ID="4242", SLURM_NTASKS=str(tasks),
             SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=ROOT,
             JAX_COORDINATOR_PORT=str(_free_port()), FAKE_SRUN_LOG=str(tmp_path / "srun.json"))
  return env


def test_slurm_tasks_join_one_cluster(tmp_path):
  env = _slurm_env(tmp_path, tasks=2)
  (tmp_path / "out").mkdir()
  r = subprocess.run(["bash", SLURM, sys.executable, "-c", JOIN, "an arg", "--flag=1"],
                     cwd=tmp_path, env=dict(env, JOIN_OUT=str(tmp_path / "out")),
                     capture_output=True, text=True, timeout=180)
  assert r.returncode == 0, r.stderr[-3000:]
  # Two tasks of 2 CPU devices each, one 4-device cluster that all-gathers [0, 1].
  assert _joined(tmp_path / "out") == [(i, 2, 4, [0, 1], ["an arg", "--flag=1"])
                                       for i in range(2)]
  srun = json.loads((tmp_path / "srun.json").read_text())
  assert srun["options"] == ["--kill-on-bad-exit=1"]
  assert srun["cwd"] == ROOT  # the submit directory, wherever sbatch started the script
  assert "job 4242, 2 tasks on localhost" in r.stderr


def test_slurm_script_bad_usage(tmp_path):
  env = _slurm_env(tmp_path, tasks=1)
  r = subprocess.run(["bash", SLURM], env=env, capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and "no command to run" in r.stderr
  del env["SLURM_JOB_ID"]
  r = subprocess.run(["bash", SLURM, "true"], env=env, capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and "not inside a Slurm job" in r.stderr


def test_slurm_task_failure_is_the_job_status(tmp_path):
  env = _slurm_env(tmp_path, tasks=2)
  r = subprocess.run(["bash", SLURM, sys.executable, "-c", "import sys; sys.exit(5)"],
                     env=env, capture_output=True, text=True, timeout=60)
  assert r.returncode == 5


# --------------------------------------------------------------------------
# launch/tpu_pod.sh
# --------------------------------------------------------------------------

# Stand-in for `gcloud`: appends its arguments to $FAKE_GCLOUD_LOG (one JSON
# list per call). `scp SRC TPU:DEST` copies SRC to $FAKE_HOME/DEST. `ssh
# --worker=all --command=C` runs C for $FAKE_WORKERS workers at once in
# $FAKE_HOME (when $FAKE_GCLOUD_EXEC=1), each with the variables jax's cluster
# detection reads (here Slurm's; a TPU VM's metadata server on Google Cloud).
FAKE_GCLOUD = textwrap.dedent("""\
    #!{python}
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
      f.write(json.dumps(args) + "\\n")
    home = os.environ["FAKE_HOME"]
    if args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
      src, dst = args[4], args[5].split(":", 1)[1]
      shutil.copy(src, os.path.join(home, dst))
    elif (args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]
          and os.environ.get("FAKE_GCLOUD_EXEC") == "1"):
      command = next(a.split("=", 1)[1] for a in args if a.startswith("--command="))
      n = int(os.environ["FAKE_WORKERS"])
      workers = [subprocess.Popen(["bash", "-c", command], cwd=home, env=dict(
          os.environ, SLURM_JOB_ID="1", SLURM_NTASKS=str(n), SLURM_PROCID=str(i),
          SLURM_LOCALID=str(i), SLURM_STEP_NODELIST="localhost")) for i in range(n)]
      sys.exit(next((c for c in [w.wait() for w in workers] if c), 0))
    """)


def _gcloud_env(tmp_path, execute: bool) -> dict:
  home = tmp_path / "home"
  home.mkdir(exist_ok=True)
  fake = _executable(tmp_path / "gcloud", FAKE_GCLOUD.format(python=sys.executable))
  env = {k: v for k, v in _env.subprocess_env(1).items() if not k.startswith("SLURM_")}
  env.update(GCLOUD=fake, FAKE_GCLOUD_LOG=str(tmp_path / "gcloud.jsonl"), FAKE_HOME=str(home),
             FAKE_WORKERS="2", FAKE_GCLOUD_EXEC="1" if execute else "0",
             JAX_COORDINATOR_PORT=str(_free_port()))
  return env


def _gcloud_calls(tmp_path) -> list[list[str]]:
  return [json.loads(l) for l in (tmp_path / "gcloud.jsonl").read_text().splitlines()]


def test_tpu_pod_run_starts_every_worker_in_one_cluster(tmp_path):
  env = _gcloud_env(tmp_path, execute=True)
  os.symlink(ROOT, tmp_path / "home" / "jaxrl_post")  # as `setup` leaves it
  odd = "it's \"quoted\" $HOME"  # one word on the worker, unexpanded
  (tmp_path / "out").mkdir()
  r = subprocess.run(["bash", TPU_POD, "-t", "my-pod", "-z", "us-west4-a", "-P", "proj", "run",
                      "--", sys.executable, "-c", JOIN, odd],
                     env=dict(env, JOIN_OUT=str(tmp_path / "out")), capture_output=True,
                     text=True, timeout=180)
  assert r.returncode == 0, r.stderr[-3000:]
  assert _joined(tmp_path / "out") == [(i, 2, 2, [0, 1], [odd]) for i in range(2)]
  (call,) = _gcloud_calls(tmp_path)
  assert call[:6] == ["compute", "tpus", "tpu-vm", "ssh", "my-pod", "--zone=us-west4-a"]
  assert "--project=proj" in call and "--worker=all" in call
  command = next(a for a in call if a.startswith("--command="))
  assert command.startswith("--command=cd jaxrl_post && JAXRL_POST_DISTRIBUTED=auto exec ")


def test_tpu_pod_run_failure_is_the_status(tmp_path):
  env = _gcloud_env(tmp_path, execute=True)
  os.symlink(ROOT, tmp_path / "home" / "jaxrl_post")
  r = subprocess.run(["bash", TPU_POD, "-t", "p", "-z", "z", "run", "--", "bash", "-c", "exit 7"],
                     env=env, capture_output=True, text=True, timeout=60)
  assert r.returncode == 7


def test_tpu_pod_setup_ships_the_tree_and_installs_jax_tpu(tmp_path):
  env = _gcloud_env(tmp_path, execute=False)
  r = subprocess.run(["bash", TPU_POD, "-t", "my-pod", "-z", "europe-west4-b", "-r", "jp",
                      "setup"], env=dict(env, PYTHON="python3.11"),
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  scp, ssh = _gcloud_calls(tmp_path)
  assert scp[:6] == ["compute", "tpus", "tpu-vm", "scp", scp[4], "my-pod:jaxrl_post.tar.gz"]
  assert "--zone=europe-west4-b" in scp and "--worker=all" in scp
  with tarfile.open(tmp_path / "home" / "jaxrl_post.tar.gz") as tar:
    names = set(tar.getnames())
  assert {"./launch/setup.sh", "./jaxrl_post/__init__.py", "./pyproject.toml"} <= names
  assert not any(n.startswith(("./.venv", "./.git/", "./runs/", "./.hypothesis"))
                 or "__pycache__" in n or ".egg-info" in n for n in names)
  assert not os.path.exists(os.path.dirname(scp[4]))  # the local archive is removed
  command = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
  assert "tar -C jp -xzf jaxrl_post.tar.gz" in command
  assert command.endswith("cd jp && PYTHON=python3.11 JAX_EXTRA=tpu bash launch/setup.sh")


@pytest.mark.parametrize("args, message", [
    (["run", "--", "true"], "-t TPU"),
    (["-t", "p", "run", "--", "true"], "-z ZONE is required"),
    (["-t", "p", "-z", "z"], "no action"),
    (["-t", "p", "-z", "z", "run"], "run needs a command"),
    (["-t", "p", "-z", "z", "deploy"], "unknown option 'deploy'"),
    (["-t", "p", "-z", "z", "-r", "a b", "setup"], "-r must be a plain directory name"),
])
def test_tpu_pod_bad_usage(tmp_path, args, message):
  env = _gcloud_env(tmp_path, execute=False)
  r = subprocess.run(["bash", TPU_POD, *args], env=env, capture_output=True, text=True,
                     timeout=30)
  assert r.returncode == 2 and message in r.stderr, r.stderr
  assert not (tmp_path / "gcloud.jsonl").exists()  # nothing ran on the pod
