// Pooled clients are isolated from each other: one regression test for each leak found when the
// proxy was tried as real clients (and a hostile one) would, in both pooling modes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "pg/connection.h"
#include "pgwire/auth.h"
#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using ::testing::HasSubstr;

// The parameters a leak would show in, with a value no default has.
struct Setting {
  const char* name;
  const char* leaked;
};
const Setting kSettings[] = {
    {"TimeZone", "Asia/Tokyo"},
    {"DateStyle", "SQL, DMY"},
    {"search_path", "pg_catalog, public"},
    {"statement_timeout", "2min"},
    {"lock_timeout", "7s"},
    {"idle_in_transaction_session_timeout", "9s"},
    {"application_name", "leaker"},
    {"IntervalStyle", "iso_8601"},
    {"extra_float_digits", "1"},
};

// One cluster and one proxy for the binary. Its databases, all on the same
// PostgreSQL database, differ in pool mode and size:
//   tx1  transaction, 1 server     session1  session, 1 server
//   tx2  transaction, 2 servers    session2  session, 2 servers
class IsolationEnv : public ProxyClusterEnv {
 public:
  void SetUp() override {
    setup = StartCluster("pgw-itest-isolation");
    if (!setup.ok()) return;
    auto admin = Connect(backend->superuser_conninfo());
    if (!admin.ok()) {
      setup = admin.status();
      return;
    }
    for (const char* sql :
         {"CREATE ROLE iso_other NOLOGIN", "GRANT iso_other TO app",
          "CREATE ROLE iso_plain LOGIN PASSWORD 'plain-pw-1'",
          "CREATE TABLE iso_enc (id serial PRIMARY KEY, v text)",
          "GRANT ALL ON iso_enc, iso_enc_id_seq TO app", "CREATE TABLE iso_rt (a int)",
          "INSERT INTO iso_rt VALUES (1)", "GRANT ALL ON iso_rt TO app"}) {
      setup = (*admin)->Exec(sql);
      if (!setup.ok()) return;
    }
    // What a fresh connection that asks for nothing sees.
    std::string err;
    PqConn plain = OpenPq(backend->DirectConninfo(), &err);
    if (!plain) {
      setup = IoError(err);
      return;
    }
    for (const auto& s : kSettings) {
      PqOutcome v = PqExec(plain.get(), std::string("SELECT current_setting('") + s.name + "')");
      if (!v.ok) {
        setup = IoError(v.error);
        return;
      }
      defaults[s.name] = v.value;
    }
    ProxyOptions o;
    o.databases = {{"tx1", "postgres", 1, "transaction"},
                   {"tx2", "postgres", 2, "transaction"},
                   {"session1", "postgres", 1, "session"},
                   {"session2", "postgres", 2, "session"}};
    o.extra_userlist = UserlistEntry(backend->superuser().username, backend->superuser().password) +
                       UserlistEntry("iso_plain", "plain-pw-1");
    o.extra_yaml = "  ignore_startup_parameters: [geqo]\n  server_check_query: ''\n";
    setup = proxy->Start(tmp->path(), backend->pg_port(), o);
  }

  std::map<std::string, std::string> defaults;  // each kSettings parameter on a fresh connection
};

IsolationEnv* const env =
    static_cast<IsolationEnv*>(::testing::AddGlobalTestEnvironment(new IsolationEnv));

// The databases of one pooling mode.
struct Mode {
  const char* name;
  const char* one;  // a pool of one server: everyone shares it
  const char* two;  // a pool of two
  bool transaction;
};
const Mode kTransaction{"Transaction", "tx1", "tx2", true};
const Mode kSession{"Session", "session1", "session2", false};

class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(env->setup.ok()) << env->setup.ToString();
    ASSERT_TRUE(env->proxy->alive()) << env->proxy->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "%s", env->proxy->Log(60).c_str());
  }

  static PqConn Open(const std::string& db, const std::string& extra = "") {
    std::string err;
    PqConn c = OpenPq(env->proxy->Conninfo(db, extra), &err);
    EXPECT_TRUE(c) << err;
    return c;
  }
  static PqConn OpenDirect(const std::string& extra = "") {
    std::string err;
    PqConn c = OpenPq(env->backend->DirectConninfo(extra), &err);
    EXPECT_TRUE(c) << err;
    return c;
  }
  // The first value of `sql`, or "ERROR <sqlstate>".
  static std::string Value(PGconn* c, const std::string& sql) {
    PqOutcome o = PqExec(c, sql);
    return o.ok ? o.value : "ERROR " + o.sqlstate;
  }
  static std::string Setting(PGconn* c, const std::string& name) {
    return Value(c, "SELECT current_setting('" + name + "')");
  }
  static void ExpectDefaults(PGconn* c, const std::string& who) {
    for (const auto& s : kSettings)
      EXPECT_EQ(Setting(c, s.name), env->defaults[s.name]) << who << ": " << s.name;
  }
  static void Leak(PGconn* c) {
    for (const auto& s : kSettings) {
      PqOutcome o =
          PqExec(c, std::string("SELECT set_config('") + s.name + "', '" + s.leaked + "', false)");
      ASSERT_TRUE(o.ok) << s.name << ": " << o.error;
    }
  }
  // A query through the admin console.
  static std::vector<std::map<std::string, std::string>> Admin(const std::string& sql) {
    std::string err;
    PqConn c = OpenPq(
        env->proxy->Conninfo("pgwarden", "user=" + env->backend->superuser().username +
                                             " password=" + env->backend->superuser().password),
        &err);
    EXPECT_TRUE(c) << err;
    std::vector<std::map<std::string, std::string>> rows;
    if (!c) return rows;
    PqResult r(PQexec(c.get(), sql.c_str()));
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      std::map<std::string, std::string> row;
      for (int j = 0; j < PQnfields(r.get()); ++j)
        row[PQfname(r.get(), j)] = PQgetisnull(r.get(), i, j) ? "NULL" : PQgetvalue(r.get(), i, j);
      rows.push_back(std::move(row));
    }
    return rows;
  }
  // SHOW CLIENTS's pinned column of the clients of `db` (sorted).
  static std::vector<std::string> PinnedReasons(const std::string& db) {
    std::vector<std::string> out;
    for (const auto& row : Admin("SHOW CLIENTS")) {
      if (row.at("database") == db && !row.at("pinned").empty()) out.push_back(row.at("pinned"));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

class ModeTest : public IsolationTest, public ::testing::WithParamInterface<Mode> {};

// --- Settings -----------------------------------------------------------------------

// Regression: client A's SET standard_conforming_strings = off and SET
// client_encoding = 'LATIN1' stayed on the shared server connection; client
// B (psycopg2, connected earlier) then quoted a value as for
// standard_conforming_strings on and got three columns back (SQL injection),
// and stored 'café' as 'cafÃ©'.
TEST_P(ModeTest, Psycopg2ValueIsQuotedForTheServerItRunsOn) {
  Result<std::string> found = FindPythonWithPsycopg2(30s);
  ASSERT_TRUE(found.ok()) << found.status().message();
  const std::string& python = *found;
  std::string script = env->tmp->Sub(std::string("inject-") + GetParam().name + ".py");
  ASSERT_TRUE(WriteFile(script, R"PY(
import os, psycopg2
dsn = dict(host="127.0.0.1", port=int(os.environ["PGW_PORT"]), user=os.environ["PGW_USER"],
           password=os.environ["PGW_PASSWORD"], dbname=os.environ["PGW_DB"])
b = psycopg2.connect(**dsn)        # connected first, with the server's defaults
b.autocommit = True
a = psycopg2.connect(**dsn)
a.autocommit = True
with a.cursor() as cur:
    cur.execute("SET standard_conforming_strings = off")
    cur.execute("SET client_encoding = 'LATIN1'")
a.close()
with b.cursor() as cur:
    cur.execute("SELECT %s", ("\\' , current_user, 42 --",))
    row = cur.fetchone()
    print("columns", len(row))
    print("value", row[0])
    cur.execute("INSERT INTO iso_enc (v) VALUES (%s) RETURNING id", ("caf\u00e9",))
    print("id", cur.fetchone()[0])
b.close()
)PY"));
  ProcessOptions o;
  o.env = {"PGW_PORT=" + std::to_string(env->proxy->port()), std::string("PGW_USER=") + kAppUser,
           std::string("PGW_PASSWORD=") + kAppPassword, std::string("PGW_DB=") + GetParam().one};
  CommandResult r = itest::Run({python, script}, 60s, o);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("columns 1\n"));
  EXPECT_THAT(r.out, HasSubstr("value \\' , current_user, 42 --\n"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("id (\\d+)"))) << r.out;
  // Stored as the UTF-8 the client sent, as read on a direct connection.
  EXPECT_EQ(ValueOr(QueryValue(env->backend->DirectConninfo(),
                               "SELECT v = U&'caf\\00e9' FROM iso_enc WHERE id = " + m[1].str())),
            "t");
}

// Regression: TimeZone, DateStyle, search_path, statement_timeout,
// application_name (and the rest) SET by one client were what the next
// client of the same server connection saw.
TEST_P(ModeTest, SettingsOfALeavingClientNeverReachTheNext) {
  {
    PqConn a = Open(GetParam().one);
    ASSERT_TRUE(a);
    Leak(a.get());
    EXPECT_EQ(Setting(a.get(), "TimeZone"), "Asia/Tokyo");
  }
  PqConn b = Open(GetParam().one);
  ASSERT_TRUE(b);
  ExpectDefaults(b.get(), "the next client");
}

// In transaction pooling the two share the server while both are connected.
TEST_F(IsolationTest, SettingsOfAConnectedClientNeverReachAnother) {
  PqConn a = Open("tx1");
  PqConn b = Open("tx1");
  ASSERT_TRUE(a && b);
  Leak(a.get());
  for (int round = 0; round < 3; ++round) {
    ExpectDefaults(b.get(), "the other client");
    for (const auto& s : kSettings) EXPECT_EQ(Setting(a.get(), s.name), s.leaked) << s.name;
  }
  // SET inside a transaction that rolls back is undone; SET LOCAL lasts for its transaction.
  ASSERT_TRUE(PqExec(b.get(), "BEGIN").ok);
  ASSERT_TRUE(PqExec(b.get(), "SET TimeZone = 'UTC'").ok);
  ASSERT_TRUE(PqExec(b.get(), "SET LOCAL search_path = 'public'").ok);
  EXPECT_EQ(Setting(b.get(), "search_path"), "public");
  ASSERT_TRUE(PqExec(b.get(), "ROLLBACK").ok);
  ExpectDefaults(b.get(), "after ROLLBACK");
  EXPECT_EQ(Setting(a.get(), "TimeZone"), "Asia/Tokyo");
}

// Regression: set_config() of one client was seen by the next.
TEST_P(ModeTest, SetConfigStaysWithItsClient) {
  {
    PqConn a = Open(GetParam().one);
    ASSERT_TRUE(a);
    EXPECT_EQ(Value(a.get(), "SELECT set_config('search_path', 'pg_catalog', false)"),
              "pg_catalog");
    EXPECT_EQ(Value(a.get(), "SELECT set_config('statement_timeout', '1500', false)"), "1500ms");
    EXPECT_EQ(Setting(a.get(), "statement_timeout"), "1500ms");
    if (GetParam().transaction) {
      PqConn b = Open(GetParam().one);
      ASSERT_TRUE(b);
      EXPECT_EQ(Setting(b.get(), "search_path"), env->defaults["search_path"]);
      EXPECT_EQ(Setting(b.get(), "statement_timeout"), env->defaults["statement_timeout"]);
    }
    EXPECT_EQ(Setting(a.get(), "search_path"), "pg_catalog");
  }
  PqConn b = Open(GetParam().one);
  ASSERT_TRUE(b);
  EXPECT_EQ(Setting(b.get(), "search_path"), env->defaults["search_path"]);
}

// --- Startup parameters -------------------------------------------------------------

// Regression: a parameter the server does not report was remembered per
// server connection after a SET and not forgotten after DISCARD ALL, so a
// client that connected with statement_timeout=3s saw 0; and one client's
// startup statement_timeout stayed on the server for the next client.
TEST_P(ModeTest, StartupParametersAreTheClientsOwn) {
  {
    PqConn short_timeout = Open(GetParam().one, "options='-c statement_timeout=100ms'");
    ASSERT_TRUE(short_timeout);
    EXPECT_EQ(Setting(short_timeout.get(), "statement_timeout"), "100ms");
    EXPECT_EQ(Value(short_timeout.get(), "SELECT pg_sleep(0.3)"), "ERROR 57014");
  }
  PqConn plain = Open(GetParam().one);
  ASSERT_TRUE(plain);
  EXPECT_EQ(Value(plain.get(), "SELECT pg_sleep(0.3)"), "");  // not cancelled
  EXPECT_EQ(Setting(plain.get(), "statement_timeout"), env->defaults["statement_timeout"]);
  ASSERT_TRUE(PqExec(plain.get(), "SET statement_timeout = '7s'").ok);
  ASSERT_TRUE(PqExec(plain.get(), "DISCARD ALL").ok);
  EXPECT_EQ(Setting(plain.get(), "statement_timeout"), env->defaults["statement_timeout"]);
  plain.reset();
  PqConn three = Open(GetParam().one, "options='-c statement_timeout=3s -c search_path=iso_x'");
  ASSERT_TRUE(three);
  EXPECT_EQ(Setting(three.get(), "statement_timeout"), "3s");
  EXPECT_EQ(Setting(three.get(), "search_path"), "iso_x");
  // RESET returns to the startup value, as on a direct connection.
  for (const char* reset : {"RESET statement_timeout", "RESET ALL", "DISCARD ALL",
                            "SET statement_timeout TO DEFAULT"}) {
    ASSERT_TRUE(PqExec(three.get(), "SET statement_timeout = '9s'").ok);
    ASSERT_TRUE(PqExec(three.get(), reset).ok) << reset;
    EXPECT_EQ(Setting(three.get(), "statement_timeout"), "3s") << reset;
  }
}

TEST_F(IsolationTest, DirectConnectionAgreesOnStartupParameterResets) {
  // The same as above straight to PostgreSQL: the expectations are its own.
  PqConn three = OpenDirect("options='-c statement_timeout=3s'");
  ASSERT_TRUE(three);
  for (const char* reset : {"RESET statement_timeout", "RESET ALL", "DISCARD ALL"}) {
    ASSERT_TRUE(PqExec(three.get(), "SET statement_timeout = '9s'").ok);
    ASSERT_TRUE(PqExec(three.get(), reset).ok) << reset;
    EXPECT_EQ(Setting(three.get(), "statement_timeout"), "3s") << reset;
  }
}

// Regression: `options` was silently dropped.
TEST_F(IsolationTest, OptionsAreAppliedCheckedOrRefusedByName) {
  PqConn c = Open("tx1", "options='-c TimeZone=Europe/Paris --lock-timeout=4s'");
  ASSERT_TRUE(c);
  EXPECT_EQ(Setting(c.get(), "TimeZone"), "Europe/Paris");
  EXPECT_EQ(Setting(c.get(), "lock_timeout"), "4s");
  // Listed in ignore_startup_parameters: dropped.
  PqConn ignored = Open("tx1", "options='-c geqo=off'");
  ASSERT_TRUE(ignored);
  EXPECT_EQ(Setting(ignored.get(), "geqo"), "on");
  // Not tracked: refused, naming it.
  std::string err;
  EXPECT_FALSE(OpenPq(env->proxy->Conninfo("tx1", "options='-c work_mem=1MB'"), &err));
  EXPECT_THAT(err, HasSubstr("unsupported startup parameter: work_mem"));
  // A value PostgreSQL refuses: its own error, as on a direct connection.
  std::string direct_err;
  EXPECT_FALSE(
      OpenPq(env->backend->DirectConninfo("options='-c DateStyle=nonsense'"), &direct_err));
  EXPECT_FALSE(OpenPq(env->proxy->Conninfo("tx1", "options='-c DateStyle=nonsense'"), &err));
  EXPECT_THAT(err, HasSubstr("invalid value for parameter \"DateStyle\": \"nonsense\""));
  EXPECT_THAT(direct_err, HasSubstr("invalid value for parameter \"DateStyle\": \"nonsense\""));
  // A switch other than -c is refused with a clear message.
  EXPECT_FALSE(OpenPq(env->proxy->Conninfo("tx1", "options='-d 5'"), &err));
  EXPECT_THAT(err, HasSubstr("-c name=value"));
}

// Regression: a client that sent no application_name saw "pgwarden" (the
// proxy's login name) instead of the server's default.
TEST_P(ModeTest, NoApplicationNameMeansTheServersDefault) {
  {
    PqConn named = Open(GetParam().one, "application_name=somebody");
    ASSERT_TRUE(named);
    EXPECT_EQ(Setting(named.get(), "application_name"), "somebody");
  }
  PqConn anon = Open(GetParam().one);
  ASSERT_TRUE(anon);
  EXPECT_EQ(Setting(anon.get(), "application_name"), env->defaults["application_name"]);
  EXPECT_STREQ(PQparameterStatus(anon.get(), "application_name"),
               env->defaults["application_name"].c_str());
}

// Regression: a startup packet asking for protocol 3.1 (and options the
// proxy does not know) got no NegotiateProtocolVersion.
TEST_F(IsolationTest, NewerMinorProtocolIsNegotiatedDown) {
  int fd = ConnectTcp(env->proxy->port());
  ASSERT_GE(fd, 0);
  std::string body = Int32(196609) + std::string("user") + '\0' + kAppUser + '\0' + "database" +
                     '\0' + "tx1" + '\0' + "_pq_.future" + '\0' + "1" + '\0' + '\0';
  ASSERT_TRUE(SendAll(fd, Int32(static_cast<uint32_t>(body.size() + 4)) + body));
  ReadOutcome r = ReadAtLeast(fd, 40, 3s);
  close(fd);
  auto msgs = SplitMessages(r.bytes);
  ASSERT_GE(msgs.size(), 2u) << r.bytes.size();
  EXPECT_EQ(msgs[0].type, 'v');
  EXPECT_EQ(msgs[0].body, Int32(196608) + Int32(1) + "_pq_.future" + std::string(1, '\0'));
  EXPECT_EQ(msgs[1].type, 'R');  // and the login goes on
}

// --- Session state that cannot move between servers ---------------------------------

// Regression: SET ROLE stayed on the server connection for the next client.
TEST_F(IsolationTest, RoleStaysWithItsClient) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PqExec(a.get(), "SET ROLE iso_other").ok);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Value(a.get(), "SELECT current_user"), "iso_other");
    EXPECT_EQ(Value(b.get(), "SELECT current_user"), kAppUser);
  }
  EXPECT_THAT(PinnedReasons("tx2"), ::testing::ElementsAre(HasSubstr("SET ROLE")));
  bool counted = false;
  for (const auto& row : Admin("SHOW STATS"))
    if (row.at("database") == "tx2") counted = std::stoi(row.at("pinned_clients")) == 1;
  EXPECT_TRUE(counted) << "SHOW STATS pinned_clients";
  a.reset();  // its server is reset before anyone else gets it
  for (int i = 0; i < 4; ++i) {
    PqConn c = Open("tx2");
    ASSERT_TRUE(c);
    EXPECT_EQ(Value(c.get(), "SELECT current_user"), kAppUser);
    EXPECT_EQ(Value(c.get(), "SELECT session_user"), kAppUser);
  }
  EXPECT_TRUE(WaitFor([&] { return PinnedReasons("tx2").empty(); }, 3s));
}

TEST_F(IsolationTest, SessionAuthorizationStaysWithItsClient) {
  const auto& su = env->backend->superuser();
  std::string as_su = "user=" + su.username + " password=" + su.password;
  PqConn a = Open("tx2", as_su);
  PqConn b = Open("tx2", as_su);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PqExec(a.get(), "SET SESSION AUTHORIZATION app").ok);
  EXPECT_EQ(Value(a.get(), "SELECT session_user"), kAppUser);
  EXPECT_EQ(Value(b.get(), "SELECT session_user"), su.username);
  a.reset();
  b.reset();
  for (int i = 0; i < 3; ++i) {
    PqConn c = Open("tx2", as_su);
    ASSERT_TRUE(c);
    EXPECT_EQ(Value(c.get(), "SELECT session_user"), su.username);
  }
}

// Regression: a temporary table of one client was visible to the next.
TEST_P(ModeTest, TemporaryTableIsOnlyItsCreators) {
  {
    PqConn a = Open(GetParam().two);
    ASSERT_TRUE(a);
    ASSERT_TRUE(PqExec(a.get(), "CREATE TEMP TABLE iso_tmp (x int)").ok);
    ASSERT_TRUE(PqExec(a.get(), "INSERT INTO iso_tmp VALUES (1), (2)").ok);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(Value(a.get(), "SELECT count(*) FROM iso_tmp"), "2");
    PqConn b = Open(GetParam().two);
    ASSERT_TRUE(b);
    EXPECT_EQ(Value(b.get(), "SELECT to_regclass('iso_tmp') IS NULL"), "t");
    if (GetParam().transaction) {
      EXPECT_THAT(PinnedReasons(GetParam().two), ::testing::ElementsAre(HasSubstr("temporary")));
      // ON COMMIT DROP leaves nothing behind: no pin for that.
      ASSERT_TRUE(PqExec(b.get(), "BEGIN").ok);
      ASSERT_TRUE(PqExec(b.get(), "CREATE TEMP TABLE iso_gone (x int) ON COMMIT DROP").ok);
      ASSERT_TRUE(PqExec(b.get(), "COMMIT").ok);
      EXPECT_EQ(PinnedReasons(GetParam().two).size(), 1u);
    }
  }
  for (int i = 0; i < 3; ++i) {
    PqConn c = Open(GetParam().two);
    ASSERT_TRUE(c);
    EXPECT_EQ(Value(c.get(), "SELECT to_regclass('iso_tmp') IS NULL"), "t");
  }
}

// Regression: a session advisory lock was held by whoever got the server next.
TEST_P(ModeTest, AdvisoryLockStaysWithItsClient) {
  PqConn a = Open(GetParam().two);
  PqConn b = Open(GetParam().two);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(Value(a.get(), "SELECT pg_advisory_lock(424242)"), "");
  EXPECT_EQ(Value(b.get(), "SELECT pg_try_advisory_lock(424242)"), "f");
  EXPECT_EQ(Value(b.get(), "SELECT pg_advisory_unlock(424242)"), "f");  // not the holder
  EXPECT_EQ(Value(a.get(), "SELECT pg_advisory_unlock(424242)"), "t");
  // A transaction's lock pins nobody.
  EXPECT_EQ(Value(b.get(), "SELECT pg_advisory_xact_lock(7)"), "");
  ASSERT_TRUE(PqExec(a.get(), "SELECT pg_advisory_lock(424243)").ok);
  a.reset();  // leaving releases it
  EXPECT_TRUE(
      WaitFor([&] { return Value(b.get(), "SELECT pg_try_advisory_lock(424243)") == "t"; }, 3s));
  EXPECT_EQ(Value(b.get(), "SELECT pg_advisory_unlock(424243)"), "t");
}

// Regression: LISTEN of one client went on for the next one.
TEST_P(ModeTest, ListenStaysWithItsClient) {
  PqConn a = Open(GetParam().two);
  PqConn b = Open(GetParam().two);
  PqConn direct = OpenDirect();
  ASSERT_TRUE(a && b && direct);
  ASSERT_TRUE(PqExec(a.get(), "LISTEN iso_channel").ok);
  ASSERT_TRUE(PqExec(b.get(), "SELECT 1").ok);
  ASSERT_TRUE(PqExec(direct.get(), "NOTIFY iso_channel, 'hello'").ok);
  auto got = [](PGconn* c) {
    std::string payloads;
    for (int i = 0; i < 10; ++i) {
      PQconsumeInput(c);
      while (PGnotify* n = PQnotifies(c)) {
        payloads += n->extra;
        PQfreemem(n);
      }
      if (!payloads.empty()) break;
      std::this_thread::sleep_for(50ms);
    }
    return payloads;
  };
  EXPECT_EQ(Value(a.get(), "SELECT 1"), "1");
  EXPECT_EQ(got(a.get()), "hello");
  EXPECT_EQ(Value(b.get(), "SELECT 1"), "1");
  EXPECT_EQ(got(b.get()), "");
  a.reset();
  ASSERT_TRUE(PqExec(direct.get(), "NOTIFY iso_channel, 'again'").ok);
  PqConn c = Open(GetParam().two);
  ASSERT_TRUE(c);
  EXPECT_EQ(Value(c.get(), "SELECT 1"), "1");
  EXPECT_EQ(got(c.get()), "");
}

// Regression: a WITH HOLD cursor outlived its client on the server.
TEST_P(ModeTest, HoldCursorStaysWithItsClient) {
  PqConn a = Open(GetParam().two);
  PqConn b = Open(GetParam().two);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(
      PqExec(a.get(), "DECLARE iso_cur CURSOR WITH HOLD FOR SELECT generate_series(1, 3)").ok);
  EXPECT_EQ(Value(a.get(), "FETCH 1 FROM iso_cur"), "1");
  EXPECT_EQ(Value(b.get(), "FETCH 1 FROM iso_cur"), "ERROR 34000");
  EXPECT_EQ(Value(a.get(), "FETCH 1 FROM iso_cur"), "2");
  a.reset();
  PqConn c = Open(GetParam().two);
  ASSERT_TRUE(c);
  EXPECT_EQ(Value(c.get(), "FETCH 1 FROM iso_cur"), "ERROR 34000");
}

// Regression: SQL-level PREPARE of one client could be EXECUTEd by another.
TEST_P(ModeTest, SqlPrepareStaysWithItsClient) {
  PqConn a = Open(GetParam().two);
  PqConn b = Open(GetParam().two);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PqExec(a.get(), "PREPARE iso_p AS SELECT 7").ok);
  EXPECT_EQ(Value(b.get(), "EXECUTE iso_p"), "ERROR 26000");
  EXPECT_EQ(Value(a.get(), "EXECUTE iso_p"), "7");
  EXPECT_EQ(Value(a.get(), "EXECUTE iso_p"), "7");
  a.reset();
  PqConn c = Open(GetParam().two);
  ASSERT_TRUE(c);
  EXPECT_EQ(Value(c.get(), "EXECUTE iso_p"), "ERROR 26000");
}

// An untracked parameter keeps the client on its server; others never see it.
TEST_F(IsolationTest, UntrackedParameterKeepsItsClientsServer) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  std::string def = Setting(b.get(), "work_mem");
  ASSERT_TRUE(PqExec(a.get(), "SET work_mem = '1234kB'").ok);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Setting(a.get(), "work_mem"), "1234kB");
    EXPECT_EQ(Setting(b.get(), "work_mem"), def);
  }
  EXPECT_THAT(PinnedReasons("tx2"), ::testing::ElementsAre(HasSubstr("work_mem")));
  // DISCARD ALL leaves nothing to keep: the client is pooled again.
  ASSERT_TRUE(PqExec(a.get(), "DISCARD ALL").ok);
  EXPECT_TRUE(PinnedReasons("tx2").empty());
  EXPECT_EQ(Setting(a.get(), "work_mem"), def);
}

// currval() reads the session's cache of sequence values: on a server another
// client used last it would show that client's value.
TEST_F(IsolationTest, CurrvalNeverShowsAnotherClientsSequenceValue) {
  PqConn su = OpenPq(env->backend->superuser_conninfo(), nullptr);
  ASSERT_TRUE(su);
  ASSERT_TRUE(PqExec(su.get(), "CREATE SEQUENCE IF NOT EXISTS iso_seq").ok);
  ASSERT_TRUE(PqExec(su.get(), "GRANT ALL ON iso_seq TO app").ok);
  PqConn a = Open("tx1");
  PqConn b = Open("tx1");
  ASSERT_TRUE(a && b);
  std::string mine = Value(a.get(), "SELECT nextval('iso_seq')");
  // Directly, b never called nextval() in its session: PostgreSQL says 55000.
  EXPECT_EQ(Value(b.get(), "SELECT currval('iso_seq')"), "ERROR 55000");
  EXPECT_EQ(Value(b.get(), "SELECT lastval()"), "ERROR 55000");
  // The same over the extended protocol (found in review: the guard came too late there).
  ASSERT_EQ(Value(a.get(), "SELECT nextval('iso_seq') > 0"), "t");
  PqResult ext(
      PQexecParams(b.get(), "SELECT currval('iso_seq')", 0, nullptr, nullptr, nullptr, nullptr, 0));
  EXPECT_STREQ(PQresultErrorField(ext.get(), PG_DIAG_SQLSTATE), "55000");
  // Within one transaction currval() is the client's own value.
  ASSERT_TRUE(PqExec(b.get(), "BEGIN").ok);
  std::string theirs = Value(b.get(), "SELECT nextval('iso_seq')");
  EXPECT_EQ(Value(b.get(), "SELECT currval('iso_seq')"), theirs);
  ASSERT_TRUE(PqExec(b.get(), "COMMIT").ok);
  EXPECT_NE(mine, theirs);
}

// The fast-path function call interface can take a session lock too.
TEST_F(IsolationTest, FastPathAdvisoryLockPinsItsClient) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  int result_len = 0, result = 0;
  PQArgBlock arg;
  arg.len = 8;
  arg.isint = 1;
  arg.u.integer = 0;
  // pg_advisory_lock(bigint) is OID 2880; an int8 argument sent as 8 bytes.
  int64_t key = 515151;
  unsigned char be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<unsigned char>(key >> (56 - 8 * i));
  arg.isint = 0;
  arg.u.ptr = reinterpret_cast<int*>(be);
  PqResult r(PQfn(a.get(), 2880, &result, &result_len, 0, &arg, 1));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(a.get());
  EXPECT_THAT(PinnedReasons("tx2"), ::testing::ElementsAre(HasSubstr("advisory")));
  EXPECT_EQ(Value(b.get(), "SELECT pg_try_advisory_lock(515151)"), "f");
  EXPECT_EQ(Value(a.get(), "SELECT pg_advisory_unlock(515151)"), "t");
}

// Found in review: with pg_temp first in search_path a plain CREATE TABLE
// creates a temporary table, which the next client of the server would read.
TEST_F(IsolationTest, TemporarySearchPathPinsItsClient) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PqExec(a.get(), "SET search_path = pg_temp, public").ok);
  ASSERT_TRUE(PqExec(a.get(), "CREATE TABLE iso_hidden (x int)").ok);
  ASSERT_TRUE(PqExec(a.get(), "INSERT INTO iso_hidden VALUES (1)").ok);
  EXPECT_EQ(Value(a.get(), "SELECT count(*) FROM iso_hidden"), "1");
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(Value(b.get(), "SELECT to_regclass('iso_hidden') IS NULL"), "t");
  EXPECT_THAT(PinnedReasons("tx2"), ::testing::ElementsAre(HasSubstr("temporary")));
}

// Found in review: PostgreSQL ends a -- comment at \r too; the proxy's
// prefilter only at \n, so the SET behind it went unseen.
TEST_F(IsolationTest, CommentEndingAtCarriageReturnHidesNothing) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PqExec(a.get(), "--x\rSET ROLE iso_other").ok);
  EXPECT_EQ(Value(a.get(), "SELECT current_user"), "iso_other");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Value(b.get(), "SELECT current_user"), kAppUser);
}

// Found in review: UPDATE pg_settings is set_config() by another name.
TEST_F(IsolationTest, UpdateOfPgSettingsPinsItsClient) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(
      PqExec(a.get(), "UPDATE pg_settings SET setting = '4321' WHERE name = 'statement_timeout'")
          .ok);
  EXPECT_EQ(Setting(a.get(), "statement_timeout"), "4321ms");
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(Setting(b.get(), "statement_timeout"), env->defaults["statement_timeout"]);
  EXPECT_THAT(PinnedReasons("tx2"), ::testing::ElementsAre(HasSubstr("pg_settings")));
}

// Found in review: in SJIS (and BIG5, GBK, …) a character's second byte can
// be a backslash; the proxy cannot lex such a client's SQL, so it keeps its
// server, which is closed when it leaves.
TEST_F(IsolationTest, ClientEncodingTheProxyCannotLexPinsAndClosesItsServer) {
  std::string pid;
  {
    PqConn a = Open("tx1");
    ASSERT_TRUE(a);
    ASSERT_TRUE(PqExec(a.get(), "SET client_encoding = 'SJIS'").ok);
    EXPECT_THAT(PinnedReasons("tx1"), ::testing::ElementsAre(HasSubstr("client_encoding")));
    pid = Value(a.get(), "SELECT pg_backend_pid()");
  }
  PqConn b = Open("tx1");
  ASSERT_TRUE(b);
  EXPECT_NE(Value(b.get(), "SELECT pg_backend_pid()"), pid);
  EXPECT_EQ(Setting(b.get(), "client_encoding"), "UTF8");
}

// Found in review: DISCARD ALL does not undo LOAD (nor a dblink connection):
// such a client stays pinned, and its server is closed, not reset.
TEST_F(IsolationTest, LoadKeepsItsServerFromEveryoneElse) {
  const auto& su = env->backend->superuser();
  std::string as_su = "user=" + su.username + " password=" + su.password;
  std::string pid;
  {
    PqConn a = Open("session1", as_su);
    ASSERT_TRUE(a);
    ASSERT_TRUE(PqExec(a.get(), "LOAD 'auto_explain'").ok);
    ASSERT_TRUE(PqExec(a.get(), "DISCARD ALL").ok);
    pid = Value(a.get(), "SELECT pg_backend_pid()");
  }
  PqConn b = Open("session1", as_su);
  ASSERT_TRUE(b);
  EXPECT_NE(Value(b.get(), "SELECT pg_backend_pid()"), pid);
}

// Found in review: a duplicate statement name was answered by the proxy while
// the server went on with the batch and committed what came before it;
// PostgreSQL rolls the whole batch back.
TEST_P(ModeTest, DuplicateStatementNameRollsBackItsBatch) {
  auto run = [](PGconn* c) {
    PqResult p(PQprepare(c, "iso_dup", "INSERT INTO iso_enc (v) VALUES ('dup-batch')", 0, nullptr));
    EXPECT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQerrorMessage(c);
    // One batch: Bind/Execute of it, then a Parse of the same name, then Sync.
    EXPECT_EQ(PQenterPipelineMode(c), 1);
    EXPECT_EQ(PQsendQueryPrepared(c, "iso_dup", 0, nullptr, nullptr, nullptr, 0), 1);
    EXPECT_EQ(PQsendPrepare(c, "iso_dup", "SELECT 1", 0, nullptr), 1);
    EXPECT_EQ(PQpipelineSync(c), 1);
    std::string seen;
    for (int i = 0; i < 8; ++i) {
      PqResult r = WaitResult(c, 5s);
      if (!r) break;
      ExecStatusType st = PQresultStatus(r.get());
      if (st == PGRES_PIPELINE_SYNC) break;
      const char* code = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
      seen += std::string(PQresStatus(st)) + (code ? std::string(":") + code : "") + " ";
    }
    PQexitPipelineMode(c);
    return seen;
  };
  auto count = [] {
    return ValueOr(QueryValue(env->backend->DirectConninfo(),
                              "SELECT count(*) FROM iso_enc WHERE v = 'dup-batch'"));
  };
  PqConn direct = OpenDirect();
  ASSERT_TRUE(direct);
  std::string direct_seen = run(direct.get());
  EXPECT_EQ(count(), "0") << direct_seen;
  PqConn c = Open(GetParam().one);
  ASSERT_TRUE(c);
  std::string proxy_seen = run(c.get());
  EXPECT_EQ(count(), "0") << proxy_seen;
  EXPECT_THAT(proxy_seen, HasSubstr("42P05"));
}

// Found in review: a client gone in the middle of COPY FROM STDIN was waited
// for as if the server owed it an answer, and held the server for ever.
TEST_F(IsolationTest, ClientGoneInTheMiddleOfCopyInFreesItsServer) {
  {
    PqConn a = Open("tx1");
    ASSERT_TRUE(a);
    PqResult r(PQexec(a.get(), "COPY iso_enc (v) FROM STDIN"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_IN) << PQerrorMessage(a.get());
    ASSERT_EQ(PQputCopyData(a.get(), "half\n", 5), 1);
    ASSERT_EQ(PQflush(a.get()), 0);
    shutdown(PQsocket(a.get()), SHUT_WR);  // gone without a CopyDone
    std::this_thread::sleep_for(200ms);
  }
  // The pool's one server is free again within moments.
  PqConn b = Open("tx1");
  ASSERT_TRUE(b);
  PQsendQuery(b.get(), "SELECT 'free'");
  PqResult r = WaitResult(b.get(), 5s);
  ASSERT_TRUE(r) << "the server stayed with the client that left";
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "free");
}

// A client's unnamed statement, parsed in one transaction and bound in a
// later one, works on whichever server the later one gets, as on PostgreSQL;
// and a statement name the client never prepared is not one on the server.
TEST_F(IsolationTest, UnnamedStatementAndUnknownNamesAreTheClientsOwn) {
  PqConn a = Open("tx2");
  PqConn b = Open("tx2");
  ASSERT_TRUE(a && b);
  PqResult p(PQprepare(a.get(), "", "SELECT 'unnamed of a'", 0, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK);
  // b runs, so that a's next transaction may land elsewhere.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Value(b.get(), "SELECT 1"), "1");
    PqResult r(PQexecPrepared(a.get(), "", 0, nullptr, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(a.get());
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "unnamed of a");
  }
  // b never parsed an unnamed statement of its own (its simple queries do not).
  PqResult none(PQexecPrepared(b.get(), "", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_STREQ(PQresultErrorField(none.get(), PG_DIAG_SQLSTATE), "26000");
  PqResult theirs(PQexecPrepared(b.get(), "pgw_0123456789abcdef0123456789abcdef", 0, nullptr,
                                 nullptr, nullptr, 0));
  EXPECT_STREQ(PQresultErrorField(theirs.get(), PG_DIAG_SQLSTATE), "26000");
}

// --- Resetting a server before anyone else gets it ----------------------------------

// Regression: when server_reset_query failed ("DISCARD ALL cannot be executed
// within a pipeline", after a client left with an open portal), the server
// went back to the pool anyway and the next client inherited its search_path
// and temporary table.
TEST_F(IsolationTest, ServerLeftInAPipelineIsClosedNotLent) {
  int first_pid = 0;
  {
    PqConn a = Open("session1");
    ASSERT_TRUE(a);
    ASSERT_TRUE(PqExec(a.get(), "SET search_path = pg_catalog").ok);
    ASSERT_TRUE(PqExec(a.get(), "CREATE TEMP TABLE iso_left (x int)").ok);
    first_pid = std::stoi(Value(a.get(), "SELECT pg_backend_pid()"));
    // Parse, Bind, Execute (one row of three) and no Sync: an open portal.
    int fd = PQsocket(a.get());
    std::string sql = "SELECT generate_series(1, 3)";
    std::string parse = "P" + Int32(static_cast<uint32_t>(4 + 1 + sql.size() + 1 + 2)) +
                        std::string(1, '\0') + sql + std::string(1, '\0') + std::string(2, '\0');
    std::string bind = "B" + Int32(4 + 1 + 1 + 2 + 2 + 2) + std::string(8, '\0');
    std::string execute = "E" + Int32(4 + 1 + 4) + std::string(1, '\0') + Int32(1);
    ASSERT_TRUE(SendAll(fd, parse + bind + execute + "H" + Int32(4)));
    ReadOutcome r = ReadAtLeast(fd, 20, 2s);
    EXPECT_FALSE(r.bytes.empty());
  }  // PQfinish: Terminate
  PqConn b = Open("session1");
  ASSERT_TRUE(b);
  EXPECT_EQ(Setting(b.get(), "search_path"), env->defaults["search_path"]);
  EXPECT_EQ(Value(b.get(), "SELECT to_regclass('iso_left') IS NULL"), "t");
  EXPECT_NE(Value(b.get(), "SELECT pg_backend_pid()"), std::to_string(first_pid));
}

TEST_F(IsolationTest, ServerWhoseResetFailsIsClosedNotLent) {
  // A proxy whose reset query always fails: every server is closed after
  // its client, never handed on.
  std::string dir = env->tmp->Sub("badreset");
  std::filesystem::create_directories(dir);
  ProxyProcess p;
  ProxyOptions o;
  o.pool_mode = "session";
  o.default_pool_size = 1;
  o.extra_yaml = "  server_reset_query: SELECT 1/0\n";
  ASSERT_TRUE(p.Start(dir, env->backend->pg_port(), o).ok()) << p.Log();
  std::set<std::string> pids;
  for (int i = 0; i < 3; ++i) {
    std::string err;
    PqConn c = OpenPq(p.Conninfo(), &err);
    ASSERT_TRUE(c) << err;
    ASSERT_TRUE(PqExec(c.get(), "SET search_path = pg_catalog").ok);
    pids.insert(Value(c.get(), "SELECT pg_backend_pid()"));
  }
  EXPECT_EQ(pids.size(), 3u) << "a server was lent again after its reset failed";
  EXPECT_THAT(p.Log(200), HasSubstr("server_reset_query failed"));
}

// --- Errors as PostgreSQL gives them ------------------------------------------------

// Logs in with libpq on `db`, runs `SELECT pg_backend_pid()`, and returns the
// connection with the backend pid of its server.
std::pair<PqConn, std::string> WithBackend(const std::string& db) {
  std::string err;
  PqConn c = OpenPq(env->proxy->Conninfo(db), &err);
  EXPECT_TRUE(c) << err;
  if (!c) return {nullptr, ""};
  PqOutcome o = PqExec(c.get(), "SELECT pg_backend_pid()");
  return {std::move(c), o.value};
}

// Reads the client connection `fd` for up to 5 s: "closed after" (or "left
// open after") and the SQLSTATE of each error it was sent.
std::string HowItEnds(int fd) {
  ReadOutcome r = ReadUntilClosed(fd, 5s);
  std::string out = r.closed ? "closed after" : "left open after";
  for (const auto& m : SplitMessages(r.bytes)) {
    if (m.type == 'E') out += " " + ErrorFields(m.body)['C'];
  }
  return out;
}

// Regression: after forwarding the server's FATAL (pg_terminate_backend),
// the proxy sent a FATAL 08006 of its own.
TEST_P(ModeTest, ServerFatalIsForwardedOnceThenTheClientIsClosed) {
  std::string err;
  PqConn c = OpenPq(env->proxy->Conninfo(GetParam().two, "application_name=iso_victim"), &err);
  ASSERT_TRUE(c) << err;
  int fd = PQsocket(c.get());
  std::string sql = "SELECT pg_sleep(20)";
  ASSERT_TRUE(SendAll(
      fd, "Q" + Int32(static_cast<uint32_t>(4 + sql.size() + 1)) + sql + std::string(1, '\0')));
  PqConn direct = OpenDirect();
  ASSERT_TRUE(direct);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Value(direct.get(),
                     "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = "
                     "'SELECT pg_sleep(20)' AND application_name = 'iso_victim'") == "1";
      },
      5s));
  EXPECT_EQ(HowItEnds(fd), "closed after 57P01");
}

// Regression: in session mode, when the client's backend was killed while
// the client was idle, the FATAL was forwarded but the connection stayed open
// (libpq then waited forever) and the client was silently lent a new backend.
TEST_F(IsolationTest, SessionBackendKilledWhileIdleEndsTheClient) {
  auto [c, pid] = WithBackend("session2");
  ASSERT_TRUE(c);
  ASSERT_FALSE(pid.empty());
  PqConn direct = OpenDirect();
  ASSERT_TRUE(direct);
  EXPECT_EQ(Value(direct.get(), "SELECT pg_terminate_backend(" + pid + ")"), "t");
  EXPECT_EQ(HowItEnds(PQsocket(c.get())), "closed after 57P01");
}

// In transaction pooling a server lost between transactions is invisible.
TEST_F(IsolationTest, TransactionServerKilledBetweenTransactionsIsInvisible) {
  auto [c, pid] = WithBackend("tx1");
  ASSERT_TRUE(c);
  PqConn direct = OpenDirect();
  ASSERT_TRUE(direct);
  EXPECT_EQ(Value(direct.get(), "SELECT pg_terminate_backend(" + pid + ")"), "t");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Value(c.get(), "SELECT 'still here'"), "still here");
}

// A server connection cut without a word (the kernel aborts the proxy's end
// of it) while the client is inside a transaction: the client is told and
// closed; it must not go on to COMMIT on another server what was lost.
TEST_F(IsolationTest, ServerLostInsideATransactionEndsTheClient) {
  PqConn c = Open("tx1");
  ASSERT_TRUE(c);
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_TRUE(PqExec(c.get(), "INSERT INTO iso_enc (v) VALUES ('lost-with-its-server')").ok);
  std::string port;
  for (const auto& row : Admin("SHOW SERVERS")) {
    if (row.at("database") == "tx1" && row.at("state") == "active" && row.at("user") == kAppUser)
      port = row.at("local_port");
  }
  ASSERT_FALSE(port.empty()) << "no active server for the client";
  CommandResult kill = itest::Run({"/usr/bin/ss", "-K", "sport", "=", ":" + port}, 10s);
  ASSERT_EQ(kill.exit_code, 0) << kill.Describe();
  EXPECT_EQ(HowItEnds(PQsocket(c.get())), "closed after 08006");
  EXPECT_EQ(ValueOr(QueryValue(env->backend->DirectConninfo(),
                               "SELECT count(*) FROM iso_enc WHERE v = 'lost-with-its-server'")),
            "0");
}

// --- Prepared statements -----------------------------------------------------------

// Regression: a Parse that failed still recorded the client's name, so the
// next Parse of that name failed with 42P05.
TEST_P(ModeTest, FailedParseLeavesNoName) {
  PqConn c = Open(GetParam().one);
  ASSERT_TRUE(c);
  PqResult bad(PQprepare(c.get(), "iso_s", "SELEC 1", 0, nullptr));
  EXPECT_EQ(PQresultStatus(bad.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(bad.get(), PG_DIAG_SQLSTATE), "42601");
  PqResult good(PQprepare(c.get(), "iso_s", "SELECT 41 + 1", 0, nullptr));
  ASSERT_EQ(PQresultStatus(good.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  PqResult run(PQexecPrepared(c.get(), "iso_s", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(run.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_STREQ(PQgetvalue(run.get(), 0, 0), "42");
}

// Regression: the same query text prepared by two clients shared one server
// statement even after DDL changed its result type, so the second client got
// "cached plan must not change result type" where PostgreSQL directly plans
// afresh.
TEST_F(IsolationTest, SharedStatementIsPreparedAfreshAfterItsResultTypeChanged) {
  const char* text = "SELECT * FROM iso_rt ORDER BY 1";
  auto prepare_and_run = [&](PGconn* c, const char* name) {
    PqResult p(PQprepare(c, name, text, 0, nullptr));
    EXPECT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQerrorMessage(c);
    PqResult r(PQexecPrepared(c, name, 0, nullptr, nullptr, nullptr, 0));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c);
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK ? PQnfields(r.get()) : -1;
  };
  auto run_again = [](PGconn* c, const char* name) {
    PqResult r(PQexecPrepared(c, name, 0, nullptr, nullptr, nullptr, 0));
    const char* st = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK ? std::string("ok")
                                                      : std::string(st ? st : "?");
  };
  PqConn a = Open("tx1");
  PqConn da = OpenDirect();
  ASSERT_TRUE(a && da);
  EXPECT_EQ(prepare_and_run(a.get(), "qa"), 1);
  EXPECT_EQ(prepare_and_run(da.get(), "qa"), 1);
  PqConn su = OpenPq(env->backend->superuser_conninfo(), nullptr);
  ASSERT_TRUE(su);
  ASSERT_TRUE(PqExec(su.get(), "ALTER TABLE iso_rt ADD COLUMN b int").ok);
  // A client preparing the text now plans it afresh, as directly.
  PqConn b = Open("tx1");
  PqConn db = OpenDirect();
  ASSERT_TRUE(b && db);
  EXPECT_EQ(prepare_and_run(db.get(), "qb"), 2);
  EXPECT_EQ(prepare_and_run(b.get(), "qb"), 2);
  // The client whose own plan went stale is told so, as directly.
  EXPECT_EQ(run_again(da.get(), "qa"), "0A000");
  EXPECT_EQ(run_again(a.get(), "qa"), "0A000");
  EXPECT_EQ(run_again(b.get(), "qb"), "ok");
  ASSERT_TRUE(PqExec(su.get(), "ALTER TABLE iso_rt DROP COLUMN b").ok);
}

// --- Authentication ---------------------------------------------------------------

// The salt the proxy sends `user` in its SCRAM server-first-message.
std::string ScramSalt(const std::string& user, const std::string& db) {
  int fd = ConnectTcp(env->proxy->port());
  if (fd < 0) return "no connection";
  std::string out;
  SendAll(fd, StartupPacket(user, db));
  ReadOutcome r = ReadAtLeast(fd, 9, 3s);
  auto msgs = SplitMessages(r.bytes);
  if (msgs.empty() || msgs[0].type != 'R') {
    close(fd);
    return "no SASL request";
  }
  std::string first = "n,,n=,r=abcdefghijklmnopqrstuvwx";
  std::string body =
      std::string("SCRAM-SHA-256") + '\0' + Int32(static_cast<uint32_t>(first.size())) + first;
  SendAll(fd, "p" + Int32(static_cast<uint32_t>(body.size() + 4)) + body);
  r = ReadAtLeast(fd, 20, 3s);
  close(fd);
  msgs = SplitMessages(r.bytes);
  if (msgs.empty() || msgs[0].type != 'R' || msgs[0].body.size() < 4) return "no server-first";
  std::string server_first = msgs[0].body.substr(4);
  std::smatch m;
  if (!std::regex_search(server_first, m, std::regex(",s=([^,]+),i=4096"))) return server_first;
  return m[1].str();
}

// Regression: an unknown user got a new random salt on every attempt while a
// real user's salt is stable, so user names could be enumerated.
TEST_F(IsolationTest, UnknownUserGetsTheSameSaltEveryTimeAsARealUser) {
  std::string real1 = ScramSalt(kAppUser, "tx1"), real2 = ScramSalt(kAppUser, "tx1");
  std::string ghost1 = ScramSalt("iso_nobody", "tx1"), ghost2 = ScramSalt("iso_nobody", "tx1");
  EXPECT_EQ(real1, real2);
  EXPECT_EQ(ghost1, ghost2);
  EXPECT_NE(ghost1, real1);
  EXPECT_NE(ScramSalt("iso_nobody_else", "tx1"), ghost1);
  auto raw = pgwire::Base64Decode(ghost1);
  ASSERT_TRUE(raw.has_value()) << ghost1;
  EXPECT_EQ(raw->size(), 16u);  // as PostgreSQL's mock salt
}

// Regression: the admin console refused a non-admin before authentication,
// telling anyone who is an admin.
TEST_F(IsolationTest, AdminConsoleRefusesOnlyAfterAuthenticationWithOneMessage) {
  auto login = [](const std::string& user, const std::string& password) {
    std::string err;
    PqConn c =
        OpenPq("host=127.0.0.1 port=" + std::to_string(env->proxy->port()) +
                   " dbname=pgwarden connect_timeout=5 user=" + user + " password=" + password,
               &err);
    return c ? std::string("ok") : err;
  };
  EXPECT_THAT(login("iso_plain", "wrong"), HasSubstr("password authentication failed"));
  EXPECT_THAT(login("iso_nobody", "wrong"), HasSubstr("password authentication failed"));
  EXPECT_THAT(login(env->backend->superuser().username, "wrong"),
              HasSubstr("password authentication failed"));
  EXPECT_THAT(login("iso_plain", "plain-pw-1"),
              HasSubstr("is not allowed to use the admin console"));
  EXPECT_EQ(login(env->backend->superuser().username, env->backend->superuser().password), "ok");
}

// Regression: failed logins were not logged at all.
TEST_F(IsolationTest, FailedLoginsAreLoggedAndRateLimited) {
  std::string err;
  EXPECT_FALSE(OpenPq("host=127.0.0.1 port=" + std::to_string(env->proxy->port()) +
                          " dbname=tx1 user=iso_plain password=wrong connect_timeout=5",
                      &err));
  std::this_thread::sleep_for(300ms);
  EXPECT_THAT(env->proxy->Log(20),
              HasSubstr("failed login: user \"iso_plain\" database \"tx1\" from 127.0.0.1"));
  // A burst: at most kFailedLoginLogsPerSecond lines a second, the rest counted.
  std::this_thread::sleep_for(1100ms);
  for (int i = 0; i < 40; ++i)
    OpenPq("host=127.0.0.1 port=" + std::to_string(env->proxy->port()) +
               " dbname=tx1 user=iso_burst password=wrong connect_timeout=5",
           &err);
  std::this_thread::sleep_for(1100ms);
  OpenPq("host=127.0.0.1 port=" + std::to_string(env->proxy->port()) +
             " dbname=tx1 user=iso_burst password=wrong connect_timeout=5",
         &err);
  std::this_thread::sleep_for(300ms);
  std::string log = env->proxy->Log(400);
  int lines = 0;
  for (size_t at = log.find("user \"iso_burst\""); at != std::string::npos;
       at = log.find("user \"iso_burst\"", at + 1))
    ++lines;
  EXPECT_LE(lines, 2 * 10 + 1) << log;
  EXPECT_GE(lines, 2);
  EXPECT_THAT(log, HasSubstr("more failed logins not logged"));
}

INSTANTIATE_TEST_SUITE_P(Modes, ModeTest, ::testing::Values(kTransaction, kSession),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace pgwarden::itest
