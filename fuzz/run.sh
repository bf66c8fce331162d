#!/usr/bin/env bash
# Builds a libFuzzer target and fuzzes a copy of its seed corpus for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET]   (default 30 s, target pgwire)
#   pgwire  src/pgwire: framing, startup packets, error fields, SCRAM, secrets, auth_file
#           (fuzz/pgwire_fuzz.cpp, seeds in fuzz/corpus)
#   sql     src/sql: the prefilter never waves through SQL in which the parser finds
#           session effects (fuzz/sql_fuzz.cpp, seeds in fuzz/corpus-sql)
#   proxy   the proxy's client session state machine in an in-process proxy in front of
#           a real PostgreSQL, which this script starts with `pgwarden up --nodes 1` and
#           stops again (fuzz/proxy_fuzz.cpp, seeds in fuzz/corpus-proxy)
# Exits non-zero when libFuzzer finds a crash, a timeout or a leak, and prints
# the reproducer (path and hex); re-run it with: build/fuzz/<target>_fuzz <file>.
# Environment: FUZZ_BUILD_DIR (default <repo>/build/fuzz), FUZZ_CXX (default clang++),
# PGWARDEN (the binary that starts PostgreSQL for the proxy target; default
# <repo>/build/pgwarden). Network: 127.0.0.1 only; nothing is left running.
set -euo pipefail

seconds=${1:-30}
target=${2:-pgwire}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)) ||
  [[ $target != pgwire && $target != proxy && $target != sql ]]; then
  echo "usage: $0 [SECONDS] [pgwire|sql|proxy]" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
cxx=${FUZZ_CXX:-clang++}
bin=$build/${target}_fuzz
objdir=$build/obj-$target
mkdir -p "$build" "$objdir"

# The library sources the target links (never the unit tests).
if [[ $target == pgwire ]]; then
  dirs=(pgwire)
  extra=("$root/src/common/status.cpp")
  libs=(-lcrypto)
  corpus=$root/fuzz/corpus
  dict=(-dict="$root/fuzz/pgwire.dict")
  per_input_timeout=5
elif [[ $target == sql ]]; then
  dirs=(sql)
  extra=()
  libs=(-lpg_query)
  corpus=$root/fuzz/corpus-sql
  dict=(-dict="$root/fuzz/sql.dict")
  per_input_timeout=5
else
  dirs=(common config net pg pgwire sql proxy)
  extra=()
  libs=(-lpq -lpg_query -lyaml-cpp -lssl -lcrypto -lpthread)
  corpus=$root/fuzz/corpus-proxy
  dict=(-dict="$root/fuzz/proxy.dict")
  per_input_timeout=30
fi
sources=()
for d in "${dirs[@]}"; do
  for f in "$root"/src/"$d"/*.cpp; do
    [[ "$f" == *_test.cpp ]] || sources+=("$f")
  done
done
sources+=("${extra[@]}" "$root/fuzz/${target}_fuzz.cpp")

# -fno-sanitize-recover: undefined behaviour stops the run like a crash does.
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
  -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter -I "$root/src"
  -I "$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)"
  -DPGWARDEN_VERSION=\"fuzz\")
# One object per source, rebuilt when older than the source, any header of
# src/, or this script; two compilers at a time (the machine has two cores).
newest_header=$(find "$root/src" -name '*.h' -printf '%T@ %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
stale=()
for f in "${sources[@]}"; do
  o=$objdir/$(basename "$(dirname "$f")")_$(basename "${f%.cpp}").o
  if [[ ! -f $o || $f -nt $o || $newest_header -nt $o || ${BASH_SOURCE[0]} -nt $o ]]; then
    stale+=("$f")
  fi
done
if ((${#stale[@]} > 0)); then
  echo "fuzz: compiling ${#stale[@]} source(s) for $bin"
  export cxx objdir
  printf '%s\n' "${stale[@]}" | xargs -P 2 -I{} bash -c '
    f={}; o=$objdir/$(basename "$(dirname "$f")")_$(basename "${f%.cpp}").o
    "$cxx" "$@" -c "$f" -o "$o.tmp.$$" && mv -f "$o.tmp.$$" "$o"' _ "${flags[@]}"
fi
objs=()
for f in "${sources[@]}"; do objs+=("$objdir/$(basename "$(dirname "$f")")_$(basename "${f%.cpp}").o"); done
relink=0
[[ -x $bin ]] || relink=1
for o in "${objs[@]}"; do [[ $o -nt $bin ]] && relink=1; done
if ((relink)); then
  "$cxx" -fsanitize=fuzzer,address,undefined "${objs[@]}" "${libs[@]}" -o "$bin.tmp.$$"
  mv -f "$bin.tmp.$$" "$bin"
fi

# A fresh work directory per run: the corpus copy grows, the seeds stay as they are.
work=$(mktemp -d "$build/run.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
cp "$corpus"/* "$work/corpus/"
log=$work/fuzz.log

fuzzer_pid=
cluster=
pgwarden=${PGWARDEN:-$root/build/pgwarden}
cleanup() {
  if [[ -n "$fuzzer_pid" ]]; then kill "$fuzzer_pid" 2>/dev/null || true; fi
  if [[ -n "$cluster" ]]; then
    "$pgwarden" down --dir "$cluster/c" >/dev/null 2>&1 || true
    rm -rf "$cluster"
  fi
}
trap 'cleanup; rm -rf "$work"; exit 130' INT TERM
trap cleanup EXIT

if [[ $target == proxy ]]; then
  [[ -x $pgwarden ]] || { echo "fuzz: no pgwarden at $pgwarden (make build, or PGWARDEN=path)" >&2; exit 2; }
  # PostgreSQL runs as the postgres user, who must be able to enter the directory.
  cluster=$(mktemp -d /tmp/pgw-fuzz-cluster.XXXXXX)
  chmod 755 "$cluster"
  if ! "$pgwarden" up --nodes 1 --dir "$cluster/c" >"$cluster/up.log" 2>&1; then
    cat "$cluster/up.log" >&2
    exit 1
  fi
  dsn=$("$pgwarden" dsn --dir "$cluster/c" --role primary)
  # Whatever SQL the fuzzer makes up runs as a plain role with short timeouts.
  psql "$dsn" -qAt -v ON_ERROR_STOP=1 -c "CREATE ROLE fuzz LOGIN PASSWORD 'fuzz-pw'" \
    -c "ALTER ROLE fuzz SET statement_timeout = '2s'" -c "ALTER ROLE fuzz SET lock_timeout = '1s'" \
    -c "ALTER ROLE fuzz SET idle_in_transaction_session_timeout = '10s'" >/dev/null
  export PGW_FUZZ_PG_PORT PGW_FUZZ_PG_USER=fuzz PGW_FUZZ_PG_PASSWORD=fuzz-pw
  PGW_FUZZ_PG_PORT=$(echo "$dsn" | sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|')
  echo "fuzz: PostgreSQL on 127.0.0.1:$PGW_FUZZ_PG_PORT (role fuzz)"
fi

echo "fuzz: running $target for ${seconds}s on a copy of its corpus ($(ls "$work/corpus" | wc -l) seeds) in $work"
# -max_total_time bounds the run; `timeout` is the backstop if it hangs.
# ASAN_OPTIONS: no core files; leaks count as findings.
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:disable_coredump=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
  timeout --kill-after=10 $((seconds + 120)) \
  "$bin" -max_total_time="$seconds" -max_len=4096 -timeout="$per_input_timeout" -rss_limit_mb=2048 \
  "${dict[@]}" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
  "$work/corpus" >"$log" 2>&1 &
fuzzer_pid=$!
rc=0
wait "$fuzzer_pid" || rc=$?
fuzzer_pid=

# The last status line (executions, coverage, corpus, exec/s) and final stats.
grep -E '^#[0-9]+' "$log" | tail -n 1 || true
grep -E '^(Done|stat::)' "$log" || true

shopt -s nullglob
findings=("$work"/artifacts/*)
if ((rc != 0)) || ((${#findings[@]} > 0)); then
  echo "fuzz: FAILED (libFuzzer exit code $rc); log: $log"
  # The report: invariant message or sanitizer report with its stack.
  grep -n -m 1 -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|runtime error|invariant failed|proxy_fuzz:|ERROR: LeakSanitizer' "$log" || true
  sed -n '/==ERROR\|runtime error\|invariant failed\|proxy_fuzz:\|deadly signal\|ALARM/,$p' "$log" | head -n 80
  for f in "${findings[@]}"; do
    echo "fuzz: reproducer $f ($(stat -c %s "$f") bytes): $(od -An -tx1 -v "$f" | tr -d ' \n' | head -c 2000)"
  done
  exit 1
fi
rm -rf "$work"
echo "fuzz: OK, no crash in ${seconds}s"
