// `up` on a running cluster judges the processes themselves; `status` keeps members whose key
// expired.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A replica of the cluster (any member but the leader), or "".
std::string SomeReplica(LocalClusterGuard& c) {
  std::string leader = c.Leader();
  for (const auto& n : c.Nodes()) {
    if (!leader.empty() && n != leader) return n;
  }
  return "";
}

// SIGKILL to `pid`, then waits (bounded) until it is gone.
bool KillNine(pid_t pid) {
  if (pid <= 0 || kill(pid, SIGKILL) != 0) return false;
  return WaitFor([pid] { return !ProcessAlive(pid); }, 10s, 50ms);
}

// A socket listening on 127.0.0.1:port, closed by the destructor.
class PortHolder {
 public:
  explicit PortHolder(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // As the agent's own listener does: a connection of the dead agent left
    // in TIME_WAIT must not count as someone holding the port.
    int one = 1;
    if (fd_ >= 0) setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
          listen(fd_, 1) == 0;
  }
  ~PortHolder() { Release(); }
  void Release() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool ok() const { return ok_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

// The proxy's libpq URI (`dsn --role proxy-rw`), without the newline.
std::string ProxyUri(LocalClusterGuard& c) {
  CommandResult dsn = c.Pgwarden("dsn", {"--role", "proxy-rw"});
  std::string uri = dsn.out;
  while (!uri.empty() && (uri.back() == '\n' || uri.back() == '\r')) uri.pop_back();
  return dsn.exit_code == 0 ? uri : "";
}

// Regression: `up` reported success while an agent was dead, because its
// member key stays in etcd until its lease expires. (It also could not bring
// the agent back while the agent's PostgreSQL held its REST port.)
TEST(UpCheckTest, UpAfterAnAgentWasKilledReportsSuccessOnlyOnceTheAgentRunsAndAnswers) {
  TempDir tmp("pgw-itest-upcheck");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--nodes", "3"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  std::string victim = SomeReplica(cluster);
  ASSERT_FALSE(victim.empty()) << cluster.Pgwarden("status").Describe();
  NodeInfo node = cluster.Node(victim);
  pid_t proxy = ReadPidFile(cluster.dir() + "/proxy.pid");
  ASSERT_GT(proxy, 0);
  std::string uri = ProxyUri(cluster);
  ASSERT_FALSE(uri.empty());
  auto client = Connect(uri);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE(QueryValue(**client, "SELECT 1").ok());

  pid_t agent = cluster.AgentPid(victim);
  ASSERT_TRUE(KillNine(agent)) << "agent of " << victim << " pid " << agent;
  {
    // The agent `up` starts cannot listen on its REST port and exits: `up`
    // must say so, not trust the member key that is still in etcd.
    uint16_t rest_port =
        static_cast<uint16_t>(std::stoi(node.rest.substr(node.rest.rfind(':') + 1)));
    PortHolder holder(rest_port);
    if (!holder.ok()) {
      // Nothing of this cluster may hold it (a postmaster did before the
      // close-on-exec fix: that is ProcessTest's and agent_failures_test's
      // regression), but another process of a test running beside this one
      // may have taken it as its own port since the agent died.
      GTEST_SKIP() << "cannot hold " << node.rest << ": taken by another process";
    }
    CommandResult failed = cluster.Up({"--timeout", "20"}, 60s);
    EXPECT_NE(failed.exit_code, 0) << failed.Describe();
    EXPECT_THAT(failed.err, HasSubstr("the agent of " + victim + " (pid")) << failed.Describe();
    EXPECT_THAT(failed.out, Not(HasSubstr("is up"))) << failed.Describe();
  }

  CommandResult again = cluster.Up({}, 90s);
  ASSERT_EQ(again.exit_code, 0) << again.Describe() << cluster.Logs();
  EXPECT_THAT(again.err, HasSubstr("the agent of " + victim + " is not running"));
  pid_t restarted = cluster.AgentPid(victim);
  EXPECT_NE(restarted, agent);
  EXPECT_TRUE(ProcessAlive(restarted));
  // Right after `up` returns, the agent itself says it is a streaming replica.
  auto patroni = HttpGet(node.rest, "/patroni");
  ASSERT_TRUE(patroni.ok()) << patroni.status().ToString();
  EXPECT_EQ(patroni->status, 200);
  auto j = nlohmann::json::parse(patroni->body, nullptr, false);
  EXPECT_EQ(j.value("role", ""), "replica") << patroni->body;
  EXPECT_EQ(j.value("replication_state", ""), "streaming") << patroni->body;

  // Nothing about the proxy changed: same process, its client still served.
  EXPECT_EQ(ReadPidFile(cluster.dir() + "/proxy.pid"), proxy);
  EXPECT_TRUE(ProcessAlive(proxy));
  auto still = QueryValue(**client, "SELECT 2");
  ASSERT_TRUE(still.ok()) << still.status().ToString();
  EXPECT_EQ(*still, "2");
}

// What `up` does to a running proxy whose section in cluster.yml no longer is
// what it wants: a target that is not the leader is reloaded (clients kept), a
// proxy that does not listen where cluster.yml says is restarted, with why.
TEST(UpCheckTest, UpReloadsAProxyForANewTargetAndRestartsItOnlyForAChangedListen) {
  TempDir tmp("pgw-itest-upproxy");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--nodes", "1"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  const std::string file = cluster.dir() + "/cluster.yml";
  const std::string original = ReadFile(file);
  pid_t proxy = ReadPidFile(cluster.dir() + "/proxy.pid");
  std::string uri = ProxyUri(cluster);
  auto client = Connect(uri);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE(QueryValue(**client, "SELECT 1").ok());

  // As if the leader had moved: the proxy's target is some other port.
  NodeInfo leader = cluster.Node(cluster.Nodes().front());
  std::string port_text = "port: " + std::to_string(leader.pg_port) + "}";
  auto at = original.rfind(port_text);
  ASSERT_NE(at, std::string::npos) << original;
  std::string moved = original;
  moved.replace(at, port_text.size(), "port: " + std::to_string(FreePort()) + "}");
  ASSERT_TRUE(WriteFile(file, moved));
  CommandResult reload = cluster.Up();
  ASSERT_EQ(reload.exit_code, 0) << reload.Describe();
  EXPECT_THAT(reload.err, HasSubstr("proxy.databases"));
  EXPECT_THAT(reload.err, HasSubstr("reloads its configuration"));
  EXPECT_THAT(reload.err, Not(HasSubstr("restarting the proxy")));
  EXPECT_EQ(ReadPidFile(cluster.dir() + "/proxy.pid"), proxy);
  EXPECT_EQ(ReadFile(file), original);
  auto kept = QueryValue(**client, "SELECT 3");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(*kept, "3");

  // Nothing changed now: not even a reload.
  CommandResult quiet = cluster.Up();
  ASSERT_EQ(quiet.exit_code, 0) << quiet.Describe();
  EXPECT_THAT(quiet.err, Not(HasSubstr("proxy"))) << quiet.Describe();
  EXPECT_EQ(ReadPidFile(cluster.dir() + "/proxy.pid"), proxy);

  // proxy.listen edited by hand: the running proxy does not listen there.
  uint16_t new_port = FreePort();
  std::string old_listen = uri.substr(uri.rfind('@') + 1);
  old_listen = "listen: " + old_listen.substr(0, old_listen.find('/'));
  at = original.find(old_listen);
  ASSERT_NE(at, std::string::npos) << old_listen << " in\n" << original;
  std::string relisten = original;
  relisten.replace(at, old_listen.size(), "listen: 127.0.0.1:" + std::to_string(new_port));
  ASSERT_TRUE(WriteFile(file, relisten));
  CommandResult restart = cluster.Up();
  ASSERT_EQ(restart.exit_code, 0) << restart.Describe();
  EXPECT_THAT(restart.err,
              HasSubstr("does not accept connections on 127.0.0.1:" + std::to_string(new_port)));
  EXPECT_THAT(restart.err, HasSubstr("restarting the proxy"));
  EXPECT_NE(ReadPidFile(cluster.dir() + "/proxy.pid"), proxy);
  EXPECT_FALSE(ProcessAlive(proxy));
  std::string new_uri = ProxyUri(cluster);
  EXPECT_THAT(new_uri, HasSubstr(":" + std::to_string(new_port) + "/"));
  auto fresh = QueryValue(new_uri, "SELECT 4");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
}

// Regression: a stopped replica disappeared from `status` once its member key
// expired, although its slot still held WAL on the leader.
TEST(UpCheckTest, StatusListsAStoppedReplicaWhoseSlotExistsAfterItsMemberKeyExpired) {
  TempDir tmp("pgw-itest-upstatus");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--nodes", "3"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();
  std::string victim = SomeReplica(cluster);
  ASSERT_FALSE(victim.empty());
  std::string leader = cluster.Leader();
  pid_t agent = cluster.AgentPid(victim);
  pid_t postmaster = ReadPidFile(cluster.dir() + "/" + victim + "/data/postmaster.pid");
  ASSERT_TRUE(KillNine(agent)) << "agent pid " << agent;
  ASSERT_TRUE(KillNine(postmaster)) << "postmaster pid " << postmaster;

  // The member key lives until the lease (ttl 30 s in cluster.yml) expires.
  auto row_of = [&](const nlohmann::json& j) -> nlohmann::json {
    if (!j.is_object() || !j.contains("members")) return nullptr;
    for (const auto& m : j["members"]) {
      if (m.value("name", "") == victim) return m;
    }
    return nullptr;
  };
  nlohmann::json row;
  bool expired = WaitFor(
      [&] {
        row = row_of(cluster.StatusJson());
        return row.is_object() && row.value("state", "") == "stopped (no member key)";
      },
      45s, 1s);
  ASSERT_TRUE(expired) << "row of " << victim << ": " << row.dump();
  EXPECT_EQ(row.value("role", ""), "unknown");
  EXPECT_EQ(row.value("port", 0), cluster.Node(victim).pg_port) << "from D/" << victim;
  EXPECT_TRUE(row["slot_retained_bytes"].is_number()) << row.dump();
  EXPECT_EQ(cluster.Leader(), leader);

  CommandResult table = cluster.Pgwarden("status");
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  bool listed = false;
  std::istringstream lines(table.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(victim + " ", 0) == 0) {
      listed = true;
      EXPECT_THAT(line, HasSubstr("unknown"));
      EXPECT_THAT(line, HasSubstr("stopped (no member key)"));
    }
  }
  EXPECT_TRUE(listed) << table.out;

  // Without the directory (-c FILE), the leader's slot alone names it.
  CommandResult by_config =
      RunPgwarden({"status", "-c", cluster.dir() + "/cluster.yml", "--json"}, 30s);
  ASSERT_EQ(by_config.exit_code, 0) << by_config.Describe();
  auto j = nlohmann::json::parse(by_config.out, nullptr, false);
  nlohmann::json slot_row = row_of(j);
  ASSERT_TRUE(slot_row.is_object()) << by_config.out;
  EXPECT_EQ(slot_row.value("state", ""), "stopped (no member key)");
  EXPECT_TRUE(slot_row["slot_retained_bytes"].is_number()) << slot_row.dump();
}

}  // namespace
}  // namespace pgwarden::itest
