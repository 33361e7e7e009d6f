#!/usr/bin/env bash
# A Cloud TPU VM slice (a pod slice: several hosts) from your workstation, through gcloud.
#
#   bash launch/tpu_pod.sh -t TPU -z ZONE [-P PROJECT] [-r REMOTE_DIR] setup
#   bash launch/tpu_pod.sh -t TPU -z ZONE [-P PROJECT] [-r REMOTE_DIR] run -- CMD [ARG...]
#
#   bash launch/tpu_pod.sh -t my-v5e-32 -z us-west4-a setup
#   bash launch/tpu_pod.sh -t my-v5e-32 -z us-west4-a run -- .venv/bin/python -m launch.train \
#       --config=configs/gp24_sft.py --workdir=/mnt/shared/runs/gp24_sft
#
# setup: copies this working tree (without .venv, .git, runs/ and caches) to REMOTE_DIR (default
#   jaxrl_post, relative to the home directory) on every worker of the slice and runs
#   `JAX_EXTRA=tpu bash launch/setup.sh` there (jax[tpu] into REMOTE_DIR/.venv; jaxrl_post
#   needs Python >= 3.11: set $PYTHON, e.g. PYTHON=python3.11, if the image's python3 is older).
# run: runs CMD on every worker at once, in REMOTE_DIR, with JAXRL_POST_DISTRIBUTED=auto:
#   `launch.common.init_runtime` then calls jax.distributed.initialize(), which finds the
#   slice's hosts and this host's index from the TPU VM's metadata. The workdir must be a
#   directory every worker sees (a shared mount: Filestore NFS, or a bucket through gcsfuse;
#   the launch tools write local paths, not gs:// URLs): Orbax writes snapshots from every
#   process. Each argument of CMD reaches the workers as one word (shell-quoted).
# gcloud (or $GCLOUD) must be installed and logged in; its status is the script's.
set -euo pipefail

usage() {
  sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "tpu_pod.sh: $1" >&2
  exit 2
}

tpu=""
zone=""
project=""
remote_dir="jaxrl_post"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -t) tpu="${2:-}"; shift 2 || usage "-t needs a value" ;;
    -z) zone="${2:-}"; shift 2 || usage "-z needs a value" ;;
    -P) project="${2:-}"; shift 2 || usage "-P needs a value" ;;
    -r) remote_dir="${2:-}"; shift 2 || usage "-r needs a value" ;;
    setup|run) break ;;
    *) usage "unknown option '$1' (expected -t, -z, -P, -r, then setup or run)" ;;
  esac
done
[[ $# -gt 0 ]] || usage "no action (setup or run)"
action="$1"
shift
[[ -n "$tpu" ]] || usage "-t TPU (the TPU VM's name) is required"
[[ -n "$zone" ]] || usage "-z ZONE is required"
[[ -n "$remote_dir" && "$remote_dir" != *[[:space:]\'\"\$\`\\]* ]] || \
  usage "-r must be a plain directory name, got '$remote_dir'"
gcloud="${GCLOUD:-gcloud}"
command -v "$gcloud" >/dev/null || usage "'$gcloud' not found (install the Google Cloud SDK)"

where=(--zone="$zone")
if [[ -n "$project" ]]; then where+=(--project="$project"); fi

on_all_workers() {  # REMOTE_COMMAND: one shell command on every worker at once
  "$gcloud" compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all --command="$1"
}

case "$action" in
  setup)
    [[ $# -eq 0 ]] || usage "setup takes no arguments, got '$*'"
    python="${PYTHON:-python3}"
    [[ "$python" =~ ^[A-Za-z0-9._/+-]+$ ]] || \
      usage "\$PYTHON must be a plain command, got '$python'"
    root="$(cd "$(dirname "$0")/.." && pwd)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    archive="$tmp/jaxrl_post.tar.gz"
    tar -C "$root" --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./.hypothesis \
      --exclude='*.egg-info' --exclude=.pytest_cache --exclude=__pycache__ -czf "$archive" .
    "$gcloud" compute tpus tpu-vm scp "$archive" "$tpu:jaxrl_post.tar.gz" "${where[@]}" \
      --worker=all
    on_all_workers "mkdir -p $remote_dir && tar -C $remote_dir -xzf jaxrl_post.tar.gz && \
rm jaxrl_post.tar.gz && cd $remote_dir && PYTHON=$python JAX_EXTRA=tpu bash launch/setup.sh"
    ;;
  run)
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || usage "run needs a command after --"
    printf -v quoted '%q ' "$@"
    on_all_workers "cd $remote_dir && JAXRL_POST_DISTRIBUTED=auto exec $quoted"
    ;;
esac
