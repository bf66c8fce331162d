#!/usr/bin/env bash
# Times what the proxy adds to every query string for isolation: the session-effect prefilter
# (sql::MayAffectSession), and the parser for the strings it flags.
#
# usage: bench/prefilter.sh [ITERATIONS]   (default 1000000)
# Prints nanoseconds per call for pgbench's statements (which the prefilter lets through
# without the parser) and for statements it flags (prefilter + libpg_query analysis).
set -euo pipefail
iterations=${1:-1000000}
[[ "$iterations" =~ ^[0-9]+$ ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgw-bench-prefilter.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/main.cpp" <<'CPP'
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include "sql/session_effects.h"
int main(int argc, char** argv) {
  long n = std::atol(argv[1]);
  const char* plain[] = {
      "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
      "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 55555;",
      "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 4444, 2333, "
      "CURRENT_TIMESTAMP);"};
  const char* flagged[] = {"SET search_path = app, public", "SELECT set_config('TimeZone', 'UTC', false)",
                           "RESET ALL"};
  long sink = 0;
  for (const char* q : plain) {
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) sink += pgwarden::sql::MayAffectSession(q);
    double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
    std::printf("prefilter only      %7.1f ns  %.60s\n", ns, q);
  }
  long m = n / 100 > 0 ? n / 100 : 1;
  for (const char* q : flagged) {
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < m; ++i)
      sink += pgwarden::sql::MayAffectSession(q) && pgwarden::sql::AnalyzeSessionEffects(q).any();
    double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / m;
    std::printf("prefilter + parser  %7.1f ns  %.60s\n", ns, q);
  }
  std::printf("(%ld)\n", sink);  // keeps the calls from being optimised away
  return 0;
}
CPP
g++ -O2 -std=c++20 -I"$root/src" "$work/main.cpp" "$root/src/sql/session_effects.cpp" -lpg_query \
  -o "$work/prefilter"
"$work/prefilter" "$iterations"
