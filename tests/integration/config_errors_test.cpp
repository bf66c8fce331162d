// Bad configs and command lines exit 2 naming the problem; start-up refusals; etcd down at start.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "dcs/etcd_dcs.h"
#include "itest_util.h"
#include "pg/controller.h"

namespace pgwarden::itest {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clk = std::chrono::steady_clock;

constexpr const char* kPgBin = "/usr/lib/postgresql/15/bin";

// A valid node configuration, 9 lines; data_dir, ports and etcd are filled in.
std::string NodeConfig(const std::string& data_dir, uint16_t etcd_port, uint16_t pg_port,
                       uint16_t rest_port, const std::string& scope = "itest") {
  return "scope: " + scope +
         "\n"
         "name: node1\n"
         "restapi:\n"
         "  listen: 127.0.0.1:" +
         std::to_string(rest_port) +
         "\n"
         "etcd3:\n"
         "  hosts: 127.0.0.1:" +
         std::to_string(etcd_port) +
         "\n"
         "postgresql:\n"
         "  listen: 127.0.0.1:" +
         std::to_string(pg_port) +
         "\n"
         "  data_dir: " +
         data_dir + "\n";
}

// The example from the Patroni documentation (as in src/config/config_test.cpp).
constexpr char kPatroniExample[] = R"(scope: myapp-cluster
name: node1
restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.0.1.10:8008
etcd3:
  hosts: 10.0.1.100:2379,10.0.1.101:2379,10.0.1.102:2379
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        max_wal_senders: 5
        max_replication_slots: 5
        hot_standby: on
        wal_keep_size: 1GB
  initdb:
    - encoding: UTF8
    - data-checksums
postgresql:
  listen: 0.0.0.0:5432
  connect_address: 10.0.1.10:5432
  data_dir: /var/lib/postgresql/15/main
  authentication:
    superuser: {username: postgres, password: postgres_password}
    replication: {username: replicator, password: replicator_password}
  parameters:
    shared_buffers: 2GB
    effective_cache_size: 6GB
    work_mem: 64MB
)";

class ConfigErrorsTest : public ::testing::Test {
 protected:
  // A config with a closed etcd port and a data dir that must stay untouched.
  std::string Base() const { return NodeConfig(DataDir(), closed_port_, FreePort(), FreePort()); }
  std::string DataDir() const { return tmp_.Sub("data"); }
  std::string Write(const std::string& text) {
    std::string path = tmp_.Sub("cfg" + std::to_string(++files_) + ".yml");
    EXPECT_TRUE(WriteFile(path, text));
    return path;
  }
  // Runs `node -c FILE --validate-config` and `node -c FILE`: both must exit 2
  // with every string of `expect` on stderr, and touch nothing.
  void ExpectRejected(const std::string& file, const std::vector<std::string>& expect) {
    for (bool validate : {true, false}) {
      std::vector<std::string> args = {"node", "-c", file};
      if (validate) args.push_back("--validate-config");
      CommandResult r = RunPgwarden(args, 20s);
      SCOPED_TRACE(r.Describe());
      EXPECT_EQ(r.exit_code, 2);
      EXPECT_FALSE(r.timed_out);
      for (const auto& e : expect) EXPECT_THAT(r.err, HasSubstr(e));
    }
    std::error_code ec;
    EXPECT_FALSE(fs::exists(DataDir(), ec)) << "a rejected configuration created its data_dir";
  }

  TempDir tmp_{"pgw-itest-config"};
  uint16_t closed_port_ = FreePort();
  int files_ = 0;
};

TEST_F(ConfigErrorsTest, UnknownKeyIsNamedWithItsLine) {
  // Base() is 9 lines: the misspelt key is on line 10.
  std::string file = Write(Base() + "  paramters:\n    work_mem: 4MB\n");
  ExpectRejected(file, {"paramters", file + ":10"});
}

TEST_F(ConfigErrorsTest, WrongTypeIsNamed) {
  std::string file = Write(Base() + "bootstrap:\n  dcs:\n    ttl: thirty\n");
  ExpectRejected(file, {"bootstrap.dcs.ttl", "thirty", file + ":12"});
}

TEST_F(ConfigErrorsTest, BadHostPortIsNamed) {
  std::string base = Base();
  std::string no_port = base;
  no_port.replace(no_port.find("listen: 127.0.0.1:"),
                  no_port.find('\n', no_port.find("listen")) - no_port.find("listen: 127.0.0.1:"),
                  "listen: \"127.0.0.1\"");
  std::string file = Write(no_port);
  ExpectRejected(file, {"restapi.listen", "port"});

  std::string big_port = base;
  auto at = big_port.find("listen: 127.0.0.1:");
  big_port.replace(at, big_port.find('\n', at) - at, "listen: 127.0.0.1:70000");
  file = Write(big_port);
  ExpectRejected(file, {"restapi.listen", "70000"});
}

TEST_F(ConfigErrorsTest, TtlTooShortForLoopWaitAndRetryTimeout) {
  std::string file =
      Write(Base() + "bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 10\n    retry_timeout: 10\n");
  ExpectRejected(file, {"bootstrap.dcs.ttl", "ttl (20) must be at least"});
}

TEST_F(ConfigErrorsTest, MissingDataDirIsNamed) {
  std::string base = Base();
  base.erase(base.find("  data_dir:"));
  ExpectRejected(Write(base), {"postgresql.data_dir", "required"});
}

TEST_F(ConfigErrorsTest, MissingOrUnreadableFileIsNamed) {
  std::string missing = tmp_.Sub("no-such-file.yml");
  ExpectRejected(missing, {missing});
  // A directory cannot be read as a file, even by root.
  std::string dir = tmp_.Sub("a-directory.yml");
  ASSERT_TRUE(fs::create_directory(dir));
  ExpectRejected(dir, {dir, "is not a regular file"});
  // Nor a device that never ends (this grew without limit before).
  ExpectRejected("/dev/zero", {"/dev/zero is not a regular file"});
  if (!RunningAsRoot()) {
    std::string unreadable = Write(Base());
    chmod(unreadable.c_str(), 0);
    ExpectRejected(unreadable, {unreadable, "cannot read"});
  }
}

TEST_F(ConfigErrorsTest, YamlSyntaxErrorIsReported) {
  std::string file = Write(Base() + "tags: {nofailover: [true\n");
  ExpectRejected(file, {"YAML syntax error"});
}

TEST_F(ConfigErrorsTest, PatroniExampleValidates) {
  std::string file = Write(kPatroniExample);
  CommandResult r = RunPgwarden({"node", "-c", file, "--validate-config"}, 20s);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("valid"));
}

// --- command lines -------------------------------------------------------------

TEST(CliUsageTest, BadCommandLinesExit2) {
  TempDir tmp("pgw-itest-cli");
  struct Case {
    std::vector<std::string> args;
    std::string expect;  // on stderr
  };
  std::vector<Case> cases = {
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{}, "usage"},
      {{"up", "--nodes", "0", "--dir", tmp.Sub("never")}, "--nodes"},
      {{"dsn", "--dir", tmp.path(), "--role", "bogus"}, "bogus"},
      {{"status", "--dir", tmp.path()}, "no cluster"},
      {{"dsn", "--dir", tmp.path()}, "no cluster"},
      {{"down", "--dir", tmp.path()}, "no cluster"},
      {{"node"}, "-c FILE"},
  };
  for (const auto& c : cases) {
    CommandResult r = RunPgwarden(c.args, 20s);
    SCOPED_TRACE(r.Describe());
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_THAT(r.err, HasSubstr(c.expect));
  }
  std::error_code ec;
  EXPECT_FALSE(fs::exists(tmp.Sub("never"), ec)) << "up --nodes 0 created its directory";
}

TEST(CliUsageTest, HelpOfEverySubcommandExits0) {
  for (const char* cmd : {"node", "up", "down", "status", "dsn"}) {
    for (const char* flag : {"--help", "-h"}) {
      CommandResult r = RunPgwarden({cmd, flag}, 20s);
      SCOPED_TRACE(r.Describe());
      EXPECT_EQ(r.exit_code, 0);
      EXPECT_THAT(r.out, HasSubstr(std::string("usage: pgwarden ") + cmd));
    }
  }
  CommandResult top = RunPgwarden({"--help"}, 20s);
  EXPECT_EQ(top.exit_code, 0) << top.Describe();
  EXPECT_THAT(top.out, HasSubstr("usage: pgwarden <command>"));
  CommandResult version = RunPgwarden({"version"}, 20s);
  EXPECT_EQ(version.exit_code, 0) << version.Describe();
  EXPECT_THAT(version.out, HasSubstr("pgwarden "));
}

// When pgwarden runs as root, PostgreSQL runs as postgres, which cannot enter /root.
TEST(CliUsageTest, UpUnderRootHomeIsRefusedNamingThePostgresUser) {
  if (!RunningAsRoot()) GTEST_SKIP() << "only meaningful as root";
  struct stat st {};
  if (stat("/root", &st) != 0 || (st.st_mode & 07777) != 0700) {
    GTEST_SKIP() << "/root is not mode 0700 here";
  }
  std::random_device rd;
  std::string dir = "/root/pgw-itest-" + std::to_string(rd()) + std::to_string(rd());
  LocalClusterGuard guard(dir);  // in case it starts anything after all
  CommandResult r = guard.Up({}, 60s);
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("postgres")) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr(dir));
  std::error_code ec;
  EXPECT_FALSE(fs::exists(dir + "/cluster.yml", ec)) << "a refused up left a cluster behind";
  if (!fs::exists(dir + "/cluster.yml", ec)) fs::remove_all(dir, ec);
}

// --- agent start-up refusals ----------------------------------------------------

// A data directory initialised by another cluster is never started.
TEST(NodeStartTest, ForeignDataDirIsRefusedWithBothIdentifiers) {
  if (access("/usr/bin/etcd", X_OK) != 0) GTEST_SKIP() << "/usr/bin/etcd is not installed";
  if (access((std::string(kPgBin) + "/initdb").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "PostgreSQL 15 is not installed";
  }
  TempDir tmp("pgw-itest-foreign");
  EtcdServer etcd;
  Status st = etcd.Start(tmp.Sub("etcd"));
  ASSERT_TRUE(st.ok()) << st.ToString();

  std::string data = tmp.Sub("data");
  ProcessOptions as_pg;
  if (RunningAsRoot()) {
    ASSERT_TRUE(fs::create_directory(data));
    auto pg_user = LookupOsUser("postgres");
    ASSERT_TRUE(pg_user.ok()) << pg_user.status().ToString();
    ASSERT_EQ(chown(data.c_str(), pg_user->uid, pg_user->gid), 0);
    as_pg.os_user = "postgres";
  }
  ProcessResult initdb =
      RunCombined({std::string(kPgBin) + "/initdb", "-D", data, "-U", "postgres"}, 120s, as_pg);
  ASSERT_TRUE(initdb.ok()) << initdb.Describe();
  auto local_sysid = pg::ReadSystemIdentifier(data);
  ASSERT_TRUE(local_sysid.ok()) << local_sysid.status().ToString();

  const std::string scope = "foreign";
  const std::string cluster_sysid = "1234567890";
  {
    config::Config cfg = config::LoadConfigText(NodeConfig(data, 1, 1, 1, scope), "mem");
    dcs::EtcdDcs dcs({etcd.endpoint()}, cfg.KeyPrefix(), 30, std::chrono::milliseconds(3000));
    auto won = dcs.TryInitialize(cluster_sysid);
    ASSERT_TRUE(won.ok()) << won.status().ToString();
    ASSERT_TRUE(*won);
  }
  uint16_t etcd_port =
      static_cast<uint16_t>(std::stoi(etcd.endpoint().substr(etcd.endpoint().rfind(':') + 1)));
  std::string file = tmp.Sub("node.yml");
  ASSERT_TRUE(WriteFile(file, NodeConfig(data, etcd_port, FreePort(), FreePort(), scope)));

  auto started = Clk::now();
  ProcessResult r = RunCombined({PgwardenBinary(), "node", "-c", file}, 20s);
  double secs = std::chrono::duration<double>(Clk::now() - started).count();
  EXPECT_FALSE(r.timed_out) << "the agent kept running with a foreign data directory";
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_LT(secs, 20.0);
  EXPECT_THAT(r.output, HasSubstr("differs"));
  EXPECT_THAT(r.output, HasSubstr(cluster_sysid));
  EXPECT_THAT(r.output, HasSubstr(*local_sysid));
  std::error_code ec;
  EXPECT_FALSE(fs::exists(data + "/postmaster.pid", ec)) << "PostgreSQL was started";
  EXPECT_FALSE(fs::exists(data + "/standby.signal", ec)) << "the data dir was changed";
}

// Without etcd the agent waits (and says why), and stops cleanly on SIGTERM.
TEST(NodeStartTest, EtcdUnreachableAtStartKeepsWaitingAndStopsOnSigterm) {
  TempDir tmp("pgw-itest-noetcd");
  uint16_t closed = FreePort();
  std::string file = tmp.Sub("node.yml");
  ASSERT_TRUE(WriteFile(file, NodeConfig(tmp.Sub("data"), closed, FreePort(), FreePort())));
  ChildProcess agent;
  ASSERT_TRUE(agent.Start({PgwardenBinary(), "node", "-c", file}, tmp.Sub("agent.log")).ok());

  // Still running after 4 s.
  auto exited = agent.Wait(4s);
  ASSERT_FALSE(exited.has_value()) << "the agent exited: " << exited->Describe() << "\n"
                                   << ReadFile(agent.log_file());
  std::string endpoint = "127.0.0.1:" + std::to_string(closed);
  EXPECT_TRUE(WaitFor(
      [&] {
        // One line says both: etcd is unreachable, and at which endpoint.
        std::istringstream log(ReadFile(agent.log_file()));
        for (std::string line; std::getline(log, line);) {
          if (line.find(endpoint) != std::string::npos &&
              line.find("unreachable") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      10s))
      << "the log should name " << endpoint << " and say etcd is unreachable:\n"
      << ReadFile(agent.log_file());

  auto t0 = Clk::now();
  auto result = agent.Stop(SIGTERM, 15s);
  double secs = std::chrono::duration<double>(Clk::now() - t0).count();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->term_signal, 0) << "killed instead of exiting (took " << secs << " s)";
  EXPECT_EQ(result->exit_code, 0) << ReadFile(agent.log_file());
  EXPECT_LT(secs, 15.0);
  std::error_code ec;
  EXPECT_FALSE(fs::exists(tmp.Sub("data") + "/postmaster.pid", ec));
}

}  // namespace
}  // namespace pgwarden::itest
