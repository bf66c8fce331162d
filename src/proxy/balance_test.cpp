// Table and property tests of the session balancing policy.
#include "proxy/balance.h"

#include <random>

#include <gtest/gtest.h>

namespace pgwarden::proxy {
namespace {

struct Case {
  const char* name;
  std::vector<WorkerLoad> workers;
  double threshold;
  int accept_to;
  std::vector<SessionMove> moves;
};

TEST(PlanBalanceTest, Table) {
  const Case cases[] = {
      {"off: round robin, no moves", {{0.9, 10}, {0.0, 0}}, 0.0, -1, {}},
      {"one worker: nothing to choose", {{0.9, 10}}, 0.75, -1, {}},
      {"quiet: everything on worker 0", {{0.0, 0}, {0.0, 0}}, 0.75, 0, {}},
      {"worker 0 has room: new clients go there", {{0.5, 40}, {0.0, 0}}, 0.75, 0, {}},
      {"worker 0 busy: new clients to worker 1", {{0.8, 40}, {0.5, 10}}, 0.75, 1, {}},
      {"worker 0 busy, worker 1 idle: half the difference moves",
       {{0.8, 40}, {0.0, 0}},
       0.75,
       1,
       {{0, 1, 20}}},
      {"proportional: 0.9 vs 0.3 moves a third", {{0.9, 30}, {0.3, 10}}, 0.75, 1, {{0, 1, 10}}},
      {"both busy: no move", {{0.9, 30}, {0.8, 30}}, 0.75, 1, {}},
      {"busy one, other not below half: no move", {{0.9, 30}, {0.5, 30}}, 0.75, 1, {}},
      {"a single session is not split", {{0.95, 1}, {0.0, 0}}, 0.75, 1, {}},
      {"light load on two workers: packed onto worker 0",
       {{0.1, 20}, {0.2, 30}},
       0.75,
       0,
       {{1, 0, 30}}},
      {"pack the highest worker first", {{0.0, 5}, {0.1, 5}, {0.1, 7}}, 0.75, 0, {{2, 0, 7}}},
      {"pack only when the sum stays below half", {{0.2, 20}, {0.2, 20}}, 0.75, 0, {}},
      {"pack onto a lower worker that has room",
       {{0.7, 20}, {0.1, 3}, {0.1, 4}},
       0.75,
       0,
       {{2, 1, 4}}},
      {"spread from the busiest to the least busy",
       {{0.8, 10}, {0.95, 20}, {0.1, 5}},
       0.75,
       2,
       {{1, 2, 9}}},
  };
  for (const auto& c : cases) {
    BalancePlan p = PlanBalance(c.workers, c.threshold);
    EXPECT_EQ(p.accept_to, c.accept_to) << c.name;
    EXPECT_EQ(p.moves, c.moves) << c.name;
  }
}

// Applying the plan's rules to random loads never moves sessions that do not
// exist, never moves to the same worker, and a spread never follows a pack in
// the same state (the two rules cannot both hold).
TEST(PlanBalanceTest, PropertiesOnRandomLoads) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> load(0.0, 1.2);
  std::uniform_int_distribution<int> count(0, 50), nworkers(1, 6);
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<WorkerLoad> w(static_cast<size_t>(nworkers(rng)));
    for (auto& x : w) x = {load(rng), count(rng)};
    double threshold = 0.75;
    BalancePlan p = PlanBalance(w, threshold);
    if (w.size() < 2) {
      EXPECT_EQ(p.accept_to, -1);
      EXPECT_TRUE(p.moves.empty());
      continue;
    }
    ASSERT_GE(p.accept_to, 0);
    ASSERT_LT(p.accept_to, static_cast<int>(w.size()));
    ASSERT_LE(p.moves.size(), 1u);
    for (const auto& m : p.moves) {
      ASSERT_NE(m.from, m.to);
      ASSERT_GE(m.count, 1);
      ASSERT_LE(m.count, w[static_cast<size_t>(m.from)].sessions);
      const auto& from = w[static_cast<size_t>(m.from)];
      const auto& to = w[static_cast<size_t>(m.to)];
      if (from.busy > threshold) {
        EXPECT_LT(to.busy, threshold / 2);  // spread: only to a quiet worker
      } else {
        EXPECT_LT(m.to, m.from);  // pack: only downwards, and only what fits
        EXPECT_LT(from.busy + to.busy, threshold / 2);
        EXPECT_EQ(m.count, from.sessions);
      }
    }
  }
}

}  // namespace
}  // namespace pgwarden::proxy
