// 3-node `pgwarden up`: one primary (the leader), two streaming replicas with slots, dsn, status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <set>

#include <libpq-fe.h>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

using ::testing::HasSubstr;

constexpr const char* kNastyPassword = "it's a \\ 'quoted' \\' pass=word\\";

// One cluster for the whole file: every test reads it, none changes its topology.
class BootstrapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("pgw-itest-bootstrap");
    cluster_ = new LocalClusterGuard(tmp_->Sub("cluster"));
    // Regression: a replication password with ' or \ broke every replica (a
    // syntax error in postgresql.conf, or authentication failing forever). The
    // agents `up` starts inherit this override of cluster.yml's password.
    setenv("PGWARDEN_REPLICATION_PASSWORD", kNastyPassword, 1);
    up_ = new CommandResult(cluster_->Up({"--nodes", "3"}));
    unsetenv("PGWARDEN_REPLICATION_PASSWORD");
  }
  static void TearDownTestSuite() {
    delete up_;
    delete cluster_;  // down + safety net
    delete tmp_;
  }
  void SetUp() override {
    ASSERT_EQ(up_->exit_code, 0) << up_->Describe() << "\n" << cluster_->Logs();
  }

  static std::vector<NodeInfo> Nodes() { return cluster_->AllNodes(); }
  // The one node whose PostgreSQL is not in recovery; fails the test otherwise.
  static NodeInfo Primary() {
    auto nodes = Nodes();
    auto primaries = PrimariesAmong(nodes);
    EXPECT_EQ(primaries.size(), 1u);
    for (const auto& n : nodes) {
      if (!primaries.empty() && n.name == primaries.front()) return n;
    }
    return {};
  }
  static std::vector<NodeInfo> Replicas(const std::string& primary) {
    std::vector<NodeInfo> out;
    for (const auto& n : Nodes()) {
      if (n.name != primary) out.push_back(n);
    }
    return out;
  }

  static TempDir* tmp_;
  static LocalClusterGuard* cluster_;
  static CommandResult* up_;
};

TempDir* BootstrapTest::tmp_ = nullptr;
LocalClusterGuard* BootstrapTest::cluster_ = nullptr;
CommandResult* BootstrapTest::up_ = nullptr;

TEST_F(BootstrapTest, ExactlyOnePrimaryAndItIsTheLeader) {
  auto nodes = Nodes();
  ASSERT_EQ(nodes.size(), 3u);
  auto primaries = PrimariesAmong(nodes);
  ASSERT_EQ(primaries.size(), 1u) << cluster_->Logs();
  for (const auto& n : nodes) {
    auto rec = QueryValue(n.pg_conninfo, "SELECT pg_is_in_recovery()");
    ASSERT_TRUE(rec.ok()) << n.name << ": " << rec.status().ToString();
    EXPECT_EQ(*rec, n.name == primaries.front() ? "f" : "t") << n.name;
  }
  EXPECT_EQ(cluster_->Leader(), primaries.front());
}

TEST_F(BootstrapTest, TwoStreamingReplicasEachWithAnActiveSlot) {
  NodeInfo primary = Primary();
  ASSERT_FALSE(primary.name.empty());
  std::set<std::string> replicas;
  for (const auto& n : Replicas(primary.name)) replicas.insert(n.name);
  ASSERT_EQ(replicas.size(), 2u);

  std::set<std::string> streaming;
  bool ok = WaitFor(
      [&] {
        auto r = QueryOnce(primary.pg_conninfo,
                           "SELECT application_name, state FROM pg_stat_replication");
        if (!r.ok()) return false;
        streaming.clear();
        for (size_t i = 0; i < r->rows.size(); ++i) {
          if (r->text(i, 1) == "streaming") streaming.insert(r->text(i, 0));
        }
        return r->rows.size() == 2 && streaming == replicas;
      },
      10s);
  EXPECT_TRUE(ok) << "pg_stat_replication streaming: " << ::testing::PrintToString(streaming);
  EXPECT_EQ(streaming, replicas);

  std::set<std::string> active_slots, all_slots;
  ok = WaitFor(
      [&] {
        auto r = QueryOnce(primary.pg_conninfo,
                           "SELECT slot_name, active FROM pg_replication_slots "
                           "WHERE slot_type = 'physical'");
        if (!r.ok()) return false;
        active_slots.clear();
        all_slots.clear();
        for (size_t i = 0; i < r->rows.size(); ++i) {
          all_slots.insert(r->text(i, 0));
          if (r->text(i, 1) == "t") active_slots.insert(r->text(i, 0));
        }
        return all_slots == replicas && active_slots == replicas;
      },
      10s);
  EXPECT_TRUE(ok);
  EXPECT_EQ(all_slots, replicas) << "one physical slot per replica, named after it";
  EXPECT_EQ(active_slots, replicas);
}

// The replicas above stream with kNastyPassword: check that it is the one
// their primary_conninfo carries, read back by libpq's own parser.
TEST_F(BootstrapTest, ReplicasAuthenticateWithAPasswordOfQuotesAndBackslashes) {
  NodeInfo primary = Primary();
  ASSERT_FALSE(primary.name.empty());
  for (const auto& n : Replicas(primary.name)) {
    auto ci = QueryValue(n.pg_conninfo, "SHOW primary_conninfo");
    ASSERT_TRUE(ci.ok()) << n.name << ": " << ci.status().ToString();
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(ci->c_str(), &err);
    ASSERT_NE(opts, nullptr) << n.name << ": " << (err ? err : "") << " in " << *ci;
    std::string password;
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (std::string(o->keyword) == "password" && o->val) password = o->val;
    }
    PQconninfoFree(opts);
    EXPECT_EQ(password, kNastyPassword) << n.name;
  }
}

TEST_F(BootstrapTest, DataChecksumsAreOn) {
  for (const auto& n : Nodes()) {
    auto v = QueryValue(n.pg_conninfo, "SHOW data_checksums");
    ASSERT_TRUE(v.ok()) << n.name << ": " << v.status().ToString();
    EXPECT_EQ(*v, "on") << n.name;
  }
}

TEST_F(BootstrapTest, RowWrittenOnPrimaryReachesBothReplicasWithin5s) {
  NodeInfo primary = Primary();
  ASSERT_FALSE(primary.name.empty());
  auto conn = Connect(primary.pg_conninfo);
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  ASSERT_TRUE((*conn)->Exec("CREATE TABLE IF NOT EXISTS bootstrap_probe (v text)").ok());
  ASSERT_TRUE((*conn)->Exec("INSERT INTO bootstrap_probe VALUES ('hello replicas')").ok());
  for (const auto& r : Replicas(primary.name)) {
    bool seen = WaitFor(
        [&] {
          auto v = QueryValue(r.pg_conninfo,
                              "SELECT count(*) FROM bootstrap_probe WHERE v = 'hello replicas'");
          return v.ok() && *v == "1";
        },
        5s, 100ms);
    EXPECT_TRUE(seen) << "row not visible on " << r.name << " within 5 s";
  }
}

TEST_F(BootstrapTest, DsnByRoleConnectsToPrimaryAndToStandby) {
  CommandResult p = cluster_->Pgwarden("dsn", {"--role", "primary"});
  ASSERT_EQ(p.exit_code, 0) << p.Describe();
  std::string primary_uri = p.out.substr(0, p.out.find('\n'));
  EXPECT_THAT(primary_uri, ::testing::StartsWith("postgresql://"));
  auto in_recovery = QueryValue(primary_uri, "SELECT pg_is_in_recovery()");
  ASSERT_TRUE(in_recovery.ok()) << primary_uri << ": " << in_recovery.status().ToString();
  EXPECT_EQ(*in_recovery, "f");

  CommandResult r = cluster_->Pgwarden("dsn", {"--role", "replica"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string replica_uri = r.out.substr(0, r.out.find('\n'));
  in_recovery = QueryValue(replica_uri, "SELECT pg_is_in_recovery()");
  ASSERT_TRUE(in_recovery.ok()) << replica_uri << ": " << in_recovery.status().ToString();
  EXPECT_EQ(*in_recovery, "t");

  // The default role is the primary.
  CommandResult d = cluster_->Pgwarden("dsn");
  ASSERT_EQ(d.exit_code, 0) << d.Describe();
  EXPECT_EQ(d.out.substr(0, d.out.find('\n')), primary_uri);
}

TEST_F(BootstrapTest, StatusTableListsAllMembers) {
  CommandResult s = cluster_->Pgwarden("status");
  ASSERT_EQ(s.exit_code, 0) << s.Describe();
  for (const auto& n : cluster_->Nodes()) EXPECT_THAT(s.out, HasSubstr(n)) << s.out;
  EXPECT_THAT(s.out, HasSubstr("leader"));
  EXPECT_THAT(s.out, HasSubstr("streaming"));
}

TEST_F(BootstrapTest, StatusJsonHasMembersWithReplicationColumns) {
  nlohmann::json j;
  // The replication columns come from the primary's pg_stat_replication: allow
  // a moment for both walsenders to show.
  auto replicas_reported = [&] {
    j = cluster_->StatusJson();
    if (!j.is_object() || !j.contains("members") || j["members"].size() != 3) return false;
    for (const auto& m : j["members"]) {
      if (m.value("role", "") != "leader" && !m["sent_lsn"].is_string()) return false;
    }
    return true;
  };
  EXPECT_TRUE(WaitFor(replicas_reported, 10s, 500ms)) << j.dump(2);
  ASSERT_TRUE(j.is_object()) << "status --json failed";
  ASSERT_TRUE(j.contains("members"));
  ASSERT_EQ(j["members"].size(), 3u) << j.dump(2);
  std::string leader;
  for (const auto& m : j["members"]) {
    SCOPED_TRACE(m.dump());
    for (const char* key :
         {"name", "role", "state", "timeline", "sent_lsn", "write_lsn", "flush_lsn", "replay_lsn",
          "replay_lag", "sync_state", "slot_retained_bytes"}) {
      EXPECT_TRUE(m.contains(key)) << key;
    }
    EXPECT_TRUE(m["timeline"].is_number_integer());
    EXPECT_EQ(m.value("timeline", 0), 1);
    if (m.value("role", "") == "leader") {
      EXPECT_TRUE(leader.empty()) << "two leaders";
      leader = m.value("name", "");
      EXPECT_EQ(m.value("state", ""), "running");
      continue;
    }
    EXPECT_EQ(m.value("role", ""), "replica");
    EXPECT_EQ(m.value("state", ""), "streaming");
    ASSERT_TRUE(m.contains("lag"));
    EXPECT_TRUE(m["lag"].is_number_unsigned()) << "lag";
    EXPECT_TRUE(m["sent_lsn"].is_string());
    EXPECT_TRUE(m["replay_lsn"].is_string());
    EXPECT_EQ(m["sync_state"], "async");
    EXPECT_TRUE(m["slot_retained_bytes"].is_number_unsigned()) << "slot_retained_bytes";
  }
  EXPECT_EQ(leader, PrimariesAmong(Nodes()).at(0));
}

}  // namespace
}  // namespace pgwarden::itest
