// Table tests of the session-effect analysis and of the prefilter that guards it.
#include "sql/session_effects.h"

#include <gtest/gtest.h>

#include <random>

namespace pgwarden::sql {
namespace {

std::string Describe(const SessionEffects& e) {
  std::string out;
  for (const auto& st : e.steps) {
    switch (st.kind) {
      case Step::Kind::kSet:
        out += "set:" + st.name + " ";
        break;
      case Step::Kind::kReset:
        out += "reset:" + st.name + " ";
        break;
      case Step::Kind::kResetAll:
        out += "reset_all ";
        break;
      case Step::Kind::kBegin:
        out += "begin ";
        break;
      case Step::Kind::kCommit:
        out += "commit ";
        break;
      case Step::Kind::kRollback:
        out += "rollback ";
        break;
      case Step::Kind::kSavepoint:
        out += "savepoint:" + st.name + " ";
        break;
      case Step::Kind::kRelease:
        out += "release:" + st.name + " ";
        break;
      case Step::Kind::kRollbackTo:
        out += "rollback_to:" + st.name + " ";
        break;
    }
  }
  if (e.discard_all) out += "discard_all ";
  for (const auto& d : e.deallocated) out += "deallocate:" + d + " ";
  if (e.deallocate_all) out += "deallocate_all ";
  if (e.sequences) out += "sequences ";
  if (e.pins) out += std::string("pin:") + PinReasonText(e.pins) + " ";
  if (e.parse_error) out += "parse_error ";
  if (!out.empty()) out.pop_back();
  return out;
}

struct Case {
  const char* sql;
  const char* effects;  // Describe() of what it does; "" for nothing
};

class EffectsTable : public ::testing::TestWithParam<Case> {};

TEST_P(EffectsTable, AnalysesAsExpected) {
  const Case& c = GetParam();
  SessionEffects e = AnalyzeSessionEffects(c.sql);
  EXPECT_EQ(Describe(e), c.effects) << c.sql;
  // The prefilter never lets through a statement that has an effect (pins
  // of precaution are not effects: the parser could not see any).
  sql::SessionEffects real = e;
  real.pins &= ~kPinsPrecaution;
  if (real.any()) {
    EXPECT_TRUE(MayAffectSession(c.sql)) << c.sql;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Statements, EffectsTable,
    ::testing::Values(
        // Parameters.
        Case{"SET search_path = a, b", "set:search_path"},
        Case{"set SESSION statement_timeout to '3s'", "set:statement_timeout"},
        Case{"SET LOCAL statement_timeout = 0", ""}, Case{"SET TIME ZONE 'UTC'", "set:timezone"},
        Case{"SET NAMES 'LATIN1'", "set:client_encoding"},
        Case{"SET SCHEMA 'x'", "set:search_path"},
        Case{"SET DateStyle TO DEFAULT", "reset:datestyle"},
        Case{"RESET search_path", "reset:search_path"}, Case{"RESET ALL", "reset_all"},
        Case{"DISCARD ALL", "reset_all discard_all"}, Case{"DISCARD PLANS", ""},
        Case{"DISCARD TEMP", ""}, Case{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ""},
        Case{"SET CONSTRAINTS ALL DEFERRED", ""},
        Case{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
             "pin:SET SESSION CHARACTERISTICS"},
        Case{"SET ROLE other", "pin:SET ROLE / SET SESSION AUTHORIZATION"},
        Case{"RESET ROLE", "pin:SET ROLE / SET SESSION AUTHORIZATION"},
        Case{"SET SESSION AUTHORIZATION other", "pin:SET ROLE / SET SESSION AUTHORIZATION"},
        Case{"SELECT set_config('search_path', 'x', false)", "set:search_path"},
        Case{"SELECT pg_catalog.set_config('TimeZone', $1, false)", "set:timezone"},
        Case{"SELECT set_config('work_mem', '1MB', true)", ""},
        Case{"SELECT set_config('work_mem', '1MB', 'true'::boolean)", ""},
        Case{"SELECT set_config('work_mem', '1MB', $3)", "set:work_mem"},
        Case{"SELECT set_config(name, 'x', false) FROM t",
             "pin:set_config() of a parameter named by an expression"},
        Case{"SELECT 1; SET statement_timeout = 5; RESET lock_timeout",
             "set:statement_timeout reset:lock_timeout"},
        // In order, with the transaction control around them.
        Case{"RESET ALL; SET IntervalStyle = 'postgres'", "reset_all set:intervalstyle"},
        Case{"BEGIN; RESET x; SAVEPOINT \"S 1\"; SET x = 1; ROLLBACK TO S1; RELEASE s; COMMIT",
             "begin reset:x savepoint:S 1 set:x rollback_to:s1 release:s commit"},
        Case{"RESET x; COMMIT AND CHAIN; ROLLBACK", "reset:x commit begin rollback"},
        // Objects, locks and the rest.
        Case{"CREATE TEMP TABLE t (a int)", "pin:a temporary object"},
        Case{"CREATE TEMPORARY TABLE t (a int) ON COMMIT DELETE ROWS", "pin:a temporary object"},
        Case{"CREATE TEMP TABLE t (a int) ON COMMIT DROP", ""},
        Case{"CREATE TABLE pg_temp.t (a int)", "pin:a temporary object"},
        Case{"CREATE TABLE t (a int)", ""},
        Case{"CREATE TEMP VIEW v AS SELECT 1", "pin:a temporary object"},
        Case{"CREATE TEMP SEQUENCE s", "pin:a temporary object"},
        Case{"CREATE TEMP TABLE t AS SELECT 1", "pin:a temporary object"},
        Case{"SELECT 1 INTO TEMP t", "pin:a temporary object"},
        Case{"SELECT 1 INTO pg_temp.t", "pin:a temporary object"}, Case{"SELECT 1 INTO t", ""},
        Case{"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'",
             "pin:a temporary object"},
        Case{"CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = x AS 'select 1'", ""},
        Case{"ALTER ROLE app SET search_path = x", ""}, Case{"LISTEN ch", "pin:LISTEN"},
        Case{"UNLISTEN *", ""}, Case{"NOTIFY ch", ""}, Case{"PREPARE p AS SELECT 1", "pin:PREPARE"},
        Case{"DEALLOCATE p", "deallocate:p"}, Case{"DEALLOCATE PREPARE \"P q\"", "deallocate:P q"},
        Case{"SELECT set_config('TimeZone', NULL, false)", "reset:timezone"},
        Case{"DEALLOCATE ALL", "deallocate_all"},
        Case{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "pin:a cursor WITH HOLD"},
        Case{"DECLARE c CURSOR FOR SELECT 1", ""},
        Case{"SELECT pg_advisory_lock(1)", "pin:a session advisory lock"},
        Case{"SELECT pg_try_advisory_lock_shared(1, 2)", "pin:a session advisory lock"},
        Case{"SELECT pg_advisory_xact_lock(1)", ""}, Case{"SELECT pg_advisory_unlock(1)", ""},
        Case{"LOAD 'auto_explain'", "pin:LOAD"},
        Case{"DO $$BEGIN PERFORM 1; END$$", "pin:a DO block"},
        Case{"SELECT currval('s')", "sequences"}, Case{"SELECT lastval()", "sequences"},
        Case{"SELECT nextval('s')", ""},
        Case{"WITH x AS (SELECT pg_advisory_lock(5)) SELECT * FROM x",
             "pin:a session advisory lock"},
        Case{"SELECT * FROM (SELECT set_config('search_path', 'y', false)) s", "set:search_path"},
        Case{"EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", "pin:a session advisory lock"},
        // Harmless statements and errors.
        Case{"UPDATE t SET a = 1", ""},
        Case{"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", ""},
        Case{"SELECT 'SET search_path = x'", ""},
        Case{"SELEC 1", "pin:a statement PostgreSQL 15's grammar refuses parse_error"},
        // Names the proxy keeps to itself.
        Case{"EXECUTE pgw_0123abcd", "pin:a statement that names one of the proxy's own"},
        Case{"UPDATE pg_settings SET setting = '1' WHERE name = 'statement_timeout'",
             "pin:UPDATE pg_settings"},
        Case{"SELECT name, setting FROM pg_settings", ""},
        // Values the proxy cannot carry.
        Case{"SET search_path = pg_temp, public", "set:search_path pin:a temporary object"},
        Case{"SELECT set_config('search_path', 'PG_TEMP', false)",
             "set:search_path pin:a temporary object"},
        Case{"SELECT set_config('search_path', current_user, false)",
             "set:search_path pin:a temporary object"},
        Case{"SET client_encoding = 'SJIS'",
             "set:client_encoding pin:a client_encoding whose bytes the proxy cannot read"},
        Case{"SET NAMES 'Shift_JIS'",
             "set:client_encoding pin:a client_encoding whose bytes the proxy cannot read"},
        Case{"SET client_encoding = 'LATIN1'", "set:client_encoding"}));

struct Filter {
  const char* sql;
  bool may;
};

class PrefilterTable : public ::testing::TestWithParam<Filter> {};

TEST_P(PrefilterTable, FlagsWhatNeedsTheParser) {
  EXPECT_EQ(MayAffectSession(GetParam().sql), GetParam().may) << GetParam().sql;
}

INSTANTIATE_TEST_SUITE_P(
    Texts, PrefilterTable,
    ::testing::Values(
        // Hot-path statements are not parsed.
        Filter{"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", false},
        Filter{"UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 55555;", false},
        Filter{"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", false},
        Filter{"BEGIN; UPDATE t SET x = 1; COMMIT;", false},
        Filter{"SELECT 'it''s set' FROM t", false}, Filter{"SELECT $1::int, $$set x$$", false},
        Filter{"select temperature, template from weather", false},
        // Statements that begin with SET or DO, however they are dressed.
        Filter{"SET x = 1", true}, Filter{"  set x = 1", true}, Filter{"SELECT 1;SET x = 1", true},
        Filter{"/* c */ SET x = 1", true}, Filter{"/* a /* nested */ comment */ SET x = 1", true},
        Filter{"-- UPDATE t\nSET search_path = evil", true},
        Filter{"SELECT 'a''b'; DO $$ $$", true}, Filter{"SELECT $tag$ ; $tag$; SET x = 1", true},
        // A backslash ends the literal only without standard_conforming_strings:
        // both readings are tried.
        Filter{"SELECT 'a\\'; SET search_path = evil; --'", true},
        // ... but in E'' it never does.
        Filter{"SELECT E'a\\'; SET x = 1; --'", false},
        // Words that may mean an effect, wherever they are.
        Filter{"SELECT pg_catalog.set_config('a', 'b', false)", true},
        Filter{"SELECT \"set_config\"('a', 'b', false)", true},
        Filter{"SELECT U&\"\\0073et_config\"('a', 'b', false)", true},
        Filter{"select pg_advisory_lock(1)", true},
        Filter{"CREATE TABLE pg_temp_3.x (a int)", true},
        Filter{"create temp table t(a int)", true}, Filter{"listen x", true},
        Filter{"SELECT 'unterminated", true}, Filter{"SELECT 1 /* unterminated", true}));

// Property: whatever garbage surrounds it, a statement with an effect keeps
// the prefilter's attention.
TEST(PrefilterTest, EffectfulStatementsAreNeverFilteredOut) {
  const char* effectful[] = {"SET search_path = x", "DO $$ $$", "LISTEN c",
                             "SELECT set_config('a','b',false)", "RESET ALL"};
  const char* noise[] = {"SELECT 1",      "SELECT 'a;b'",   "SELECT $$;$$",   "/* x */ SELECT 2",
                         "SELECT \"q;\"", "-- c\nSELECT 3", "SELECT E'\\\\'", "SELECT 'x'''"};
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string sql;
    int before = static_cast<int>(rng() % 3);
    for (int k = 0; k < before; ++k) sql += std::string(noise[rng() % 8]) + ";";
    sql += effectful[rng() % 5];
    if (rng() % 2) sql += std::string(";") + noise[rng() % 8];
    ASSERT_TRUE(MayAffectSession(sql)) << sql;
    ASSERT_TRUE(AnalyzeSessionEffects(sql).any()) << sql;
  }
}

TEST(TransactionStepTest, ReadsTransactionControlFromItsWords) {
  using K = Step::Kind;
  auto is = [](const char* sql, K kind, const char* name = "") {
    auto st = TransactionStep(sql);
    return st && st->kind == kind && st->name == name;
  };
  EXPECT_TRUE(is("BEGIN", K::kBegin));
  EXPECT_TRUE(is("  begin isolation level serializable", K::kBegin));
  EXPECT_TRUE(is("START TRANSACTION READ ONLY", K::kBegin));
  EXPECT_TRUE(is("COMMIT", K::kCommit));
  EXPECT_TRUE(is("end;", K::kCommit));
  EXPECT_TRUE(is("PREPARE TRANSACTION 'x'", K::kCommit));
  EXPECT_TRUE(is("ROLLBACK", K::kRollback));
  EXPECT_TRUE(is("abort work", K::kRollback));
  EXPECT_TRUE(is("SAVEPOINT Sp1", K::kSavepoint, "sp1"));
  EXPECT_TRUE(is("SAVEPOINT \"Sp1\"", K::kSavepoint, "Sp1"));
  EXPECT_TRUE(is("RELEASE SAVEPOINT a", K::kRelease, "a"));
  EXPECT_TRUE(is("release a", K::kRelease, "a"));
  EXPECT_TRUE(is("ROLLBACK TO SAVEPOINT a", K::kRollbackTo, "a"));
  EXPECT_TRUE(is("rollback transaction to b", K::kRollbackTo, "b"));
  for (const char* other : {"SELECT 1", "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'",
                            "PREPARE p AS SELECT 1", "savepoint", "", "start", "beginning"}) {
    EXPECT_FALSE(TransactionStep(other).has_value()) << other;
  }
}

TEST(EffectsTest, BackslashesFollowStandardConformingStrings) {
  // With standard_conforming_strings on, 'a\' is one literal and the SET is
  // real; off, the SET is inside a literal. Either way the string means
  // different things under the two settings: its client is pinned, since a
  // query sent behind a SET of the setting is read under the new value.
  const char* sql = "SELECT 'a\\'; SET search_path = evil; --'";
  EXPECT_EQ(Describe(AnalyzeSessionEffects(sql, true)),
            "set:search_path pin:a statement that depends on standard_conforming_strings");
  EXPECT_EQ(Describe(AnalyzeSessionEffects(sql, false)),
            "pin:a statement that depends on standard_conforming_strings");
  // A backslash that reads the same both ways pins nobody.
  EXPECT_EQ(Describe(AnalyzeSessionEffects("SET search_path = E'a\\\\b'", true)),
            "set:search_path");
}

}  // namespace
}  // namespace pgwarden::sql
