// Tests of ClientParams without sockets: startup values, reconciling, and what RESET puts back.
#include "proxy/client_params.h"

#include <gtest/gtest.h>

#include "pgwire/message.h"

namespace pgwarden::proxy {
namespace {

using K = sql::Step::Kind;

class ClientParamsTest : public ::testing::Test {
 protected:
  ClientParamsTest() : catalog_({"search_path", "statement_timeout"}), params_(catalog_) {
    auto d = std::make_shared<ParamDefaults>(static_cast<size_t>(catalog_.size()));
    (*d)[static_cast<size_t>(catalog_.Find("TimeZone"))] = "Etc/UTC";
    (*d)[static_cast<size_t>(catalog_.Find("statement_timeout"))] = "0";
    (*d)[static_cast<size_t>(catalog_.Find("standard_conforming_strings"))] = "on";
    defaults_ = d;
    params_.SetDefaults(defaults_);
  }
  int Id(const char* name) const { return catalog_.Find(name); }
  // The client logs in with `asked`, the server spelling each value as given.
  void Login(std::vector<std::pair<int, std::string>> asked) {
    if (!params_.TakeStartup(std::move(asked))) return;
    for (const auto& q : params_.SetupQueries()) {
      std::vector<std::string> values;
      for (int id : q.columns) values.push_back(Spelled(id, q.sql));
      params_.OnRow(q.columns, values, &server_, true);
    }
    params_.FinishStartup();
  }
  // The value a set_config() query sets for `id` (for the test's simple values).
  std::string Spelled(int id, const std::string& sql) const {
    std::string key = "E'" + catalog_.name(id) + "', E'";
    size_t at = sql.find(key);
    size_t end = sql.find('\'', at + key.size());
    return sql.substr(at + key.size(), end - at - key.size());
  }
  static sql::SessionEffects Steps(std::vector<sql::Step> steps) {
    sql::SessionEffects e;
    e.steps = std::move(steps);
    return e;
  }
  // What FinishBatch tells the client, as name=value lines.
  static std::string Statuses(const std::string& bytes) {
    std::string out;
    for (size_t off = 0; off + 5 <= bytes.size();) {
      pgwire::Header h;
      if (pgwire::DecodeHeader(std::string_view(bytes).substr(off), 1 << 20, &h) !=
          pgwire::DecodeStatus::kReady)
        break;
      std::string body = bytes.substr(off + 5, h.body_size());
      out += body.substr(0, body.find('\0')) + "=" +
             body.substr(body.find('\0') + 1, body.size() - body.find('\0') - 2) + ";";
      off += h.wire_size();
    }
    return out;
  }

  ParamCatalog catalog_;
  std::shared_ptr<const ParamDefaults> defaults_;
  ParamSet server_;
  ClientParams params_;
};

TEST_F(ClientParamsTest, ApplicationNameAndDefaultsNeedNoServer) {
  EXPECT_FALSE(
      params_.TakeStartup({{catalog_.application_name_id(), "psql"}, {Id("TimeZone"), "Etc/UTC"}}));
  EXPECT_EQ(params_.Value(catalog_.application_name_id()), "psql");
  EXPECT_EQ(params_.values().size(), 1u);
}

TEST_F(ClientParamsTest, OtherStartupValuesAreCheckedByTheServer) {
  EXPECT_TRUE(
      params_.TakeStartup({{Id("TimeZone"), "Asia/Tokyo"}, {catalog_.application_name_id(), "x"}}));
  auto queries = params_.SetupQueries();
  ASSERT_EQ(queries.size(), 1u);
  EXPECT_EQ(queries[0].sql, "SELECT pg_catalog.set_config(E'TimeZone', E'Asia/Tokyo', false)");
  EXPECT_EQ(params_.Value(catalog_.application_name_id()), "x");
}

TEST_F(ClientParamsTest, ReconcileSetsWhatDiffersAndRecordsResets) {
  Login({{Id("TimeZone"), "Asia/Tokyo"}});
  ParamSet other;  // a server the previous client left with a search_path
  other.Assign(Id("search_path"), "pg_catalog", "");
  bool may_fail = false;
  auto queries = params_.Reconcile(&other, ParamSet(), &may_fail);
  ASSERT_EQ(queries.size(), 1u);
  EXPECT_EQ(
      queries[0].sql,
      "SELECT pg_catalog.set_config(E'TimeZone', E'Asia/Tokyo', false);RESET \"search_path\"");
  EXPECT_TRUE(may_fail);
  EXPECT_EQ(other.Find(Id("search_path")), nullptr);  // reset at once
}

// A server logged in after ALTER ROLE … SET TimeZone resets to that, not to
// the pool's default: the default is set by value there.
TEST_F(ClientParamsTest, ReconcileSetsTheDefaultByValueWhereResetLeadsElsewhere) {
  ParamSet server, reset_values;
  server.Assign(Id("TimeZone"), "Asia/Tokyo", "Etc/UTC");
  reset_values = server;
  bool may_fail = false;
  auto queries = params_.Reconcile(&server, reset_values, &may_fail);
  ASSERT_EQ(queries.size(), 1u);
  EXPECT_EQ(queries[0].sql, "SELECT pg_catalog.set_config(E'TimeZone', E'Etc/UTC', false)");
  EXPECT_NE(server.Find(Id("TimeZone")), nullptr);  // until the answer says otherwise
}

TEST_F(ClientParamsTest, ResetOfAStartupValueIsPutBackAndTheClientSeesOnlyThat) {
  Login({{Id("TimeZone"), "Asia/Tokyo"}, {Id("statement_timeout"), "3s"}});
  auto untracked = params_.OnStatement(Steps({{K::kReset, "timezone"}}));
  EXPECT_TRUE(untracked.empty());
  EXPECT_TRUE(params_.holding());
  // The server reports the default: held back.
  EXPECT_FALSE(params_.OnParameterStatus(Id("TimeZone"), "TimeZone", "Etc/UTC", false, &server_));
  std::string to_client;
  auto queries = params_.FinishBatch('I', &to_client);
  ASSERT_EQ(queries.size(), 1u);
  EXPECT_EQ(queries[0].sql, "SELECT pg_catalog.set_config(E'TimeZone', E'Asia/Tokyo', false)");
  EXPECT_EQ(Statuses(to_client), "TimeZone=Asia/Tokyo;");
  EXPECT_FALSE(params_.holding());
}

TEST_F(ClientParamsTest, NothingIsPutBackAfterAnErrorOrInAFailedTransaction) {
  Login({{Id("TimeZone"), "Asia/Tokyo"}});
  params_.OnStatement(Steps({{K::kReset, "timezone"}}));
  EXPECT_FALSE(params_.OnParameterStatus(Id("TimeZone"), "TimeZone", "Etc/UTC", false, &server_));
  params_.OnClientError();
  std::string to_client;
  EXPECT_TRUE(params_.FinishBatch('I', &to_client).empty());
  EXPECT_EQ(Statuses(to_client), "TimeZone=Etc/UTC;");  // what the server said, in order
  params_.OnStatement(Steps({{K::kResetAll, ""}}));
  to_client.clear();
  EXPECT_TRUE(params_.FinishBatch('E', &to_client).empty());
}

TEST_F(ClientParamsTest, RolledBackResetPutsNothingBackAndALaterSetWins) {
  Login({{Id("TimeZone"), "Asia/Tokyo"}});
  std::string to_client;
  params_.OnStatement(Steps({{K::kBegin, ""}, {K::kReset, "timezone"}, {K::kRollback, ""}}));
  EXPECT_TRUE(params_.FinishBatch('I', &to_client).empty());
  params_.OnStatement(Steps({{K::kResetAll, ""}, {K::kSet, "timezone"}}));
  EXPECT_TRUE(params_.FinishBatch('I', &to_client).empty());
}

TEST_F(ClientParamsTest, WithoutStartupValuesNothingIsHeld) {
  params_.OnStatement(Steps({{K::kReset, "timezone"}}));
  EXPECT_FALSE(params_.holding());
  EXPECT_TRUE(params_.OnParameterStatus(Id("TimeZone"), "TimeZone", "Etc/UTC", false, &server_));
}

TEST_F(ClientParamsTest, UntrackedAndPlaceholderNamesAreReportedAndUnreportedOnesReadBack) {
  auto untracked = params_.OnStatement(
      Steps({{K::kSet, "work_mem"}, {K::kSet, "my.flag"}, {K::kSet, "search_path"}}));
  EXPECT_EQ(untracked, (std::vector<std::string>{"work_mem", "my.flag"}));
  EXPECT_TRUE(params_.set_placeholder());
  EXPECT_TRUE(params_.TakeReadbackDue());
  EXPECT_FALSE(params_.TakeReadbackDue());
  params_.OnStatement(Steps({{K::kSet, "timezone"}}));  // reported: no read back
  EXPECT_FALSE(params_.TakeReadbackDue());
}

TEST_F(ClientParamsTest, ParameterStatusFollowsTheClientButNotOurQueries) {
  EXPECT_TRUE(
      params_.OnParameterStatus(Id("TimeZone"), "TimeZone", "Europe/Paris", false, &server_));
  EXPECT_EQ(params_.Value(Id("TimeZone")), "Europe/Paris");
  EXPECT_EQ(*server_.Find(Id("TimeZone")), "Europe/Paris");
  EXPECT_TRUE(params_.OnParameterStatus(Id("TimeZone"), "TimeZone", "Etc/UTC", true, &server_));
  EXPECT_EQ(params_.Value(Id("TimeZone")), "Europe/Paris");  // ours: the client's stays
  EXPECT_EQ(server_.Find(Id("TimeZone")), nullptr);
}

}  // namespace
}  // namespace pgwarden::proxy
