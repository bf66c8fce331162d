// Table tests of HandleRestRequest: Patroni's status codes, the node and cluster JSON.
#include "agent/rest_api.h"

#include <functional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pgwarden::agent {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr uint64_t kLeaderOptime = 0x5000000;

dcs::Member MakeMember(const std::string& name, const std::string& role, const std::string& state,
                       uint64_t xlog, uint64_t replay) {
  dcs::Member m;
  m.name = name;
  m.conn_url = "postgres://10.0.0." + name.substr(name.size() - 1) + ":5432/postgres";
  m.api_url = "http://10.0.0." + name.substr(name.size() - 1) + ":8008/patroni";
  m.role = role;
  m.state = state;
  m.timeline = 2;
  m.xlog_location = Lsn(xlog);
  m.replay_lsn = Lsn(replay);
  return m;
}

// node1 leads, node2 is the sync standby, node3 an async replica.
dcs::ClusterView ThreeNodeCluster() {
  dcs::ClusterView c;
  c.revision = 42;
  c.initialize = "7268616322854375442";
  c.leader = dcs::LeaderKey{"node1", 7};
  c.members["node3"] = MakeMember("node3", "replica", "streaming", kLeaderOptime - 4096, 0);
  c.members["node1"] = MakeMember("node1", "primary", "running", kLeaderOptime, 0);
  c.members["node2"] = MakeMember("node2", "replica", "streaming", kLeaderOptime, kLeaderOptime);
  c.sync = dcs::SyncKey{"node1", "node2", 9};
  c.last_leader_optime = Lsn(kLeaderOptime);
  return c;
}

NodeStatus PrimaryLeader() {
  NodeStatus n;
  n.scope = "demo";
  n.name = "node1";
  n.role = "primary";
  n.state = "running";
  n.pg_running = true;
  n.is_leader = true;
  n.dcs_reachable = true;
  n.timeline = 2;
  n.wal_lsn = Lsn(kLeaderOptime);
  n.postmaster_start_time = "2024-08-28 19:39:26.352526+00:00";
  n.server_version = 150018;
  n.system_identifier = "7268616322854375442";
  n.cluster = ThreeNodeCluster();
  return n;
}

// A streaming replica `lag` bytes behind the leader's optime.
NodeStatus StreamingReplica(uint64_t lag = 0) {
  NodeStatus n = PrimaryLeader();
  n.name = "node3";
  n.role = "replica";
  n.state = "streaming";
  n.is_leader = false;
  n.in_recovery = true;
  n.streaming = true;
  n.wal_lsn = Lsn();
  n.receive_lsn = Lsn(kLeaderOptime);
  n.replay_lsn = Lsn(kLeaderOptime - lag);
  return n;
}

NodeStatus SyncReplica() {
  NodeStatus n = StreamingReplica();
  n.name = "node2";
  n.is_sync_standby = true;
  return n;
}

NodeStatus UnknownLagReplica() {
  NodeStatus n = StreamingReplica();
  n.replay_lsn = Lsn();
  return n;
}

NodeStatus StoppedReplica() {
  NodeStatus n = StreamingReplica();
  n.pg_running = false;
  n.streaming = false;
  n.state = "stopped";
  return n;
}

NodeStatus NoLoadBalanceReplica() {
  NodeStatus n = StreamingReplica();
  n.tags["noloadbalance"] = "true";
  return n;
}

NodeStatus ZonedReplica() {
  NodeStatus n = StreamingReplica();
  n.tags["zone"] = "eu-1";
  n.tags["backup"] = "True";
  return n;
}

// A primary whose lease is lost: PostgreSQL still writable, but no leader key.
NodeStatus PrimaryWithoutLeaderKey() {
  NodeStatus n = PrimaryLeader();
  n.is_leader = false;
  n.cluster.leader.reset();
  return n;
}

net::HttpRequest Request(const std::string& method, const std::string& target) {
  net::HttpRequest req;
  req.method = method;
  req.target = target;
  net::ParseRequestTarget(target, &req.path, &req.query);
  return req;
}

struct Case {
  std::string name;
  std::function<NodeStatus()> node;
  std::string method;
  std::string target;
  int status;
};

class RestApiTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(RestApiTableTest, StatusCode) {
  const Case& c = GetParam();
  net::HttpResponse res = HandleRestRequest(c.node(), Request(c.method, c.target));
  EXPECT_EQ(res.status, c.status) << c.method << " " << c.target << " body: " << res.body;
}

auto Replica0 = [] { return StreamingReplica(0); };
auto ReplicaLag100 = [] { return StreamingReplica(100); };
auto ReplicaLag2M = [] { return StreamingReplica(2 * 1024 * 1024); };

INSTANTIATE_TEST_SUITE_P(
    Endpoints, RestApiTableTest,
    ::testing::Values(
        // The leader.
        Case{"leader_primary", PrimaryLeader, "GET", "/primary", 200},
        Case{"leader_master", PrimaryLeader, "GET", "/master", 200},
        Case{"leader_leader", PrimaryLeader, "GET", "/leader", 200},
        Case{"leader_read_write", PrimaryLeader, "GET", "/read-write", 200},
        Case{"leader_root", PrimaryLeader, "GET", "/", 200},
        Case{"leader_trailing_slash", PrimaryLeader, "GET", "/primary/", 200},
        Case{"leader_replica", PrimaryLeader, "GET", "/replica", 503},
        Case{"leader_read_only", PrimaryLeader, "GET", "/read-only", 200},
        Case{"leader_read_only_lag", PrimaryLeader, "GET", "/read-only?lag=1", 200},
        Case{"leader_sync", PrimaryLeader, "GET", "/sync", 503},
        Case{"leader_async", PrimaryLeader, "GET", "/async", 503},
        Case{"leader_read_only_sync", PrimaryLeader, "GET", "/read-only-sync", 200},
        Case{"leader_health", PrimaryLeader, "GET", "/health", 200},
        Case{"leader_standby_leader", PrimaryLeader, "GET", "/standby-leader", 503},
        Case{"leader_readiness", PrimaryLeader, "GET", "/readiness", 200},
        Case{"leader_liveness", PrimaryLeader, "GET", "/liveness", 200},
        Case{"leader_tags_ignored", PrimaryLeader, "GET", "/primary?tag_zone=nowhere", 200},
        Case{"leader_head", PrimaryLeader, "HEAD", "/primary", 200},
        Case{"leader_options", PrimaryLeader, "OPTIONS", "/primary", 200},
        Case{"leader_options_replica", PrimaryLeader, "OPTIONS", "/replica", 503},
        Case{"lost_lease_primary", PrimaryWithoutLeaderKey, "GET", "/primary", 503},
        Case{"lost_lease_leader", PrimaryWithoutLeaderKey, "GET", "/leader", 503},
        Case{"lost_lease_read_only", PrimaryWithoutLeaderKey, "GET", "/read-only", 503},
        Case{"lost_lease_health", PrimaryWithoutLeaderKey, "GET", "/health", 200},
        // A streaming replica.
        Case{"replica_replica", Replica0, "GET", "/replica", 200},
        Case{"replica_primary", Replica0, "GET", "/primary", 503},
        Case{"replica_root", Replica0, "GET", "/", 503},
        Case{"replica_leader", Replica0, "GET", "/leader", 503},
        Case{"replica_read_only", Replica0, "GET", "/read-only", 200},
        Case{"replica_async", Replica0, "GET", "/async", 200},
        Case{"replica_asynchronous", Replica0, "GET", "/asynchronous", 200},
        Case{"replica_sync", Replica0, "GET", "/sync", 503},
        Case{"replica_read_only_sync", Replica0, "GET", "/read-only-sync", 503},
        Case{"replica_health", Replica0, "GET", "/health", 200},
        Case{"replica_readiness", Replica0, "GET", "/readiness", 200},
        Case{"replica_streaming_state", Replica0, "GET", "/replica?replication_state=streaming",
             200},
        Case{"replica_head", Replica0, "HEAD", "/replica", 200},
        // Lag thresholds: 100 bytes behind.
        Case{"lag100_below_1MB", ReplicaLag100, "GET", "/replica?lag=1MB", 200},
        Case{"lag100_above_1", ReplicaLag100, "GET", "/replica?lag=1", 503},
        Case{"lag100_equal_100", ReplicaLag100, "GET", "/replica?lag=100", 200},
        Case{"lag100_above_99", ReplicaLag100, "GET", "/replica?lag=99", 503},
        Case{"lag100_16kB", ReplicaLag100, "GET", "/replica?lag=16kB", 200},
        Case{"lag100_async_1", ReplicaLag100, "GET", "/async?lag=1", 503},
        Case{"lag100_read_only_1", ReplicaLag100, "GET", "/read-only?lag=1", 503},
        Case{"lag100_readiness_1", ReplicaLag100, "GET", "/readiness?lag=1", 503},
        Case{"lag100_readiness_write_1", ReplicaLag100, "GET", "/readiness?lag=1&mode=write", 200},
        Case{"lag100_no_lag_param", ReplicaLag100, "GET", "/replica", 200},
        // 2 MiB behind: above the default maximum_lag_on_failover (1 MiB).
        Case{"lag2M_1MB", ReplicaLag2M, "GET", "/replica?lag=1MB", 503},
        Case{"lag2M_10MB", ReplicaLag2M, "GET", "/replica?lag=10MB", 200},
        Case{"lag2M_readiness", ReplicaLag2M, "GET", "/readiness", 503},
        Case{"lag2M_readiness_10MB", ReplicaLag2M, "GET", "/readiness?lag=10MB", 200},
        // Unknown lag.
        Case{"unknown_lag_replica", UnknownLagReplica, "GET", "/replica", 200},
        Case{"unknown_lag_with_lag", UnknownLagReplica, "GET", "/replica?lag=1GB", 503},
        // Bad parameters.
        Case{"bad_lag", Replica0, "GET", "/replica?lag=garbage", 400},
        Case{"bad_lag_unit", Replica0, "GET", "/replica?lag=10XB", 400},
        Case{"bad_readiness_lag", Replica0, "GET", "/readiness?lag=-1", 400},
        // A synchronous standby.
        Case{"sync_sync", SyncReplica, "GET", "/sync", 200},
        Case{"sync_synchronous", SyncReplica, "GET", "/synchronous", 200},
        Case{"sync_async", SyncReplica, "GET", "/async", 503},
        Case{"sync_replica", SyncReplica, "GET", "/replica", 200},
        Case{"sync_read_only_sync", SyncReplica, "GET", "/read-only-sync", 200},
        // PostgreSQL stopped.
        Case{"stopped_health", StoppedReplica, "GET", "/health", 503},
        Case{"stopped_replica", StoppedReplica, "GET", "/replica", 503},
        Case{"stopped_read_only", StoppedReplica, "GET", "/read-only", 503},
        Case{"stopped_readiness", StoppedReplica, "GET", "/readiness", 503},
        Case{"stopped_liveness", StoppedReplica, "GET", "/liveness", 200},
        Case{"stopped_patroni", StoppedReplica, "GET", "/patroni", 200},
        // noloadbalance.
        Case{"noloadbalance_replica", NoLoadBalanceReplica, "GET", "/replica", 503},
        Case{"noloadbalance_read_only", NoLoadBalanceReplica, "GET", "/read-only", 503},
        Case{"noloadbalance_health", NoLoadBalanceReplica, "GET", "/health", 200},
        // Tag filters.
        Case{"tag_match", ZonedReplica, "GET", "/replica?tag_zone=eu-1", 200},
        Case{"tag_mismatch", ZonedReplica, "GET", "/replica?tag_zone=us-1", 503},
        Case{"tag_missing", ZonedReplica, "GET", "/replica?tag_rack=a", 503},
        Case{"tag_bool", ZonedReplica, "GET", "/replica?tag_backup=true", 200},
        Case{"tag_two", ZonedReplica, "GET", "/read-only?tag_zone=eu-1&tag_backup=true", 200},
        // Documents.
        Case{"cluster", Replica0, "GET", "/cluster", 200},
        Case{"patroni", Replica0, "GET", "/patroni", 200},
        Case{"history", Replica0, "GET", "/history", 200},
        Case{"config_absent", Replica0, "GET", "/config", 502},
        // Routing.
        Case{"unknown_path", PrimaryLeader, "GET", "/nope", 404},
        Case{"unknown_path_post", PrimaryLeader, "POST", "/nope", 404},
        Case{"post_primary", PrimaryLeader, "POST", "/primary", 405},
        Case{"delete_cluster", PrimaryLeader, "DELETE", "/cluster", 405},
        Case{"put_health", PrimaryLeader, "PUT", "/health", 405}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(RestApiTest, LivenessFailsWhenHaLoopIsStale) {
  NodeStatus n = PrimaryLeader();
  n.ha_loop_stale = true;
  EXPECT_EQ(HandleRestRequest(n, Request("GET", "/liveness")).status, 503);
}

TEST(RestApiTest, ReadinessUsesMaximumLagOnFailoverFromConfig) {
  NodeStatus n = StreamingReplica(2 * 1024 * 1024);
  n.cluster.config = json{{"maximum_lag_on_failover", 4 * 1024 * 1024}};
  EXPECT_EQ(HandleRestRequest(n, Request("GET", "/readiness")).status, 200);
  n.cluster.config = json{{"maximum_lag_on_failover", 1024}};
  auto res = HandleRestRequest(n, Request("GET", "/readiness"));
  EXPECT_EQ(res.status, 503);
  EXPECT_THAT(res.body, HasSubstr("exceeds maximum allowable 1024"));
  EXPECT_EQ(HandleRestRequest(n, Request("GET", "/config")).status, 200);
}

TEST(RestApiTest, ReadinessNeedsStreaming) {
  NodeStatus n = StreamingReplica();
  n.streaming = false;
  auto res = HandleRestRequest(n, Request("GET", "/readiness"));
  EXPECT_EQ(res.status, 503);
  EXPECT_THAT(res.body, HasSubstr("not streaming"));
}

TEST(RestApiTest, BadLagIs400WithMessage) {
  auto res = HandleRestRequest(StreamingReplica(), Request("GET", "/replica?lag=garbage"));
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(res.content_type, "application/json");
  EXPECT_EQ(json::parse(res.body).at("error"),
            "invalid lag 'garbage': expected bytes or a size such as 16kB, 64MB, 1GB");
}

TEST(RestApiTest, OptionsHasNoBodyGetHasNodeJson) {
  auto options = HandleRestRequest(PrimaryLeader(), Request("OPTIONS", "/primary"));
  EXPECT_EQ(options.body, "");
  auto get = HandleRestRequest(PrimaryLeader(), Request("GET", "/replica"));
  EXPECT_EQ(get.status, 503);
  EXPECT_EQ(get.content_type, "application/json");
  EXPECT_EQ(json::parse(get.body).at("role"), "primary");
}

TEST(RestApiTest, MethodNotAllowedSaysWhatIs) {
  auto res = HandleRestRequest(PrimaryLeader(), Request("POST", "/primary"));
  EXPECT_EQ(res.status, 405);
  ASSERT_EQ(res.headers.size(), 1u);
  EXPECT_EQ(res.headers[0].first, "Allow");
  EXPECT_EQ(res.headers[0].second, "GET, HEAD, OPTIONS");
}

TEST(RestApiTest, PrimaryJsonHasPatroniShape) {
  json j = json::parse(HandleRestRequest(PrimaryLeader(), Request("GET", "/patroni")).body);
  EXPECT_EQ(j.at("state"), "running");
  EXPECT_EQ(j.at("role"), "primary");
  EXPECT_EQ(j.at("server_version"), 150018);
  EXPECT_EQ(j.at("postmaster_start_time"), "2024-08-28 19:39:26.352526+00:00");
  EXPECT_EQ(j.at("xlog"), json({{"location", kLeaderOptime}}));
  EXPECT_EQ(j.at("timeline"), 2);
  EXPECT_FALSE(j.contains("cluster_unlocked"));
  EXPECT_FALSE(j.contains("replication_state"));
  EXPECT_EQ(j.at("database_system_identifier"), "7268616322854375442");
  EXPECT_EQ(j.at("patroni"),
            json({{"version", PGWARDEN_VERSION}, {"scope", "demo"}, {"name", "node1"}}));
}

TEST(RestApiTest, ReplicaJsonHasPatroniShape) {
  NodeStatus n = SyncReplica();
  n.replay_lsn = Lsn(kLeaderOptime - 10);
  n.last_replay_timestamp = "2024-08-28 19:40:00+00:00";
  n.cluster.leader.reset();
  json j = NodeStatusToJson(n);
  EXPECT_EQ(j.at("role"), "replica");
  EXPECT_EQ(j.at("xlog"), json({{"received_location", kLeaderOptime},
                                {"replayed_location", kLeaderOptime - 10},
                                {"replayed_timestamp", "2024-08-28 19:40:00+00:00"},
                                {"paused", false}}));
  EXPECT_EQ(j.at("replication_state"), "streaming");
  EXPECT_EQ(j.at("sync_standby"), true);
  EXPECT_EQ(j.at("cluster_unlocked"), true);

  n.last_replay_timestamp.reset();
  EXPECT_TRUE(NodeStatusToJson(n).at("xlog").at("replayed_timestamp").is_null());
}

TEST(RestApiTest, StoppedNodeJsonHasStateAndNoXlog) {
  json j = NodeStatusToJson(StoppedReplica());
  EXPECT_EQ(j.at("state"), "stopped");
  EXPECT_EQ(j.at("role"), "replica");
  EXPECT_FALSE(j.contains("xlog"));
  EXPECT_FALSE(j.contains("postmaster_start_time"));
}

TEST(RestApiTest, ReplicationLagBytes) {
  EXPECT_EQ(StreamingReplica(100).ReplicationLagBytes(), 100u);
  EXPECT_EQ(PrimaryLeader().ReplicationLagBytes(), 0u);
  EXPECT_EQ(UnknownLagReplica().ReplicationLagBytes(), std::nullopt);
  // A replica ahead of the published optime has no lag.
  NodeStatus ahead = StreamingReplica();
  ahead.replay_lsn = Lsn(kLeaderOptime + 5);
  EXPECT_EQ(ahead.ReplicationLagBytes(), 0u);
  // The leader member's xlog_location counts when newer than status.optime.
  NodeStatus newer = StreamingReplica(0);
  newer.cluster.members["node1"].xlog_location = Lsn(kLeaderOptime + 300);
  EXPECT_EQ(newer.ReplicationLagBytes(), 300u);
  // Nothing known about the leader's position.
  NodeStatus lonely = StreamingReplica(0);
  lonely.cluster = dcs::ClusterView{};
  EXPECT_EQ(lonely.ReplicationLagBytes(), std::nullopt);
}

TEST(RestApiTest, ClusterJsonHasPatroniShapeAndRoles) {
  auto res = HandleRestRequest(StreamingReplica(), Request("GET", "/cluster"));
  ASSERT_EQ(res.status, 200);
  json j = json::parse(res.body);
  EXPECT_EQ(j.at("scope"), "demo");
  const json& members = j.at("members");
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[0].at("name"), "node1");
  EXPECT_EQ(members[1].at("name"), "node2");
  EXPECT_EQ(members[2].at("name"), "node3");

  EXPECT_EQ(members[0], json({{"name", "node1"},
                              {"role", "leader"},
                              {"state", "running"},
                              {"api_url", "http://10.0.0.1:8008/patroni"},
                              {"host", "10.0.0.1"},
                              {"port", 5432},
                              {"timeline", 2}}));
  EXPECT_EQ(members[1].at("role"), "sync_standby");
  EXPECT_EQ(members[1].at("state"), "streaming");
  EXPECT_EQ(members[1].at("lag"), 0);  // replay_lsn == optime
  EXPECT_EQ(members[2].at("role"), "replica");
  EXPECT_EQ(members[2].at("lag"), 4096);  // no replay_lsn: xlog_location counts
  EXPECT_EQ(members[2].at("host"), "10.0.0.3");
}

TEST(RestApiTest, ClusterJsonLagUnknownAndNoLeader) {
  dcs::ClusterView c = ThreeNodeCluster();
  c.leader.reset();
  c.sync.reset();
  c.members["node3"].xlog_location = Lsn();
  json j = ClusterToJson(c);
  for (const json& m : j.at("members")) EXPECT_EQ(m.at("role"), "replica");
  EXPECT_EQ(j.at("members")[0].at("lag"), 0);  // node1 at optime
  EXPECT_EQ(j.at("members")[2].at("lag"), "unknown");

  c.last_leader_optime = Lsn();
  for (const json& m : ClusterToJson(c).at("members")) EXPECT_EQ(m.at("lag"), "unknown");
  EXPECT_EQ(ClusterToJson(dcs::ClusterView{}), json({{"members", json::array()}}));
}

TEST(RestApiTest, ClusterJsonConnUrlForms) {
  dcs::ClusterView c;
  c.members["a"] = MakeMember("a", "replica", "running", 1, 0);
  c.members["a"].conn_url = "postgresql://rep:secret@[fe80::1]:6432/postgres?sslmode=require";
  c.members["b"] = MakeMember("b", "replica", "running", 1, 0);
  c.members["b"].conn_url = "postgres://db.example.com/postgres";
  c.members["c"] = MakeMember("c", "replica", "running", 1, 0);
  c.members["c"].tags["nofailover"] = "true";
  c.sync = dcs::SyncKey{"x", "b, c", 1};
  json m = ClusterToJson(c).at("members");
  EXPECT_EQ(m[0].at("host"), "fe80::1");
  EXPECT_EQ(m[0].at("port"), 6432);
  EXPECT_EQ(m[1].at("host"), "db.example.com");
  EXPECT_FALSE(m[1].contains("port"));
  EXPECT_EQ(m[1].at("role"), "sync_standby");
  EXPECT_EQ(m[2].at("role"), "sync_standby");
  EXPECT_EQ(m[2].at("tags"), json({{"nofailover", "true"}}));
}

}  // namespace
}  // namespace pgwarden::agent
