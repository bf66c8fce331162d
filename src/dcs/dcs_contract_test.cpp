// Dcs semantics every backend must share: initialize race, leader lease, CAS writes, reads, watch.
#include "dcs/dcs_contract_test.h"

#include <chrono>
#include <thread>

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

Member MakeMember(const std::string& name, const std::string& role) {
  Member m;
  m.name = name;
  m.conn_url = "postgres://127.0.0.1:5432/postgres";
  m.api_url = "http://127.0.0.1:8008/patroni";
  m.role = role;
  m.state = "running";
  m.timeline = 3;
  m.xlog_location = Lsn(0x3000148);
  m.receive_lsn = Lsn(0x3000100);
  m.replay_lsn = Lsn(0x3000000);
  m.tags = {{"nofailover", "false"}};
  m.version = "0.1.0";
  return m;
}

ClusterView MustLoad(Dcs& dcs) {
  auto view = dcs.Load();
  EXPECT_TRUE(view.ok()) << view.status().ToString();
  return view.ok() ? *view : ClusterView{};
}

TEST_P(DcsContractTest, InitializeRaceHasExactlyOneWinner) {
  auto a = NewDcs(), b = NewDcs(), c = NewDcs();
  int winners = 0;
  for (Dcs* d : {a.get(), b.get(), c.get()}) {
    auto won = d->TryInitialize("");
    ASSERT_TRUE(won.ok()) << won.status().ToString();
    winners += *won ? 1 : 0;
  }
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(MustLoad(*a).initialize, std::optional<std::string>(""));

  EXPECT_TRUE(a->UpdateInitialize("", "7212345678901234567").ok());
  EXPECT_EQ(b->UpdateInitialize("", "other").code(), ErrorCode::kConflict);
  EXPECT_EQ(MustLoad(*b).initialize, std::optional<std::string>("7212345678901234567"));

  EXPECT_EQ(c->CancelInitialize("").code(), ErrorCode::kConflict);
  EXPECT_TRUE(a->CancelInitialize("7212345678901234567").ok());
  EXPECT_FALSE(MustLoad(*a).initialize.has_value());
  auto again = b->TryInitialize("");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again) << "a cancelled bootstrap gives the race back";
}

TEST_P(DcsContractTest, LeaderAcquireRenewRelease) {
  auto a = NewDcs(), b = NewDcs();
  auto got = a->AcquireLeader("a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got);
  EXPECT_FALSE(*b->AcquireLeader("b"));
  EXPECT_TRUE(*a->AcquireLeader("a")) << "idempotent: a retried acquire still reports success";

  ClusterView view = MustLoad(*b);
  ASSERT_TRUE(view.HasLeader());
  EXPECT_EQ(view.leader->name, "a");
  EXPECT_GT(view.leader->mod_revision, 0);

  EXPECT_TRUE(*a->RenewLeader("a"));
  EXPECT_FALSE(*b->RenewLeader("b"));
  EXPECT_TRUE(b->ReleaseLeader("b").ok()) << "releasing someone else's key is a no-op";
  EXPECT_EQ(MustLoad(*b).leader->name, "a");

  EXPECT_TRUE(a->ReleaseLeader("a").ok());
  EXPECT_FALSE(MustLoad(*b).HasLeader());
  EXPECT_FALSE(*a->RenewLeader("a"));
  EXPECT_TRUE(*b->AcquireLeader("b"));
  EXPECT_EQ(MustLoad(*a).leader->name, "b");
}

TEST_P(DcsContractTest, RenewDoesNotRewriteTheLeaderKey) {
  auto a = NewDcs();
  ASSERT_TRUE(*a->AcquireLeader("a"));
  int64_t rev = MustLoad(*a).leader->mod_revision;
  ASSERT_TRUE(*a->RenewLeader("a"));
  ASSERT_TRUE(*a->RenewLeader("a"));
  EXPECT_EQ(MustLoad(*a).leader->mod_revision, rev) << "watchers must not wake on every renewal";
}

TEST_P(DcsContractTest, RestartedMemberTakesItsLeaderKeyOver) {
  auto first_run = NewDcs();
  ASSERT_TRUE(*first_run->AcquireLeader("a"));
  auto second_run = NewDcs();  // same member name, new process, new lease
  EXPECT_FALSE(*second_run->AcquireLeader("a"));
  EXPECT_TRUE(*second_run->RenewLeader("a"));
  auto kv = backend_->Store().Range(backend_->Prefix() + "leader", "");
  ASSERT_TRUE(kv.ok());
  ASSERT_EQ(kv->kvs.size(), 1u);
  EXPECT_EQ(kv->kvs[0].lease, second_run->lease_id());
  // (Two live runs of one member name would take it back and forth: a
  // member name must be unique, which the agent's config enforces.)
}

TEST_P(DcsContractTest, LeaseExpiryDropsLeaderAndMemberKeys) {
  const int ttl = backend_->ShortTtl();
  auto a = NewDcs(ttl), b = NewDcs(30);
  ASSERT_TRUE(a->PublishMember(MakeMember("a", "primary")).ok());
  ASSERT_TRUE(*a->AcquireLeader("a"));
  ASSERT_TRUE(b->PublishMember(MakeMember("b", "replica")).ok());
  ClusterView before = MustLoad(*b);
  EXPECT_TRUE(before.HasLeader());
  EXPECT_EQ(before.members.size(), 2u);

  backend_->LetLeasesExpire(ttl);

  ClusterView after = MustLoad(*b);
  EXPECT_FALSE(after.HasLeader());
  EXPECT_EQ(after.FindMember("a"), nullptr);
  EXPECT_NE(after.FindMember("b"), nullptr);
  EXPECT_FALSE(*a->RenewLeader("a")) << "a lease found expired means leadership is lost";
  EXPECT_FALSE(MustLoad(*b).HasLeader());

  // The next writes get a new lease.
  ASSERT_TRUE(a->PublishMember(MakeMember("a", "replica")).ok());
  EXPECT_NE(MustLoad(*b).FindMember("a"), nullptr);
  EXPECT_TRUE(*b->AcquireLeader("b"));
}

TEST_P(DcsContractTest, CloseRevokesTheLease) {
  auto a = NewDcs(), b = NewDcs();
  ASSERT_TRUE(a->PublishMember(MakeMember("a", "primary")).ok());
  ASSERT_TRUE(*a->AcquireLeader("a"));
  ASSERT_TRUE(a->Close().ok());
  ClusterView view = MustLoad(*b);
  EXPECT_FALSE(view.HasLeader());
  EXPECT_TRUE(view.members.empty());
  EXPECT_TRUE(a->Close().ok()) << "closing twice is harmless";
}

TEST_P(DcsContractTest, MemberRoundTripsThroughTheStore) {
  auto a = NewDcs();
  Member m = MakeMember("node1", "replica");
  ASSERT_TRUE(a->PublishMember(m).ok());
  m.state = "streaming";
  ASSERT_TRUE(a->PublishMember(m).ok());
  ClusterView view = MustLoad(*a);
  const Member* got = view.FindMember("node1");
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->name, "node1");
  EXPECT_EQ(got->state, "streaming");
  EXPECT_EQ(got->role, "replica");
  EXPECT_EQ(got->conn_url, m.conn_url);
  EXPECT_EQ(got->xlog_location, m.xlog_location);
  EXPECT_EQ(got->receive_lsn, m.receive_lsn);
  EXPECT_EQ(got->replay_lsn, m.replay_lsn);
  EXPECT_EQ(got->timeline, 3);
  EXPECT_EQ(got->tags, m.tags);
  EXPECT_GT(got->mod_revision, 0);
  EXPECT_LE(got->mod_revision, view.revision);

  ASSERT_TRUE(a->DeleteMember("node1").ok());
  EXPECT_EQ(MustLoad(*a).FindMember("node1"), nullptr);
}

TEST_P(DcsContractTest, LoadReadsEveryKeyAndSkipsMalformedMembers) {
  auto a = NewDcs();
  KvStore& store = backend_->Store();
  const std::string p = backend_->Prefix();
  ASSERT_TRUE(a->WriteStatus({{"optime", 50331968},
                              {"slots", {{"node2", 50331648}, {"node3", "0/3000000"}}},
                              {"retain_slots", json::array({"node2", 7})}})
                  .ok());
  ASSERT_TRUE(store.Put(p + "members/broken", "{not json", 0).ok());
  ASSERT_TRUE(store
                  .Put(p + "members/patroni",
                       R"({"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":)"
                       R"("http://10.0.0.2:8008/patroni","state":"running","role":"master",)"
                       R"("version":"3.0.2","xlog_location":50331968,"timeline":2})",
                       0)
                  .ok());
  ASSERT_TRUE(a->WriteFailover({{"leader", "a"}, {"member", "b"}}, 0).ok());
  ASSERT_TRUE(
      a->WriteHistory(json::array({json::array({1, 50331968, "no recovery target"})})).ok());
  ASSERT_TRUE(store.Put("/service/zz-other-cluster/leader", "x", 0).ok());

  ClusterView view = MustLoad(*a);
  EXPECT_EQ(view.last_leader_optime, Lsn(50331968));
  ASSERT_TRUE(view.status.has_value());
  EXPECT_TRUE((*view.status)["slots"].is_object());
  EXPECT_EQ(view.leader_slots,
            (std::map<std::string, Lsn>{{"node2", Lsn(50331648)}, {"node3", Lsn(0x3000000)}}));
  EXPECT_EQ(view.retain_slots, std::set<std::string>{"node2"}) << "a non-string entry is skipped";
  EXPECT_EQ(view.FindMember("broken"), nullptr);
  const Member* patroni = view.FindMember("patroni");
  ASSERT_NE(patroni, nullptr);
  EXPECT_EQ(patroni->role, "primary");
  EXPECT_EQ(patroni->xlog_location, Lsn(50331968));
  ASSERT_TRUE(view.failover.has_value());
  EXPECT_EQ((*view.failover)["member"], "b");
  EXPECT_GT(view.failover_revision, 0);
  ASSERT_TRUE(view.history.has_value());
  EXPECT_TRUE(view.history->is_array());
  EXPECT_FALSE(view.HasLeader()) << "keys of another cluster are not ours";

  EXPECT_EQ(a->WriteFailover({{"member", "c"}}, 0).code(), ErrorCode::kConflict);
  EXPECT_EQ(a->DeleteFailover(view.failover_revision + 1000).code(), ErrorCode::kConflict);
  EXPECT_TRUE(a->DeleteFailover(view.failover_revision).ok());
  EXPECT_TRUE(a->DeleteFailover(view.failover_revision).ok()) << "already gone is fine";
  EXPECT_FALSE(MustLoad(*a).failover.has_value());
}

TEST_P(DcsContractTest, ConfigIsCreatedOnceThenCompareAndSwapped) {
  auto a = NewDcs(), b = NewDcs();
  EXPECT_TRUE(*a->InitializeConfig({{"ttl", 30}}));
  EXPECT_FALSE(*b->InitializeConfig({{"ttl", 10}}));
  ClusterView view = MustLoad(*a);
  ASSERT_TRUE(view.config.has_value());
  EXPECT_EQ((*view.config)["ttl"], 30);
  EXPECT_TRUE(a->WriteConfig({{"ttl", 20}}, view.config_revision).ok());
  EXPECT_EQ(b->WriteConfig({{"ttl", 40}}, view.config_revision).code(), ErrorCode::kConflict);
  EXPECT_EQ((*MustLoad(*b).config)["ttl"], 20);
}

TEST_P(DcsContractTest, WriteSyncIsCompareAndSwap) {
  auto a = NewDcs(), b = NewDcs();
  ASSERT_TRUE(a->WriteSync({"a", "b", 0}, 0).ok());
  EXPECT_EQ(b->WriteSync({"b", "", 0}, 0).code(), ErrorCode::kConflict) << "not absent any more";
  ClusterView view = MustLoad(*a);
  ASSERT_TRUE(view.sync.has_value());
  EXPECT_EQ(view.sync->leader, "a");
  EXPECT_EQ(view.sync->sync_standby, "b");
  const int64_t rev = view.sync->mod_revision;
  EXPECT_TRUE(a->WriteSync({"a", "", 0}, rev).ok());
  EXPECT_EQ(b->WriteSync({"b", "a", 0}, rev).code(), ErrorCode::kConflict) << "stale revision";
  view = MustLoad(*b);
  EXPECT_EQ(view.sync->sync_standby, "");
  EXPECT_GT(view.sync->mod_revision, rev);
}

TEST_P(DcsContractTest, WaitForChangeTimesOutWithoutChanges) {
  auto a = NewDcs();
  ASSERT_TRUE(a->WriteStatus({{"optime", 1}}).ok());
  int64_t rev = MustLoad(*a).revision;
  auto start = std::chrono::steady_clock::now();
  auto changed = a->WaitForChange(rev, milliseconds(300));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_FALSE(*changed);
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(3000));
}

TEST_P(DcsContractTest, WaitForChangeSeesEarlierChangesAtOnce) {
  auto a = NewDcs(), b = NewDcs();
  int64_t rev = MustLoad(*a).revision;
  ASSERT_TRUE(b->PublishMember(MakeMember("b", "replica")).ok());
  auto changed = a->WaitForChange(rev, milliseconds(5000));
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_TRUE(*changed);
}

TEST_P(DcsContractTest, WaitForChangeWakesOnAnotherInstancesWrite) {
  auto a = NewDcs(), b = NewDcs();
  ASSERT_TRUE(a->WriteStatus({{"optime", 1}}).ok());
  int64_t rev = MustLoad(*a).revision;
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_TRUE(b->PublishMember(MakeMember("b", "replica")).ok());
  });
  auto start = std::chrono::steady_clock::now();
  auto changed = a->WaitForChange(rev, milliseconds(10000));
  auto took = std::chrono::steady_clock::now() - start;
  writer.join();
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_TRUE(*changed);
  EXPECT_LT(took, milliseconds(5000));
}

}  // namespace
}  // namespace pgwarden::dcs
