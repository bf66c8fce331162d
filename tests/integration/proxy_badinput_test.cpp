// The proxy against bad clients: garbage startup packets, huge lengths, old protocols, TLS/GSS
// requests, login timeouts, oversized and unknown messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using ::testing::HasSubstr;

// A one-node cluster and a proxy with a short login timeout and a 1 MB message limit.
class ProxyBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("pgw-itest-proxy-badinput");
    backend_ = new ProxyBackend(tmp_->path());
    proxy_ = new ProxyProcess();
    *setup_ = backend_->Start();
    if (!setup_->ok()) return;
    ProxyOptions o;
    o.default_pool_size = 2;
    o.client_login_timeout = "2s";
    o.max_packet_size = "1MB";
    o.client_message_timeout = "2s";
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
  // After every bad client: the proxy lives, serves a normal client, and no
  // server connection was left inside a transaction.
  void TearDown() override {
    if (!setup_->ok()) return;
    EXPECT_TRUE(proxy_->alive()) << "the proxy died\n" << proxy_->Log();
    if (proxy_->alive()) {
      auto v = QueryValue(proxy_->Conninfo(), "SELECT 'fine'");
      EXPECT_TRUE(v.ok() && *v == "fine") << (v.ok() ? *v : v.status().ToString());
      EXPECT_TRUE(WaitFor(
          [] {
            auto n = QueryValue(backend_->superuser_conninfo(),
                                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND "
                                "state LIKE 'idle in transaction%'");
            return n.ok() && *n == "0";
          },
          3s));
    }
    if (HasFailure()) std::fprintf(stderr, "%s", proxy_->Log(40).c_str());
  }

  // A raw connection to the proxy; closed by the destructor.
  struct Raw {
    int fd = -1;
    explicit Raw(uint16_t port) : fd(ConnectTcp(port)) {}
    ~Raw() {
      if (fd >= 0) close(fd);
    }
  };

  // The first ErrorResponse among `bytes`, or empty fields.
  static std::map<char, std::string> FirstError(const std::string& bytes) {
    for (const auto& m : SplitMessages(bytes)) {
      if (m.type == 'E') return ErrorFields(m.body);
    }
    return {};
  }

  // Sends `bytes` on a fresh connection before login and expects the proxy to
  // close it, with an ErrorResponse (SQLSTATE 08P01 or 0A000) when it says anything.
  void ExpectRejectedAtStartup(const std::string& bytes, bool error_required) {
    Raw c(proxy_->port());
    ASSERT_GE(c.fd, 0);
    ASSERT_TRUE(SendAll(c.fd, bytes));
    ReadOutcome r = ReadUntilClosed(c.fd, 5s);
    EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
    if (error_required || !r.bytes.empty()) {
      ASSERT_FALSE(r.bytes.empty());
      EXPECT_EQ(r.bytes[0], 'E') << "first byte " << static_cast<int>(r.bytes[0]);
      auto f = FirstError(r.bytes);
      EXPECT_EQ(f['S'], "FATAL");
      EXPECT_THAT(f['C'], ::testing::AnyOf("08P01", "0A000")) << f['M'];
    }
  }

  // Sends `bytes` on a fresh connection before login and expects the proxy to
  // close it without a word, as PostgreSQL does for a startup packet whose
  // length is invalid (it only logs it).
  void ExpectClosedSilently(const std::string& bytes) {
    Raw c(proxy_->port());
    ASSERT_GE(c.fd, 0);
    if (bytes.empty()) {
      shutdown(c.fd, SHUT_WR);
    } else {
      ASSERT_TRUE(SendAll(c.fd, bytes));
    }
    ReadOutcome r = ReadUntilClosed(c.fd, 5s);
    EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
    EXPECT_EQ(r.bytes, "") << "the proxy answered " << r.bytes.size() << " bytes";
  }

  static TempDir* tmp_;
  static ProxyBackend* backend_;
  static ProxyProcess* proxy_;
  static Status* setup_;
};

TempDir* ProxyBadInputTest::tmp_ = nullptr;
ProxyBackend* ProxyBadInputTest::backend_ = nullptr;
ProxyProcess* ProxyBadInputTest::proxy_ = nullptr;
Status* ProxyBadInputTest::setup_ = new Status(Status::Ok());

TEST_F(ProxyBadInputTest, HttpRequestInsteadOfStartupIsRejected) {
  ExpectRejectedAtStartup("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", false);
}

TEST_F(ProxyBadInputTest, StartupLengthOfTwoToTheThirtyFirstIsClosedSilently) {
  ExpectClosedSilently(Int32(0x80000000u) + Int32(196608));
}

TEST_F(ProxyBadInputTest, StartupLengthBelowEightIsClosedSilently) {
  ExpectClosedSilently(Int32(4) + Int32(196608));
}

// Regression: a Terminate before the startup packet got a FATAL "invalid
// length of startup packet"; PostgreSQL just closes.
TEST_F(ProxyBadInputTest, TerminateBeforeStartupIsClosedSilently) {
  ExpectClosedSilently(std::string("X\0\0\0\x04", 5));
}

TEST_F(ProxyBadInputTest, EofBeforeStartupIsClosedSilently) { ExpectClosedSilently(""); }

TEST_F(ProxyBadInputTest, StartupPacketWithoutTerminatorIsRejected) {
  std::string body = Int32(196608) + std::string("user") + '\0' + "app";  // no final NULs
  ExpectRejectedAtStartup(Int32(static_cast<uint32_t>(body.size() + 4)) + body, true);
}

TEST_F(ProxyBadInputTest, ProtocolTwoIsRejected) {
  ExpectRejectedAtStartup(StartupPacket(kAppUser, "postgres", 0x00020000), true);
}

TEST_F(ProxyBadInputTest, SslRequestGetsNAndTheConnectionGoesOn) {
  Raw c(proxy_->port());
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(SendAll(c.fd, Int32(8) + Int32(80877103)));
  ReadOutcome r = ReadAtLeast(c.fd, 1, 3s);
  ASSERT_EQ(r.bytes, "N");
  // Then a plain startup: the proxy asks for SCRAM.
  ASSERT_TRUE(SendAll(c.fd, StartupPacket(kAppUser, "postgres")));
  ReadOutcome auth = ReadAtLeast(c.fd, 9, 3s);
  auto msgs = SplitMessages(auth.bytes);
  ASSERT_FALSE(msgs.empty()) << "no answer to the startup after SSLRequest";
  EXPECT_EQ(msgs[0].type, 'R');
  EXPECT_EQ(msgs[0].body.substr(0, 4), Int32(10)) << "AuthenticationSASL expected";
}

TEST_F(ProxyBadInputTest, GssEncRequestGetsN) {
  Raw c(proxy_->port());
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(SendAll(c.fd, Int32(8) + Int32(80877104)));
  ReadOutcome r = ReadAtLeast(c.fd, 1, 3s);
  EXPECT_EQ(r.bytes, "N");
}

TEST_F(ProxyBadInputTest, SilentClientIsClosedAfterTheLoginTimeout) {
  Raw c(proxy_->port());
  ASSERT_GE(c.fd, 0);
  ReadOutcome r = ReadUntilClosed(c.fd, 8s);
  ASSERT_TRUE(r.closed) << "still open after 8 s (client_login_timeout is 2 s)";
  EXPECT_GE(r.elapsed, 1500ms);
  EXPECT_LE(r.elapsed, 5s);
  auto f = FirstError(r.bytes);
  EXPECT_THAT(f['M'], HasSubstr("timeout")) << "bytes: " << r.bytes.size();
}

TEST_F(ProxyBadInputTest, ClientStuckInAuthenticationIsClosedAfterTheLoginTimeout) {
  Raw c(proxy_->port());
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(SendAll(c.fd, StartupPacket(kAppUser, "postgres")));
  ReadOutcome r = ReadUntilClosed(c.fd, 8s);  // never answers the SASL request
  ASSERT_TRUE(r.closed) << "still open after 8 s (client_login_timeout is 2 s)";
  EXPECT_GE(r.elapsed, 1500ms);
  EXPECT_LE(r.elapsed, 5s);
  auto msgs = SplitMessages(r.bytes);
  ASSERT_GE(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].type, 'R');
  EXPECT_THAT(FirstError(r.bytes)['M'], HasSubstr("timeout"));
}

TEST_F(ProxyBadInputTest, QueryBeforeAuthenticationIsRejected) {
  Raw c(proxy_->port());
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(SendAll(c.fd, StartupPacket(kAppUser, "postgres")));
  ASSERT_FALSE(ReadAtLeast(c.fd, 9, 3s).bytes.empty());
  std::string q = std::string("SELECT 1") + '\0';
  ASSERT_TRUE(SendAll(c.fd, "Q" + Int32(static_cast<uint32_t>(q.size() + 4)) + q));
  ReadOutcome r = ReadUntilClosed(c.fd, 3s);
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(FirstError(r.bytes)['C'], "08P01");
}

// Logs in with libpq, then writes raw bytes on its socket and reads the answer.
ReadOutcome AfterLogin(ProxyProcess& proxy, const std::string& bytes) {
  std::string err;
  PqConn c = OpenPq(proxy.Conninfo(), &err);
  EXPECT_TRUE(c) << err;
  if (!c) return {};
  // A first query so the session is fully set up.
  EXPECT_EQ(PqExec(c.get(), "SELECT 1").value, "1");
  int fd = PQsocket(c.get());
  EXPECT_TRUE(SendAll(fd, bytes));
  return ReadUntilClosed(fd, 5s);
}

// A client that sends its last query and closes its side at once (the data
// and the FIN arrive together): it gets the answer, and the proxy then sees
// the end of the stream and closes, instead of keeping the session forever.
// Found by fuzz/proxy_fuzz.cpp.
TEST_F(ProxyBadInputTest, ClientThatClosesRightAfterItsQueryGetsTheAnswerAndIsClosed) {
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");
  int fd = PQsocket(c.get());
  std::string sql = "SELECT 'last words'";
  ASSERT_TRUE(SendAll(
      fd, "Q" + Int32(static_cast<uint32_t>(4 + sql.size() + 1)) + sql + std::string(1, '\0')));
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  ReadOutcome r = ReadUntilClosed(fd, 5s);
  EXPECT_TRUE(r.closed) << "the proxy kept the half-closed connection open";
  EXPECT_THAT(r.bytes, HasSubstr("last words"));
}

// Requests after the last Sync are never answered by the server (it waits
// for more); a client that sends such and closes its side is closed at once,
// and the server connection goes back clean. Found by fuzz/proxy_fuzz.cpp.
TEST_F(ProxyBadInputTest, ClientThatClosesWithoutAFinalSyncIsClosedAtOnce) {
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");
  int fd = PQsocket(c.get());
  std::string sql = "SELECT 42";
  std::string parse = "P" + Int32(static_cast<uint32_t>(4 + 1 + sql.size() + 1 + 2)) +
                      std::string(1, '\0') + sql + std::string(1, '\0') + std::string(2, '\0');
  std::string bind = "B" + Int32(4 + 1 + 1 + 2 + 2 + 2) + std::string(8, '\0');
  std::string execute = "E" + Int32(4 + 1 + 4) + std::string(5, '\0');
  ASSERT_TRUE(SendAll(fd, parse + bind + execute));
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  ReadOutcome r = ReadUntilClosed(fd, 5s);
  EXPECT_TRUE(r.closed) << "the proxy waited for answers that never come";
  EXPECT_LT(r.elapsed, 3s);
}

TEST_F(ProxyBadInputTest, MessageOverMaxPacketSizeIsRejected) {
  // 'Q' claiming 2 MB (the limit is 1 MB), followed by a little of it.
  std::string bytes = "Q" + Int32(2u << 20) + std::string(1000, 'x');
  ReadOutcome r = AfterLogin(*proxy_, bytes);
  EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
  auto f = FirstError(r.bytes);
  EXPECT_EQ(f['C'], "08P01");
  EXPECT_THAT(f['M'], HasSubstr("too large"));
}

TEST_F(ProxyBadInputTest, SenderStallingMidMessageIsClosedAfterTheMessageTimeout) {
  // 'Q' announcing 100 bytes of which 10 arrive: the proxy lends this client a
  // server, then gives up after client_message_timeout (2 s) without progress.
  auto start = std::chrono::steady_clock::now();
  ReadOutcome r = AfterLogin(*proxy_, "Q" + Int32(104) + std::string(10, 'x'));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
  auto f = FirstError(r.bytes);
  EXPECT_EQ(f['C'], "08P01");
  EXPECT_THAT(f['M'], HasSubstr("unfinished"));
  EXPECT_GE(waited, std::chrono::milliseconds(1500)) << "closed before the timeout";
}

// Regression: client_message_timeout restarted on every byte, so a client
// dripping one byte at a time held a server inside its message for ever.
TEST_F(ProxyBadInputTest, DrippingSenderIsClosedAfterTheMessageTimeout) {
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_EQ(PqExec(c.get(), "SELECT 1").value, "1");
  int fd = PQsocket(c.get());
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(SendAll(fd, "Q" + Int32(104) + std::string(10, 'x')));
  ReadOutcome r;
  // One more byte every 300 ms (the timeout is 2 s), for at most 8 s.
  for (int i = 0; i < 26 && !r.closed; ++i) {
    SendAll(fd, "x");
    r = ReadUntilClosed(fd, 300ms);
  }
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.closed) << "the dripping client was kept for " << (waited / 1ms) << " ms";
  EXPECT_THAT(FirstError(r.bytes)['M'], HasSubstr("unfinished"));
  EXPECT_GE(waited, 1500ms);
  EXPECT_LT(waited, 4500ms);
}

TEST_F(ProxyBadInputTest, MessageJustUnderMaxPacketSizeIsServed) {
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  std::string big(900 * 1024, 'a');
  PqOutcome o = PqExec(c.get(), "SELECT length('" + big + "')");
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.value, std::to_string(big.size()));
}

TEST_F(ProxyBadInputTest, UnknownMessageTypeIsRejected) {
  ReadOutcome r = AfterLogin(*proxy_, "z" + Int32(4));
  EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
  auto f = FirstError(r.bytes);
  EXPECT_EQ(f['C'], "08P01");
  EXPECT_THAT(f['M'], HasSubstr("unknown"));
}

TEST_F(ProxyBadInputTest, MessageLengthBelowFourIsRejected) {
  ReadOutcome r = AfterLogin(*proxy_, "Q" + Int32(2));
  EXPECT_TRUE(r.closed) << "the proxy kept the connection open";
  EXPECT_EQ(FirstError(r.bytes)['C'], "08P01");
}

TEST_F(ProxyBadInputTest, BadMessageInsideATransactionLeavesNoTransactionBehind) {
  std::string err;
  PqConn c = OpenPq(proxy_->Conninfo(), &err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(PqExec(c.get(), "CREATE TABLE IF NOT EXISTS bad_txn (id int)").ok);
  ASSERT_TRUE(PqExec(c.get(), "BEGIN").ok);
  ASSERT_TRUE(PqExec(c.get(), "INSERT INTO bad_txn VALUES (1)").ok);
  int fd = PQsocket(c.get());
  ASSERT_TRUE(SendAll(fd, "z" + Int32(4)));
  ReadOutcome r = ReadUntilClosed(fd, 5s);
  EXPECT_TRUE(r.closed);
  // Both pool servers: neither is in that transaction, the row never committed.
  // (Simple protocol: with the extended one now() = statement_timestamp() may
  // be false even at the start of a transaction.)
  for (int i = 0; i < 4; ++i) {
    PqConn next = OpenPq(proxy_->Conninfo(), &err);
    ASSERT_TRUE(next) << err;
    PqOutcome o = PqExec(next.get(),
                         "SELECT count(*)::text || (now() = statement_timestamp())::text || "
                         "(txid_current_if_assigned() IS NULL)::text FROM bad_txn");
    EXPECT_EQ(o.value, "0truetrue") << o.error;
  }
}

}  // namespace
}  // namespace pgwarden::itest
