// The session balancing policy: pack onto few workers, spread from a busy one.
#include "proxy/balance.h"

#include <cmath>

namespace pgwarden::proxy {

BalancePlan PlanBalance(const std::vector<WorkerLoad>& workers, double threshold) {
  BalancePlan plan;
  const int n = static_cast<int>(workers.size());
  if (threshold <= 0 || n < 2) return plan;  // round robin (or nothing to choose)
  auto busy = [&](int i) { return workers[static_cast<size_t>(i)].busy; };
  auto sessions = [&](int i) { return workers[static_cast<size_t>(i)].sessions; };

  int least = 0;
  for (int i = 1; i < n; ++i) {
    if (busy(i) < busy(least)) least = i;
  }
  plan.accept_to = least;
  for (int i = 0; i < n; ++i) {
    if (busy(i) < threshold) {
      plan.accept_to = i;
      break;
    }
  }

  // Spread: the busiest worker over the threshold, to the least busy one.
  int busiest = -1;
  for (int i = 0; i < n; ++i) {
    if (busy(i) > threshold && sessions(i) > 1 && (busiest < 0 || busy(i) > busy(busiest)))
      busiest = i;
  }
  if (busiest >= 0 && busiest != least && busy(least) < threshold / 2) {
    double share = (busy(busiest) - busy(least)) / (2 * busy(busiest));
    int count = static_cast<int>(std::lround(sessions(busiest) * share));
    if (count < 1) count = 1;
    plan.moves.push_back({busiest, least, count});
    return plan;
  }
  if (busiest >= 0) return plan;  // busy everywhere: stay put

  // Pack: the highest-numbered worker with sessions onto the lowest one that
  // can take all of its load.
  for (int i = n - 1; i > 0; --i) {
    if (sessions(i) == 0) continue;
    for (int j = 0; j < i; ++j) {
      if (busy(j) + busy(i) < threshold / 2) {
        plan.moves.push_back({i, j, sessions(i)});
        return plan;
      }
    }
  }
  return plan;
}

}  // namespace pgwarden::proxy
