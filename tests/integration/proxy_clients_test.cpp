// The proxy with real clients: psql, pgbench, libpq, node-postgres, psycopg2; session parameters
// and abandoned transactions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <regex>
#include <set>
#include <thread>

#include "pg/connection.h"
#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using ::testing::HasSubstr;

// One cluster and one proxy for the binary (a global environment, so the
// test suites share them). The proxy serves several client databases, each
// its own pool over the same PostgreSQL database:
//   postgres  default pool (8)         bench    transaction, pool 4
//   pool1     transaction, pool 1      session  session, pool 8
//   pool2     transaction, pool 2
class ProxyEnv : public ProxyClusterEnv {
 public:
  void SetUp() override {
    setup = StartCluster("pgw-itest-proxy-clients");
    if (!setup.ok()) return;
    ProxyOptions o;
    o.default_pool_size = 8;
    o.databases = {{"pool1", "postgres", 1, "transaction"},
                   {"pool2", "postgres", 2, "transaction"},
                   {"bench", "postgres", 4, "transaction"},
                   {"session", "postgres", 8, "session"}};
    setup = proxy->Start(tmp->path(), backend->pg_port(), o);
    if (!setup.ok()) return;
    // One event-loop thread: which server connection a client gets then
    // follows only the pool's most-recently-used order, which a test can steer.
    std::string dir = tmp->path() + "/single";
    std::filesystem::create_directories(dir);
    single = std::make_unique<ProxyProcess>();
    ProxyOptions one;
    one.workers = 1;
    one.databases = {{"pool2", "postgres", 2, "transaction"}};
    setup = single->Start(dir, backend->pg_port(), one);
  }
  void TearDown() override {
    single.reset();
    ProxyClusterEnv::TearDown();
  }

  std::unique_ptr<ProxyProcess> single;  // workers: 1
};

ProxyEnv* const env = static_cast<ProxyEnv*>(::testing::AddGlobalTestEnvironment(new ProxyEnv));

class ProxyClientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(env->setup.ok()) << env->setup.ToString();
    tmp_ = env->tmp.get();
    backend_ = env->backend.get();
    proxy_ = env->proxy.get();
    ASSERT_TRUE(proxy_->alive()) << proxy_->Log();
  }
  void TearDown() override {
    if (proxy_ == nullptr) return;
    EXPECT_TRUE(proxy_->alive()) << "the proxy died\n" << proxy_->Log();
    if (HasFailure()) std::fprintf(stderr, "%s", proxy_->Log(60).c_str());
  }

  PqConn Open(const std::string& db, const std::string& extra = "") {
    std::string err;
    PqConn c = OpenPq(proxy_->Conninfo(db, extra), &err);
    EXPECT_TRUE(c) << err;
    return c;
  }
  // The number of `app` backends in a transaction, seen directly on PostgreSQL.
  int AppBackendsInTransaction() {
    auto v = QueryValue(backend_->superuser_conninfo(),
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND "
                        "state LIKE 'idle in transaction%'");
    return v.ok() ? std::stoi(*v) : -1;
  }

  TempDir* tmp_ = nullptr;
  ProxyBackend* backend_ = nullptr;
  ProxyProcess* proxy_ = nullptr;
};

// --- psql ----------------------------------------------------------------------

TEST_F(ProxyClientsTest, PsqlQueryReturnsTheRow) {
  CommandResult r =
      itest::Run({"/usr/bin/psql", proxy_->Conninfo(), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c",
                  "SELECT 40 + 2, 'through ' || 'the proxy'"},
                 30s);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "42|through the proxy\n");
}

TEST_F(ProxyClientsTest, PsqlScriptKeepsItsSetApplicationName) {
  std::string script = tmp_->Sub("psql-script.sql");
  ASSERT_TRUE(WriteFile(script,
                        "SET application_name = 'set_by_psql';\n"
                        "SELECT 1;\n"
                        "BEGIN;\nSELECT 2;\nCOMMIT;\n"
                        "SELECT current_setting('application_name');\n"));
  CommandResult r = itest::Run({"/usr/bin/psql", proxy_->Conninfo("pool1"), "-X", "-At", "-v",
                                "ON_ERROR_STOP=1", "-f", script},
                               30s);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, ::testing::EndsWith("set_by_psql\n")) << r.Describe();
}

// --- Session parameters are per client -------------------------------------------

TEST_F(ProxyClientsTest, ApplicationNameStaysWithItsClientOnAPoolOfOne) {
  PqConn a = Open("pool1", "application_name=client_a");
  PqConn b = Open("pool1", "application_name=client_b");
  ASSERT_TRUE(a && b);
  const std::string q = "SELECT current_setting('application_name')";
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    // Explicit transactions and single statements, interleaved.
    ASSERT_TRUE(PqExec(a.get(), "BEGIN").ok);
    PqOutcome va = PqExec(a.get(), q);
    ASSERT_TRUE(PqExec(a.get(), "COMMIT").ok);
    PqOutcome vb = PqExec(b.get(), q);
    ASSERT_TRUE(va.ok && vb.ok) << va.error << vb.error;
    EXPECT_EQ(va.value, i < 10 ? "client_a" : "client_a2");
    EXPECT_EQ(vb.value, "client_b");
    if (i == 9) {
      // A SET outside a transaction follows client A to whatever server it gets next.
      ASSERT_TRUE(PqExec(a.get(), "SET application_name = 'client_a2'").ok);
    }
  }
  // And the value libpq reports (ParameterStatus) is each client's own.
  EXPECT_STREQ(PQparameterStatus(a.get(), "application_name"), "client_a2");
  EXPECT_STREQ(PQparameterStatus(b.get(), "application_name"), "client_b");
}

// A client that goes away inside a transaction must not hand that transaction
// to the next client of the pool: `how` is "terminate" (libpq's Terminate
// message) or "reset" (the socket shut down with nothing said).
void CheckAbandonedTransaction(ProxyProcess& proxy, ProxyBackend& backend, const std::string& how,
                               const std::string& table) {
  ASSERT_TRUE(QueryOnce(backend.DirectConninfo(), "CREATE TABLE " + table + " (id int)").ok());
  std::string err;
  PqConn a = OpenPq(proxy.Conninfo("pool1"), &err);
  ASSERT_TRUE(a) << err;
  ASSERT_TRUE(PqExec(a.get(), "BEGIN").ok);
  PqOutcome ins = PqExec(a.get(), "INSERT INTO " + table + " VALUES (1)");
  ASSERT_TRUE(ins.ok) << ins.error;
  PqOutcome xid = PqExec(a.get(), "SELECT txid_current_if_assigned()");
  ASSERT_TRUE(xid.ok && !xid.value.empty()) << xid.error;
  if (how == "reset") {
    shutdown(PQsocket(a.get()), SHUT_RDWR);
  }
  a.reset();  // PQfinish: Terminate (or nothing more when the socket is already shut)

  PqConn b = OpenPq(proxy.Conninfo("pool1"), &err);
  ASSERT_TRUE(b) << err;
  // The same pool of one: B's statement must run outside any transaction.
  PqOutcome state = PqExec(
      b.get(), "SELECT txid_current_if_assigned() IS NULL AND now() = statement_timestamp()");
  ASSERT_TRUE(state.ok) << state.error;
  EXPECT_EQ(state.value, "t") << "the next client inherited the abandoned transaction";
  PqOutcome count = PqExec(b.get(), "SELECT count(*) FROM " + table);
  ASSERT_TRUE(count.ok) << count.error;
  EXPECT_EQ(count.value, "0");
  PqOutcome status = PqExec(b.get(), "SELECT txid_status(" + xid.value + ")");
  ASSERT_TRUE(status.ok) << status.error;
  EXPECT_NE(status.value, "committed");
  b.reset();
  // Directly on PostgreSQL: the row never committed, no backend of app idles in a transaction.
  EXPECT_EQ(ValueOr(QueryValue(backend.DirectConninfo(), "SELECT count(*) FROM " + table)), "0");
  EXPECT_TRUE(WaitFor(
      [&] {
        auto v = QueryValue(backend.superuser_conninfo(),
                            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND "
                            "state LIKE 'idle in transaction%'");
        return v.ok() && *v == "0";
      },
      5s));
}

TEST_F(ProxyClientsTest, ClientTerminatingInsideATransactionLeavesNoTransactionBehind) {
  CheckAbandonedTransaction(*proxy_, *backend_, "terminate", "abandon_terminate");
}

TEST_F(ProxyClientsTest, ClientSocketClosedInsideATransactionLeavesNoTransactionBehind) {
  CheckAbandonedTransaction(*proxy_, *backend_, "reset", "abandon_reset");
}

// --- pgbench ----------------------------------------------------------------------

struct PgbenchCase {
  const char* db;        // proxy database (its pool mode)
  const char* protocol;  // -M
  int clients;
  int threads;
};

class ProxyPgbenchTest : public ProxyClientsTest,
                         public ::testing::WithParamInterface<PgbenchCase> {
 protected:
  void SetUp() override {
    ProxyClientsTest::SetUp();
    if (HasFatalFailure()) return;
    static CommandResult* init = nullptr;  // once for all cases, directly on PostgreSQL
    if (init == nullptr) {
      init = new CommandResult(itest::Run(
          {"/usr/bin/pgbench", "-i", "-q", "-s", "1", backend_->DirectConninfo()}, 120s));
    }
    ASSERT_EQ(init->exit_code, 0) << init->Describe();
  }
};

TEST_P(ProxyPgbenchTest, RunsThreeSecondsWithoutFailures) {
  const PgbenchCase& c = GetParam();
  CommandResult r = itest::Run(
      {"/usr/bin/pgbench", "-n", "-T", "3", "-M", c.protocol, "-c", std::to_string(c.clients), "-j",
       std::to_string(c.threads), proxy_->Conninfo(c.db)},
      60s);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("number of failed transactions: 0 ")) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\ntps = [0-9]+\\.[0-9]+"))) << r.out;
  EXPECT_EQ(AppBackendsInTransaction(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ProxyPgbenchTest,
    ::testing::Values(PgbenchCase{"bench", "simple", 8, 2}, PgbenchCase{"bench", "extended", 8, 2},
                      // PQprepare blocks its pgbench thread: one thread per client.
                      PgbenchCase{"bench", "prepared", 8, 8},
                      PgbenchCase{"session", "simple", 8, 2},
                      PgbenchCase{"session", "extended", 8, 2},
                      PgbenchCase{"session", "prepared", 8, 8}),
    [](const auto& info) {
      return std::string(info.param.db == std::string("bench") ? "Transaction" : "Session") + "_" +
             info.param.protocol;
    });

// --- libpq ------------------------------------------------------------------------

TEST_F(ProxyClientsTest, LibpqExtendedQueryWithParameters) {
  PqConn c = Open("pool2");
  ASSERT_TRUE(c);
  const char* values[] = {"forty", "2"};
  PqResult r(PQexecParams(c.get(), "SELECT $1::text || '-' || ($2::int * 21)", 2, nullptr, values,
                          nullptr, nullptr, 0));
  PqOutcome o = Outcome(c.get(), r.get());
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.value, "forty-42");
  // NULL parameter and a type from the server's inference.
  const char* nulls[] = {nullptr};
  PqResult n(
      PQexecParams(c.get(), "SELECT $1::int IS NULL", 1, nullptr, nulls, nullptr, nullptr, 0));
  EXPECT_EQ(Outcome(c.get(), n.get()).value, "t");
}

TEST_F(ProxyClientsTest, NamedPreparedStatementWorksAcrossServerConnections) {
  std::string err;
  PqConn c = OpenPq(env->single->Conninfo("pool2"), &err);
  PqConn busy = OpenPq(env->single->Conninfo("pool2"), &err);
  ASSERT_TRUE(c && busy);
  PqResult prep(PQprepare(c.get(), "s1", "SELECT $1::int + 1, pg_backend_pid()", 1, nullptr));
  PqOutcome po = Outcome(c.get(), prep.get());
  ASSERT_TRUE(po.ok) << po.error;

  // Another client keeps taking one of the two servers for short transactions.
  std::atomic<bool> stop{false};
  std::atomic<int> busy_errors{0};
  std::thread keeper([&] {
    while (!stop) {
      if (!PqExec(busy.get(), "SELECT pg_sleep(0.005)").ok) ++busy_errors;
    }
  });
  std::set<std::string> backends;
  int done = 0;
  for (int i = 0; i < 400 && (done < 50 || backends.size() < 2); ++i, ++done) {
    std::string v = std::to_string(i);
    const char* values[] = {v.c_str()};
    PqResult r(PQexecPrepared(c.get(), "s1", 1, values, nullptr, nullptr, 0));
    PqOutcome o = Outcome(c.get(), r.get());
    ASSERT_TRUE(o.ok) << "execution " << i << ": " << o.sqlstate << " " << o.error;
    EXPECT_EQ(o.value, std::to_string(i + 1));
    backends.insert(PQgetvalue(r.get(), 0, 1));
    if (i % 7 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  stop = true;
  keeper.join();
  EXPECT_EQ(busy_errors.load(), 0);
  EXPECT_GE(done, 50);
  // Make the move certain: a blocker holds (in a transaction) the very server
  // connection the statement last ran on, so the next execution must run on
  // the other one, where the proxy has to prepare it first.
  std::string last;
  {
    PqResult r(PQexecPrepared(c.get(), "s1", 1, std::array<const char*, 1>{"1"}.data(), nullptr,
                              nullptr, 0));
    ASSERT_TRUE(Outcome(c.get(), r.get()).ok);
    last = PQgetvalue(r.get(), 0, 1);
  }
  bool moved = false;
  for (int attempt = 0; attempt < 50 && !moved; ++attempt) {
    ASSERT_TRUE(PqExec(busy.get(), "BEGIN").ok);
    PqOutcome held = PqExec(busy.get(), "SELECT pg_backend_pid()");
    ASSERT_TRUE(held.ok) << held.error;
    if (held.value == last) {
      PqResult r(PQexecPrepared(c.get(), "s1", 1, std::array<const char*, 1>{"41"}.data(), nullptr,
                                nullptr, 0));
      PqOutcome o = Outcome(c.get(), r.get());
      ASSERT_TRUE(o.ok) << "on the other server connection: " << o.sqlstate << " " << o.error;
      EXPECT_EQ(o.value, "42");
      EXPECT_NE(std::string(PQgetvalue(r.get(), 0, 1)), last);
      backends.insert(PQgetvalue(r.get(), 0, 1));
      moved = true;
    }
    ASSERT_TRUE(PqExec(busy.get(), "COMMIT").ok);
    if (!moved) {
      PqResult r(PQexecPrepared(c.get(), "s1", 1, std::array<const char*, 1>{"1"}.data(), nullptr,
                                nullptr, 0));
      ASSERT_TRUE(Outcome(c.get(), r.get()).ok);
      last = PQgetvalue(r.get(), 0, 1);
    }
  }
  EXPECT_TRUE(moved) << "the blocker never got the statement's server connection in 50 tries";
  EXPECT_EQ(backends.size(), 2u) << "the executions never moved to the other server connection";

  // DEALLOCATE ALL forgets it; executing it fails as on PostgreSQL; re-preparing works.
  PqOutcome d = PqExec(c.get(), "DEALLOCATE ALL");
  ASSERT_TRUE(d.ok) << d.error;
  const char* one[] = {"1"};
  PqResult gone(PQexecPrepared(c.get(), "s1", 1, one, nullptr, nullptr, 0));
  EXPECT_EQ(Outcome(c.get(), gone.get()).sqlstate, "26000");
  PqResult again(PQprepare(c.get(), "s1", "SELECT $1::int * 3", 1, nullptr));
  PqOutcome ao = Outcome(c.get(), again.get());
  ASSERT_TRUE(ao.ok) << ao.sqlstate << " " << ao.error;
  for (int i = 0; i < 10; ++i) {
    std::string v = std::to_string(i);
    const char* values[] = {v.c_str()};
    PqResult r(PQexecPrepared(c.get(), "s1", 1, values, nullptr, nullptr, 0));
    PqOutcome o = Outcome(c.get(), r.get());
    ASSERT_TRUE(o.ok) << o.sqlstate << " " << o.error;
    EXPECT_EQ(o.value, std::to_string(i * 3));
  }
}

TEST_F(ProxyClientsTest, SameStatementNameInTwoClientsKeepsEachClientsText) {
  PqConn x = Open("pool1");
  PqConn y = Open("pool1");
  ASSERT_TRUE(x && y);
  PqResult px(PQprepare(x.get(), "same", "SELECT 'x:' || $1::text", 1, nullptr));
  PqResult py(PQprepare(y.get(), "same", "SELECT 'y:' || $1::text", 1, nullptr));
  ASSERT_TRUE(Outcome(x.get(), px.get()).ok);
  ASSERT_TRUE(Outcome(y.get(), py.get()).ok);
  for (int i = 0; i < 10; ++i) {
    std::string v = std::to_string(i);
    const char* values[] = {v.c_str()};
    PqResult rx(PQexecPrepared(x.get(), "same", 1, values, nullptr, nullptr, 0));
    PqResult ry(PQexecPrepared(y.get(), "same", 1, values, nullptr, nullptr, 0));
    EXPECT_EQ(Outcome(x.get(), rx.get()).value, "x:" + v);
    EXPECT_EQ(Outcome(y.get(), ry.get()).value, "y:" + v);
  }
}

TEST_F(ProxyClientsTest, PreparingANameTwiceFailsAsOnPostgres) {
  PqConn c = Open("pool2");
  ASSERT_TRUE(c);
  PqResult p1(PQprepare(c.get(), "twice", "SELECT 1", 0, nullptr));
  ASSERT_TRUE(Outcome(c.get(), p1.get()).ok);
  PqResult p2(PQprepare(c.get(), "twice", "SELECT 2", 0, nullptr));
  PqOutcome o = Outcome(c.get(), p2.get());
  EXPECT_EQ(o.sqlstate, "42P05") << "PostgreSQL refuses to prepare an existing name";
  PqResult r(PQexecPrepared(c.get(), "twice", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(Outcome(c.get(), r.get()).value, "1") << "the first definition stays";
}

// --- node-postgres ----------------------------------------------------------------

TEST_F(ProxyClientsTest, NodePostgresParameterizedAndNamedPreparedQueries) {
  std::string dir = tmp_->Sub("node");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  Result<NodePostgres> pg = InstallNodePostgres(dir, 180s);
  if (!pg.ok()) GTEST_SKIP() << pg.status().message();
  std::string script = dir + "/check.js";
  ASSERT_TRUE(WriteFile(script, R"JS(
const { Pool } = require('pg');
const pool = new Pool({
  host: '127.0.0.1', port: Number(process.env.PGW_PORT), user: process.env.PGW_USER,
  password: process.env.PGW_PASSWORD, database: 'pool2', max: 4,
});
(async () => {
  const r = await pool.query('SELECT $1::int + $2::int AS sum, $3::text AS word', [40, 2, 'hi']);
  console.log(`sum=${r.rows[0].sum} word=${r.rows[0].word}`);
  let ok = 0;
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const q = await pool.query({ name: 'x', text: 'SELECT $1::int * 2 AS v', values: [i] });
    if (q.rows[0].v === i * 2) ok++;
  }));
  console.log(`prepared_ok=${ok}`);
  await pool.end();
})().catch((e) => { console.error(`ERROR ${e.code || ''} ${e.message}`); process.exit(1); });
)JS"));
  ProcessOptions o;
  o.cwd = dir;
  o.env = {"PGW_PORT=" + std::to_string(proxy_->port()), std::string("PGW_USER=") + kAppUser,
           std::string("PGW_PASSWORD=") + kAppPassword, "NODE_PATH=" + pg->node_modules};
  CommandResult r = itest::Run({pg->node, script}, 60s, o);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("sum=42 word=hi"));
  EXPECT_THAT(r.out, HasSubstr("prepared_ok=20"));
}

// --- psycopg2 ----------------------------------------------------------------------

TEST_F(ProxyClientsTest, Psycopg2ExecuteCommitFetch) {
  Result<std::string> found = FindPythonWithPsycopg2(30s);
  if (!found.ok()) GTEST_SKIP() << found.status().message();
  const std::string& python = *found;
  std::string script = tmp_->Sub("check.py");
  ASSERT_TRUE(WriteFile(script, R"PY(
import os, psycopg2
conn = psycopg2.connect(host="127.0.0.1", port=int(os.environ["PGW_PORT"]),
                        user=os.environ["PGW_USER"], password=os.environ["PGW_PASSWORD"],
                        dbname="pool2")
cur = conn.cursor()
cur.execute("CREATE TABLE IF NOT EXISTS py_items (k text PRIMARY KEY, v int)")
cur.execute("INSERT INTO py_items VALUES (%s, %s), (%s, %s)", ("a", 1, "b's", 2))
conn.commit()
cur.execute("SELECT k, v FROM py_items WHERE v >= %(min)s ORDER BY k", {"min": 1})
print(cur.fetchall())
cur.execute("SELECT %s::int + %s::int", (40, 2))
print(cur.fetchone()[0])
conn.commit()
conn.close()
)PY"));
  ProcessOptions o;
  o.env = {"PGW_PORT=" + std::to_string(proxy_->port()), std::string("PGW_USER=") + kAppUser,
           std::string("PGW_PASSWORD=") + kAppPassword};
  CommandResult r = itest::Run({python, script}, 60s, o);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "[('a', 1), (\"b's\", 2)]\n42\n");
  // Committed: visible directly on PostgreSQL.
  EXPECT_EQ(ValueOr(QueryValue(backend_->DirectConninfo(), "SELECT count(*) FROM py_items")), "2");
}

}  // namespace
}  // namespace pgwarden::itest
