// `down` then `up` on one directory keeps identity, leader and data; `up` twice restarts nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

// Postmaster PID of each node (first line of data/postmaster.pid), -1 when none.
std::map<std::string, pid_t> PostmasterPids(const LocalClusterGuard& c) {
  std::map<std::string, pid_t> out;
  for (const auto& n : c.Nodes()) out[n] = ReadPidFile(c.dir() + "/" + n + "/data/postmaster.pid");
  return out;
}

std::map<std::string, pid_t> AgentPids(const LocalClusterGuard& c) {
  std::map<std::string, pid_t> out;
  for (const auto& n : c.Nodes()) out[n] = c.AgentPid(n);
  return out;
}

// Leader running, every other member a streaming replica, /health 200 everywhere.
bool AllHealthy(LocalClusterGuard& c, std::string* why) {
  nlohmann::json j = c.StatusJson();
  if (!j.is_object() || !j.contains("members") || j["members"].size() != 3) {
    *why = "status --json: " + j.dump();
    return false;
  }
  int leaders = 0, streaming = 0;
  for (const auto& m : j["members"]) {
    if (m.value("role", "") == "leader" && m.value("state", "") == "running") ++leaders;
    if (m.value("role", "") == "replica" && m.value("state", "") == "streaming") ++streaming;
  }
  if (leaders != 1 || streaming != 2) {
    *why = "status --json: " + j.dump();
    return false;
  }
  for (const auto& n : c.AllNodes()) {
    if (int s = HttpStatus(n.rest, "/health"); s != 200) {
      *why = n.name + " /health: " + std::to_string(s);
      return false;
    }
  }
  return true;
}

TEST(RestartTest, DownThenUpKeepsSystemIdentifierLeaderAndEveryCommittedRow) {
  TempDir tmp("pgw-itest-restart");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up();
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();

  auto primaries = PrimariesAmong(cluster.AllNodes());
  ASSERT_EQ(primaries.size(), 1u);
  NodeInfo primary = cluster.Node(primaries.front());
  std::string leader = cluster.Leader();
  ASSERT_EQ(leader, primary.name);
  auto sysid = QueryValue(primary.pg_conninfo, "SELECT system_identifier FROM pg_control_system()");
  ASSERT_TRUE(sysid.ok()) << sysid.status().ToString();

  {
    auto conn = Connect(primary.pg_conninfo);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    pg::Connection& c = **conn;
    ASSERT_TRUE(c.Exec("CREATE TABLE restart_rows (id int PRIMARY KEY, v text)").ok());
    // 1000 rows in one transaction, then one more committed right before `down`.
    ASSERT_TRUE(c.Exec("BEGIN").ok());
    ASSERT_TRUE(
        c.Exec("INSERT INTO restart_rows SELECT g, 'bulk ' || g FROM generate_series(1, 1000) g")
            .ok());
    ASSERT_TRUE(c.Exec("COMMIT").ok());
    ASSERT_TRUE(c.Exec("INSERT INTO restart_rows VALUES (1001, 'last before down')").ok());
  }
  std::map<std::string, pid_t> agents = AgentPids(cluster);

  CommandResult down = cluster.Down();
  ASSERT_EQ(down.exit_code, 0) << down.Describe();
  for (const auto& [name, pid] : agents) {
    EXPECT_FALSE(pid > 0 && ProcessAlive(pid)) << "agent of " << name << " still runs";
  }
  for (const auto& n : cluster.AllNodes()) {
    EXPECT_FALSE(QueryValue(n.pg_conninfo, "SELECT 1").ok())
        << n.name << " still accepts connections after down";
  }

  up = cluster.Up();
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  std::string why;
  EXPECT_TRUE(WaitFor([&] { return AllHealthy(cluster, &why); }, 30s, 500ms)) << why;
  EXPECT_EQ(cluster.Leader(), leader) << "the leader changed across down/up";
  primaries = PrimariesAmong(cluster.AllNodes());
  ASSERT_EQ(primaries.size(), 1u);
  EXPECT_EQ(primaries.front(), leader);

  for (const auto& n : cluster.AllNodes()) {
    auto again = QueryValue(n.pg_conninfo, "SELECT system_identifier FROM pg_control_system()");
    ASSERT_TRUE(again.ok()) << n.name << ": " << again.status().ToString();
    EXPECT_EQ(*again, *sysid) << n.name;
  }
  auto count = QueryValue(primary.pg_conninfo, "SELECT count(*) FROM restart_rows");
  ASSERT_TRUE(count.ok()) << count.status().ToString();
  EXPECT_EQ(*count, "1001");
  auto last = QueryValue(primary.pg_conninfo, "SELECT v FROM restart_rows WHERE id = 1001");
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(*last, "last before down");
  for (const auto& n : cluster.AllNodes()) {
    bool replicated = WaitFor(
        [&] {
          auto v = QueryValue(n.pg_conninfo, "SELECT count(*) FROM restart_rows");
          return v.ok() && *v == "1001";
        },
        10s);
    EXPECT_TRUE(replicated) << n.name << " does not have all 1001 rows";
  }
}

TEST(RestartTest, UpOnARunningClusterRestartsNothing) {
  TempDir tmp("pgw-itest-upagain");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up();
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  std::map<std::string, pid_t> agents = AgentPids(cluster);
  std::map<std::string, pid_t> postmasters = PostmasterPids(cluster);
  pid_t etcd = ReadPidFile(cluster.dir() + "/etcd.pid");
  for (const auto& [name, pid] : agents) ASSERT_GT(pid, 0) << name;
  for (const auto& [name, pid] : postmasters) ASSERT_GT(pid, 0) << name;
  std::string leader = cluster.Leader();
  pid_t proxy = ReadPidFile(cluster.dir() + "/proxy.pid");
  ASSERT_GT(proxy, 0);
  CommandResult dsn = cluster.Pgwarden("dsn", {"--role", "proxy-rw"});
  ASSERT_EQ(dsn.exit_code, 0) << dsn.Describe();
  std::string uri = dsn.out.substr(0, dsn.out.find('\n'));
  auto client = Connect(uri);  // through the proxy, open across the second `up`
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE(QueryValue(**client, "SELECT 1").ok());

  CommandResult again = cluster.Up();
  EXPECT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_EQ(ReadPidFile(cluster.dir() + "/proxy.pid"), proxy) << again.Describe();
  EXPECT_TRUE(ProcessAlive(proxy));
  auto still = QueryValue(**client, "SELECT 2");
  ASSERT_TRUE(still.ok()) << "the proxy's client lost its connection: "
                          << still.status().ToString();
  EXPECT_EQ(*still, "2");
  EXPECT_EQ(AgentPids(cluster), agents);
  EXPECT_EQ(PostmasterPids(cluster), postmasters);
  EXPECT_EQ(ReadPidFile(cluster.dir() + "/etcd.pid"), etcd);
  for (const auto& [name, pid] : agents) EXPECT_TRUE(ProcessAlive(pid)) << name;
  for (const auto& [name, pid] : postmasters) EXPECT_TRUE(ProcessAlive(pid)) << name;
  EXPECT_EQ(cluster.Leader(), leader);
}

// Regression: `down`, another program takes the proxy's recorded port, `up`
// failed with "the cluster is up but the proxy is not".
TEST(RestartTest, UpMovesTheProxyWhenItsPortWasTakenMeanwhile) {
  TempDir tmp("pgw-itest-proxyport");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--nodes", "1"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  CommandResult dsn = cluster.Pgwarden("dsn", {"--role", "proxy-rw"});
  ASSERT_EQ(dsn.exit_code, 0) << dsn.Describe();
  std::string old_uri = dsn.out;
  uint16_t port = static_cast<uint16_t>(std::stoi(
      old_uri.substr(old_uri.rfind(':') + 1, old_uri.rfind('/') - old_uri.rfind(':') - 1)));
  ASSERT_EQ(cluster.Down().exit_code, 0);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    // Another test's cluster (ctest runs two at once) took the port first:
    // it is taken meanwhile all the same, but not by us, so the scenario
    // cannot be checked here.
    close(fd);
    GTEST_SKIP() << "port " << port << " was taken by another process before this test";
  }
  ASSERT_EQ(listen(fd, 1), 0);
  up = cluster.Up();
  close(fd);
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  EXPECT_THAT(up.err, ::testing::HasSubstr("is in use; the proxy moves to"));
  dsn = cluster.Pgwarden("dsn", {"--role", "proxy-rw"});
  ASSERT_EQ(dsn.exit_code, 0) << dsn.Describe();
  EXPECT_NE(dsn.out, old_uri);
}

}  // namespace
}  // namespace pgwarden::itest
