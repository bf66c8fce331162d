// The proxy's pool lifecycle against a real PostgreSQL: wait and idle timeouts, lifetime, reserve
// and minimum pool, dead servers, SIGHUP and SIGTERM, metrics, the admin console, auth_query.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;
using ::testing::HasSubstr;

int64_t MillisSince(Clk::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clk::now() - t).count();
}

// Opens a connection like OpenPq, but with verbose errors so that a login
// failure's message carries the SQLSTATE ("FATAL:  28P01: ...").
PqConn OpenPqVerbose(const std::string& conninfo, std::string* error) {
  PqConn c(PQconnectStart(conninfo.c_str()));
  if (!c) {
    *error = "out of memory";
    return nullptr;
  }
  PQsetErrorVerbosity(c.get(), PQERRORS_VERBOSE);
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  auto deadline = Clk::now() + 10s;
  while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && Clk::now() < deadline) {
    pollfd p{PQsocket(c.get()), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT),
             0};
    poll(&p, 1, 100);
    st = PQconnectPoll(c.get());
  }
  if (st != PGRES_POLLING_OK) {
    *error = PQstatus(c.get()) == CONNECTION_BAD ? PQerrorMessage(c.get()) : "connect timed out";
    return nullptr;
  }
  return c;
}

// "host=... user=U password=P dbname=D" through the proxy for any role.
std::string ProxyConninfoAs(const ProxyProcess& proxy, const std::string& user,
                            const std::string& password, const std::string& db = "postgres") {
  return "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " user=" + pg::QuoteConninfoValue(user) + " password=" + pg::QuoteConninfoValue(password) +
         " dbname=" + pg::QuoteConninfoValue(db) + " connect_timeout=5";
}

// A one-node cluster shared by the suite (databases idle_db and minpool_db
// owned by app); every test starts its own proxy with the settings it is
// about and stops it at the end.
class ProxyLifecycleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("pgw-itest-proxy-life");
    backend_ = new ProxyBackend(tmp_->path());
    *setup_ = backend_->Start();
    if (!setup_->ok()) return;
    for (const char* db : {"idle_db", "minpool_db"}) {
      *setup_ = QueryOnce(backend_->superuser_conninfo(),
                          std::string("CREATE DATABASE ") + db + " OWNER app")
                    .status();
      if (!setup_->ok()) return;
    }
  }
  static void TearDownTestSuite() {
    delete backend_;
    delete tmp_;
  }
  void SetUp() override { ASSERT_TRUE(setup_->ok()) << setup_->ToString(); }
  void TearDown() override {
    if (proxy_ && HasFailure()) std::fprintf(stderr, "%s", proxy_->Log(60).c_str());
    proxy_.reset();
  }

  // Starts this test's proxy in its own directory (named after the test).
  void StartProxy(const ProxyOptions& o) {
    std::string dir = tmp_->Sub(::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir);
    proxy_ = std::make_unique<ProxyProcess>();
    Status st = proxy_->Start(dir, backend_->pg_port(), o);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  // The admin console as the superuser (needs SuperuserEntry() in the userlist).
  PqConn OpenAdmin() {
    const auto& su = backend_->superuser();
    std::string err;
    PqConn admin = OpenPq(ProxyConninfoAs(*proxy_, su.username, su.password, "pgwarden"), &err);
    EXPECT_TRUE(admin) << err;
    return admin;
  }

  // The superuser's userlist line, for admin_users and auth_user.
  static std::string SuperuserEntry() {
    return UserlistEntry(backend_->superuser().username, backend_->superuser().password);
  }

  // A number from PostgreSQL directly (as the superuser), or -1.
  static int Count(const std::string& sql) {
    auto v = QueryValue(backend_->superuser_conninfo(), sql);
    return v.ok() ? std::stoi(*v) : -1;
  }
  // app's backends on `datname` (in `state` unless "").
  static int AppBackends(const std::string& datname, const std::string& state = "") {
    std::string sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = " +
                      pg::QuoteLiteral(datname);
    if (!state.empty()) sql += " AND state = " + pg::QuoteLiteral(state);
    return Count(sql);
  }
  static bool BackendAlive(const std::string& pid) {
    return Count("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) == 1;
  }

  static TempDir* tmp_;
  static ProxyBackend* backend_;
  static Status* setup_;
  std::unique_ptr<ProxyProcess> proxy_;
};

TempDir* ProxyLifecycleTest::tmp_ = nullptr;
ProxyBackend* ProxyLifecycleTest::backend_ = nullptr;
Status* ProxyLifecycleTest::setup_ = new Status(Status::Ok());

// --- 1. query_wait_timeout ----------------------------------------------------------

TEST_F(ProxyLifecycleTest, WaiterGetsQueryWaitTimeoutWhileTheHolderIsUnaffected) {
  ProxyOptions o;
  o.query_wait_timeout = "2s";
  o.databases = {{"one", "postgres", 1, ""}};
  StartProxy(o);
  std::string err;
  PqConn a = OpenPq(proxy_->Conninfo("one"), &err);
  ASSERT_TRUE(a) << err;
  PqConn b = OpenPq(proxy_->Conninfo("one"), &err);
  ASSERT_TRUE(b) << err;
  ASSERT_TRUE(PqExec(a.get(), "BEGIN").ok);
  ASSERT_EQ(PqExec(a.get(), "SELECT 1").value, "1");

  auto start = Clk::now();
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT 1"), 1);
  PqResult r = WaitResult(b.get(), 8s);
  int64_t took = MillisSince(start);
  ASSERT_TRUE(r) << "B got no answer within 8 s";
  PqOutcome bo = Outcome(b.get(), r.get());
  EXPECT_FALSE(bo.ok);
  EXPECT_THAT(bo.error, HasSubstr("query_wait_timeout"));
  EXPECT_GE(took, 1800);
  EXPECT_LE(took, 5000);

  // A still holds its transaction and ends it normally.
  EXPECT_EQ(PqExec(a.get(), "SELECT 2").value, "2");
  PqOutcome commit = PqExec(a.get(), "COMMIT");
  EXPECT_TRUE(commit.ok) << commit.sqlstate << " " << commit.error;
  // And the pool of one serves the next client.
  EXPECT_EQ(ValueOr(QueryValue(proxy_->Conninfo("one"), "SELECT 'next'")), "next");
}

// --- 2. server_idle_timeout, min_pool_size --------------------------------------------

TEST_F(ProxyLifecycleTest, IdleServersAreClosedAfterServerIdleTimeout) {
  ProxyOptions o;
  o.databases = {{"idle", "idle_db", 4, ""}};
  o.extra_yaml = "  server_idle_timeout: 2s\n";
  StartProxy(o);
  std::vector<PqConn> clients;
  std::string err;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(OpenPq(proxy_->Conninfo("idle"), &err));
    ASSERT_TRUE(clients.back()) << err;
  }
  // A burst that needs all four servers at once.
  for (auto& c : clients) ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(0.5)"), 1);
  EXPECT_TRUE(WaitFor([] { return AppBackends("idle_db", "active") == 4; }, 3s, 20ms))
      << "active: " << AppBackends("idle_db", "active");
  for (auto& c : clients) {
    PqResult r = WaitResult(c.get(), 5s);
    ASSERT_TRUE(r);
    EXPECT_TRUE(Outcome(c.get(), r.get()).ok);
  }
  auto burst_end = Clk::now();
  EXPECT_GE(AppBackends("idle_db", "idle"), 1) << "the servers were closed right away";

  bool gone = WaitFor([] { return AppBackends("idle_db") == 0; }, 6s, 100ms);
  int64_t took = MillisSince(burst_end);
  EXPECT_TRUE(gone) << AppBackends("idle_db") << " app backends still open on idle_db";
  EXPECT_GE(took, 1500) << "closed before server_idle_timeout";
  EXPECT_LE(took, 5000);
  // The clients stay connected and get a fresh server.
  EXPECT_EQ(PqExec(clients[0].get(), "SELECT 'again'").value, "again");
}

TEST_F(ProxyLifecycleTest, MinPoolSizeKeepsServersOpenAfterTheClientLeft) {
  ProxyOptions o;
  o.default_pool_size = 4;
  o.databases = {{"minpool", "minpool_db", 0, ""}};
  o.extra_yaml = "  min_pool_size: 2\n  server_idle_timeout: 2s\n";
  StartProxy(o);
  EXPECT_EQ(ValueOr(QueryValue(proxy_->Conninfo("minpool"), "SELECT 1")), "1");
  EXPECT_TRUE(WaitFor([] { return AppBackends("minpool_db") == 2; }, 5s, 100ms))
      << "app backends on minpool_db: " << AppBackends("minpool_db");
  // Past server_idle_timeout the janitor still keeps two.
  std::this_thread::sleep_for(3500ms);
  EXPECT_EQ(AppBackends("minpool_db"), 2);
}

// --- 3. server_lifetime -----------------------------------------------------------

TEST_F(ProxyLifecycleTest, ServerOlderThanServerLifetimeIsReplaced) {
  ProxyOptions o;
  o.extra_yaml = "  server_lifetime: 2s\n";
  StartProxy(o);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  PqOutcome first = PqExec(c.get(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(first.ok) << first.error;
  std::this_thread::sleep_for(4s);
  EXPECT_FALSE(BackendAlive(first.value)) << "backend " << first.value << " outlived its lifetime";
  PqOutcome second = PqExec(c.get(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(second.ok) << second.error;
  EXPECT_NE(second.value, first.value);
}

// --- 4. reserve pool -----------------------------------------------------------------

TEST_F(ProxyLifecycleTest, ReservePoolServesAWaiterAfterReservePoolTimeout) {
  ProxyOptions o;
  o.default_pool_size = 1;
  o.extra_yaml = "  reserve_pool_size: 1\n  reserve_pool_timeout: 1s\n";
  StartProxy(o);
  std::string err;
  PqConn a = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(a) << err;
  PqConn b = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(b) << err;
  ASSERT_TRUE(PqExec(a.get(), "BEGIN").ok);
  PqOutcome pa = PqExec(a.get(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(pa.ok) << pa.error;

  auto start = Clk::now();
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT pg_backend_pid()"), 1);
  PqResult r = WaitResult(b.get(), 6s);
  int64_t took = MillisSince(start);
  ASSERT_TRUE(r) << "B was not served within 6 s";
  PqOutcome pb = Outcome(b.get(), r.get());
  ASSERT_TRUE(pb.ok) << pb.sqlstate << " " << pb.error;
  EXPECT_NE(pb.value, pa.value);
  EXPECT_GE(took, 800) << "served before reserve_pool_timeout: was the pool bigger than 1?";
  EXPECT_LE(took, 3500);
  EXPECT_EQ(PqExec(a.get(), "SELECT 'a'").value, "a");
  EXPECT_TRUE(PqExec(a.get(), "COMMIT").ok);
}

// --- 5. dead server connection -------------------------------------------------------

// Kills the backend behind a pooled idle server and checks that a new
// client is served by another one. `settle` is how long the server stays
// dead in the pool before the client comes.
void ExpectDeadServerReplaced(ProxyProcess& proxy, ProxyBackend& backend,
                              std::chrono::milliseconds settle) {
  auto first = QueryValue(proxy.Conninfo(), "SELECT pg_backend_pid()");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto killed =
      QueryValue(backend.superuser_conninfo(), "SELECT pg_terminate_backend(" + *first + ")");
  ASSERT_EQ(ValueOr(killed), "t");
  ASSERT_TRUE(WaitFor(
      [&] {
        return ValueOr(QueryValue(backend.superuser_conninfo(),
                                  "SELECT count(*) FROM pg_stat_activity WHERE pid = " + *first)) ==
               "0";
      },
      5s, 20ms));
  std::this_thread::sleep_for(settle);
  std::string err;
  PqConn c = OpenPq(proxy.Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  PqOutcome o = PqExec(c.get(), "SELECT pg_backend_pid()");
  EXPECT_TRUE(o.ok) << o.sqlstate << " " << o.error;
  EXPECT_NE(o.value, *first);
}

TEST_F(ProxyLifecycleTest, ServerKilledWhileIdleIsReplacedForANewClient) {
  StartProxy(ProxyOptions{});
  ExpectDeadServerReplaced(*proxy_, *backend_, 1500ms);
}

// The same within a second of the server's last use: the pool must not hand
// out a server whose socket already holds PostgreSQL's FATAL and EOF (the
// query never reached a server, so the client must not pay for it).
TEST_F(ProxyLifecycleTest, ServerKilledJustAfterUseIsReplacedForANewClient) {
  StartProxy(ProxyOptions{});
  ExpectDeadServerReplaced(*proxy_, *backend_, 0ms);
}

// server_check_query runs on a server that has been idle for server_check_delay
// (0: every time) before the client's request goes to it; its answer reaches
// no client. A fresh login is not checked.
TEST_F(ProxyLifecycleTest, ServerCheckQueryRunsBeforeReuseAndItsAnswerReachesNoClient) {
  {
    std::string err;
    PqConn direct = OpenPq(backend_->DirectConninfo(), &err);
    ASSERT_TRUE(direct) << err;
    PqOutcome created = PqExec(direct.get(), "CREATE SEQUENCE IF NOT EXISTS pgw_check_seq");
    ASSERT_TRUE(created.ok) << created.error;
  }
  auto seq = [] {
    return ValueOr(QueryValue(backend_->DirectConninfo(),
                              "SELECT last_value FROM pgw_check_seq WHERE is_called "
                              "UNION ALL SELECT 0 LIMIT 1"));
  };
  std::string before = seq();
  ProxyOptions o;
  o.default_pool_size = 1;
  o.extra_yaml = "  server_check_query: SELECT nextval('pgw_check_seq')\n  server_check_delay: 0\n";
  StartProxy(o);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  for (int i = 0; i < 5; ++i) {
    PqOutcome r = PqExec(c.get(), "SELECT 'mine " + std::to_string(i) + "'");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.value, "mine " + std::to_string(i));
    EXPECT_EQ(r.rows, 1);
  }
  // One server, five transactions: each of them after a first use (the
  // start-up probe's SELECT 1 may have been that) is preceded by a check.
  int checks = std::stoi(seq()) - std::stoi(before);
  EXPECT_GE(checks, 4) << "server_check_query ran " << checks << " times";
  EXPECT_LE(checks, 6);
}

// A server whose check fails is closed and the client's request goes to
// another one, without an error for the client.
TEST_F(ProxyLifecycleTest, ServerFailingTheCheckIsReplacedWithoutAnErrorForTheClient) {
  ProxyOptions o;
  o.default_pool_size = 2;
  o.extra_yaml = "  server_check_query: SELECT 1/0\n  server_check_delay: 0\n";
  StartProxy(o);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  std::set<std::string> pids;
  for (int i = 0; i < 4; ++i) {
    PqOutcome r = PqExec(c.get(), "SELECT pg_backend_pid()");
    ASSERT_TRUE(r.ok) << r.error;
    pids.insert(r.value);
  }
  EXPECT_EQ(pids.size(), 4u) << "a server that failed its check was used again";
  EXPECT_THAT(proxy_->Log(200), HasSubstr("server_check_query failed"));
}

// --- 6. SIGHUP -----------------------------------------------------------------------

TEST_F(ProxyLifecycleTest, SighupReloadsTheAuthFileWithoutDroppingClients) {
  ASSERT_TRUE(
      QueryOnce(backend_->superuser_conninfo(), "CREATE ROLE hup_user LOGIN PASSWORD 'hup-pw-1'")
          .ok());
  StartProxy(ProxyOptions{});
  std::string hup = ProxyConninfoAs(*proxy_, "hup_user", "hup-pw-1");
  std::string err;
  PqConn before = OpenPqVerbose(hup, &err);
  EXPECT_FALSE(before) << "hup_user logged in before it was in the auth_file";
  EXPECT_THAT(err, HasSubstr("28P01"));

  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");

  ASSERT_TRUE(WriteFile(proxy_->userlist_path(), UserlistEntry(kAppUser, kAppPassword) +
                                                     UserlistEntry("hup_user", "hup-pw-1")));
  ASSERT_EQ(kill(proxy_->pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return QueryValue(hup, "SELECT current_user").ok(); }, 5s, 100ms))
      << ValueOr(QueryValue(hup, "SELECT current_user"));
  EXPECT_EQ(ValueOr(QueryValue(hup, "SELECT current_user")), "hup_user");

  // The client connected before the reload is still in its transaction.
  EXPECT_EQ(PqExec(c.get(), "SELECT 2").value, "2");
  PqOutcome commit = PqExec(c.get(), "COMMIT");
  EXPECT_TRUE(commit.ok) << commit.error;
  EXPECT_TRUE(proxy_->alive());
  EXPECT_THAT(proxy_->Log(), HasSubstr("reloaded the configuration"));
}

// SIGHUP applies a larger pool at once (a waiting client is served), and a
// database entry pointing elsewhere (here: another dbname) moves the pool:
// new transactions go there and the old server connections are closed. A
// broken file changes nothing.
TEST_F(ProxyLifecycleTest, SighupAppliesPoolSizeAndDatabaseChangesWithoutDroppingClients) {
  ProxyOptions o;
  o.default_pool_size = 1;
  StartProxy(o);
  std::string err;
  PqConn holder = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(holder) << err;
  PqConn waiter = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(waiter) << err;
  ASSERT_TRUE(PqExec(holder.get(), "BEGIN").ok);
  ASSERT_EQ(PqExec(holder.get(), "SELECT current_database()").value, "postgres");
  ASSERT_EQ(PQsendQuery(waiter.get(), "SELECT 'served'"), 1);
  EXPECT_FALSE(WaitResult(waiter.get(), 500ms)) << "served beyond default_pool_size 1";

  const std::string path = proxy_->config_path();
  const std::string original = ReadFile(path);
  // A file with an error first: nothing changes, the log says why.
  ASSERT_TRUE(WriteFile(path, original + "  default_pool_size: lots\n"));
  ASSERT_EQ(kill(proxy_->pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return proxy_->Log(100).find("reload failed") != std::string::npos; },
                      5s, 50ms))
      << proxy_->Log();
  EXPECT_FALSE(WaitResult(waiter.get(), 300ms)) << "a broken file changed the pool size";

  std::string bigger = original;
  auto at = bigger.find("default_pool_size: 1\n");
  ASSERT_NE(at, std::string::npos) << original;
  bigger.replace(at, std::string("default_pool_size: 1\n").size(), "default_pool_size: 2\n");
  ASSERT_TRUE(WriteFile(path, bigger));
  ASSERT_EQ(kill(proxy_->pid(), SIGHUP), 0);
  PqResult served = WaitResult(waiter.get(), 5s);
  ASSERT_TRUE(served) << "the waiting client was not served after the pool grew\n" << proxy_->Log();
  EXPECT_EQ(Outcome(waiter.get(), served.get()).value, "served");

  // Point the proxy's "postgres" database at idle_db.
  std::string moved = bigger;
  at = moved.find("dbname: postgres\n");
  ASSERT_NE(at, std::string::npos) << bigger;
  moved.replace(at, std::string("dbname: postgres\n").size(), "dbname: idle_db\n");
  ASSERT_TRUE(WriteFile(path, moved));
  ASSERT_EQ(kill(proxy_->pid(), SIGHUP), 0);
  EXPECT_TRUE(
      WaitFor([&] { return PqExec(waiter.get(), "SELECT current_database()").value == "idle_db"; },
              5s, 100ms));
  // The client inside its transaction kept its server until COMMIT.
  EXPECT_EQ(PqExec(holder.get(), "SELECT current_database()").value, "postgres");
  ASSERT_TRUE(PqExec(holder.get(), "COMMIT").ok);
  EXPECT_EQ(PqExec(holder.get(), "SELECT current_database()").value, "idle_db");
  EXPECT_TRUE(WaitFor([] { return AppBackends("postgres") == 0; }, 5s, 50ms))
      << "server connections to the old database are still open";
}

// --- 7. SIGTERM ---------------------------------------------------------------------

TEST_F(ProxyLifecycleTest, SigtermRefusesNewClientsLetsTheTransactionFinishAndExits) {
  ProxyOptions o;
  o.extra_yaml = "  shutdown_timeout: 10s\n";
  StartProxy(o);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(1)"), 1);
  ASSERT_TRUE(WaitFor([] { return AppBackends("postgres", "active") == 1; }, 3s, 20ms));

  auto sigterm = Clk::now();
  ASSERT_EQ(kill(proxy_->pid(), SIGTERM), 0);
  std::this_thread::sleep_for(200ms);
  auto attempt = Clk::now();
  PqConn late = OpenPq(proxy_->Conninfo(), &err);
  EXPECT_FALSE(late) << "a new client was accepted after SIGTERM";
  EXPECT_LT(MillisSince(attempt), 2000) << "refusing took long: " << err;

  PqResult r = WaitResult(c.get(), 5s);
  ASSERT_TRUE(r) << "pg_sleep(1) did not finish";
  PqOutcome sleep = Outcome(c.get(), r.get());
  EXPECT_TRUE(sleep.ok) << sleep.sqlstate << " " << sleep.error;
  PqOutcome commit = PqExec(c.get(), "COMMIT");
  EXPECT_TRUE(commit.ok) << commit.sqlstate << " " << commit.error;

  auto exited = proxy_->Wait(12s);
  int64_t took = MillisSince(sigterm);
  ASSERT_TRUE(exited) << "the proxy did not exit by itself";
  EXPECT_EQ(exited->exit_code, 0) << exited->Describe();
  EXPECT_LT(took, 10000);
  EXPECT_THAT(proxy_->Log(), HasSubstr("shutting down"));
}

TEST_F(ProxyLifecycleTest, SigtermExitsAfterShutdownTimeoutWhenATransactionStaysOpen) {
  ProxyOptions o;
  o.extra_yaml = "  shutdown_timeout: 2s\n";
  StartProxy(o);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");

  auto sigterm = Clk::now();
  ASSERT_EQ(kill(proxy_->pid(), SIGTERM), 0);
  auto exited = proxy_->Wait(8s);
  int64_t took = MillisSince(sigterm);
  ASSERT_TRUE(exited) << "the proxy did not exit by itself";
  EXPECT_EQ(exited->exit_code, 0) << exited->Describe();
  EXPECT_GE(took, 1800) << "the open transaction was not given shutdown_timeout";
  EXPECT_LE(took, 4000);
}

// --- 8. metrics ---------------------------------------------------------------------

// The value of the metric line starting with `series` ("name{labels}"), or -1.
double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

TEST_F(ProxyLifecycleTest, MetricsCountClientsAndTransactions) {
  ProxyOptions o;
  std::string endpoint = "127.0.0.1:" + std::to_string(FreePort());
  o.extra_yaml = "  metrics_listen: " + endpoint + "\n";
  StartProxy(o);
  const std::string active = "pgwarden_proxy_clients{state=\"active\"}";
  const std::string xacts = "pgwarden_proxy_transactions_total{database=\"postgres\",user=\"app\"}";

  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  auto before = HttpGet(endpoint, "/metrics");
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_EQ(before->status, 200);
  EXPECT_THAT(before->body, HasSubstr(active));
  EXPECT_THAT(before->body, HasSubstr("pgwarden_proxy_transactions_total"));
  double x0 = MetricValue(before->body, xacts);
  EXPECT_GE(x0, 0) << before->body;
  EXPECT_EQ(MetricValue(before->body, active), 0) << before->body;

  // Inside a transaction the client is active.
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_TRUE(PqExec(c.get(), "SELECT 1").ok);
  auto during = HttpGet(endpoint, "/metrics");
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(MetricValue(during->body, active), 1) << during->body;
  ASSERT_TRUE(PqExec(c.get(), "COMMIT").ok);

  // Nine more: four explicit, five single statements.
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
    ASSERT_TRUE(PqExec(c.get(), "SELECT 1").ok);
    ASSERT_TRUE(PqExec(c.get(), "COMMIT").ok);
  }
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(PqExec(c.get(), "SELECT 1").ok);
  auto after = HttpGet(endpoint, "/metrics");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(MetricValue(after->body, xacts) - x0, 10) << after->body;
  EXPECT_EQ(MetricValue(after->body, active), 0) << after->body;
}

// With a tiny worker_busy, any load on worker 0 makes the balancer hand idle
// clients to worker 1. Each client keeps its session through the moves: its
// named prepared statement and its application_name, and it only ever sees
// its own results.
TEST_F(ProxyLifecycleTest, BalancerMovesIdleClientsBetweenWorkersAndTheyKeepTheirSessions) {
  ProxyOptions o;
  o.workers = 2;
  std::string endpoint = "127.0.0.1:" + std::to_string(FreePort());
  o.extra_yaml = "  metrics_listen: " + endpoint + "\n  worker_busy: 0.0001\n";
  StartProxy(o);
  constexpr int kClients = 8;
  std::vector<PqConn> conns;
  for (int i = 0; i < kClients; ++i) {
    std::string err;
    conns.push_back(
        OpenPq(proxy_->Conninfo("postgres", "application_name=c" + std::to_string(i)), &err));
    ASSERT_TRUE(conns.back()) << err;
    PqResult r(PQprepare(conns.back().get(), "mine",
                         "SELECT $1::int * 10, current_setting('application_name')", 1, nullptr));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(conns.back().get());
  }
  const std::string moves = "pgwarden_proxy_worker_moves_total";
  auto clients_on = [](const std::string& body, int w) {
    return MetricValue(body, "pgwarden_proxy_worker_clients{worker=\"" + std::to_string(w) + "\"}");
  };
  double moved = 0;
  double max_on_1 = 0;
  int queries = 0;
  auto deadline = Clk::now() + 20s;
  // Until sessions have moved (both ways is not required) and a few hundred
  // more queries ran after that; bounded by the deadline.
  int after_move = 0;
  while (Clk::now() < deadline && after_move < 400) {
    for (int i = 0; i < kClients; ++i) {
      std::string arg = std::to_string(queries + i);
      const char* values[] = {arg.c_str()};
      PqResult r(PQexecPrepared(conns[static_cast<size_t>(i)].get(), "mine", 1, values, nullptr,
                                nullptr, 0));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
          << PQerrorMessage(conns[static_cast<size_t>(i)].get()) << proxy_->Log();
      ASSERT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string((queries + i) * 10));
      ASSERT_EQ(std::string(PQgetvalue(r.get(), 0, 1)), "c" + std::to_string(i));
    }
    queries += kClients;
    if (moved > 0) after_move += kClients;
    if (queries % 200 == 0) {
      auto m = HttpGet(endpoint, "/metrics");
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      moved = MetricValue(m->body, moves);
      max_on_1 = std::max(max_on_1, clients_on(m->body, 1));
      EXPECT_EQ(clients_on(m->body, 0) + clients_on(m->body, 1), kClients) << m->body;
    }
  }
  EXPECT_GT(moved, 0) << "no client was moved in " << queries << " queries\n" << proxy_->Log();
  EXPECT_GT(max_on_1, 0);
  // Every client still works after the moves.
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(PqExec(conns[static_cast<size_t>(i)].get(), "SHOW application_name").value,
              "c" + std::to_string(i));
  }
}

// --- 9. admin console -----------------------------------------------------------------

TEST_F(ProxyLifecycleTest, AdminConsoleShowsPoolsAndPausesAndResumesADatabase) {
  ProxyOptions o;
  o.extra_userlist = SuperuserEntry();
  StartProxy(o);
  PqConn admin = OpenAdmin();
  ASSERT_TRUE(admin);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");

  PqResult pools(PQexec(admin.get(), "SHOW POOLS"));
  ASSERT_EQ(PQresultStatus(pools.get()), PGRES_TUPLES_OK) << PQerrorMessage(admin.get());
  for (const char* column : {"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                             "sv_used", "sv_login", "maxwait", "pool_mode"}) {
    EXPECT_GE(PQfnumber(pools.get(), column), 0) << "SHOW POOLS has no column " << column;
  }
  int db_col = PQfnumber(pools.get(), "database"), user_col = PQfnumber(pools.get(), "user");
  int waiting_col = PQfnumber(pools.get(), "cl_waiting");
  bool found = false;
  for (int i = 0; i < PQntuples(pools.get()); ++i) {
    found = found || (std::string(PQgetvalue(pools.get(), i, db_col)) == "postgres" &&
                      std::string(PQgetvalue(pools.get(), i, user_col)) == "app");
  }
  EXPECT_TRUE(found) << "no postgres/app row in SHOW POOLS";

  auto waiting = [&]() -> std::string {
    PqResult p(PQexec(admin.get(), "SHOW POOLS"));
    for (int i = 0; i < PQntuples(p.get()); ++i) {
      if (std::string(PQgetvalue(p.get(), i, db_col)) == "postgres" &&
          std::string(PQgetvalue(p.get(), i, user_col)) == "app")
        return PQgetvalue(p.get(), i, waiting_col);
    }
    return "?";
  };

  PqOutcome pause = PqExec(admin.get(), "PAUSE postgres");
  ASSERT_TRUE(pause.ok) << pause.error;
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT 'after resume'"), 1);
  EXPECT_FALSE(WaitResult(c.get(), 1500ms)) << "the query ran while the database was paused";
  EXPECT_EQ(waiting(), "1");

  PqOutcome resume = PqExec(admin.get(), "RESUME postgres");
  ASSERT_TRUE(resume.ok) << resume.error;
  auto start = Clk::now();
  PqResult r = WaitResult(c.get(), 5s);
  ASSERT_TRUE(r) << "the query did not finish after RESUME";
  EXPECT_EQ(Outcome(c.get(), r.get()).value, "after resume");
  EXPECT_LT(MillisSince(start), 2000);
  EXPECT_EQ(waiting(), "0");

  // SHOW STATS counts the time queries ran on the server.
  ASSERT_TRUE(PqExec(c.get(), "SELECT pg_sleep(0.3)").ok);
  PqResult stats(PQexec(admin.get(), "SHOW STATS"));
  ASSERT_EQ(PQresultStatus(stats.get()), PGRES_TUPLES_OK) << PQerrorMessage(admin.get());
  int sdb = PQfnumber(stats.get(), "database"), qt = PQfnumber(stats.get(), "total_query_time");
  ASSERT_GE(qt, 0);
  std::string query_time;
  for (int i = 0; i < PQntuples(stats.get()); ++i) {
    if (std::string(PQgetvalue(stats.get(), i, sdb)) == "postgres")
      query_time = PQgetvalue(stats.get(), i, qt);
  }
  ASSERT_FALSE(query_time.empty()) << "no postgres row in SHOW STATS";
  EXPECT_GE(std::stoll(query_time), 300000) << "total_query_time (microseconds)";
}

// --- 10. auth_query --------------------------------------------------------------------

// PAUSE answers only once the transactions running in the paused pools have
// finished (PgBouncer's semantics: it is for restarting PostgreSQL), and then
// no server connection of those pools is left open.
TEST_F(ProxyLifecycleTest, PauseWaitsForRunningTransactionsAndThenClosesTheServers) {
  ProxyOptions o;
  o.extra_userlist = SuperuserEntry();
  StartProxy(o);
  PqConn admin = OpenAdmin();
  ASSERT_TRUE(admin);
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_EQ(PqExec(c.get(), "SELECT 'in the transaction'").value, "in the transaction");

  ASSERT_EQ(PQsendQuery(admin.get(), "PAUSE postgres"), 1);
  EXPECT_FALSE(WaitResult(admin.get(), 700ms)) << "PAUSE returned while a transaction ran";
  // The open transaction goes on and finishes; then PAUSE returns.
  ASSERT_EQ(PqExec(c.get(), "SELECT 'still served'").value, "still served");
  ASSERT_TRUE(PqExec(c.get(), "COMMIT").ok);
  auto start = Clk::now();
  PqResult r = WaitResult(admin.get(), 5s);
  ASSERT_TRUE(r) << "PAUSE did not return after the transaction ended";
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(admin.get());
  EXPECT_LT(MillisSince(start), 1000);
  // No backend of the proxy's app pool is left on the server (they exit
  // right after the proxy closes their sockets).
  EXPECT_TRUE(WaitFor(
      [] {
        auto n = QueryValue(backend_->superuser_conninfo(),
                            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'");
        return n.ok() && *n == "0";
      },
      3s))
      << "server connections of the paused pool are still open";
  // New work waits until RESUME.
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT 'after resume'"), 1);
  EXPECT_FALSE(WaitResult(c.get(), 500ms)) << "a query ran while paused";
  ASSERT_TRUE(PqExec(admin.get(), "RESUME postgres").ok);
  PqResult after = WaitResult(c.get(), 5s);
  ASSERT_TRUE(after);
  EXPECT_EQ(Outcome(c.get(), after.get()).value, "after resume");
}

TEST_F(ProxyLifecycleTest, AuthQueryLogsInARoleMissingFromTheAuthFile) {
  ASSERT_TRUE(
      QueryOnce(backend_->superuser_conninfo(), "CREATE ROLE aq_user LOGIN PASSWORD 'aq-pw-1'")
          .ok());
  ProxyOptions o;
  o.extra_userlist = SuperuserEntry();
  o.extra_yaml = "  auth_user: " + backend_->superuser().username + "\n";
  StartProxy(o);

  std::string err;
  PqConn good = OpenPqVerbose(ProxyConninfoAs(*proxy_, "aq_user", "aq-pw-1"), &err);
  ASSERT_TRUE(good) << err;
  EXPECT_EQ(PqExec(good.get(), "SELECT current_user").value, "aq_user");
  EXPECT_EQ(PqExec(good.get(), "SELECT 'again'").value, "again");

  PqConn wrong = OpenPqVerbose(ProxyConninfoAs(*proxy_, "aq_user", "not-the-pw"), &err);
  EXPECT_FALSE(wrong);
  EXPECT_THAT(err, HasSubstr("28P01"));
  PqConn nobody = OpenPqVerbose(ProxyConninfoAs(*proxy_, "no_such_role", "x"), &err);
  EXPECT_FALSE(nobody);
  EXPECT_THAT(err, HasSubstr("28P01"));
}

}  // namespace
}  // namespace pgwarden::itest
