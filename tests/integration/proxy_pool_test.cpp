// The proxy under load: query cancel through the proxy, 2,000 clients on a pool of 20.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;

// A one-node cluster with a database `bigdb`, and one proxy whose userlist
// holds app's SCRAM secret (not the password: the proxy logs in to
// PostgreSQL with the client's SCRAM keys). Pools:
//   postgres  transaction, pool 4      big  -> bigdb, transaction, pool 20
class ProxyPoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // 2,000 clients here and as many sockets in the proxy, which inherits the limit.
    RaiseFileLimit(65536);
    tmp_ = new TempDir("pgw-itest-proxy-pool");
    backend_ = new ProxyBackend(tmp_->path());
    proxy_ = new ProxyProcess();
    *setup_ = backend_->Start();
    if (!setup_->ok()) return;
    *setup_ = QueryOnce(backend_->superuser_conninfo(), "CREATE DATABASE bigdb OWNER app").status();
    if (!setup_->ok()) return;
    auto secret = backend_->AppScramSecret();
    if (!secret.ok()) {
      *setup_ = secret.status();
      return;
    }
    ProxyOptions o;
    o.default_pool_size = 4;
    o.app_secret = *secret;
    o.databases = {{"big", "bigdb", 20, "transaction"}};
    *setup_ = proxy_->Start(tmp_->path(), backend_->pg_port(), o);
  }
  static void TearDownTestSuite() {
    delete proxy_;
    delete backend_;
    delete tmp_;
  }
  void SetUp() override {
    ASSERT_TRUE(setup_->ok()) << setup_->ToString();
    ASSERT_TRUE(proxy_->alive()) << proxy_->Log();
  }
  void TearDown() override {
    EXPECT_TRUE(proxy_->alive()) << "the proxy died\n" << proxy_->Log();
    if (HasFailure()) std::fprintf(stderr, "%s", proxy_->Log(60).c_str());
  }

  // Backends on PostgreSQL running `pattern` for app (seen directly).
  static int ActiveQueries(const std::string& pattern) {
    auto v = QueryValue(backend_->superuser_conninfo(),
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = "
                        "'active' AND query LIKE " +
                            pg::QuoteLiteral(pattern));
    return v.ok() ? std::stoi(*v) : -1;
  }

  static TempDir* tmp_;
  static ProxyBackend* backend_;
  static ProxyProcess* proxy_;
  static Status* setup_;
};

TempDir* ProxyPoolTest::tmp_ = nullptr;
ProxyBackend* ProxyPoolTest::backend_ = nullptr;
ProxyProcess* ProxyPoolTest::proxy_ = nullptr;
Status* ProxyPoolTest::setup_ = new Status(Status::Ok());

TEST_F(ProxyPoolTest, CancelStopsTheQueryWithinOneSecondAndOnlyThatOne) {
  std::string err;
  PqConn victim = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(victim) << err;
  PqConn bystander = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(bystander) << err;
  ASSERT_EQ(PQsendQuery(victim.get(), "SELECT pg_sleep(30) /* victim */"), 1);
  ASSERT_EQ(PQsendQuery(bystander.get(), "SELECT pg_sleep(3) /* bystander */"), 1);
  // Both run on their own server connection.
  ASSERT_TRUE(WaitFor([] { return ActiveQueries("%pg_sleep%") == 2; }, 5s, 20ms))
      << "active pg_sleep backends: " << ActiveQueries("%pg_sleep%");

  auto start = Clk::now();
  std::string cancel_error;
  std::thread canceller([&] {
    PGcancel* cancel = PQgetCancel(victim.get());
    char buf[256] = {0};
    if (cancel == nullptr || PQcancel(cancel, buf, sizeof buf) != 1) cancel_error = buf;
    if (cancel) PQfreeCancel(cancel);
  });
  canceller.join();
  EXPECT_EQ(cancel_error, "");
  PqResult r = WaitResult(victim.get(), 5s);
  auto took = Clk::now() - start;
  ASSERT_TRUE(r) << "the cancelled query did not end within 5 s";
  PqOutcome o = Outcome(victim.get(), r.get());
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.sqlstate, "57014") << o.error;
  EXPECT_LT(took, std::chrono::seconds(1))
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";

  // The other client's query is untouched and finishes normally.
  PqResult b = WaitResult(bystander.get(), 10s);
  ASSERT_TRUE(b);
  PqOutcome bo = Outcome(bystander.get(), b.get());
  EXPECT_TRUE(bo.ok) << bo.sqlstate << " " << bo.error;
  // Both connections stay usable.
  EXPECT_EQ(PqExec(victim.get(), "SELECT 'after cancel'").value, "after cancel");
  EXPECT_EQ(PqExec(bystander.get(), "SELECT 'still here'").value, "still here");
}

// Opens `n` connections at once with libpq's non-blocking connect. Failed
// ones are counted in `failures` with the first message in `first_error`.
std::vector<PqConn> ConnectMany(const std::string& conninfo, int n, std::chrono::seconds timeout,
                                int* failures, std::string* first_error) {
  std::vector<PqConn> conns;
  std::vector<PostgresPollingStatusType> state;
  constexpr int kInFlight = 200;  // connects under way at once
  auto deadline = Clk::now() + timeout;
  size_t next = 0;
  std::vector<size_t> open;  // indexes still connecting
  auto fail = [&](size_t i) {
    ++*failures;
    if (first_error->empty()) *first_error = PQerrorMessage(conns[i].get());
    conns[i].reset();
  };
  conns.reserve(n);
  state.reserve(n);
  while ((next < static_cast<size_t>(n) || !open.empty()) && Clk::now() < deadline) {
    while (next < static_cast<size_t>(n) && open.size() < kInFlight) {
      conns.emplace_back(PQconnectStart(conninfo.c_str()));
      state.push_back(PGRES_POLLING_WRITING);
      if (!conns.back() || PQstatus(conns.back().get()) == CONNECTION_BAD) {
        fail(next);
      } else {
        open.push_back(next);
      }
      ++next;
    }
    std::vector<pollfd> fds;
    for (size_t i : open) {
      short ev = state[i] == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      fds.push_back({PQsocket(conns[i].get()), ev, 0});
    }
    if (poll(fds.data(), fds.size(), 100) < 0) continue;
    std::vector<size_t> still;
    for (size_t k = 0; k < open.size(); ++k) {
      size_t i = open[k];
      if (fds[k].revents == 0) {
        still.push_back(i);
        continue;
      }
      state[i] = PQconnectPoll(conns[i].get());
      if (state[i] == PGRES_POLLING_OK) continue;
      if (state[i] == PGRES_POLLING_FAILED) {
        fail(i);
        continue;
      }
      still.push_back(i);
    }
    open.swap(still);
  }
  for (size_t i : open) fail(i);
  *failures += n - static_cast<int>(next);
  return conns;
}

// Sends `sql` on every connection and collects the first values; counts errors.
void QueryAll(std::vector<PqConn>& conns, const std::string& sql, std::chrono::seconds timeout,
              int* ok, int* errors, std::string* first_error) {
  std::vector<size_t> busy;
  for (size_t i = 0; i < conns.size(); ++i) {
    if (!conns[i]) continue;
    if (PQsendQuery(conns[i].get(), sql.c_str()) != 1) {
      ++*errors;
      if (first_error->empty()) *first_error = PQerrorMessage(conns[i].get());
      continue;
    }
    busy.push_back(i);
  }
  auto deadline = Clk::now() + timeout;
  while (!busy.empty() && Clk::now() < deadline) {
    std::vector<pollfd> fds;
    for (size_t i : busy) fds.push_back({PQsocket(conns[i].get()), POLLIN, 0});
    if (poll(fds.data(), fds.size(), 100) <= 0) continue;
    std::vector<size_t> still;
    for (size_t k = 0; k < busy.size(); ++k) {
      size_t i = busy[k];
      PGconn* c = conns[i].get();
      if (fds[k].revents != 0 && !PQconsumeInput(c)) {
        ++*errors;
        if (first_error->empty()) *first_error = PQerrorMessage(c);
        continue;
      }
      if (PQisBusy(c)) {
        still.push_back(i);
        continue;
      }
      bool good = false;
      while (PGresult* r = PQgetResult(c)) {
        PqOutcome o = Outcome(c, r);
        good = o.ok && o.value == "1";
        if (!o.ok && first_error->empty()) *first_error = o.sqlstate + " " + o.error;
        PQclear(r);
      }
      ++*(good ? ok : errors);
    }
    busy.swap(still);
  }
  *errors += static_cast<int>(busy.size());
}

TEST_F(ProxyPoolTest, TwoThousandClientsShareAPoolOfTwenty) {
  constexpr int kClients = 2000;
  auto start = Clk::now();
  std::atomic<bool> stop{false};
  std::atomic<int> max_backends{0};
  // Watches PostgreSQL directly (its own connection, to postgres, not bigdb).
  std::thread watcher([&] {
    auto conn = Connect(backend_->superuser_conninfo());
    if (!conn.ok()) return;
    while (!stop) {
      auto v = QueryValue(**conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bigdb'");
      if (v.ok()) {
        int n = std::stoi(*v);
        int seen = max_backends.load();
        while (n > seen && !max_backends.compare_exchange_weak(seen, n)) {
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  int connect_failures = 0;
  std::string connect_error;
  std::vector<PqConn> conns =
      ConnectMany(proxy_->Conninfo("big"), kClients, 40s, &connect_failures, &connect_error);
  auto connected = Clk::now();
  EXPECT_EQ(connect_failures, 0) << "first error: " << connect_error;

  // Every client at once: a short sleep so that all 20 servers are needed.
  int ok = 0, errors = 0;
  std::string query_error;
  QueryAll(conns, "SELECT 1 FROM pg_sleep(0.005)", 30s, &ok, &errors, &query_error);
  EXPECT_EQ(ok, kClients - connect_failures);
  EXPECT_EQ(errors, 0) << "first error: " << query_error;
  // And once more, plain.
  int ok2 = 0, errors2 = 0;
  QueryAll(conns, "SELECT 1", 30s, &ok2, &errors2, &query_error);
  EXPECT_EQ(ok2, kClients - connect_failures);
  EXPECT_EQ(errors2, 0) << "first error: " << query_error;

  stop = true;
  watcher.join();
  EXPECT_LE(max_backends.load(), 20);
  EXPECT_GE(max_backends.load(), 2) << "the pool never grew: was the load concurrent at all?";
  auto now = QueryValue(backend_->superuser_conninfo(),
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bigdb'");
  ASSERT_TRUE(now.ok());
  EXPECT_LE(std::stoi(*now), 20);
  std::fprintf(
      stderr, "[itest] %d clients: connected in %lld ms, queries in %lld ms, max %d backends\n",
      kClients,
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(connected - start).count()),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clk::now() - connected).count()),
      max_backends.load());
  conns.clear();
  // The proxy serves a fresh client afterwards.
  EXPECT_EQ(ValueOr(QueryValue(proxy_->Conninfo("big"), "SELECT 'after'")), "after");
}

}  // namespace
}  // namespace pgwarden::itest
