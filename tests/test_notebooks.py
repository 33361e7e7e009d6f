"""The Colab tutorials in notebooks/ run, cell after cell, at toy sizes.

Each notebook's code cells are run in order as one script in a fresh process,
with what a Jupyter kernel provides: the working directory (the repository
root) on sys.path and a non-interactive matplotlib backend. The notebooks
read `JAXRL_POST_NOTEBOOK_SMOKE=1` (toy sizes: every cell runs, nothing is
expected to learn) and `JAXRL_POST_NOTEBOOK_DIR` (their run directory).
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
KERNEL_PREAMBLE = "import os, sys\nsys.path.insert(0, os.getcwd())\n"
# A line each notebook prints once its last step worked.
DONE = {"01_sft_grpo_spectral.ipynb": "rotation energy",
        "02_custom_reward.ipynb": "mean reward, first 5 steps"}


def code_cells(path: str) -> list[str]:
  """The source of every code cell, in order (nbformat 4)."""
  with open(path) as f:
    nb = json.load(f)
  assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
  cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
  assert cells, f"{path}: no code cells"
  return cells


def test_there_are_notebooks_and_they_are_clean():
  assert len(NOTEBOOKS) >= 2
  for path in NOTEBOOKS:
    with open(path) as f:
      nb = json.load(f)
    ids = [cell["id"] for cell in nb["cells"]]  # nbformat 4.5: unique cell ids
    assert nb["nbformat_minor"] >= 5 and len(set(ids)) == len(ids), path
    for cell in nb["cells"]:
      if cell["cell_type"] == "code":  # committed without outputs (diffs stay readable)
        assert cell["outputs"] == [] and cell["execution_count"] is None, path
    compile("\n\n".join(code_cells(path)), path, "exec")  # valid Python, no shell magics


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path):
  script = tmp_path / "notebook.py"
  script.write_text(KERNEL_PREAMBLE + "\n\n".join(code_cells(path)) + "\n")
  workdir = tmp_path / "run"
  env = dict(_env.subprocess_env(), JAXRL_POST_NOTEBOOK_SMOKE="1",
             JAXRL_POST_NOTEBOOK_DIR=str(workdir), MPLBACKEND="Agg")
  r = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
  assert "jaxrl_post from " + ROOT in r.stdout  # the set-up cell ran and stayed at the root
  assert DONE[os.path.basename(path)] in r.stdout
  assert list(workdir.glob("*.png")), "no figure saved"
  assert "Metadata file does not exist" not in r.stderr  # Orbax's noise is filtered
