// Tests of BuildStatusRows: member keys, members known by their slot or by the cluster directory.
#include "cli/status_rows.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace pgwarden::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;

constexpr uint64_t kLeaderOptime = 0x5000000;

// A cluster view built one key at a time.
class ViewBuilder {
 public:
  ViewBuilder& Leader(const std::string& name) {
    view_.leader = dcs::LeaderKey{name, 1};
    return Member(name, "primary", "running", kLeaderOptime);
  }
  ViewBuilder& Member(const std::string& name, const std::string& role, const std::string& state,
                      uint64_t position) {
    dcs::Member m;
    m.name = name;
    m.role = role;
    m.state = state;
    m.timeline = 3;
    m.conn_url =
        "postgres://127.0.0.1:" + std::to_string(5400 + view_.members.size()) + "/postgres";
    m.api_url = "http://127.0.0.1:8008/patroni";
    if (role == "primary")
      m.xlog_location = Lsn(position);
    else
      m.replay_lsn = Lsn(position);
    view_.members[name] = m;
    return *this;
  }
  ViewBuilder& Sync(const std::string& standby) {
    view_.sync = dcs::SyncKey{view_.leader ? view_.leader->name : "", standby, 2};
    return *this;
  }
  // A slot the leader publishes in `status.slots`, and (`retained`) in `status.retain_slots`.
  ViewBuilder& Slot(const std::string& slot, uint64_t restart_lsn, bool retained = true) {
    view_.leader_slots[slot] = Lsn(restart_lsn);
    if (retained) view_.retain_slots.insert(slot);
    return *this;
  }
  ViewBuilder& Optime(uint64_t optime) {
    view_.last_leader_optime = Lsn(optime);
    return *this;
  }
  dcs::ClusterView Build() const { return view_; }

 private:
  dcs::ClusterView view_;
};

const StatusRow* Find(const std::vector<StatusRow>& rows, const std::string& name) {
  for (const auto& r : rows) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

TEST(StatusRowsTest, OneRowPerMemberKeyWithRolesAndLag) {
  auto view = ViewBuilder()
                  .Leader("node1")
                  .Member("node2", "replica", "streaming", kLeaderOptime)
                  .Member("node3", "replica", "streaming", kLeaderOptime - 4096)
                  .Sync("node2")
                  .Build();
  auto rows = BuildStatusRows(view, {});
  ASSERT_THAT(rows, ElementsAre(Field(&StatusRow::name, "node1"), Field(&StatusRow::name, "node2"),
                                Field(&StatusRow::name, "node3")));
  EXPECT_EQ(rows[0].role, "leader");
  EXPECT_EQ(rows[0].lag, std::nullopt);
  EXPECT_EQ(rows[1].role, "sync_standby");
  EXPECT_EQ(rows[1].lag, 0u);
  EXPECT_EQ(rows[2].role, "replica");
  EXPECT_EQ(rows[2].state, "streaming");
  EXPECT_EQ(rows[2].lag, 4096u);
  EXPECT_EQ(rows[2].host, "127.0.0.1");
  EXPECT_EQ(rows[2].port, 5402);
  EXPECT_EQ(rows[2].timeline, 3);
}

// Regression: a stopped replica vanished from `status` once its member key
// expired, while its slot still held WAL on the leader.
TEST(StatusRowsTest, StoppedReplicaWhoseSlotExistsStaysListedAfterItsMemberKeyExpired) {
  auto view = ViewBuilder()
                  .Leader("node1")
                  .Member("node2", "replica", "streaming", kLeaderOptime)
                  .Slot("node2", kLeaderOptime)
                  .Slot("node3", kLeaderOptime - 3 * 1024 * 1024)
                  .Build();
  auto rows = BuildStatusRows(view, {});
  ASSERT_EQ(rows.size(), 3u);
  const StatusRow* gone = Find(rows, "node3");
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ(gone->role, "unknown");
  EXPECT_EQ(gone->state, kNoMemberKeyState);
  EXPECT_EQ(gone->slot_retained, 3u * 1024 * 1024);
  EXPECT_EQ(gone->lag, std::nullopt);
  EXPECT_EQ(Find(rows, "node2")->slot_retained, 0u)
      << "a member with a key gets its slot's WAL too";
}

TEST(StatusRowsTest, MemberKnownFromTheDirectoryKeepsItsNameAndAddressesOverItsSlotName) {
  auto view = ViewBuilder().Leader("node1").Slot("db_3", kLeaderOptime - 100).Build();
  std::vector<KnownMember> known = {
      {"node1", "postgres://127.0.0.1:5401/postgres", "http://127.0.0.1:8001/patroni"},
      {"DB-3", "postgres://127.0.0.1:5403/postgres", "http://127.0.0.1:8003/patroni"}};
  auto rows = BuildStatusRows(view, known);
  ASSERT_THAT(rows, ElementsAre(Field(&StatusRow::name, "DB-3"), Field(&StatusRow::name, "node1")))
      << "the slot db_3 is DB-3's, not a member of its own";
  EXPECT_EQ(rows[0].state, kNoMemberKeyState);
  EXPECT_EQ(rows[0].host, "127.0.0.1");
  EXPECT_EQ(rows[0].port, 5403);
  EXPECT_EQ(rows[0].api_url, "http://127.0.0.1:8003/patroni");
  EXPECT_EQ(rows[0].slot_retained, 100u);
  EXPECT_EQ(rows[1].role, "leader") << "the member key wins over the directory";
}

TEST(StatusRowsTest, MemberKnownFromTheDirectoryWithoutASlotIsListedWithoutSlotWal) {
  auto view = ViewBuilder().Leader("node1").Build();
  auto rows = BuildStatusRows(view, {{"node2", "", ""}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].name, "node2");
  EXPECT_EQ(rows[1].state, kNoMemberKeyState);
  EXPECT_EQ(rows[1].slot_retained, std::nullopt);
  EXPECT_EQ(rows[1].port, 0);
}

TEST(StatusRowsTest, SlotsThatAreNoMembersSlotsAddNoRows) {
  auto view = ViewBuilder()
                  .Leader("node1")
                  .Slot("pg_receivewal", kLeaderOptime - 10, /*retained=*/false)
                  .Build();
  auto rows = BuildStatusRows(view, {});
  ASSERT_THAT(rows, ElementsAre(Field(&StatusRow::name, "node1")));
}

struct RetainedCase {
  const char* what;
  uint64_t optime;       // status.optime (the leader member's xlog_location is 0 here)
  uint64_t restart_lsn;  // of the slot
  std::optional<uint64_t> expected;
};

class SlotRetainedTest : public ::testing::TestWithParam<RetainedCase> {};

TEST_P(SlotRetainedTest, IsTheLeaderPositionMinusTheSlotsRestartLsn) {
  const RetainedCase& c = GetParam();
  auto view = ViewBuilder().Optime(c.optime).Slot("node3", c.restart_lsn).Build();
  auto rows = BuildStatusRows(view, {});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].slot_retained, c.expected) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SlotRetainedTest,
    ::testing::Values(RetainedCase{"behind", 0x3000100, 0x3000000, 0x100},
                      RetainedCase{"caught up", 0x3000000, 0x3000000, 0},
                      RetainedCase{"slot ahead of a stale optime", 0x3000000, 0x3000100, 0},
                      RetainedCase{"slot never used (restart_lsn 0/0)", 0x3000000, 0, std::nullopt},
                      RetainedCase{"leader position unknown", 0, 0x3000000, std::nullopt}));

}  // namespace
}  // namespace pgwarden::cli
