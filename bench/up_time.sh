#!/usr/bin/env bash
# Time from `pgwarden up` to a healthy cluster (1 primary + N-1 streaming
# replicas), and the idle CPU of each agent afterwards.
# usage: bench/up_time.sh [RUNS] [NODES] [IDLE_SECONDS]
set -euo pipefail
runs=${1:-5}
nodes=${2:-3}
idle=${3:-60}
bin=$(cd "$(dirname "$0")/.." && pwd)/build/pgwarden
[[ -x $bin ]] || { echo "build first: make build" >&2; exit 2; }
base=$(mktemp -d /tmp/pgwarden-bench.XXXXXX)
chmod 755 "$base"
cleanup() {
  for d in "$base"/run*; do [[ -f $d/cluster.yml ]] && "$bin" down --dir "$d" >/dev/null 2>&1 || true; done
  rm -rf "$base"
}
trap cleanup EXIT

echo "pgwarden up --nodes $nodes: $runs fresh clusters, one after another ($(nproc) cores)"
times=()
for i in $(seq 1 "$runs"); do
  d=$base/run$i
  start=$(date +%s.%N)
  "$bin" up --nodes "$nodes" --dir "$d" --timeout 120 >/dev/null
  end=$(date +%s.%N)
  t=$(echo "$end - $start" | bc)
  times+=("$t")
  printf '  run %d: %.2f s\n' "$i" "$t"
  if ((i < runs)); then "$bin" down --dir "$d" >/dev/null; fi
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f s, min %.2f s, max %.2f s\n", a[int((NR+1)/2)], a[1], a[NR]}'

d=$base/run$runs
sleep 5
tck=$(getconf CLK_TCK)
declare -A before
for n in $(ls "$d" | grep '^node'); do
  pid=$(cat "$d/$n/agent.pid")
  before[$n]=$(awk '{print $14+$15}' "/proc/$pid/stat")
done
sleep "$idle"
echo "idle CPU over ${idle} s (utime+stime from /proc/PID/stat):"
for n in $(ls "$d" | grep '^node'); do
  pid=$(cat "$d/$n/agent.pid")
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  echo "$n $((after - ${before[$n]})) $tck $idle" | awk '{printf "  %s agent: %.3f%% of one core\n", $1, ($2/$3)/$4*100}'
done
