// REST API on a 3-node cluster: health checks by role, /cluster, ?lag= with replay paused, HAProxy.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <set>
#include <sstream>

#include "itest_util.h"
#include "pg/controller.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;

// One cluster for the file. The lag test pauses and resumes replay on one
// replica and leaves the topology as it found it.
class RestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("pgw-itest-rest");
    cluster_ = new LocalClusterGuard(tmp_->Sub("cluster"));
    up_ = new CommandResult(cluster_->Up());
  }
  static void TearDownTestSuite() {
    delete up_;
    delete cluster_;
    delete tmp_;
  }
  void SetUp() override {
    ASSERT_EQ(up_->exit_code, 0) << up_->Describe() << "\n" << cluster_->Logs();
    nodes_ = cluster_->AllNodes();
    auto primaries = PrimariesAmong(nodes_);
    ASSERT_EQ(primaries.size(), 1u);
    for (const auto& n : nodes_) {
      if (n.name == primaries.front())
        primary_ = n;
      else
        replicas_.push_back(n);
    }
    ASSERT_EQ(replicas_.size(), 2u);
  }

  // The status of GET target on every node, polled until it matches `want`
  // (node name -> status) or 15 s pass; the last statuses seen.
  std::map<std::string, int> StatusesSettle(const std::string& target,
                                            const std::map<std::string, int>& want) {
    std::map<std::string, int> got;
    WaitFor(
        [&] {
          got.clear();
          for (const auto& n : nodes_) got[n.name] = HttpStatus(n.rest, target);
          return got == want;
        },
        15s, 300ms);
    return got;
  }

  static TempDir* tmp_;
  static LocalClusterGuard* cluster_;
  static CommandResult* up_;
  std::vector<NodeInfo> nodes_;
  NodeInfo primary_;
  std::vector<NodeInfo> replicas_;
};

TempDir* RestTest::tmp_ = nullptr;
LocalClusterGuard* RestTest::cluster_ = nullptr;
CommandResult* RestTest::up_ = nullptr;

TEST_F(RestTest, PrimaryReplicaAndHealthAnswerByRole) {
  std::map<std::string, int> primary_want, replica_want, health_want;
  for (const auto& n : nodes_) {
    bool p = n.name == primary_.name;
    primary_want[n.name] = p ? 200 : 503;
    replica_want[n.name] = p ? 503 : 200;
    health_want[n.name] = 200;
  }
  EXPECT_EQ(StatusesSettle("/primary", primary_want), primary_want);
  EXPECT_EQ(StatusesSettle("/replica", replica_want), replica_want);
  EXPECT_EQ(StatusesSettle("/health", health_want), health_want);
  EXPECT_EQ(cluster_->Leader(), primary_.name);
}

TEST_F(RestTest, ClusterDocumentListsThreeMembersWithRoles) {
  for (const auto& n : nodes_) {
    auto r = HttpGet(n.rest, "/cluster");
    ASSERT_TRUE(r.ok()) << n.name << ": " << r.status().ToString();
    ASSERT_EQ(r->status, 200);
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    ASSERT_TRUE(j.contains("members")) << r->body;
    ASSERT_EQ(j["members"].size(), 3u) << r->body;
    std::map<std::string, std::string> roles;
    for (const auto& m : j["members"]) roles[m.value("name", "")] = m.value("role", "");
    std::map<std::string, std::string> want;
    for (const auto& o : nodes_) want[o.name] = o.name == primary_.name ? "leader" : "replica";
    EXPECT_EQ(roles, want) << "GET /cluster on " << n.name << ": " << r->body;
  }
}

TEST_F(RestTest, ReplicaLagCheckFailsWhileReplayIsPausedAndRecovers) {
  const NodeInfo& paused = replicas_[0];
  const NodeInfo& other = replicas_[1];
  auto writer = Connect(primary_.pg_conninfo);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE((*writer)->Exec("CREATE TABLE IF NOT EXISTS lag_probe (t timestamptz)").ok());
  ASSERT_EQ(HttpStatus(paused.rest, "/replica?lag=1MB"), 200);

  auto pause_conn = Connect(paused.pg_conninfo);
  ASSERT_TRUE(pause_conn.ok()) << pause_conn.status().ToString();
  ASSERT_TRUE((*pause_conn)->Exec("SELECT pg_wal_replay_pause()").ok());
  // Resume even when an assertion below fails, so later tests see a healthy replica.
  struct Resume {
    pg::Connection& conn;
    ~Resume() { (void)conn.Exec("SELECT pg_wal_replay_resume()"); }
  } resume{**pause_conn};

  // Keep writing (a few rows a second) until the paused replica's lag shows:
  // the leader publishes its WAL position once per loop_wait (10 s).
  int replica_not_200 = 0, other_not_200 = 0, writes_failed = 0;
  auto started = Clk::now();
  bool lagging = WaitFor(
      [&] {
        if (!(*writer)->Exec("INSERT INTO lag_probe VALUES (now())").ok()) ++writes_failed;
        if (HttpStatus(paused.rest, "/replica") != 200) ++replica_not_200;
        if (HttpStatus(other.rest, "/replica?lag=1MB") != 200) ++other_not_200;
        return HttpStatus(paused.rest, "/replica?lag=1") == 503;
      },
      40s, 250ms);
  double waited = std::chrono::duration<double>(Clk::now() - started).count();
  ASSERT_TRUE(lagging) << "/replica?lag=1 on " << paused.name
                       << " still 200 after 40 s with replay paused";
  EXPECT_EQ(writes_failed, 0);
  EXPECT_EQ(replica_not_200, 0) << "/replica (no lag limit) on the paused replica answered "
                                   "non-200 while waiting";
  EXPECT_EQ(other_not_200, 0) << "/replica?lag=1MB on " << other.name << " answered non-200";
  EXPECT_EQ(HttpStatus(paused.rest, "/replica"), 200);
  EXPECT_EQ(HttpStatus(other.rest, "/replica?lag=1MB"), 200);
  std::printf("[itest] /replica?lag=1 turned 503 after %.1f s\n", waited);

  // The node document says replay is paused.
  auto doc = HttpGet(paused.rest, "/patroni");
  ASSERT_TRUE(doc.ok());
  auto j = nlohmann::json::parse(doc->body, nullptr, false);
  EXPECT_TRUE(j.is_object() && j.contains("xlog") && j["xlog"].value("paused", false)) << doc->body;

  ASSERT_TRUE((*pause_conn)->Exec("SELECT pg_wal_replay_resume()").ok());
  EXPECT_TRUE(
      WaitFor([&] { return HttpStatus(paused.rest, "/replica?lag=1MB") == 200; }, 40s, 500ms))
      << "/replica?lag=1MB on " << paused.name << " not 200 after resume";
  // And it catches up: every row written meanwhile is replayed.
  auto written = QueryValue(**writer, "SELECT count(*) FROM lag_probe");
  ASSERT_TRUE(written.ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto v = QueryValue(paused.pg_conninfo, "SELECT count(*) FROM lag_probe");
        return v.ok() && *v == *written;
      },
      10s));
}

// HAProxy in front of the cluster, routing by the REST health checks.
TEST_F(RestTest, HaproxyRoutesByHealthChecks) {
  const char* kHaproxy = "/usr/sbin/haproxy";
  if (access(kHaproxy, X_OK) != 0) GTEST_SKIP() << kHaproxy << " is not installed";
  uint16_t primary_port = FreePort();
  uint16_t replica_port = FreePort();
  std::ostringstream cfg;
  cfg << "global\n  maxconn 200\n"
      << "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n"
      << "  timeout server 30s\n"
      << "  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n";
  for (const auto& [name, port, check] : {std::tuple{"primary", primary_port, "/primary"},
                                          std::tuple{"replicas", replica_port, "/replica"}}) {
    cfg << "listen " << name << "\n  bind 127.0.0.1:" << port << "\n"
        << "  balance roundrobin\n  option httpchk GET " << check << "\n"
        << "  http-check expect status 200\n";
    for (const auto& n : nodes_) {
      std::string rest_port = n.rest.substr(n.rest.rfind(':') + 1);
      cfg << "  server " << n.name << " 127.0.0.1:" << n.pg_port << " check port " << rest_port
          << "\n";
    }
  }
  std::string cfg_file = tmp_->Sub("haproxy.cfg");
  ASSERT_TRUE(WriteFile(cfg_file, cfg.str()));
  ChildProcess haproxy;
  ASSERT_TRUE(haproxy.Start({kHaproxy, "-f", cfg_file, "-db"}, tmp_->Sub("haproxy.log")).ok());
  auto haproxy_log = [&] { return ReadFile(tmp_->Sub("haproxy.log")); };
  ASSERT_FALSE(haproxy.Wait(500ms)) << "haproxy exited:\n" << haproxy_log();

  const config::RoleAuth& su = primary_.superuser;
  std::string via_primary = pg::SuperuserConninfo("127.0.0.1", primary_port, su);
  std::string via_replica = pg::SuperuserConninfo("127.0.0.1", replica_port, su);
  const std::string kWhere = "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()";
  std::set<std::string> replica_ports;
  for (const auto& r : replicas_) replica_ports.insert(std::to_string(r.pg_port));

  // Servers start out "up" in HAProxy until their checks fail `fall` times:
  // wait until several connections in a row land where they should.
  std::string last;
  bool primary_ok = WaitFor(
      [&] {
        for (int i = 0; i < 6; ++i) {
          auto v = QueryValue(via_primary, kWhere);
          last = v.ok() ? *v : v.status().ToString();
          if (!v.ok() || *v != "false " + std::to_string(primary_.pg_port)) return false;
        }
        return true;
      },
      20s, 500ms);
  EXPECT_TRUE(primary_ok) << "through the primary frontend: " << last << "\n" << haproxy_log();

  std::set<std::string> seen_ports;
  bool replica_ok = WaitFor(
      [&] {
        seen_ports.clear();
        for (int i = 0; i < 6; ++i) {
          auto v = QueryValue(via_replica, kWhere);
          last = v.ok() ? *v : v.status().ToString();
          if (!v.ok() || last.rfind("true ", 0) != 0) return false;
          seen_ports.insert(last.substr(5));
        }
        return seen_ports == replica_ports;
      },
      20s, 500ms);
  EXPECT_TRUE(replica_ok) << "through the replica frontend: " << last
                          << " ports seen: " << ::testing::PrintToString(seen_ports) << "\n"
                          << haproxy_log();

  auto stopped = haproxy.Stop(SIGTERM, 5s);
  EXPECT_TRUE(stopped.has_value());
}

}  // namespace
}  // namespace pgwarden::itest
