// Tests of the YAML configuration loader: Patroni compatibility, errors with key and line, env.
#include "config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace pgwarden::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The example from the Patroni documentation, unchanged.
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

// The smallest valid node config: 9 lines, so text appended starts at line 10.
constexpr char kMinimal[] = R"(scope: demo
name: node1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /data/pg
)";

// Every variable the loader reads, under both prefixes.
constexpr const char* kEnvSuffixes[] = {
    "NAME",
    "SCOPE",
    "NAMESPACE",
    "RESTAPI_LISTEN",
    "RESTAPI_CONNECT_ADDRESS",
    "ETCD3_HOSTS",
    "POSTGRESQL_LISTEN",
    "POSTGRESQL_CONNECT_ADDRESS",
    "POSTGRESQL_DATA_DIR",
    "SUPERUSER_USERNAME",
    "SUPERUSER_PASSWORD",
    "REPLICATION_USERNAME",
    "REPLICATION_PASSWORD",
    "LOG_LEVEL",
};

// `text` with the first `from` replaced by `to`.
std::string Replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { ClearEnv(); }
  void TearDown() override { ClearEnv(); }

  static void ClearEnv() {
    for (const char* suffix : kEnvSuffixes) {
      unsetenv((std::string("PGWARDEN_") + suffix).c_str());
      unsetenv((std::string("PATRONI_") + suffix).c_str());
    }
  }

  static Config Load(const std::string& yaml, ConfigUse use = ConfigUse::kNode) {
    return LoadConfigText(yaml, "cluster.yml", use);
  }

  // The ConfigError message for `yaml`; fails the test when it loads.
  static std::string ErrorOf(const std::string& yaml, ConfigUse use = ConfigUse::kNode) {
    try {
      LoadConfigText(yaml, "cluster.yml", use);
    } catch (const ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "loaded without error:\n" << yaml;
    return "";
  }

  static std::vector<std::string> ProblemsOf(const std::string& yaml,
                                             ConfigUse use = ConfigUse::kNode) {
    try {
      LoadConfigText(yaml, "cluster.yml", use);
    } catch (const ConfigError& e) {
      return e.problems();
    }
    ADD_FAILURE() << "loaded without error:\n" << yaml;
    return {};
  }
};

TEST_F(ConfigTest, PatroniExampleLoadsWithEveryField) {
  const Config c = Load(kPatroniExample);
  EXPECT_EQ(c.source_path, "cluster.yml");
  EXPECT_EQ(c.scope, "myapp-cluster");
  EXPECT_EQ(c.namespace_, "/service/");
  EXPECT_EQ(c.name, "node1");
  EXPECT_EQ(c.restapi.listen, (HostPort{"0.0.0.0", 8008}));
  EXPECT_EQ(c.restapi.connect_address, "10.0.1.10:8008");
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"10.0.1.100", 2379}, HostPort{"10.0.1.101", 2379},
                                        HostPort{"10.0.1.102", 2379}));
  EXPECT_EQ(c.etcd.protocol, "http");

  const DcsConfig& dcs = c.bootstrap.dcs;
  EXPECT_EQ(dcs.ttl, 30);
  EXPECT_EQ(dcs.loop_wait, 10);
  EXPECT_EQ(dcs.retry_timeout, 10);
  EXPECT_EQ(dcs.maximum_lag_on_failover, 1048576u);
  EXPECT_TRUE(dcs.use_pg_rewind);
  EXPECT_TRUE(dcs.use_slots);
  EXPECT_FALSE(dcs.synchronous_mode);
  EXPECT_EQ(dcs.member_slots_ttl, 1800);
  EXPECT_EQ(dcs.parameters, (std::map<std::string, std::string>{
                                {"wal_level", "replica"},
                                {"max_wal_senders", "5"},
                                {"max_replication_slots", "5"},
                                {"hot_standby", "on"},
                                {"wal_keep_size", "1GB"},
                            }));
  EXPECT_THAT(c.bootstrap.initdb_args, ElementsAre("--encoding=UTF8", "--data-checksums"));

  const PostgresqlConfig& pg = c.postgresql;
  EXPECT_EQ(pg.listen, (HostPort{"0.0.0.0", 5432}));
  EXPECT_EQ(pg.connect_address, "10.0.1.10:5432");
  EXPECT_EQ(pg.data_dir, "/var/lib/postgresql/15/main");
  EXPECT_EQ(pg.bin_dir, "/usr/lib/postgresql/15/bin");
  EXPECT_EQ(pg.os_user, "postgres");
  EXPECT_EQ(pg.log_file, "/var/lib/postgresql/15/main.log");
  EXPECT_EQ(pg.superuser.username, "postgres");
  EXPECT_EQ(pg.superuser.password, "postgres_password");
  EXPECT_EQ(pg.replication.username, "replicator");
  EXPECT_EQ(pg.replication.password, "replicator_password");
  EXPECT_EQ(pg.parameters, (std::map<std::string, std::string>{
                               {"shared_buffers", "2GB"},
                               {"effective_cache_size", "6GB"},
                               {"work_mem", "64MB"},
                           }));
  EXPECT_TRUE(pg.pg_hba.empty());
  EXPECT_TRUE(c.tags.empty());
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.proxy_yaml, nullptr);

  EXPECT_EQ(c.KeyPrefix(), "/service/myapp-cluster/");
  EXPECT_EQ(c.ConnUrl(), "postgres://10.0.1.10:5432/postgres");
  EXPECT_EQ(c.ApiUrl(), "http://10.0.1.10:8008/patroni");
}

TEST_F(ConfigTest, DefaultsFillTheMinimalConfig) {
  const Config c = Load(kMinimal);
  EXPECT_EQ(c.namespace_, "/service/");
  EXPECT_EQ(c.KeyPrefix(), "/service/demo/");
  EXPECT_EQ(c.restapi.connect_address, "127.0.0.1:8008");  // from listen
  EXPECT_EQ(c.postgresql.connect_address, "127.0.0.1:5432");
  EXPECT_EQ(c.ConnUrl(), "postgres://127.0.0.1:5432/postgres");
  EXPECT_EQ(c.ApiUrl(), "http://127.0.0.1:8008/patroni");
  EXPECT_EQ(c.postgresql.log_file, "/data/pg.log");
  EXPECT_EQ(c.postgresql.superuser.username, "postgres");
  EXPECT_EQ(c.postgresql.replication.username, "replicator");
  EXPECT_EQ(c.postgresql.rewind.username, "");
  EXPECT_THAT(c.bootstrap.initdb_args, ElementsAre("--data-checksums"));
  EXPECT_EQ(c.bootstrap.dcs.ttl, 30);
  EXPECT_EQ(c.bootstrap.dcs.loop_wait, 10);
  EXPECT_EQ(c.bootstrap.dcs.retry_timeout, 10);
  EXPECT_EQ(c.bootstrap.dcs.maximum_lag_on_failover, 1048576u);
  EXPECT_FALSE(c.bootstrap.dcs.use_pg_rewind);
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.watchdog.mode, WatchdogMode::kAutomatic);  // Patroni's default
  EXPECT_EQ(c.watchdog.device, "/dev/watchdog");
  EXPECT_EQ(c.watchdog.safety_margin, 5);
}

TEST_F(ConfigTest, DataDirTrailingSlashDoesNotLeakIntoLogFile) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("/data/pg"), 8, "/data/pg/");
  const Config c = Load(yaml);
  EXPECT_EQ(c.postgresql.data_dir, "/data/pg");
  EXPECT_EQ(c.postgresql.log_file, "/data/pg.log");
}

TEST_F(ConfigTest, ExplicitLogFileIsKept) {
  const Config c = Load(std::string(kMinimal) + "  log_file: /var/log/pg.log\n");
  EXPECT_EQ(c.postgresql.log_file, "/var/log/pg.log");
}

TEST_F(ConfigTest, NamespaceIsNormalised) {
  EXPECT_EQ(Load(std::string(kMinimal) + "namespace: service\n").namespace_, "/service/");
  EXPECT_EQ(Load(std::string(kMinimal) + "namespace: /pg\n").KeyPrefix(), "/pg/demo/");
  EXPECT_EQ(Load(std::string(kMinimal) + "namespace: pg/\n").namespace_, "/pg/");
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "namespace: ''\n"),
              HasSubstr("cluster.yml:10: namespace: must not be empty"));
}

TEST_F(ConfigTest, UnknownKeyNamesDottedPathAndLine) {
  const std::string msg = ErrorOf(std::string(kMinimal) + "  paramters:\n    work_mem: 4MB\n");
  EXPECT_EQ(msg, "unknown key 'postgresql.paramters' at cluster.yml:10");
}

TEST_F(ConfigTest, UnknownKeysAtEveryLevel) {
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "colour: blue\n"),
              HasSubstr("unknown key 'colour' at cluster.yml:10"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    ttll: 30\n"),
              HasSubstr("unknown key 'bootstrap.dcs.ttll' at cluster.yml:12"));
  EXPECT_THAT(
      ErrorOf(std::string(kMinimal) + "  authentication:\n    superuser: {user: x}\n"),
      HasSubstr("unknown key 'postgresql.authentication.superuser.user' at cluster.yml:11"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "log:\n  lvl: debug\n"),
              HasSubstr("unknown key 'log.lvl' at cluster.yml:11"));
}

TEST_F(ConfigTest, EveryProblemIsCollected) {
  const std::vector<std::string> problems = ProblemsOf(std::string(kMinimal) +
                                                       "  paramters: {}\n"
                                                       "bootstrap:\n"
                                                       "  dcs:\n"
                                                       "    ttl: thirty\n"
                                                       "    synchronous_mode: maybe\n");
  EXPECT_THAT(problems,
              ElementsAre("unknown key 'postgresql.paramters' at cluster.yml:10",
                          "cluster.yml:13: bootstrap.dcs.ttl: expected an integer, got 'thirty'",
                          "cluster.yml:14: bootstrap.dcs.synchronous_mode: expected true or false, "
                          "got 'maybe'"));
}

TEST_F(ConfigTest, WhatListsOneProblemPerLine) {
  const std::string msg = ErrorOf("scope: a\nname: b\n", ConfigUse::kNode);
  EXPECT_THAT(msg, HasSubstr("\n"));
  EXPECT_THAT(msg, HasSubstr("postgresql.data_dir: is required"));
  EXPECT_THAT(msg, HasSubstr("restapi.listen: is required"));
}

TEST_F(ConfigTest, MapWhereScalarExpected) {
  std::string yaml = kMinimal;
  yaml.replace(0, 11, "scope: {a: b}");
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("cluster.yml:1: scope: expected a string, got a map"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "  data_dir2: x\n"),
              HasSubstr("postgresql.data_dir2"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    ttl: [30]\n"),
              HasSubstr("cluster.yml:12: bootstrap.dcs.ttl: expected an integer, got a list"));
  EXPECT_THAT(ErrorOf(Replaced(kMinimal, "restapi:\n  listen: 127.0.0.1:8008", "restapi: 8008")),
              HasSubstr("cluster.yml:3: restapi: expected a map, got '8008'"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "tags: nofailover\n"),
              HasSubstr("cluster.yml:10: tags: expected a map, got 'nofailover'"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "  parameters:\n    work_mem: {a: 1}\n"),
              HasSubstr("cluster.yml:11: postgresql.parameters.work_mem: expected a single value"));
}

TEST_F(ConfigTest, DuplicateKeyIsAnError) {
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "name: node2\n"),
              HasSubstr("cluster.yml:10: name: duplicate key (first given at cluster.yml:2)"));
}

TEST_F(ConfigTest, BoolsAcceptYaml11Spellings) {
  for (const auto& [text, expected] : std::vector<std::pair<std::string, bool>>{
           {"true", true},
           {"True", true},
           {"yes", true},
           {"on", true},
           {"false", false},
           {"no", false},
           {"OFF", false},
           {"'on'", true},
       }) {
    const Config c =
        Load(std::string(kMinimal) + "bootstrap:\n  dcs:\n    synchronous_mode: " + text + "\n");
    EXPECT_EQ(c.bootstrap.dcs.synchronous_mode, expected) << text;
  }
  EXPECT_THAT(
      ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    postgresql:\n      use_slots: 1\n"),
      HasSubstr("cluster.yml:13: bootstrap.dcs.postgresql.use_slots: expected true or false, got "
                "'1'"));
}

TEST_F(ConfigTest, BadHostPortIsReportedWithKeyAndLine) {
  struct Case {
    std::string listen;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{
           {"127.0.0.1", "missing port"},
           {"127.0.0.1:", "missing port"},
           {":8008", "empty host"},
           {"127.0.0.1:0", "port must be a number from 1 to 65535, got '0'"},
           {"127.0.0.1:70000", "port must be a number from 1 to 65535, got '70000'"},
           {"127.0.0.1:http", "port must be a number from 1 to 65535, got 'http'"},
           {"::1:8008", "an IPv6 address needs brackets"},
           {"[::1]", "missing port"},
           {"[]:8008", "empty host"},
       }) {
    std::string yaml = kMinimal;
    yaml.replace(yaml.find("127.0.0.1:8008"), 14, "'" + c.listen + "'");
    EXPECT_THAT(ErrorOf(yaml), HasSubstr("cluster.yml:4: restapi.listen: " + c.expected))
        << c.listen;
  }
}

TEST_F(ConfigTest, Ipv6ListenAndConnectAddress) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("127.0.0.1:5432"), 14, "'[::1]:5432'");
  const Config c = Load(yaml);
  EXPECT_EQ(c.postgresql.listen, (HostPort{"::1", 5432}));
  EXPECT_EQ(c.postgresql.connect_address, "[::1]:5432");
  EXPECT_EQ(c.ConnUrl(), "postgres://[::1]:5432/postgres");
}

TEST_F(ConfigTest, BadConnectAddressAndEtcdHosts) {
  EXPECT_THAT(
      ErrorOf(std::string(kMinimal) + "  connect_address: 10.0.0.1:99999\n"),
      HasSubstr("cluster.yml:10: postgresql.connect_address: port must be a number from 1 to"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "  connect_address: 0.0.0.0:5432\n"),
              HasSubstr("cluster.yml:10: postgresql.connect_address: '0.0.0.0' is not an address"));

  std::string yaml = kMinimal;
  yaml.replace(yaml.find("  hosts: 127.0.0.1:2379"), 23,
               "  hosts:\n    - 127.0.0.1:2379\n    - etcd2");
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("cluster.yml:8: etcd3.hosts[1]: missing port in 'etcd2'"));

  yaml = kMinimal;
  yaml.replace(yaml.find("127.0.0.1:2379"), 14, "a:2379,b:0");
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("cluster.yml:6: etcd3.hosts: port must be a number"));
}

TEST_F(ConfigTest, WildcardListenRequiresConnectAddress) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("127.0.0.1:8008"), 14, "0.0.0.0:8008");
  EXPECT_THAT(ErrorOf(yaml),
              HasSubstr("cluster.yml:4: restapi.connect_address is required when listen is "
                        "0.0.0.0"));

  yaml = kMinimal;
  yaml.replace(yaml.find("127.0.0.1:5432"), 14, "'[::]:5432'");
  EXPECT_THAT(ErrorOf(yaml),
              HasSubstr("cluster.yml:8: postgresql.connect_address is required when listen is ::"));

  // Not needed by a client, which never serves anything.
  yaml = kMinimal;
  yaml.replace(yaml.find("127.0.0.1:8008"), 14, "0.0.0.0:8008");
  EXPECT_NO_THROW(LoadConfigText(yaml, "cluster.yml", ConfigUse::kClient));
}

TEST_F(ConfigTest, TtlMustCoverLoopWaitAndTwoRetries) {
  const std::string msg = ErrorOf(std::string(kMinimal) +
                                  "bootstrap:\n"
                                  "  dcs:\n"
                                  "    ttl: 20\n"
                                  "    loop_wait: 10\n"
                                  "    retry_timeout: 10\n");
  EXPECT_THAT(msg, HasSubstr("cluster.yml:12: bootstrap.dcs.ttl: ttl (20) must be at least "
                             "loop_wait + 2 * retry_timeout (10 + 2 * 10 = 30)"));
  // Exactly the sum is fine.
  EXPECT_NO_THROW(Load(std::string(kMinimal) + "bootstrap:\n  dcs:\n    ttl: 30\n"));
  // Raising loop_wait alone breaks the default ttl; the error points at loop_wait.
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    loop_wait: 15\n"),
              HasSubstr("cluster.yml:12: bootstrap.dcs.ttl: ttl (30) must be at least"));
}

TEST_F(ConfigTest, LoopWaitAndRetryTimeoutMustBePositive) {
  const std::vector<std::string> problems = ProblemsOf(std::string(kMinimal) +
                                                       "bootstrap:\n"
                                                       "  dcs:\n"
                                                       "    loop_wait: 0\n"
                                                       "    retry_timeout: -1\n");
  EXPECT_THAT(problems,
              ElementsAre("cluster.yml:12: bootstrap.dcs.loop_wait: must be at least 1 second, "
                          "got 0",
                          "cluster.yml:13: bootstrap.dcs.retry_timeout: must be at least 1 "
                          "second, got -1"));
}

TEST_F(ConfigTest, SizesAndDurations) {
  const Config c = Load(std::string(kMinimal) +
                        "bootstrap:\n"
                        "  dcs:\n"
                        "    maximum_lag_on_failover: 16MB\n"
                        "    member_slots_ttl: 30min\n");
  EXPECT_EQ(c.bootstrap.dcs.maximum_lag_on_failover, 16u * 1024 * 1024);
  EXPECT_EQ(c.bootstrap.dcs.member_slots_ttl, 1800);
  EXPECT_EQ(Load(std::string(kMinimal) + "bootstrap:\n  dcs:\n    member_slots_ttl: 600\n")
                .bootstrap.dcs.member_slots_ttl,
            600);
  EXPECT_THAT(
      ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    maximum_lag_on_failover: lots\n"),
      HasSubstr("cluster.yml:12: bootstrap.dcs.maximum_lag_on_failover: expected a size"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "bootstrap:\n  dcs:\n    member_slots_ttl: 5y\n"),
              HasSubstr("cluster.yml:12: bootstrap.dcs.member_slots_ttl: expected seconds"));
}

TEST_F(ConfigTest, RequiredForANode) {
  const std::vector<std::string> problems = ProblemsOf("tags: {}\n");
  EXPECT_THAT(problems, ElementsAre("cluster.yml: scope: is required",  //
                                    "cluster.yml: name: is required",
                                    "cluster.yml: restapi.listen: is required",
                                    "cluster.yml: postgresql.listen: is required",
                                    "cluster.yml: etcd3.hosts: is required (the etcd endpoints, "
                                    "e.g. 127.0.0.1:2379)",
                                    "cluster.yml: postgresql.data_dir: is required"));
}

TEST_F(ConfigTest, DataDirMustBeAbsolute) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("/data/pg"), 8, "data/pg");
  EXPECT_THAT(ErrorOf(yaml),
              HasSubstr("cluster.yml:9: postgresql.data_dir: must be an absolute path"));
}

TEST_F(ConfigTest, MemberNameMustMakeAValidSlotName) {
  for (const char* ok : {"node1", "pg-1.dc_a", "Node1"}) {
    std::string yaml = kMinimal;
    yaml.replace(yaml.find("node1"), 5, ok);
    EXPECT_EQ(Load(yaml).name, ok);
  }
  for (const char* bad : {"'node 1'", "node/1", "nöde"}) {
    std::string yaml = kMinimal;
    yaml.replace(yaml.find("node1"), 5, bad);
    EXPECT_THAT(ErrorOf(yaml), HasSubstr("cluster.yml:2: name: may only contain")) << bad;
  }
  EXPECT_THAT(ErrorOf(std::string(kMinimal).replace(0, 11, "scope: a/b")),
              HasSubstr("cluster.yml:1: scope: must not contain '/'"));
}

TEST_F(ConfigTest, ClientNeedsOnlyScopeAndEtcd) {
  const Config c = LoadConfigText("scope: demo\netcd3:\n  hosts: [127.0.0.1:2379]\n", "c.yml",
                                  ConfigUse::kClient);
  EXPECT_EQ(c.scope, "demo");
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"127.0.0.1", 2379}));

  const std::vector<std::string> problems = ProblemsOf("name: x\n", ConfigUse::kClient);
  EXPECT_THAT(problems, ElementsAre("cluster.yml: scope: is required",
                                    HasSubstr("cluster.yml: etcd3.hosts: is required")));
  // What is given is still checked.
  EXPECT_THAT(ErrorOf("scope: demo\netcd3:\n  hosts: [127.0.0.1:2379]\nrestapi:\n  listen: x\n",
                      ConfigUse::kClient),
              HasSubstr("cluster.yml:5: restapi.listen: missing port"));
}

TEST_F(ConfigTest, InitdbOptions) {
  const std::string base = std::string(kMinimal) + "bootstrap:\n  initdb:\n";
  EXPECT_THAT(Load(base + "    - encoding: UTF8\n    - locale: C.UTF-8\n").bootstrap.initdb_args,
              ElementsAre("--encoding=UTF8", "--locale=C.UTF-8", "--data-checksums"));
  EXPECT_THAT(Load(base + "    - data-checksums\n    - encoding: UTF8\n").bootstrap.initdb_args,
              ElementsAre("--data-checksums", "--encoding=UTF8"));
  EXPECT_THAT(Load(base + "    - no-data-checksums\n    - encoding: UTF8\n").bootstrap.initdb_args,
              ElementsAre("--encoding=UTF8"));
  EXPECT_THAT(ErrorOf(base + "    - data-checksums\n    - no-data-checksums\n"),
              HasSubstr("cluster.yml:13: bootstrap.initdb: both data-checksums and"));
  EXPECT_THAT(ErrorOf(base + "    - [a, b]\n"),
              HasSubstr("cluster.yml:12: bootstrap.initdb[0]: expected an option"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "bootstrap:\n  initdb: data-checksums\n"),
              HasSubstr("cluster.yml:11: bootstrap.initdb: expected a list"));
}

TEST_F(ConfigTest, EtcdSectionSpellings) {
  std::string yaml =
      Replaced(kMinimal, "etcd3:\n  hosts: 127.0.0.1:2379", "etcd:\n  host: 10.0.0.1:2379");
  Config c = Load(yaml);
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"10.0.0.1", 2379}));
  // etcd authentication is refused, not silently ignored.
  EXPECT_THAT(ErrorOf(Replaced(kMinimal, "etcd3:\n  hosts: 127.0.0.1:2379",
                               "etcd3:\n  hosts: 127.0.0.1:2379\n  username: root")),
              HasSubstr("etcd3.username: etcd authentication is not supported yet"));

  yaml = kMinimal;
  yaml.replace(yaml.find("  hosts: 127.0.0.1:2379"), 23,
               "  protocol: http\n  hosts:\n    - a:2379\n    - '[fd00::1]:2379'");
  c = Load(yaml);
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"a", 2379}, HostPort{"fd00::1", 2379}));

  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "etcd:\n  hosts: b:2379\n"),
              HasSubstr("cluster.yml:10: etcd: both etcd and etcd3 are given"));
  EXPECT_THAT(ErrorOf(Replaced(kMinimal, "  hosts: 127", "  protocol: https\n  hosts: 127")),
              HasSubstr("cluster.yml:6: etcd3.protocol: only 'http' is supported"));
}

TEST_F(ConfigTest, UsePgRewindUnderPostgresqlSetsDcs) {
  EXPECT_TRUE(Load(std::string(kMinimal) + "  use_pg_rewind: yes\n").bootstrap.dcs.use_pg_rewind);
  EXPECT_THAT(ErrorOf(std::string(kMinimal) +
                      "  use_pg_rewind: false\n"
                      "bootstrap:\n  dcs:\n    postgresql:\n      use_pg_rewind: true\n"),
              HasSubstr("cluster.yml:10: postgresql.use_pg_rewind: contradicts"));
}

TEST_F(ConfigTest, PgHbaFromBootstrapOrPostgresql) {
  Config c = Load(std::string(kMinimal) +
                  "bootstrap:\n  pg_hba:\n    - host all all 0.0.0.0/0 scram-sha-256\n");
  EXPECT_THAT(c.bootstrap.pg_hba, ElementsAre("host all all 0.0.0.0/0 scram-sha-256"));
  EXPECT_THAT(c.postgresql.pg_hba, ElementsAre("host all all 0.0.0.0/0 scram-sha-256"));

  c = Load(std::string(kMinimal) +
           "  pg_hba: [local all all trust]\n"
           "bootstrap:\n  pg_hba:\n    - host all all 0.0.0.0/0 md5\n");
  EXPECT_THAT(c.postgresql.pg_hba, ElementsAre("local all all trust"));

  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "  pg_hba: local all all trust\n"),
              HasSubstr("cluster.yml:10: postgresql.pg_hba: expected a list of strings"));
}

TEST_F(ConfigTest, RewindRoleIsAccepted) {
  const Config c = Load(std::string(kMinimal) +
                        "  authentication:\n"
                        "    rewind: {username: rewinder, password: pw}\n");
  EXPECT_EQ(c.postgresql.rewind.username, "rewinder");
  EXPECT_EQ(c.postgresql.superuser.username, "postgres");
}

TEST_F(ConfigTest, TagsKeepScalarText) {
  const Config c = Load(std::string(kMinimal) +
                        "tags:\n  nofailover: true\n  noloadbalance: no\n  clonefrom: on\n");
  EXPECT_EQ(c.tags, (std::map<std::string, std::string>{
                        {"nofailover", "true"}, {"noloadbalance", "no"}, {"clonefrom", "on"}}));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "tags:\n  nofailover: [1]\n"),
              HasSubstr("cluster.yml:11: tags.nofailover: expected a single value"));
}

TEST_F(ConfigTest, ProxySectionIsKeptForTheProxy) {
  const Config c = Load(std::string(kMinimal) + "proxy:\n  listen: 0.0.0.0:6432\n  whatever: 1\n");
  ASSERT_NE(c.proxy_yaml, nullptr);
  const YAML::Node& proxy = *c.proxy_yaml;
  EXPECT_EQ(proxy["listen"].as<std::string>(), "0.0.0.0:6432");
  EXPECT_EQ(proxy["whatever"].Mark().line + 1, 12);
}

TEST_F(ConfigTest, LogLevel) {
  EXPECT_EQ(Load(std::string(kMinimal) + "log:\n  level: WARNING\n").log_level, "warn");
  EXPECT_EQ(Load(std::string(kMinimal) + "log:\n  level: debug\n").log_level, "debug");
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "log:\n  level: loud\n"),
              HasSubstr("cluster.yml:11: log.level: expected debug, info, warn or error"));
}

TEST_F(ConfigTest, WatchdogSectionAsPatroniWritesIt) {
  const Config c = Load(std::string(kMinimal) +
                        "watchdog:\n"
                        "  mode: required\n"
                        "  device: /dev/watchdog1\n"
                        "  safety_margin: 10\n");
  EXPECT_EQ(c.watchdog.mode, WatchdogMode::kRequired);
  EXPECT_EQ(c.watchdog.device, "/dev/watchdog1");
  EXPECT_EQ(c.watchdog.safety_margin, 10);
  // `watchdog:` with nothing under it keeps the defaults.
  EXPECT_EQ(Load(std::string(kMinimal) + "watchdog:\n").watchdog.mode, WatchdogMode::kAutomatic);
}

TEST_F(ConfigTest, WatchdogModeSpellings) {
  // YAML 1.1 reads a bare `off` as a boolean; Patroni accepts it, and so do we.
  const std::pair<const char*, WatchdogMode> cases[] = {
      {"off", WatchdogMode::kOff},
      {"'off'", WatchdogMode::kOff},
      {"false", WatchdogMode::kOff},
      {"disabled", WatchdogMode::kOff},
      {"automatic", WatchdogMode::kAutomatic},
      {"Auto", WatchdogMode::kAutomatic},
      {"required", WatchdogMode::kRequired},
      {"REQUIRE", WatchdogMode::kRequired},
  };
  for (const auto& [text, mode] : cases) {
    EXPECT_EQ(Load(std::string(kMinimal) + "watchdog:\n  mode: " + text + "\n").watchdog.mode, mode)
        << text;
  }
  EXPECT_STREQ(WatchdogModeName(WatchdogMode::kOff), "off");
  EXPECT_STREQ(WatchdogModeName(WatchdogMode::kAutomatic), "automatic");
  EXPECT_STREQ(WatchdogModeName(WatchdogMode::kRequired), "required");
  EXPECT_EQ(ParseWatchdogMode("sometimes"), std::nullopt);
}

TEST_F(ConfigTest, BadWatchdogValuesNameKeyAndLine) {
  EXPECT_THAT(ProblemsOf(std::string(kMinimal) + "watchdog:\n"
                                                 "  mode: sometimes\n"
                                                 "  device: watchdog0\n"
                                                 "  safety_margin: five\n"
                                                 "  timeout: 10\n"),
              ElementsAre("cluster.yml:11: watchdog.mode: expected off, automatic or required, "
                          "got 'sometimes'",
                          "cluster.yml:12: watchdog.device: must be an absolute path, got "
                          "'watchdog0'",
                          "cluster.yml:13: watchdog.safety_margin: expected an integer, got "
                          "'five'",
                          "unknown key 'watchdog.timeout' at cluster.yml:14"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "watchdog:\n  mode: [required]\n"),
              HasSubstr("cluster.yml:11: watchdog.mode: expected off, automatic or required, "
                        "got a list"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "watchdog: required\n"),
              HasSubstr("cluster.yml:10: watchdog: expected a map, got 'required'"));
}

TEST_F(ConfigTest, WatchdogSafetyMarginIsPatronis) {
  // Patroni's -1: half the ttl.
  EXPECT_EQ(Load(std::string(kMinimal) + "watchdog:\n  safety_margin: -1\n").watchdog.safety_margin,
            15);
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "watchdog:\n  safety_margin: -2\n"),
              HasSubstr("cluster.yml:11: watchdog.safety_margin: must be -1 (half the ttl) or at "
                        "least 0 seconds, got -2"));
  // A margin wider than ttl - retry_timeout is cut there by the agent
  // (WatchdogDeadline), so it is not an error.
  EXPECT_EQ(Load(std::string(kMinimal) + "watchdog:\n  safety_margin: 20\n").watchdog.safety_margin,
            20);
}

TEST_F(ConfigTest, SyntaxErrorHasLine) {
  const std::vector<std::string> problems =
      ProblemsOf("scope: demo\nname: node1\nrestapi:\n  listen: [127.0.0.1:8008\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0], HasSubstr("YAML syntax error"));
  EXPECT_THAT(problems[0], testing::StartsWith("cluster.yml:5: "));
}

TEST_F(ConfigTest, EmptyOrNonMapDocument) {
  EXPECT_THAT(ProblemsOf(""), ElementsAre("cluster.yml: the configuration is empty"));
  EXPECT_THAT(ProblemsOf("# only a comment\n"),
              ElementsAre("cluster.yml: the configuration is empty"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"), HasSubstr("expected a map of settings at the top level"));
}

TEST_F(ConfigTest, EnvironmentOverridesTheFile) {
  setenv("PATRONI_NAME", "fromPatroni", 1);
  setenv("PATRONI_SCOPE", "other", 1);
  setenv("PATRONI_NAMESPACE", "ns", 1);
  setenv("PATRONI_RESTAPI_LISTEN", "0.0.0.0:9008", 1);
  setenv("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.0.0.5:9008", 1);
  setenv("PATRONI_ETCD3_HOSTS", "'e1:2379','e2:2379'", 1);
  setenv("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:6543", 1);
  setenv("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.0.0.5:6543", 1);
  setenv("PATRONI_POSTGRESQL_DATA_DIR", "/srv/pg", 1);
  setenv("PATRONI_SUPERUSER_USERNAME", "admin", 1);
  setenv("PATRONI_SUPERUSER_PASSWORD", "s3cret", 1);
  setenv("PATRONI_REPLICATION_USERNAME", "repl", 1);
  setenv("PATRONI_REPLICATION_PASSWORD", "r3pl", 1);
  setenv("PATRONI_LOG_LEVEL", "DEBUG", 1);
  const Config c = Load(kMinimal);
  EXPECT_EQ(c.name, "fromPatroni");
  EXPECT_EQ(c.scope, "other");
  EXPECT_EQ(c.KeyPrefix(), "/ns/other/");
  EXPECT_EQ(c.restapi.listen, (HostPort{"0.0.0.0", 9008}));
  EXPECT_EQ(c.ApiUrl(), "http://10.0.0.5:9008/patroni");
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"e1", 2379}, HostPort{"e2", 2379}));
  EXPECT_EQ(c.postgresql.listen, (HostPort{"127.0.0.1", 6543}));
  EXPECT_EQ(c.ConnUrl(), "postgres://10.0.0.5:6543/postgres");
  EXPECT_EQ(c.postgresql.data_dir, "/srv/pg");
  EXPECT_EQ(c.postgresql.log_file, "/srv/pg.log");
  EXPECT_EQ(c.postgresql.superuser.username, "admin");
  EXPECT_EQ(c.postgresql.superuser.password, "s3cret");
  EXPECT_EQ(c.postgresql.replication.username, "repl");
  EXPECT_EQ(c.postgresql.replication.password, "r3pl");
  EXPECT_EQ(c.log_level, "debug");
}

TEST_F(ConfigTest, PgwardenVariablesWinOverPatroniOnes) {
  setenv("PATRONI_NAME", "fromPatroni", 1);
  setenv("PGWARDEN_NAME", "fromPgwarden", 1);
  setenv("PATRONI_ETCD3_HOSTS", "p:2379", 1);
  setenv("PGWARDEN_ETCD3_HOSTS", "w1:2379,w2:2379", 1);
  const Config c = Load(kMinimal);
  EXPECT_EQ(c.name, "fromPgwarden");
  EXPECT_THAT(c.etcd.hosts, ElementsAre(HostPort{"w1", 2379}, HostPort{"w2", 2379}));
}

TEST_F(ConfigTest, EmptyVariableCountsAsUnset) {
  setenv("PGWARDEN_NAME", "", 1);
  setenv("PATRONI_NAME", "fromPatroni", 1);
  EXPECT_EQ(Load(kMinimal).name, "fromPatroni");
}

TEST_F(ConfigTest, EnvironmentSuppliesRequiredKeys) {
  setenv("PGWARDEN_NAME", "n2", 1);
  setenv("PGWARDEN_POSTGRESQL_DATA_DIR", "/pg", 1);
  const Config c = Load(
      "scope: s\nrestapi: {listen: 127.0.0.1:1}\netcd3: {hosts: e:1}\npostgresql: {listen: "
      "127.0.0.1:2}\n");
  EXPECT_EQ(c.name, "n2");
  EXPECT_EQ(c.postgresql.data_dir, "/pg");
}

TEST_F(ConfigTest, BadEnvironmentValueNamesTheVariable) {
  setenv("PGWARDEN_RESTAPI_LISTEN", "nonsense", 1);
  setenv("PATRONI_NAME", "bad name", 1);
  setenv("PATRONI_POSTGRESQL_DATA_DIR", "relative", 1);
  const std::vector<std::string> problems = ProblemsOf(kMinimal);
  EXPECT_THAT(problems,
              testing::UnorderedElementsAre(
                  "environment PGWARDEN_RESTAPI_LISTEN: restapi.listen: missing port in "
                  "'nonsense' (expected host:port)",
                  HasSubstr("environment PATRONI_NAME: name: may only contain"),
                  HasSubstr("environment PATRONI_POSTGRESQL_DATA_DIR: postgresql.data_dir: must "
                            "be an absolute path")));
}

TEST_F(ConfigTest, LoadConfigFileReadsATempFile) {
  char path[] = "/tmp/pgwarden_config_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << kPatroniExample;
  }
  const Config c = LoadConfigFile(path);
  EXPECT_EQ(c.source_path, path);
  EXPECT_EQ(c.name, "node1");
  EXPECT_EQ(c.ConnUrl(), "postgres://10.0.1.10:5432/postgres");

  {
    std::ofstream out(path);
    out << kMinimal << "bootstrap:\n  dcs:\n    ttl: thirty\n";
  }
  try {
    LoadConfigFile(path);
    ADD_FAILURE() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr(std::string(path) + ":12: bootstrap.dcs.ttl"));
  }
  std::filesystem::remove(path);
}

TEST_F(ConfigTest, LoadConfigFileOnAMissingPath) {
  try {
    LoadConfigFile("/nonexistent/pgwarden/cluster.yml");
    ADD_FAILURE() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), ElementsAre("cannot read /nonexistent/pgwarden/cluster.yml: No such "
                                          "file or directory"));
  }
}

// Regression: a 64 MB file took 3.6 GB of memory, `-c /dev/zero` grew without limit.
TEST_F(ConfigTest, LoadConfigFileRefusesDevicesDirectoriesAndHugeFiles) {
  for (const char* path : {"/dev/zero", "/tmp"}) {
    try {
      LoadConfigFile(path);
      ADD_FAILURE() << "loaded " << path;
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.problems(), ElementsAre(std::string(path) + " is not a regular file (a "
                                                                "configuration is a YAML file)"));
    }
  }
  char path[] = "/tmp/pgwarden_config_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << kMinimal << "# " << std::string(kMaxConfigFileBytes, 'x') << "\n";
  }
  try {
    LoadConfigFile(path);
    ADD_FAILURE() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), ElementsAre(std::string(path) + " is larger than 1024 KiB: not a "
                                                              "pgwarden configuration"));
  }
  std::filesystem::remove(path);
}

TEST_F(ConfigTest, RoleNamesWithLineBreaksAndValuesWithNulAreRefused) {
  std::string yaml = std::string(kMinimal) +
                     "  authentication:\n    replication:\n      username: "
                     "\"repl\\nhost all all 0.0.0.0/0 trust\"\n      password: \"a\\0b\"\n";
  EXPECT_THAT(ProblemsOf(yaml),
              testing::IsSupersetOf(
                  {HasSubstr("postgresql.authentication.replication.username: must not contain "
                             "a NUL byte or a line break"),
                   HasSubstr("postgresql.authentication.replication.password: must not contain "
                             "a NUL byte")}));
}

TEST(HostPortTest, ParseAndFormat) {
  EXPECT_EQ(ParseHostPort("db1:5432", "x"), (HostPort{"db1", 5432}));
  EXPECT_EQ(ParseHostPort(" [::1]:5432 ", "x"), (HostPort{"::1", 5432}));
  EXPECT_EQ((HostPort{"::1", 5432}).ToString(), "[::1]:5432");
  EXPECT_EQ((HostPort{"10.0.0.1", 8008}).ToString(), "10.0.0.1:8008");
  try {
    ParseHostPort("db1", "--host");
    ADD_FAILURE() << "parsed";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "--host: missing port in 'db1' (expected host:port)");
  }
  EXPECT_THROW(ParseHostPort("db1:65536", "x"), ConfigError);
  EXPECT_THAT(ParseHostPort("db1:65535", "x").port, 65535);
}

}  // namespace
}  // namespace pgwarden::config

namespace pgwarden::config {
namespace {

TEST(HostPortOfUrlTest, ReadsHostAndPortOfConnUrls) {
  EXPECT_EQ(HostPortOfUrl("postgres://10.0.1.10:5432/postgres"), (HostPort{"10.0.1.10", 5432}));
  EXPECT_EQ(HostPortOfUrl("postgresql://u:p@db.example:6432/x"), (HostPort{"db.example", 6432}));
  EXPECT_EQ(HostPortOfUrl("postgres://[::1]:5433/postgres"), (HostPort{"::1", 5433}));
  EXPECT_FALSE(HostPortOfUrl("10.0.1.10:5432").has_value());
  EXPECT_FALSE(HostPortOfUrl("postgres://nohost/postgres").has_value());
  EXPECT_FALSE(HostPortOfUrl("postgres://h:99999/").has_value());
}

}  // namespace
}  // namespace pgwarden::config
