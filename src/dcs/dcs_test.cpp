// Unit tests: Member JSON, etcd gateway JSON, and the Dcs semantics on MemoryStore.
#include "dcs/dcs.h"

#include <gtest/gtest.h>

#include "common/clock.h"
#include "dcs/dcs_contract_test.h"
#include "dcs/etcd_codec.h"
#include "dcs/memory_dcs.h"

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;

// ---- Member JSON ----

TEST(MemberJsonTest, RoundTrips) {
  Member m;
  m.name = "node1";
  m.conn_url = "postgres://10.0.0.1:5432/postgres";
  m.api_url = "http://10.0.0.1:8008/patroni";
  m.role = "replica";
  m.state = "streaming";
  m.timeline = 4;
  m.xlog_location = Lsn(0x1'0000'0060ull);
  m.receive_lsn = Lsn(0x500);
  m.replay_lsn = Lsn(0x400);
  m.tags = {{"nofailover", "true"}, {"replicatefrom", "node2"}, {"failover_priority", "3"}};
  m.version = "0.1.0";
  json j = m.ToJson();
  EXPECT_EQ(j["pgwarden_format"], kMemberFormatVersion);
  EXPECT_EQ(j["xlog_location"], 0x1'0000'0060ull) << "Patroni writes bytes as an integer";
  EXPECT_EQ(j["tags"]["nofailover"], true) << "Patroni reads this tag as a boolean";
  EXPECT_EQ(j["tags"]["failover_priority"], 3);
  EXPECT_EQ(j["tags"]["replicatefrom"], "node2");

  Member back = Member::FromJson("node1", json::parse(j.dump()));
  EXPECT_EQ(back.name, "node1");
  EXPECT_EQ(back.conn_url, m.conn_url);
  EXPECT_EQ(back.api_url, m.api_url);
  EXPECT_EQ(back.role, m.role);
  EXPECT_EQ(back.state, m.state);
  EXPECT_EQ(back.timeline, 4);
  EXPECT_EQ(back.xlog_location, m.xlog_location);
  EXPECT_EQ(back.receive_lsn, m.receive_lsn);
  EXPECT_EQ(back.replay_lsn, m.replay_lsn);
  EXPECT_EQ(back.tags, m.tags);
  EXPECT_EQ(back.version, m.version);
}

TEST(MemberJsonTest, AcceptsPatroniWrittenMembers) {
  json j = json::parse(R"({"conn_url": "postgres://10.0.0.3:5432/postgres",
      "api_url": "http://10.0.0.3:8008/patroni", "state": "running", "role": "master",
      "version": "2.1.4", "xlog_location": 50331968, "timeline": 1,
      "tags": {"nofailover": true, "failover_priority": 2, "clonefrom": false}})");
  Member m = Member::FromJson("pg3", j);
  EXPECT_EQ(m.name, "pg3");
  EXPECT_EQ(m.role, "primary") << "Patroni 2 says master";
  EXPECT_EQ(m.state, "running");
  EXPECT_EQ(m.version, "2.1.4");
  EXPECT_EQ(m.xlog_location, Lsn(50331968));
  EXPECT_EQ(m.timeline, 1);
  EXPECT_FALSE(m.receive_lsn.valid());
  EXPECT_EQ(m.tags.at("nofailover"), "true");
  EXPECT_EQ(m.tags.at("failover_priority"), "2");
  EXPECT_EQ(m.tags.at("clonefrom"), "false");
}

TEST(MemberJsonTest, ToleratesMissingAndOddFields) {
  Member m = Member::FromJson("x", json::parse(R"({"state": "starting", "timeline": "7",
      "xlog_location": "0/3000148", "replay_lsn": "50331968", "tags": null})"));
  EXPECT_EQ(m.state, "starting");
  EXPECT_EQ(m.timeline, 7);
  EXPECT_EQ(m.xlog_location, Lsn(0x3000148));
  EXPECT_EQ(m.replay_lsn, Lsn(50331968));
  EXPECT_TRUE(m.role.empty());
  EXPECT_TRUE(m.tags.empty());
  EXPECT_EQ(Member::FromJson("y", json::array()).name, "y") << "not an object: defaults";
}

TEST(ClusterViewTest, FindMember) {
  ClusterView v;
  v.members["a"].name = "a";
  ASSERT_NE(v.FindMember("a"), nullptr);
  EXPECT_EQ(v.FindMember("a")->name, "a");
  EXPECT_EQ(v.FindMember("b"), nullptr);
  EXPECT_FALSE(v.HasLeader());
  v.leader = LeaderKey{"", 3};
  EXPECT_FALSE(v.HasLeader()) << "an empty leader key is no leader";
}

// ---- etcd gateway JSON ----

TEST(EtcdCodecTest, Base64MatchesRfc4648) {
  const std::pair<const char*, const char*> cases[] = {{"", ""},
                                                       {"f", "Zg=="},
                                                       {"fo", "Zm8="},
                                                       {"foo", "Zm9v"},
                                                       {"foob", "Zm9vYg=="},
                                                       {"fooba", "Zm9vYmE="},
                                                       {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : cases) {
    EXPECT_EQ(etcd::Base64Encode(plain), encoded);
    EXPECT_EQ(etcd::Base64Decode(encoded), std::optional<std::string>(plain));
  }
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  EXPECT_EQ(etcd::Base64Decode(etcd::Base64Encode(binary)), binary);
  EXPECT_EQ(etcd::Base64Decode("Zm9vYg"), std::optional<std::string>("foob")) << "unpadded";
  EXPECT_FALSE(etcd::Base64Decode("Zm9v!").has_value());
  EXPECT_FALSE(etcd::Base64Decode("Z").has_value());
}

TEST(EtcdCodecTest, PrefixRangeEndIncrementsTheLastByte) {
  EXPECT_EQ(etcd::PrefixRangeEnd("/service/demo/"), "/service/demo0");
  EXPECT_EQ(etcd::PrefixRangeEnd("a"), "b");
  EXPECT_EQ(etcd::PrefixRangeEnd("a\xff"), "b");
  EXPECT_EQ(etcd::PrefixRangeEnd("a\xfe"), "a\xff");
  EXPECT_EQ(etcd::PrefixRangeEnd("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(etcd::PrefixRangeEnd(""), std::string(1, '\0'));
}

TEST(EtcdCodecTest, EncodesRequestsWithBase64AndStringInts) {
  json put = etcd::EncodePut("/k", "v", 7587862211391530000);
  EXPECT_EQ(put["key"], "L2s=");
  EXPECT_EQ(put["value"], "dg==");
  EXPECT_EQ(put["lease"], "7587862211391530000") << "int64 as a string, no precision loss";
  EXPECT_FALSE(etcd::EncodePut("/k", "v", 0).contains("lease"));

  json range = etcd::EncodeRange("/service/a/", etcd::PrefixRangeEnd("/service/a/"));
  EXPECT_EQ(range["key"], etcd::Base64Encode("/service/a/"));
  EXPECT_EQ(range["range_end"], etcd::Base64Encode("/service/a0"));
  EXPECT_FALSE(etcd::EncodeRange("/k", "").contains("range_end"));

  TxnRequest txn;
  txn.compare = {Compare::Absent("/l"), Compare::ValueIs("/l", "me"),
                 Compare::ModRevisionIs("/s", 42), Compare::LeaseIs("/l", 9)};
  txn.success = {TxnOp::Put("/l", "me", 9)};
  txn.failure = {TxnOp::Get("/l"), TxnOp::Delete("/x")};
  json j = etcd::EncodeTxn(txn);
  EXPECT_EQ(
      j["compare"][0],
      json::parse(R"({"key":"L2w=","target":"CREATE","result":"EQUAL","create_revision":"0"})"));
  EXPECT_EQ(j["compare"][1],
            json::parse(R"({"key":"L2w=","target":"VALUE","result":"EQUAL","value":"bWU="})"));
  EXPECT_EQ(j["compare"][2]["target"], "MOD");
  EXPECT_EQ(j["compare"][2]["mod_revision"], "42");
  EXPECT_EQ(j["compare"][3]["target"], "LEASE");
  EXPECT_EQ(j["compare"][3]["lease"], "9");
  EXPECT_EQ(j["success"][0]["request_put"]["lease"], "9");
  EXPECT_TRUE(j["failure"][0].contains("request_range"));
  EXPECT_TRUE(j["failure"][1].contains("request_delete_range"));

  json watch = etcd::EncodeWatchCreate("/p/", "/p0", 12);
  EXPECT_EQ(watch["create_request"]["start_revision"], "12");
  EXPECT_EQ(etcd::EncodeLeaseGrant(30)["TTL"], "30");
  EXPECT_EQ(etcd::EncodeLeaseId(5)["ID"], "5");
}

TEST(EtcdCodecTest, DecodesGatewayResponses) {
  // As etcd 3.4 answers: int64 as strings, empty fields left out.
  auto range = etcd::DecodeRange(json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","revision":"7","raft_term":"2"},
          "kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"5","version":"3",
                  "value":"Yg==","lease":"4111120258888547592"},
                 {"key":"Yw==","create_revision":"6","mod_revision":"6","version":"1"}],
          "count":"2"})"));
  ASSERT_TRUE(range.ok()) << range.status().ToString();
  EXPECT_EQ(range->revision, 7);
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[0].key, "a");
  EXPECT_EQ(range->kvs[0].value, "b");
  EXPECT_EQ(range->kvs[0].create_revision, 2);
  EXPECT_EQ(range->kvs[0].mod_revision, 5);
  EXPECT_EQ(range->kvs[0].version, 3);
  EXPECT_EQ(range->kvs[0].lease, 4111120258888547592);
  EXPECT_EQ(range->kvs[1].value, "") << "an empty value is left out";
  EXPECT_EQ(range->kvs[1].lease, 0);

  auto empty = etcd::DecodeRange(json::parse(R"({"header":{"revision":"3"}})"));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->kvs.empty());

  auto failed = etcd::DecodeTxn(json::parse(
      R"({"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},
          "kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1",
          "value":"Yg=="}],"count":"1"}}]})"));
  ASSERT_TRUE(failed.ok()) << failed.status().ToString();
  EXPECT_FALSE(failed->succeeded) << "false is left out";
  ASSERT_EQ(failed->responses.size(), 1u);
  EXPECT_EQ(failed->responses[0].kvs.at(0).value, "b");
  auto ok = etcd::DecodeTxn(json::parse(
      R"({"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{}}]})"));
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->succeeded);
  EXPECT_EQ(ok->revision, 3);

  auto grant = etcd::DecodeLeaseGrant(json::parse(R"({"ID":"4111120258888547590","TTL":"5"})"));
  ASSERT_TRUE(grant.ok());
  EXPECT_EQ(grant->id, 4111120258888547590);
  EXPECT_EQ(grant->ttl, 5);
  EXPECT_EQ(*etcd::DecodeKeepAliveTtl(json::parse(R"({"result":{"ID":"1","TTL":"5"}})")), 5);
  EXPECT_EQ(*etcd::DecodeKeepAliveTtl(json::parse(R"({"result":{"ID":"1"}})")), 0)
      << "an expired lease has no TTL";
  EXPECT_FALSE(etcd::DecodeRange(json::parse(R"({"kvs":[{"key":"!!"}]})")).ok());
  EXPECT_FALSE(etcd::GetInt64(json::parse(R"({"n":"12x"})"), "n").ok());
}

TEST(EtcdCodecTest, DecodesWatchLinesAndErrors) {
  auto created = etcd::DecodeWatchLine(R"({"result":{"header":{"revision":"2"},"created":true}})");
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->events, 0u);
  auto events = etcd::DecodeWatchLine(
      R"({"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"YQ=="}},{"type":"DELETE","kv":{"key":"YQ=="}}]}})");
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->events, 2u);
  EXPECT_EQ(events->revision, 3);
  auto compacted = etcd::DecodeWatchLine(
      R"({"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5"}})");
  ASSERT_TRUE(compacted.ok());
  EXPECT_TRUE(compacted->canceled);
  EXPECT_EQ(compacted->compact_revision, 5);
  EXPECT_FALSE(etcd::DecodeWatchLine("not json").ok());
  EXPECT_FALSE(etcd::DecodeWatchLine(R"({"error":{"grpc_code":14,"message":"no leader"}})").ok());

  etcd::GatewayError e = etcd::DecodeGatewayError(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  EXPECT_EQ(e.grpc_code, etcd::kGrpcNotFound);
  EXPECT_EQ(e.message, "etcdserver: requested lease not found");
  etcd::GatewayError raw = etcd::DecodeGatewayError("404 page not found");
  EXPECT_EQ(raw.message, "404 page not found");
}

// ---- MemoryStore / MemoryDcs ----

class MemoryBackend : public DcsBackend {
 public:
  std::unique_ptr<KvDcs> NewDcs(int ttl_seconds) override {
    return std::make_unique<MemoryDcs>(store_, Prefix(), ttl_seconds);
  }
  int ShortTtl() const override { return 2; }
  void LetLeasesExpire(int ttl_seconds) override {
    clock_.Advance(std::chrono::seconds(ttl_seconds) + std::chrono::milliseconds(1));
  }
  KvStore& Store() override { return store_; }
  std::string Prefix() const override { return "/service/test/"; }

 private:
  ManualClock clock_;
  MemoryStore store_{clock_};
};

INSTANTIATE_TEST_SUITE_P(Memory, DcsContractTest,
                         ::testing::Values(BackendParam{
                             "memory", [] { return std::make_unique<MemoryBackend>(); }}),
                         [](const auto& info) { return info.param.name; });

class MemoryDcsTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  MemoryStore store_{clock_};
};

TEST_F(MemoryDcsTest, LeaseLivesExactlyItsTtlUnlessRenewed) {
  MemoryDcs a(store_, "/service/t", 10);
  ASSERT_TRUE(*a.AcquireLeader("a"));
  clock_.Advance(std::chrono::seconds(9));
  EXPECT_TRUE(*a.RenewLeader("a")) << "renewed at 9 s: deadline moves to 19 s";
  clock_.Advance(std::chrono::seconds(9));
  EXPECT_TRUE(store_.Get("/service/t/leader").has_value());
  clock_.Advance(std::chrono::seconds(1));
  store_.ExpireLeases();
  EXPECT_FALSE(store_.Get("/service/t/leader").has_value());
  EXPECT_EQ(store_.lease_count(), 0u);
  EXPECT_FALSE(*a.RenewLeader("a"));
}

TEST_F(MemoryDcsTest, RevisionsFollowEtcd) {
  MemoryDcs a(store_, "/service/t/", 10);
  const int64_t r0 = store_.revision();
  ASSERT_TRUE(a.WriteStatus({{"optime", 1}}).ok());
  EXPECT_EQ(store_.revision(), r0 + 1);
  ASSERT_TRUE(*a.InitializeConfig(json::object()));
  EXPECT_EQ(store_.revision(), r0 + 2);
  EXPECT_FALSE(*a.InitializeConfig(json::object()));
  EXPECT_EQ(store_.revision(), r0 + 2) << "a transaction that writes nothing keeps the revision";
  auto kv = store_.Get("/service/t/status");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->create_revision, r0 + 1);
  EXPECT_EQ(kv->version, 1);
  ASSERT_TRUE(a.WriteStatus({{"optime", 2}}).ok());
  kv = store_.Get("/service/t/status");
  EXPECT_EQ(kv->create_revision, r0 + 1);
  EXPECT_EQ(kv->mod_revision, r0 + 3);
  EXPECT_EQ(kv->version, 2);
}

TEST_F(MemoryDcsTest, UnreachableNodeGetsDcsUnavailableOthersCarryOn) {
  MemoryDcs a(store_, "/service/t/", 10), b(store_, "/service/t/", 10);
  ASSERT_TRUE(*a.AcquireLeader("a"));
  a.SetReachable(false);
  EXPECT_EQ(a.RenewLeader("a").status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_EQ(a.Load().status().code(), ErrorCode::kDcsUnavailable);
  clock_.Advance(std::chrono::seconds(11));
  EXPECT_TRUE(*b.AcquireLeader("b")) << "a's lease ran out while it was cut off";
  a.SetReachable(true);
  EXPECT_FALSE(*a.RenewLeader("a"));

  store_.SetAvailable(false);
  EXPECT_EQ(b.Load().status().code(), ErrorCode::kDcsUnavailable);
  store_.SetAvailable(true);
  EXPECT_TRUE(b.Load().ok());
}

TEST_F(MemoryDcsTest, PutOnAMissingLeaseIsNotFound) {
  EXPECT_EQ(store_.Put("/k", "v", 12345).status().code(), ErrorCode::kNotFound);
  TxnRequest txn{{}, {TxnOp::Put("/k", "v", 12345)}, {}};
  EXPECT_EQ(store_.Txn(txn).status().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(store_.Get("/k").has_value());
}

}  // namespace
}  // namespace pgwarden::dcs
