// Automatic failover of a 3-node `pgwarden up` cluster: SIGKILL of the primary's PostgreSQL and
// agent gives a new primary that the third node follows; the old node rejoins via pg_rewind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;
using ::testing::HasSubstr;

double Since(Clk::time_point t) { return std::chrono::duration<double>(Clk::now() - t).count(); }

std::optional<std::string> Value(const NodeInfo& n, const std::string& sql) {
  auto v = QueryValue(n.pg_conninfo + " connect_timeout=2", sql);
  if (!v.ok()) return std::nullopt;
  return *v;
}

TEST(FailoverTest, KilledPrimaryIsReplacedTheThirdFollowsAndTheOldOneRejoinsByRewind) {
  TempDir tmp("pgw-itest-failover");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--nodes", "3"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  const std::string old_leader = cluster.Leader();
  ASSERT_FALSE(old_leader.empty());
  NodeInfo old_node = cluster.Node(old_leader);
  std::vector<NodeInfo> others;
  for (const auto& n : cluster.AllNodes()) {
    if (n.name != old_leader) others.push_back(n);
  }
  ASSERT_EQ(others.size(), 2u);

  // Rows committed before the failure, seen by both standbys (asynchronous
  // mode: only what reached them can survive).
  for (const char* sql : {"CREATE TABLE drill(id int primary key)",
                          "INSERT INTO drill SELECT generate_series(1, 1000)"}) {
    auto r = QueryOnce(old_node.pg_conninfo, sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& n : others) {
          if (Value(n, "SELECT count(*) FROM drill") != "1000") return false;
        }
        return true;
      },
      20s));

  // Node loss: the agent and its PostgreSQL at once.
  const pid_t agent = cluster.AgentPid(old_leader);
  const pid_t postmaster = ReadPidFile(cluster.dir() + "/" + old_leader + "/data/postmaster.pid");
  ASSERT_GT(agent, 0);
  ASSERT_GT(postmaster, 0);
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_EQ(::kill(postmaster, SIGKILL), 0);
  const auto killed = Clk::now();

  std::string new_leader;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& n : others) {
          if (Value(n, "SELECT pg_is_in_recovery()") == "f") new_leader = n.name;
        }
        return !new_leader.empty();
      },
      90s, 100ms))
      << "no standby was promoted\n"
      << cluster.Logs();
  const double promoted_after = Since(killed);
  NodeInfo leader_node = cluster.Node(new_leader);
  ASSERT_TRUE(QueryOnce(leader_node.pg_conninfo, "INSERT INTO drill VALUES (1001)").ok());
  const double writable_after = Since(killed);
  std::printf("[ measured  ] node loss: %s promoted %.1f s after SIGKILL, first write %.1f s\n",
              new_leader.c_str(), promoted_after, writable_after);
  EXPECT_TRUE(WaitFor([&] { return cluster.Leader() == new_leader; }, 10s));
  EXPECT_EQ(Value(leader_node, "SELECT count(*) FROM drill"), "1001");
  // The switch is in `history`, in Patroni's shape, and `pgwarden history` lists it.
  CommandResult history = cluster.Pgwarden("history");
  EXPECT_EQ(history.exit_code, 0) << history.Describe();
  EXPECT_THAT(history.out, HasSubstr("no recovery target specified")) << history.Describe();
  EXPECT_THAT(history.out, HasSubstr(new_leader)) << history.Describe();
  // The third member follows the new leader (primary_conninfo by reload) and
  // streams the new row.
  for (const auto& n : others) {
    if (n.name == new_leader) continue;
    EXPECT_TRUE(WaitFor([&] { return Value(n, "SELECT count(*) FROM drill") == "1001"; }, 30s))
        << n.name << " does not follow " << new_leader << "\n"
        << cluster.Logs();
    EXPECT_EQ(Value(n, "SELECT pg_is_in_recovery()"), "t");
  }

  // The old node comes back with the command that started it, and rejoins
  // as a standby of the new leader after a pg_rewind.
  CommandResult again = cluster.Up();
  EXPECT_EQ(again.exit_code, 0) << again.Describe() << cluster.Logs();
  EXPECT_TRUE(WaitFor(
      [&] {
        return Value(old_node, "SELECT pg_is_in_recovery()") == "t" &&
               Value(old_node, "SELECT count(*) FROM drill") == "1001";
      },
      90s))
      << old_leader << " did not rejoin\n"
      << cluster.Logs(60);
  EXPECT_THAT(ReadFile(cluster.dir() + "/" + old_leader + "/agent.log"), HasSubstr("pg_rewind"));
  auto streaming = QueryOnce(leader_node.pg_conninfo,
                             "SELECT application_name FROM pg_stat_replication "
                             "WHERE state = 'streaming' ORDER BY 1");
  ASSERT_TRUE(streaming.ok());
  EXPECT_EQ(streaming->rows.size(), 2u) << "both others stream from " << new_leader;
}

}  // namespace
}  // namespace pgwarden::itest
