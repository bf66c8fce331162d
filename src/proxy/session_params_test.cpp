// Tests of the tracked-parameter model: catalog, sparse sets, reconciling, startup options.
#include "proxy/session_params.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace pgwarden::proxy {
namespace {

TEST(ParamCatalogTest, ReportedFirstThenExtrasCaseInsensitively) {
  ParamCatalog c({"search_path", "Statement_Timeout", "datestyle", ""});
  EXPECT_EQ(c.Find("application_name"), c.application_name_id());
  EXPECT_EQ(c.Find("CLIENT_ENCODING"), c.client_encoding_id());
  EXPECT_EQ(c.Find("standard_conforming_strings"), c.standard_conforming_strings_id());
  EXPECT_EQ(c.name(c.Find("datestyle")), "DateStyle");  // a duplicate extra is ignored
  EXPECT_EQ(c.size(), 9);
  int sp = c.Find("SEARCH_PATH");
  ASSERT_GE(sp, 0);
  EXPECT_FALSE(c.reported(sp));
  EXPECT_TRUE(c.reported(c.Find("TimeZone")));
  EXPECT_EQ(c.Find("work_mem"), -1);
  EXPECT_EQ(c.readback_query(),
            "SELECT pg_catalog.current_setting(E'search_path'), "
            "pg_catalog.current_setting(E'statement_timeout')");
  EXPECT_EQ(ParamCatalog().readback_query(), "");
}

TEST(ParamSetTest, AssigningTheDefaultRemovesTheEntry) {
  ParamSet s;
  s.Assign(3, "x", "d");
  s.Assign(1, "y", "d");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s.begin()->first, 1);  // sorted
  EXPECT_EQ(*s.Find(3), "x");
  s.Assign(3, "d", "d");
  EXPECT_EQ(s.Find(3), nullptr);
  s.Assign(1, "z", "d");
  EXPECT_EQ(*s.Find(1), "z");
  s.Erase(1);
  EXPECT_TRUE(s.empty());
}

// Property: applying Reconcile's changes to the server's values gives the
// client's values, and nothing is changed that was already equal.
TEST(ReconcileTest, MakesTheServerTheClient) {
  std::mt19937 rng(42);
  const std::string kDefault = "d";
  for (int round = 0; round < 2000; ++round) {
    ParamSet client, server;
    for (int id = 0; id < 8; ++id) {
      if (rng() % 2)
        client.Assign(id, std::string(1, static_cast<char>('a' + rng() % 3)), kDefault);
      if (rng() % 2)
        server.Assign(id, std::string(1, static_cast<char>('a' + rng() % 3)), kDefault);
    }
    auto changes = Reconcile(client, server);
    ParamSet after = server;
    for (const auto& ch : changes) {
      if (ch.value)
        after.Assign(ch.id, *ch.value, kDefault);
      else
        after.Erase(ch.id);
      const std::string* was = server.Find(ch.id);
      const std::string* want = client.Find(ch.id);
      EXPECT_FALSE((was == nullptr && want == nullptr) || (was && want && *was == *want));
    }
    EXPECT_EQ(after, client);
  }
}

TEST(ResetsInEffectTest, FollowsOrderTransactionsAndSavepoints) {
  ParamCatalog c({"search_path", "statement_timeout"});
  using K = sql::Step::Kind;
  auto set = [](const char* n) { return sql::Step{K::kSet, n}; };
  auto reset = [](const char* n) { return sql::Step{K::kReset, n}; };
  auto tx = [](K k, const char* n = "") { return sql::Step{k, n}; };
  uint64_t st = uint64_t{1} << c.Find("statement_timeout");
  uint64_t tz = uint64_t{1} << c.Find("TimeZone");
  uint64_t all = (uint64_t{1} << c.size()) - 1;
  struct Row {
    std::vector<sql::Step> steps;
    uint64_t want;
  };
  std::vector<Row> rows = {
      {{reset("statement_timeout")}, st},
      {{reset("statement_timeout"), set("statement_timeout")}, 0},
      {{tx(K::kResetAll)}, all},
      {{tx(K::kResetAll), set("intervalstyle")}, all & ~(uint64_t{1} << c.Find("IntervalStyle"))},
      {{tx(K::kBegin), reset("timezone"), tx(K::kRollback)}, 0},
      {{tx(K::kBegin), reset("timezone"), tx(K::kCommit)}, tz},
      {{reset("timezone"), tx(K::kRollback)}, 0},  // a transaction begun before the sequence
      {{reset("timezone"), tx(K::kCommit)}, tz},
      {{tx(K::kBegin), reset("timezone"), tx(K::kSavepoint, "s"), set("timezone"),
        tx(K::kRollbackTo, "s"), tx(K::kCommit)},
       tz},
      {{reset("timezone"), tx(K::kSavepoint, "s"), reset("statement_timeout"),
        tx(K::kRelease, "s")},
       tz | st},
      {{tx(K::kSavepoint, "a"), reset("timezone"), tx(K::kRollbackTo, "a")}, 0},
      {{reset("timezone"), tx(K::kRollbackTo, "earlier")}, 0},
      {{reset("timezone"), tx(K::kRelease, "earlier")}, tz},
      {{reset("work_mem")}, 0},  // not tracked
  };
  for (size_t i = 0; i < rows.size(); ++i)
    EXPECT_EQ(ResetsInEffect(rows[i].steps, c), rows[i].want) << "row " << i;
}

TEST(ApplyQueriesTest, EncodingFirstAndAloneThenValuesAndResets) {
  ParamCatalog c({"search_path"});
  int sp = c.Find("search_path"), tz = c.Find("TimeZone"), ds = c.Find("DateStyle");
  std::string latin = "LATIN1", path = "a, \"b'c\\d\"", zone = "UTC";
  auto q =
      ApplyQueries(c, {{c.client_encoding_id(), &latin}, {ds, nullptr}, {tz, &zone}, {sp, &path}});
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].sql, "SELECT pg_catalog.set_config(E'client_encoding', E'LATIN1', false)");
  EXPECT_EQ(q[0].columns, std::vector<int>{c.client_encoding_id()});
  EXPECT_EQ(q[1].sql,
            "SELECT pg_catalog.set_config(E'TimeZone', E'UTC', false), "
            "pg_catalog.set_config(E'search_path', E'a, \"b''c\\\\d\"', false);"
            "RESET \"DateStyle\"");
  EXPECT_EQ(q[1].columns, (std::vector<int>{tz, sp}));
  auto only_reset = ApplyQueries(c, {{ds, nullptr}});
  ASSERT_EQ(only_reset.size(), 1u);
  EXPECT_EQ(only_reset[0].sql, "RESET \"DateStyle\"");
  EXPECT_TRUE(ApplyQueries(c, {}).empty());
}

TEST(StartupOptionsTest, ReadsSettingsAsPostgreSQLDoes) {
  auto r = ParseStartupOptions(
      "  -c search_path=a,b --statement-timeout=3s -cwork_mem=1MB "
      "-c application_name=with\\ space\\\\x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::pair<std::string, std::string>> want = {{"search_path", "a,b"},
                                                           {"statement_timeout", "3s"},
                                                           {"work_mem", "1MB"},
                                                           {"application_name", "with space\\x"}};
  EXPECT_EQ(*r, want);
  EXPECT_TRUE(ParseStartupOptions("").ok());
  for (const char* bad : {"-c", "-c x", "--x", "-d 5", "stray"}) {
    auto b = ParseStartupOptions(bad);
    EXPECT_FALSE(b.ok()) << bad;
    EXPECT_EQ(b.status().code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST(ApplicationNameTest, TruncatedAndCleanedAsPostgreSQL15) {
  EXPECT_EQ(CanonicalApplicationName("psql"), "psql");
  EXPECT_EQ(CanonicalApplicationName("caf\xc3\xa9"), "caf??");
  EXPECT_EQ(CanonicalApplicationName("tab\there"), "tab?here");
  std::string longname(70, 'x');
  EXPECT_EQ(CanonicalApplicationName(longname), std::string(63, 'x'));
  // 62 ASCII bytes then a two-byte character: it does not fit and is dropped whole.
  EXPECT_EQ(CanonicalApplicationName(std::string(62, 'a') + "\xc3\xa9"), std::string(62, 'a'));
}

TEST(DataRowTest, ParsesValuesAndRejectsGarbage) {
  std::string body;
  pgwire::Writer w(body);
  w.Int16(3);
  w.Int32(2);
  w.Bytes("ab");
  w.Int32(-1);
  w.Int32(0);
  std::vector<std::string> v;
  ASSERT_TRUE(ParseDataRow(body, &v));
  EXPECT_EQ(v, (std::vector<std::string>{"ab", "", ""}));
  EXPECT_FALSE(ParseDataRow(body.substr(0, body.size() - 1), &v));
  EXPECT_FALSE(ParseDataRow(body + "x", &v));
}

}  // namespace
}  // namespace pgwarden::proxy
