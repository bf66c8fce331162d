#!/usr/bin/env bash
# pgbench through pgwarden's proxy and through PgBouncer against the same PostgreSQL, A B A B; then idle-connection memory.
#
# usage: bench/pooler.sh [-T SECONDS] [-c "8 64 256 1000"] [-r ROUNDS] [-p POOL_SIZE]
#                        [-s SCALE] [-w WORKERS] [-i IDLE_CLIENTS] [-b "select-only tpcb-like"] [-F]
#   -T  seconds per pgbench run (cell)                      default 10
#   -c  client counts                                       default "8 64 256 1000"
#   -r  rounds: each round runs pgwarden then PgBouncer     default 2 (A B A B)
#   -p  server pool size of both poolers                    default 20
#   -s  pgbench scale                                       default 10
#   -w  pgwarden proxy worker threads (0: one per core)     default 0
#   -i  idle client connections for the memory measure     default 10000 (0: skip)
#   -b  pgbench built-in scripts                            default "select-only tpcb-like"
#   -F  also measure the floor: bench/relay_floor.cpp, a relay that only copies
#       bytes (one server connection per client, no pooling), in the cells where
#       PostgreSQL has a connection for each of its clients besides the poolers'
#
# Both poolers: transaction pooling, the same pool size, scram-sha-256 with the
# same userlist (the role's SCRAM secret), max_client_conn 20000. PostgreSQL:
# a one-node cluster from `pgwarden up` in a fresh temp dir. Everything this
# script starts is stopped by PID on exit.
#
# Per cell: TPS (pgbench, without connection time), mean latency (pgbench),
# p99 latency (pgbench --log per-transaction latencies), and the pooler's
# CPU time (utime+stime from /proc/PID/stat, all threads) per transaction.
# Needs: pgbench, pgbouncer (Debian), python3 with psycopg2 for the idle test.
set -euo pipefail

secs=10 clients="8 64 256 1000" rounds=2 pool=20 scale=10 workers=0 idle=10000 floor=0
scripts="select-only tpcb-like"
while getopts "T:c:r:p:s:w:i:b:Fh" opt; do
  case $opt in
    T) secs=$OPTARG ;; c) clients=$OPTARG ;; r) rounds=$OPTARG ;; p) pool=$OPTARG ;;
    s) scale=$OPTARG ;; w) workers=$OPTARG ;; i) idle=$OPTARG ;; b) scripts=$OPTARG ;;
    F) floor=1 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PGWARDEN:-$root/build/pgwarden}
[[ -x $bin ]] || { echo "pooler.sh: no pgwarden at $bin (make build, or PGWARDEN=path)" >&2; exit 2; }
for tool in pgbench pgbouncer psql; do
  command -v "$tool" >/dev/null || { echo "pooler.sh: $tool is missing (make deps)" >&2; exit 2; }
done
python=""
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import psycopg2' 2>/dev/null; then python=$p; break; fi
done

# Many sockets: raise our soft limit to the hard one; children inherit it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

base=$(mktemp -d /tmp/pgw-bench-pooler.XXXXXX)
chmod 755 "$base"
pids=()  # what we started, stopped by PID on exit
cleanup() {
  set +e
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  [[ -f $base/cluster/cluster.yml ]] && "$bin" down --dir "$base/cluster" >/dev/null 2>&1
  rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}
[[ -n $python ]] || python=python3

# --- PostgreSQL --------------------------------------------------------------------
echo "pooler bench: $(nproc) cores, ${secs}s per cell, clients: $clients, rounds: $rounds, pool $pool, scale $scale"
"$bin" up --nodes 1 --dir "$base/cluster" >"$base/up.log" 2>&1 || { cat "$base/up.log"; exit 1; }
su_dsn=$("$bin" dsn --dir "$base/cluster" --role primary)
pg_port=$(echo "$su_dsn" | sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|')
psql "$su_dsn" -qAt -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE bench LOGIN PASSWORD 'bench-pw'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
secret=$(psql "$su_dsn" -qAt -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
direct="host=127.0.0.1 port=$pg_port user=bench password=bench-pw dbname=bench"
echo "pgbench -i -s $scale ..."
pgbench -i -q -s "$scale" "$direct" >"$base/init.log" 2>&1 || { cat "$base/init.log"; exit 1; }
max_conn=$(psql "$su_dsn" -qAt -c "SHOW max_connections")
echo "PostgreSQL 127.0.0.1:$pg_port (max_connections $max_conn)"

mkdir -p "$base/pgw" "$base/pgb" "$base/logs"
printf '"bench" "%s"\n' "$secret" >"$base/userlist.txt"

# --- pgwarden proxy ---------------------------------------------------------------
pgw_port=$(free_port)
cat >"$base/pgw/proxy.yml" <<EOF
scope: pooler-bench
log:
  level: warning
proxy:
  listen: 127.0.0.1:$pgw_port
  workers: $workers
  pool_mode: transaction
  default_pool_size: $pool
  max_client_conn: 20000
  auth_type: scram-sha-256
  auth_file: $base/userlist.txt
  databases:
    bench: {host: 127.0.0.1, port: $pg_port}
EOF
"$bin" proxy -c "$base/pgw/proxy.yml" >"$base/pgw/proxy.log" 2>&1 &
pgw_pid=$!
pids+=("$pgw_pid")

# --- PgBouncer (refuses to run as root: -u postgres) ----------------------------------
pgb_port=$(free_port)
cat >"$base/pgb/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $base/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 20000
logfile = $base/pgb/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
pgb_user=()
if [[ $(id -u) -eq 0 ]]; then
  chown -R postgres "$base/pgb"
  chown postgres "$base/userlist.txt"
  pgb_user=(-u postgres)
fi
pgbouncer "${pgb_user[@]}" "$base/pgb/pgbouncer.ini" >>"$base/pgb/stdout.log" 2>&1 &
pgb_pid=$!
pids+=("$pgb_pid")

wait_ready() {  # port
  for _ in $(seq 100); do
    psql "host=127.0.0.1 port=$1 user=bench password=bench-pw dbname=bench" -qAt -c "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "pooler on port $1 does not answer" >&2
  cat "$base/pgw/proxy.log" "$base/pgb/pgbouncer.log" >&2 2>/dev/null
  exit 1
}
# --- The floor: a relay that only copies bytes (-F) -----------------------------------
relay_port= relay_pid=
if ((floor)); then
  g++ -O2 -std=c++20 -pthread "$root/bench/relay_floor.cpp" -o "$base/relay_floor"
  relay_port=$(free_port)
  "$base/relay_floor" "$relay_port" "$pg_port" 1 >"$base/relay.log" 2>&1 &
  relay_pid=$!
  pids+=("$relay_pid")
fi

wait_ready "$pgw_port"
wait_ready "$pgb_port"
[[ -n $relay_port ]] && wait_ready "$relay_port"
# Warm-up, not measured: pools filled, first logins and allocations done.
for port in $pgw_port $pgb_port; do
  pgbench -n -b select-only -c 8 -j 2 -T 2 "host=127.0.0.1 port=$port user=bench password=bench-pw dbname=bench" \
    >/dev/null 2>&1 || true
done
echo "pgwarden proxy pid $pgw_pid on $pgw_port ($workers workers; 0 = one per core), pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}') pid $pgb_pid on $pgb_port"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
tck=$(getconf CLK_TCK)
nproc=$(nproc)

# --- pgbench cells ----------------------------------------------------------------
results=$base/results.txt  # script clients pooler round tps mean_ms p99_ms cpu_us_per_tx failed
: >"$results"
printf '\n%-12s %7s %-9s %5s %10s %9s %9s %11s %6s\n' script clients pooler round tps "mean ms" "p99 ms" "cpu us/tx" failed
run_cell() {  # script clients pooler round
  local script=$1 c=$2 name=$3 round=$4 port pid
  case $name in
    pgwarden) port=$pgw_port pid=$pgw_pid ;;
    pgbouncer) port=$pgb_port pid=$pgb_pid ;;
    *) port=$relay_port pid=$relay_pid ;;
  esac
  local j=$((c < nproc ? c : nproc))
  local prefix=$base/logs/$script-$c-$name-$round
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(cd "$base/logs" && pgbench -n -b "$script" -c "$c" -j "$j" -T "$secs" -M simple \
    --log --log-prefix="$prefix" \
    "host=127.0.0.1 port=$port user=bench password=bench-pw dbname=bench" 2>&1) || true
  after=$(cpu_ticks "$pid")
  local tps mean txs failed p99
  tps=$(echo "$out" | awk '/^tps = / {print $3; exit}')
  mean=$(echo "$out" | awk '/^latency average = / {print $4; exit}')
  txs=$(echo "$out" | awk -F': ' '/^number of transactions actually processed/ {print $2+0; exit}')
  failed=$(echo "$out" | awk '/^number of failed transactions/ {print $5; exit}')
  # Per-transaction latencies (3rd field, microseconds) of every thread's log.
  p99=$(cat "$prefix".* 2>/dev/null | awk '{print $3}' | sort -n |
    awk '{a[NR]=$1} END {if (NR == 0) {print "-"; exit} i=int(NR*0.99); if (i < 1) i=1; printf "%.3f", a[i]/1000}')
  rm -f "$prefix".*
  if [[ -z $tps || -z $txs || $txs -eq 0 ]]; then
    echo "pgbench failed ($name, $script, $c clients):" >&2
    echo "$out" | tail -5 >&2
    tps=0 mean=0 txs=0 failed=${failed:-?}
  fi
  local cpu_us
  cpu_us=$(awk -v d=$((after - before)) -v t="$tck" -v n="$txs" 'BEGIN {if (n > 0) printf "%.2f", d / t * 1e6 / n; else print "-"}')
  printf '%-12s %7s %-9s %5s %10.1f %9s %9s %11s %6s\n' "$script" "$c" "$name" "$round" "$tps" "$mean" "$p99" "$cpu_us" "${failed:-?}"
  echo "$script $c $name $round $tps $mean $p99 $cpu_us ${failed:-?}" >>"$results"
}
for script in $scripts; do
  for c in $clients; do
    for round in $(seq 1 "$rounds"); do
      run_cell "$script" "$c" pgwarden "$round"
      run_cell "$script" "$c" pgbouncer "$round"
      if ((floor)) && ((c + 2 * pool + 3 <= max_conn)); then run_cell "$script" "$c" floor "$round"; fi
    done
  done
done

echo
echo "ratios pgwarden / PgBouncer (means over rounds; TPS > 1 is better, latency and CPU < 1 are better):"
printf '%-12s %7s %10s %10s %10s %10s\n' script clients tps "mean lat" "p99 lat" "cpu/tx"
awk '
  { k = $1 " " $2; n[k, $3]++; tps[k, $3] += $5; mean[k, $3] += $6; p99[k, $3] += $7; cpu[k, $3] += $8
    if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
  function r(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
  END {
    for (i = 1; i <= m; i++) {
      k = order[i]; split(k, f, " "); w = n[k, "pgwarden"]; b = n[k, "pgbouncer"]
      printf "%-12s %7s %10s %10s %10s %10s\n", f[1], f[2],
        r(tps[k, "pgwarden"] / w, tps[k, "pgbouncer"] / b), r(mean[k, "pgwarden"] / w, mean[k, "pgbouncer"] / b),
        r(p99[k, "pgwarden"] / w, p99[k, "pgbouncer"] / b), r(cpu[k, "pgwarden"] / w, cpu[k, "pgbouncer"] / b)
    }
  }' "$results"
if ((floor)); then
  echo
  echo "the floor (a relay that only copies bytes) / PgBouncer, CPU per transaction:"
  printf '%-12s %7s %10s\n' script clients "cpu/tx"
  awk '
    { k = $1 " " $2; n[k, $3]++; cpu[k, $3] += $8; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
    END {
      for (i = 1; i <= m; i++) {
        k = order[i]; split(k, f, " ")
        if (n[k, "floor"] > 0)
          printf "%-12s %7s %10.2f\n", f[1], f[2], (cpu[k, "floor"] / n[k, "floor"]) / (cpu[k, "pgbouncer"] / n[k, "pgbouncer"])
      }
    }' "$results"
fi

# --- Idle connections: memory --------------------------------------------------------
if ((idle > 0)); then
  if [[ -z $python ]] || ! "$python" -c 'import psycopg2' 2>/dev/null; then
    echo; echo "idle connections: skipped (no python3 with psycopg2: apt-get install python3-psycopg2)"
    exit 0
  fi
  cat >"$base/idle.py" <<'EOF'
# Opens N logged-in connections (non-blocking libpq via psycopg2), reports, then idles until killed.
import selectors, sys, time
import psycopg2
import psycopg2.extensions as ext

dsn, n = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
conns, started, ok, failed, first_error = [], 0, 0, 0, ""
in_flight = 0
deadline = time.time() + 300


def step(c):
    global ok, failed, in_flight, first_error
    try:
        state = c.poll()
    except psycopg2.Error as e:
        failed += 1
        in_flight -= 1
        first_error = first_error or str(e).strip()
        sel.unregister(c)
        return
    if state == ext.POLL_OK:
        ok += 1
        in_flight -= 1
        sel.unregister(c)
    elif state == ext.POLL_READ:
        sel.modify(c, selectors.EVENT_READ)
    elif state == ext.POLL_WRITE:
        sel.modify(c, selectors.EVENT_WRITE)


while ok + failed < n and time.time() < deadline:
    while started < n and in_flight < 200:
        c = psycopg2.connect(dsn, async_=1)
        conns.append(c)
        started += 1
        in_flight += 1
        sel.register(c, selectors.EVENT_WRITE)
    for key, _ in sel.select(timeout=1):
        step(key.fileobj)
print(f"connected {ok} failed {failed} {first_error}", flush=True)
while True:
    time.sleep(3600)
EOF
  echo
  echo "idle client connections: $idle logged-in clients held open, RSS from /proc/PID/status:"
  printf '%-10s %12s %12s %12s %14s\n' pooler "RSS before" "RSS after" "connected" "bytes/conn"
  for name in pgwarden pgbouncer; do
    if [[ $name == pgwarden ]]; then port=$pgw_port pid=$pgw_pid; else port=$pgb_port pid=$pgb_pid; fi
    before=$(rss_kb "$pid")
    "$python" "$base/idle.py" "host=127.0.0.1 port=$port user=bench password=bench-pw dbname=bench" "$idle" \
      >"$base/idle-$name.log" 2>&1 &
    idle_pid=$!
    pids+=("$idle_pid")
    for _ in $(seq 3000); do
      grep -q '^connected' "$base/idle-$name.log" 2>/dev/null && break
      kill -0 "$idle_pid" 2>/dev/null || break
      sleep 0.1
    done
    sleep 2  # let buffers settle
    after=$(rss_kb "$pid")
    got=$(awk '/^connected/ {print $2}' "$base/idle-$name.log")
    got=${got:-0}
    printf '%-10s %9s kB %9s kB %12s %14s\n' "$name" "$before" "$after" "$got" \
      "$(awk -v a="$after" -v b="$before" -v n="$got" 'BEGIN {if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-"}')"
    grep -q ' failed 0 ' "$base/idle-$name.log" || sed 's/^/    /' "$base/idle-$name.log" | head -3
    kill "$idle_pid" 2>/dev/null || true
    wait "$idle_pid" 2>/dev/null || true
    sleep 1
  done
fi
