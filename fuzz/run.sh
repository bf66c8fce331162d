#!/usr/bin/env bash
# Builds the pgwire libFuzzer target and fuzzes a copy of fuzz/corpus for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS]   (default 30)
# Exits non-zero when libFuzzer finds a crash, a timeout or a leak, and prints
# the reproducer (path and hex); re-run it with: build/fuzz/pgwire_fuzz <file>.
# Environment: FUZZ_BUILD_DIR (default <repo>/build/fuzz), FUZZ_CXX (default clang++).
# No network; one compiler invocation; nothing is left running.
set -euo pipefail

seconds=${1:-30}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
cxx=${FUZZ_CXX:-clang++}
bin=$build/pgwire_fuzz
mkdir -p "$build"

# The library sources the target links: src/pgwire without its unit tests,
# and Status from src/common.
sources=()
for f in "$root"/src/pgwire/*.cpp; do
  [[ "$f" == *_test.cpp ]] || sources+=("$f")
done
sources+=("$root/src/common/status.cpp" "$root/fuzz/pgwire_fuzz.cpp")

# Rebuild when the binary is missing or older than a source, a header or this script.
stale=1
if [[ -x "$bin" ]]; then
  stale=$(find "$root/src/pgwire" "$root/src/common/status.h" "$root/src/common/status.cpp" \
    "$root/fuzz/pgwire_fuzz.cpp" "${BASH_SOURCE[0]}" -newer "$bin" -print -quit | wc -l)
fi
if ((stale)); then
  echo "fuzz: building $bin"
  # -fno-sanitize-recover: undefined behaviour stops the run like a crash does.
  "$cxx" -std=c++20 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wno-unused-parameter \
    -I "$root/src" "${sources[@]}" -lcrypto -o "$bin.tmp.$$"
  mv -f "$bin.tmp.$$" "$bin"
fi

# A fresh work directory per run: the corpus copy grows, the seeds stay as they are.
work=$(mktemp -d "$build/run.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
cp "$root"/fuzz/corpus/* "$work/corpus/"
log=$work/fuzz.log

echo "fuzz: running for ${seconds}s on a copy of fuzz/corpus ($(ls "$work/corpus" | wc -l) seeds) in $work"
fuzzer_pid=
cleanup() {
  if [[ -n "$fuzzer_pid" ]]; then kill "$fuzzer_pid" 2>/dev/null || true; fi
}
trap 'cleanup; rm -rf "$work"; exit 130' INT TERM
trap cleanup EXIT
# -max_total_time bounds the run; `timeout` is the backstop if it hangs.
# ASAN_OPTIONS: no core files; leaks count as findings.
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:disable_coredump=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
  timeout --kill-after=10 $((seconds + 120)) \
  "$bin" -max_total_time="$seconds" -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
  -dict="$root/fuzz/pgwire.dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
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
  grep -n -m 1 -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|runtime error|invariant failed|ERROR: LeakSanitizer' "$log" || true
  sed -n '/==ERROR\|runtime error\|invariant failed\|deadly signal\|ALARM/,$p' "$log" | head -n 80
  for f in "${findings[@]}"; do
    echo "fuzz: reproducer $f ($(stat -c %s "$f") bytes): $(od -An -tx1 -v "$f" | tr -d ' \n' | head -c 2000)"
  done
  exit 1
fi
rm -rf "$work"
echo "fuzz: OK, no crash in ${seconds}s"
