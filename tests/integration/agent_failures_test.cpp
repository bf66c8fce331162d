// What failover would turn into split brain or an outage, one regression each: a killed agent's
// sockets, a dead postmaster reported healthy, fencing with a hung etcd and with a frozen agent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "dcs/etcd_dcs.h"
#include "itest_util.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;

double Since(Clk::time_point t) { return std::chrono::duration<double>(Clk::now() - t).count(); }

// SIGCONT to a process we stopped, also when the test fails half-way.
class Frozen {
 public:
  explicit Frozen(pid_t pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
  ~Frozen() { Thaw(); }
  void Thaw() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    pid_ = -1;
  }

 private:
  pid_t pid_;
};

// A one-node `pgwarden up` cluster (ttl 30, loop_wait 10, retry_timeout 10).
class AgentFailuresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CommandResult up = cluster_.Up({"--nodes", "1"});
    ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster_.Logs();
    node_ = cluster_.Node("node1");
  }
  pid_t Postmaster() const { return ReadPidFile(cluster_.dir() + "/node1/data/postmaster.pid"); }
  bool Writable() {
    auto v = QueryValue(node_.pg_conninfo + " connect_timeout=2", "SELECT pg_is_in_recovery()");
    return v.ok() && *v == "f";
  }
  std::unique_ptr<dcs::EtcdDcs> Dcs() {
    config::Config cfg =
        config::LoadConfigFile(cluster_.dir() + "/cluster.yml", config::ConfigUse::kClient);
    std::vector<std::string> endpoints;
    for (const auto& h : cfg.etcd.hosts) endpoints.push_back(h.ToString());
    return std::make_unique<dcs::EtcdDcs>(endpoints, cfg.KeyPrefix(), 30,
                                          std::chrono::milliseconds(1000));
  }

  TempDir tmp_{"pgw-itest-failures"};
  LocalClusterGuard cluster_{tmp_.Sub("cluster")};
  NodeInfo node_;
};

// Regression: PostgreSQL inherited the agent's REST socket, so after kill -9
// of the agent its port stayed bound (health checks hung) and a new agent
// exited with "Address already in use" instead of adopting PostgreSQL.
TEST_F(AgentFailuresTest, KilledAgentLeavesItsPortFreeAndTheNextOneAdoptsPostgres) {
  const pid_t agent = cluster_.AgentPid("node1");
  const pid_t postmaster = Postmaster();
  ASSERT_GT(agent, 0);
  ASSERT_GT(postmaster, 0);
  ASSERT_EQ(HttpStatus(node_.rest, "/primary"), 200);
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return !ProcessAlive(agent); }, 5s, 20ms));

  // Nothing holds the REST port: a connection is refused at once, not hung.
  auto t = Clk::now();
  auto r = HttpGet(node_.rest, "/health", 2s);
  EXPECT_FALSE(r.ok()) << "something still answers on " << node_.rest;
  EXPECT_LT(Since(t), 1.0) << "the REST port hangs instead of refusing";
  EXPECT_TRUE(ProcessAlive(postmaster)) << "PostgreSQL should outlive its agent";

  CommandResult up = cluster_.Up();
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster_.Logs();
  EXPECT_NE(cluster_.AgentPid("node1"), agent);
  EXPECT_TRUE(WaitFor([&] { return HttpStatus(node_.rest, "/primary") == 200; }, 30s))
      << cluster_.Logs();
  EXPECT_EQ(Postmaster(), postmaster)
      << "the new agent restarted PostgreSQL instead of adopting it";
  EXPECT_TRUE(Writable());
}

// Regression: after kill -9 of the leader's postmaster, /primary and /health
// answered 200 for 7.8 s and the restart waited for the next HA loop.
TEST_F(AgentFailuresTest, DeadPostmasterIsReportedWithinASecondAndRestartedAtOnce) {
  const pid_t postmaster = Postmaster();
  ASSERT_GT(postmaster, 0);
  ASSERT_EQ(HttpStatus(node_.rest, "/primary"), 200);
  ASSERT_EQ(HttpStatus(node_.rest, "/health"), 200);
  ASSERT_EQ(::kill(postmaster, SIGKILL), 0);
  const auto killed = Clk::now();
  std::optional<double> primary_off, health_off, back;
  while (Since(killed) < 30 && !back) {
    if (!primary_off && HttpStatus(node_.rest, "/primary") != 200) primary_off = Since(killed);
    if (!health_off && HttpStatus(node_.rest, "/health") != 200) health_off = Since(killed);
    if (primary_off && Postmaster() != postmaster && Writable()) back = Since(killed);
    std::this_thread::sleep_for(20ms);
  }
  std::printf(
      "[ measured  ] /primary off after %.3f s, /health off after %.3f s, writable again "
      "after %.3f s\n",
      primary_off.value_or(-1), health_off.value_or(-1), back.value_or(-1));
  ASSERT_TRUE(primary_off.has_value()) << cluster_.Logs();
  ASSERT_TRUE(health_off.has_value());
  EXPECT_LE(*primary_off, 1.0);
  EXPECT_LE(*health_off, 1.0);
  ASSERT_TRUE(back.has_value()) << "not restarted within 30 s\n" << cluster_.Logs();
  // "At once": well before the next loop_wait (10 s) would have come.
  EXPECT_LT(*back, 8.0) << cluster_.Logs();
  EXPECT_TRUE(WaitFor([&] { return HttpStatus(node_.rest, "/primary") == 200; }, 10s));
}

// Regression: with etcd frozen (SIGSTOP, so requests hang rather than fail),
// the leader stopped PostgreSQL 6 s after its own deadline.
TEST_F(AgentFailuresTest, LeaderWithAHungEtcdStopsPostgresByItsDeadline) {
  const pid_t etcd = ReadPidFile(cluster_.dir() + "/etcd.pid");
  ASSERT_GT(etcd, 0);
  ASSERT_TRUE(Writable());
  const pid_t postmaster = Postmaster();
  // The last renewal was before the freeze, so the deadline (renewal + ttl -
  // retry_timeout = + 20 s) is at most 20 s after it.
  Frozen frozen(etcd);
  const auto stopped_at = Clk::now();
  std::optional<double> gone;
  while (Since(stopped_at) < 40 && !gone) {
    if (!ProcessAlive(postmaster)) gone = Since(stopped_at);
    std::this_thread::sleep_for(50ms);
  }
  std::printf("[ measured  ] PostgreSQL stopped %.2f s after etcd was frozen (deadline <= 20 s)\n",
              gone.value_or(-1));
  ASSERT_TRUE(gone.has_value()) << "still running 40 s after etcd froze\n" << cluster_.Logs();
  EXPECT_LE(*gone, 20.5) << cluster_.Logs();
  frozen.Thaw();
  // etcd answers again: the member takes its key back and starts PostgreSQL.
  EXPECT_TRUE(WaitFor([&] { return Writable(); }, 60s)) << cluster_.Logs();
}

// Regression: with the leader's agent frozen (SIGSTOP) for 40 s, its lease
// expired after 27 s and PostgreSQL took writes for 14 s more. The watchdog
// stops it before the lease (and so the leader key) can expire.
TEST_F(AgentFailuresTest, FrozenLeaderAgentIsFencedByTheWatchdogBeforeItsLeaseExpires) {
  const pid_t agent = cluster_.AgentPid("node1");
  const pid_t postmaster = Postmaster();
  ASSERT_GT(agent, 0);
  ASSERT_TRUE(ProcessAlive(ReadPidFile(cluster_.dir() + "/node1/data.watchdog.pid")))
      << "no watchdog runs beside node1\n"
      << cluster_.Logs();
  auto dcs = Dcs();
  auto view = dcs->Load();
  ASSERT_TRUE(view.ok() && view->HasLeader()) << view.status().ToString();

  Frozen frozen(agent);
  const auto stopped_at = Clk::now();
  std::optional<double> pg_gone, key_gone, last_write;
  while (Since(stopped_at) < 45 && !(pg_gone && key_gone)) {
    if (!pg_gone) {
      if (ProcessAlive(postmaster) && Writable()) {
        last_write = Since(stopped_at);
      } else if (!ProcessAlive(postmaster)) {
        pg_gone = Since(stopped_at);
      }
    }
    if (!key_gone) {
      auto v = dcs->Load();
      if (v.ok() && !v->HasLeader()) key_gone = Since(stopped_at);
    }
    std::this_thread::sleep_for(50ms);
  }
  std::printf(
      "[ measured  ] agent frozen: last successful query %.2f s, PostgreSQL stopped "
      "%.2f s, leader key expired %.2f s after the freeze\n",
      last_write.value_or(-1), pg_gone.value_or(-1), key_gone.value_or(-1));
  ASSERT_TRUE(pg_gone.has_value()) << "PostgreSQL ran on for 45 s\n" << cluster_.Logs();
  ASSERT_TRUE(key_gone.has_value()) << "the leader key outlived a frozen agent by 45 s";
  EXPECT_LT(*pg_gone, *key_gone) << "PostgreSQL took writes after its lease expired";
  EXPECT_LT(last_write.value_or(0), *key_gone);

  // Back from the freeze the agent takes the key again and restarts PostgreSQL.
  frozen.Thaw();
  EXPECT_TRUE(WaitFor([&] { return Writable(); }, 60s)) << cluster_.Logs();
}

}  // namespace
}  // namespace pgwarden::itest
