#!/usr/bin/env bash
# Runs one command as N jax.distributed processes on this machine: a local cluster.
#
#   bash launch/local_cluster.sh [-n PROCESSES] [-d DEVICES] [-p PORT] [-l LOGDIR] -- CMD [ARG...]
#
#   bash launch/local_cluster.sh -n 2 -d 2 -- .venv/bin/python -m launch.train \
#       --config=configs/gp24_grpo.py:quick --workdir=runs/mp
#
# Process i runs CMD with JAXRL_POST_COORDINATOR=127.0.0.1:PORT, JAXRL_POST_NUM_PROCESSES=N and
# JAXRL_POST_PROCESS_ID=i, which `launch.common.init_runtime` turns into jax.distributed (every
# launch tool calls it), and with -d, XLA_FLAGS forcing DEVICES CPU devices per process.
# Process 0 writes to this terminal; process i > 0 to LOGDIR/process_<i>.log (LOGDIR: a new
# temporary directory unless given). If a process fails, the others are stopped (they would
# otherwise wait at their next collective until jax's timeout) and the script exits with the
# failing status, naming the process and its log. N: 2 unless given; PORT: a free one unless given.
set -uo pipefail

usage() {
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "local_cluster.sh: $1" >&2
  exit 2
}

procs=2
devices=""
port=""
logdir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) procs="${2:-}"; shift 2 || usage "-n needs a value" ;;
    -d) devices="${2:-}"; shift 2 || usage "-d needs a value" ;;
    -p) port="${2:-}"; shift 2 || usage "-p needs a value" ;;
    -l) logdir="${2:-}"; shift 2 || usage "-l needs a value" ;;
    --) shift; break ;;
    *) usage "unknown option '$1' (the command goes after --)" ;;
  esac
done
[[ $# -gt 0 ]] || usage "no command after --"
[[ "$procs" =~ ^[1-9][0-9]*$ ]] || usage "-n must be a positive integer, got '$procs'"
[[ -z "$devices" || "$devices" =~ ^[1-9][0-9]*$ ]] || \
  usage "-d must be a positive integer, got '$devices'"
[[ -z "$port" || "$port" =~ ^[1-9][0-9]*$ ]] || usage "-p must be a port number, got '$port'"

if [[ -z "$port" ]]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
    || usage "could not find a free port (give one with -p)"
fi
logdir="${logdir:-$(mktemp -d)}"
mkdir -p "$logdir" || usage "cannot create the log directory '$logdir'"

xla_flags="${XLA_FLAGS:-}"
if [[ -n "$devices" ]]; then  # replaces a device count already in $XLA_FLAGS
  kept=()
  for flag in $xla_flags; do
    [[ "$flag" == --xla_force_host_platform_device_count=* ]] || kept+=("$flag")
  done
  xla_flags="${kept[*]:-} --xla_force_host_platform_device_count=$devices"
fi

declare -A pid_of_proc=()
declare -A proc_of_pid=()
stop_all() {
  for pid in "${pid_of_proc[@]}"; do kill -TERM "$pid" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT TERM

run_process() {  # i CMD...: one process of the cluster (exec: its pid is the command's)
  local i="$1"
  shift
  exec env JAXRL_POST_COORDINATOR="127.0.0.1:$port" JAXRL_POST_NUM_PROCESSES="$procs" \
    JAXRL_POST_PROCESS_ID="$i" XLA_FLAGS="$xla_flags" "$@"
}

for ((i = 0; i < procs; i++)); do
  if ((i == 0)); then
    run_process "$i" "$@" &
  else
    run_process "$i" "$@" > "$logdir/process_$i.log" 2>&1 &
  fi
  pid_of_proc[$i]=$!
  proc_of_pid[$!]=$i
done
echo "local_cluster.sh: $procs processes on 127.0.0.1:$port; logs of processes 1.. in $logdir" >&2

remaining=$procs
while ((remaining > 0)); do
  wait -n -p done_pid "${pid_of_proc[@]}"
  status=$?
  [[ -n "${done_pid:-}" ]] || break
  i="${proc_of_pid[$done_pid]}"
  unset "pid_of_proc[$i]"
  remaining=$((remaining - 1))
  if ((status != 0)); then
    where="this terminal"
    ((i > 0)) && where="$logdir/process_$i.log"
    echo "local_cluster.sh: process $i exited with status $status (output: $where);" \
         "stopping the other $remaining" >&2
    stop_all
    wait 2>/dev/null
    exit "$status"
  fi
done
exit 0
