// `pgwarden up --sync`: one synchronous standby, named in the sync key, that has every commit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

// The name of the member whose role is "sync_standby" in a /cluster-shaped document, or "".
std::string SyncStandbyIn(const nlohmann::json& doc) {
  if (!doc.is_object() || !doc.contains("members") || !doc["members"].is_array()) return "";
  std::string found;
  for (const auto& m : doc["members"]) {
    if (m.value("role", "") == "sync_standby") {
      if (!found.empty()) return "<more than one>";
      found = m.value("name", "");
    }
  }
  return found;
}

TEST(SyncTest, OneSyncStandbyNamedInTheSyncKeyHasEveryCommit) {
  TempDir tmp("pgw-itest-sync");
  LocalClusterGuard cluster(tmp.Sub("cluster"));
  CommandResult up = cluster.Up({"--sync"});
  ASSERT_EQ(up.exit_code, 0) << up.Describe() << cluster.Logs();

  auto nodes = cluster.AllNodes();
  auto primaries = PrimariesAmong(nodes);
  ASSERT_EQ(primaries.size(), 1u);
  NodeInfo primary = cluster.Node(primaries.front());

  // Exactly one walsender is 'sync'.
  std::string sync_member;
  std::string last_seen;
  bool one_sync = WaitFor(
      [&] {
        auto r = QueryOnce(primary.pg_conninfo,
                           "SELECT application_name, sync_state FROM pg_stat_replication "
                           "ORDER BY application_name");
        if (!r.ok()) return false;
        last_seen.clear();
        int syncs = 0;
        for (size_t i = 0; i < r->rows.size(); ++i) {
          last_seen += r->text(i, 0) + "=" + r->text(i, 1) + " ";
          if (r->text(i, 1) == "sync") {
            ++syncs;
            sync_member = r->text(i, 0);
          }
        }
        return syncs == 1 && r->rows.size() == 2;
      },
      15s);
  ASSERT_TRUE(one_sync) << "pg_stat_replication: " << last_seen << "\n" << cluster.Logs();
  ASSERT_NE(sync_member, primary.name);

  // The sync key names the same member, in `status --json` and in every node's /cluster.
  std::string in_status;
  EXPECT_TRUE(WaitFor(
      [&] {
        in_status = SyncStandbyIn(cluster.StatusJson());
        return in_status == sync_member;
      },
      15s, 500ms));
  EXPECT_EQ(in_status, sync_member) << "status --json role sync_standby";
  for (const auto& n : nodes) {
    std::string in_rest;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto r = HttpGet(n.rest, "/cluster");
          if (!r.ok() || r->status != 200) return false;
          in_rest = SyncStandbyIn(nlohmann::json::parse(r->body, nullptr, false));
          return in_rest == sync_member;
        },
        15s, 500ms));
    EXPECT_EQ(in_rest, sync_member) << "GET /cluster on " << n.name;
  }

  // A committed row is on the sync standby the moment COMMIT returns. The
  // default synchronous_commit = on only waits for the standby to flush the
  // WAL, not to replay it, so a read there could still miss the row;
  // remote_apply waits for the replay, which makes the check exact.
  NodeInfo standby = cluster.Node(sync_member);
  auto conn = Connect(primary.pg_conninfo);
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  ASSERT_TRUE((*conn)->Exec("CREATE TABLE sync_probe (id int)").ok());
  ASSERT_TRUE((*conn)->Exec("SET synchronous_commit = remote_apply").ok());
  auto standby_conn = Connect(standby.pg_conninfo);
  ASSERT_TRUE(standby_conn.ok()) << standby_conn.status().ToString();
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE((*conn)->Exec("INSERT INTO sync_probe VALUES ($1)", {std::to_string(i)}).ok());
    // No polling: the row must be there now.
    auto v = QueryValue(**standby_conn,
                        "SELECT count(*) FROM sync_probe WHERE id = " + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(*v, "1") << "row " << i << " committed on the primary but not on sync standby "
                       << sync_member;
  }
}

}  // namespace
}  // namespace pgwarden::itest
