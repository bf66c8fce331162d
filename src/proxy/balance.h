// Where client sessions run: the pure policy that packs them onto few workers and spreads them when
// one is busy.
#pragma once

#include <vector>

namespace pgwarden::proxy {

// What the balancer knows of one worker.
struct WorkerLoad {
  double busy = 0;   // share of one core its thread used over the last interval
  int sessions = 0;  // client sessions it serves
};

// Move up to `count` idle sessions from worker `from` to worker `to`.
struct SessionMove {
  int from = 0;
  int to = 0;
  int count = 0;
  bool operator==(const SessionMove&) const = default;
};

// The balancer's decision for the next interval.
struct BalancePlan {
  int accept_to = -1;  // the worker new clients go to; -1: round robin
  std::vector<SessionMove> moves;
};

// Every thread that serves a transaction costs wake-ups and context switches,
// so sessions are packed onto as few workers as keep each below `threshold`
// (a share of one core):
//   - new clients go to the first worker below the threshold (else the least
//     busy one);
//   - a worker above it hands part of its sessions to the least busy worker
//     if that one is below half of it, in proportion to the difference;
//   - otherwise a worker whose load, added to a lower-numbered worker's, stays
//     below half the threshold hands all its sessions to that worker.
// The gap between "above the threshold" and "below half of it" keeps the two
// rules from undoing each other. At most one move per call. A threshold of 0
// turns balancing off: clients are dealt round robin and never move.
BalancePlan PlanBalance(const std::vector<WorkerLoad>& workers, double threshold);

}  // namespace pgwarden::proxy
