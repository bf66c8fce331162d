// Tests of RequestQueue with plain byte buffers: names across servers, failures, proxy queries,
// and the replay of a batch that failed on a stale shared statement.
#include "proxy/requests.h"

#include <gtest/gtest.h>

#include "proxy/server_conn.h"

namespace pgwarden::proxy {
namespace {

using pgwire::Header;

std::string Msg(char type, const std::string& body) {
  std::string out;
  pgwire::Writer w(out);
  size_t start = w.Begin(type);
  w.Bytes(body);
  w.Finish(start);
  return out;
}
std::string Z(char status = 'I') { return Msg('Z', std::string(1, status)); }
std::string Parse(const std::string& name, const std::string& sql) {
  return Msg('P', name + '\0' + sql + '\0' + std::string(2, '\0'));
}
std::string Bind(const std::string& name) {
  return Msg('B', std::string(1, '\0') + name + '\0' + std::string(6, '\0'));
}
std::string Execute() { return Msg('E', std::string(1, '\0') + std::string(4, '\0')); }
std::string Sync() { return Msg('S', ""); }
std::string Query(const std::string& sql) { return Msg('Q', sql + '\0'); }
std::string Error(const std::string& code, const std::string& message) {
  std::string out;
  pgwire::AppendErrorResponse(out, "ERROR", code, message);
  return out;
}

// Records what the queue tells the session.
struct Recorder : RequestQueue::Observer {
  std::vector<sql::SessionEffects> effects;
  std::string readies;  // statuses, '*' before ours
  std::vector<std::string> rows;
  int proxy_errors = 0, client_errors = 0;
  std::vector<std::string> replays;
  void OnEffects(const sql::SessionEffects& e) override { effects.push_back(e); }
  void OnReady(char s, bool ours) override {
    if (ours) readies += '*';
    readies += s;
  }
  bool OnParameterStatus(std::string_view, std::string_view, bool) override { return true; }
  void OnCommandTag(std::string_view) override {}
  void OnClientError(const std::map<char, std::string>&) override { ++client_errors; }
  void OnProxyRow(const ProxyQuery&, const std::vector<std::string>& v) override {
    for (const auto& x : v) rows.push_back(x);
  }
  void OnProxyError(const ProxyQuery&, const std::map<char, std::string>&) override {
    ++proxy_errors;
  }
  void Replay(std::string bytes) override { replays.push_back(std::move(bytes)); }
};

class RequestQueueTest : public ::testing::Test {
 protected:
  RequestQueueTest() : queue_(rec_, registry_) {
    server_.id = 7;
    queue_.Attach(&server_);
  }
  // Client messages (each whole) through the queue; returns what goes to the server.
  std::string FromClient(const std::string& bytes, bool tp = true) {
    std::string to_server;
    for (size_t off = 0; off < bytes.size();) {
      Header h;
      EXPECT_EQ(pgwire::DecodeHeader(std::string_view(bytes).substr(off), 1 << 20, &h),
                pgwire::DecodeStatus::kReady);
      std::string_view m = std::string_view(bytes).substr(off, h.wire_size());
      EXPECT_TRUE(queue_.FromClient(h, m, tp, &to_server, &answered_));
      off += h.wire_size();
    }
    return to_server;
  }
  // Server messages (each whole) through the queue; returns what reaches the client.
  std::string FromServer(const std::string& bytes) {
    std::string to_client;
    for (size_t off = 0; off < bytes.size();) {
      Header h;
      EXPECT_EQ(pgwire::DecodeHeader(std::string_view(bytes).substr(off), 1 << 20, &h),
                pgwire::DecodeStatus::kReady);
      std::string m(bytes.substr(off, h.wire_size()));
      if (queue_.FromServer(h, m, &to_client)) to_client += m;
      off += h.wire_size();
    }
    return to_client;
  }
  // The session moves to another server connection; with `shared`, it holds
  // the statements the first one prepared (another session's copies).
  ServerConn& MoveToOtherServer(bool shared, char txn_status = 'I') {
    queue_.Detach();
    other_.id = 8;
    if (shared) other_.prepared = server_.prepared;
    other_.txn_status = txn_status;
    queue_.Attach(&other_);
    return other_;
  }
  static std::string Types(const std::string& bytes) {
    std::string t;
    for (size_t off = 0; off + 5 <= bytes.size();) {
      Header h;
      if (pgwire::DecodeHeader(std::string_view(bytes).substr(off), 1 << 20, &h) !=
          pgwire::DecodeStatus::kReady)
        break;
      t += h.type;
      off += h.wire_size();
    }
    return t;
  }

  Recorder rec_;
  std::string answered_;  // what the queue answered the client at once
  StatementRegistry registry_;
  ServerConn server_;
  ServerConn other_;
  RequestQueue queue_;
};

TEST_F(RequestQueueTest, NamedStatementRunsUnderItsProxyWideName) {
  std::string to_server = FromClient(Parse("s1", "SELECT 1") + Bind("s1") + Execute() + Sync());
  EXPECT_EQ(Types(to_server), "PBES");
  EXPECT_EQ(to_server.find("s1"), std::string::npos);  // the client's name never reaches it
  EXPECT_NE(to_server.find("pgw_"), std::string::npos);
  EXPECT_EQ(server_.prepared.size(), 1u);
  std::string out =
      FromServer(Msg('1', "") + Msg('2', "") + Msg('C', std::string("SELECT 1") + '\0') + Z());
  EXPECT_EQ(Types(out), "12CZ");
  EXPECT_TRUE(queue_.Idle());
  // Prepared there already: the Parse is answered by the proxy.
  queue_.Detach();
  queue_.Attach(&server_);
  queue_.ForgetStatements();
  to_server = FromClient(Parse("other", "SELECT 1") + Sync());
  EXPECT_EQ(Types(to_server), "S");
  EXPECT_EQ(Types(FromServer(Z())), "1Z");
}

// Regression: a Parse that failed still recorded the client's name.
TEST_F(RequestQueueTest, FailedParseLeavesNoName) {
  FromClient(Parse("s1", "SELEC 1") + Sync());
  std::string out = FromServer(Error("42601", "syntax error") + Z());
  EXPECT_EQ(Types(out), "EZ");
  EXPECT_EQ(queue_.statement_count(), 0u);
  EXPECT_TRUE(server_.prepared.empty());
  std::string to_server = FromClient(Parse("s1", "SELECT 1") + Sync());
  EXPECT_EQ(Types(to_server), "PS");  // prepared for real, not refused as a duplicate
  EXPECT_EQ(Types(FromServer(Msg('1', "") + Z())), "1Z");
  EXPECT_EQ(queue_.statement_count(), 1u);
}

TEST_F(RequestQueueTest, ParseSkippedAfterAnErrorLeavesNoNameEither) {
  FromClient(Parse("bad", "SELEC 1") + Parse("good", "SELECT 2") + Sync());
  FromServer(Error("42601", "syntax error") + Z());
  EXPECT_EQ(queue_.statement_count(), 0u);
}

TEST_F(RequestQueueTest, DuplicateNameIsRefusedAsPostgreSQLDoes) {
  FromClient(Parse("s1", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  std::string to_server = FromClient(Parse("s1", "SELECT 2") + Bind("s1") + Sync());
  EXPECT_EQ(Types(to_server), "BS");  // our failing Bind; the rest up to Sync is dropped
  std::string out = FromServer(Error("26000", "x") + Z());
  EXPECT_EQ(Types(out), "EZ");
  EXPECT_NE(out.find("42P05"), std::string::npos);
}

TEST_F(RequestQueueTest, ProxyQueryIsSwallowedAndItsRowGoesToTheSession) {
  std::string to_server;
  queue_.AddProxyQuery({ProxyQueryKind::kReadback, {9}}, "SELECT 1", &to_server);
  EXPECT_EQ(Types(to_server), "Q");
  EXPECT_TRUE(queue_.WantWhole('D'));
  std::string row;
  pgwire::AppendDataRow(row, {std::string("3s")});
  std::string out = FromServer(Msg('T', std::string(2, '\0')) + row +
                               Msg('C', std::string("SELECT 1") + '\0') + Z());
  EXPECT_EQ(out, "");
  EXPECT_EQ(rec_.rows, std::vector<std::string>{"3s"});
  EXPECT_EQ(rec_.readies, "*I");
  EXPECT_TRUE(queue_.Idle());
}

TEST_F(RequestQueueTest, QueryEffectsAreAnnouncedBeforeItIsSent) {
  FromClient(Query("SET search_path = x; SELECT 1"));
  ASSERT_EQ(rec_.effects.size(), 1u);
  ASSERT_EQ(rec_.effects[0].steps.size(), 1u);
  EXPECT_EQ(rec_.effects[0].steps[0].name, "search_path");
  FromClient(Query("SELECT 1"));
  EXPECT_EQ(rec_.effects.size(), 1u);  // nothing to announce
  // A prepared statement's effects come with each Bind of it.
  FromClient(Parse("l", "LISTEN ch") + Sync());
  EXPECT_EQ(rec_.effects.size(), 1u);
  FromClient(Bind("l") + Execute() + Sync());
  ASSERT_EQ(rec_.effects.size(), 2u);
  EXPECT_NE(rec_.effects[1].pins, 0u);
}

// Regression: another client's statement prepared before a schema change
// failed the client's Bind with "cached plan must not change result type".
TEST_F(RequestQueueTest, BatchFailingOnAStaleSharedStatementIsReplayedUnderAFreshName) {
  FromClient(Parse("s", "SELECT * FROM t") + Sync());
  FromServer(Msg('1', "") + Z());
  // Another session's copy: this server has it, prepared by someone else.
  MoveToOtherServer(/*shared=*/true);
  std::string batch = Bind("s") + Execute() + Sync();
  FromClient(batch);
  std::string out = FromServer(Error("0A000", "cached plan must not change result type") + Z());
  EXPECT_EQ(out, "");  // nothing reached the client
  ASSERT_EQ(rec_.replays.size(), 1u);
  EXPECT_EQ(rec_.replays[0], batch);
  // Replayed: the statement is prepared afresh under its next generation.
  std::string to_server = FromClient(rec_.replays[0]);
  EXPECT_EQ(Types(to_server), "PBES");
  EXPECT_NE(to_server.find("_g1"), std::string::npos);
  out = FromServer(Msg('2', "") + Msg('C', std::string("SELECT 1") + '\0') + Z());
  EXPECT_EQ(Types(out), "2CZ");  // the swallowed Parse's answer is the proxy's
}

TEST_F(RequestQueueTest, BatchThatClosesAStatementFirstIsReplayedToo) {
  // pgjdbc closes its dead statements at the head of the next batch: the
  // proxy answers the Close, and the Bind is the first thing the server does.
  FromClient(Parse("s", "SELECT * FROM t") + Parse("old", "SELECT 2") + Sync());
  FromServer(Msg('1', "") + Msg('1', "") + Z());
  MoveToOtherServer(/*shared=*/true);
  std::string batch = Msg('C', std::string("S") + "old" + '\0') + Bind("s") + Execute() + Sync();
  FromClient(batch);
  std::string out = FromServer(Error("0A000", "cached plan must not change result type") + Z());
  EXPECT_EQ(out, "");
  ASSERT_EQ(rec_.replays.size(), 1u);
  EXPECT_EQ(rec_.replays[0], batch);
}

TEST_F(RequestQueueTest, StalePlanOfTheClientsOwnParseIsReportedAsPostgreSQLWould) {
  FromClient(Parse("s", "SELECT * FROM t") + Sync());
  FromServer(Msg('1', "") + Z());
  FromClient(Bind("s") + Execute() + Sync());
  std::string out = FromServer(Error("0A000", "cached plan must not change result type") + Z());
  EXPECT_EQ(Types(out), "EZ");
  EXPECT_TRUE(rec_.replays.empty());
}

TEST_F(RequestQueueTest, StalePlanInsideATransactionBlockIsNotReplayed) {
  FromClient(Parse("s", "SELECT * FROM t") + Sync());
  FromServer(Msg('1', "") + Z());
  ServerConn& other = MoveToOtherServer(/*shared=*/true, 'T');
  FromClient(Bind("s") + Execute() + Sync());
  std::string out = FromServer(Error("0A000", "cached plan must not change result type") + Z('E'));
  EXPECT_EQ(Types(out), "EZ");
  EXPECT_TRUE(rec_.replays.empty());
  // But the next Parse of the text, by any session, prepares it afresh.
  Recorder rec;
  RequestQueue another(rec, registry_);
  another.Attach(&other);
  std::string to_server;
  std::string parse = Parse("s", "SELECT * FROM t");
  Header h;
  ASSERT_EQ(pgwire::DecodeHeader(parse, 1 << 20, &h), pgwire::DecodeStatus::kReady);
  std::string answered;
  ASSERT_TRUE(another.FromClient(h, parse, true, &to_server, &answered));
  EXPECT_NE(to_server.find("_g1"), std::string::npos);
}

TEST_F(RequestQueueTest, StatementCloseIsAnsweredByTheProxyAndTheServerKeepsIt) {
  FromClient(Parse("s", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  std::string to_server = FromClient(Msg('C', std::string("S") + "s" + '\0') + Sync());
  EXPECT_EQ(Types(to_server), "S");
  EXPECT_EQ(Types(FromServer(Z())), "3Z");
  EXPECT_EQ(server_.prepared.size(), 1u);
  EXPECT_EQ(queue_.statement_count(), 0u);
}

// Regression: SQL DEALLOCATE of a protocol-level statement reached the
// server, which knows it under the proxy's name only.
TEST_F(RequestQueueTest, DeallocateOfTheClientsStatementIsAnsweredByTheProxy) {
  FromClient(Parse("s1", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  std::string to_server = FromClient(Query("DEALLOCATE s1"));
  EXPECT_EQ(to_server, "");
  EXPECT_EQ(Types(answered_), "CZ");
  EXPECT_NE(answered_.find("DEALLOCATE"), std::string::npos);
  EXPECT_EQ(queue_.statement_count(), 0u);
  EXPECT_TRUE(queue_.Idle());
  // One that is not the client's goes to the server, which says what it would.
  answered_.clear();
  EXPECT_EQ(Types(FromClient(Query("DEALLOCATE other"))), "Q");
  EXPECT_EQ(answered_, "");
}

TEST_F(RequestQueueTest, PreparedTransactionControlIsAnnouncedAtBind) {
  FromClient(Parse("b", "BEGIN") + Sync());
  FromServer(Msg('1', "") + Z());
  EXPECT_TRUE(rec_.effects.empty());
  FromClient(Bind("b") + Execute() + Sync());
  ASSERT_EQ(rec_.effects.size(), 1u);
  ASSERT_EQ(rec_.effects[0].steps.size(), 1u);
  EXPECT_EQ(rec_.effects[0].steps[0].kind, sql::Step::Kind::kBegin);
}

// Regression: a duplicate name answered by the proxy left the server going
// on with the batch, so what came before it in the batch was committed.
TEST_F(RequestQueueTest, DuplicateNameFailsTheBatchOnTheServerToo) {
  FromClient(Parse("s1", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  std::string to_server = FromClient(Bind("s1") + Execute() + Parse("s1", "SELECT 2") + Sync());
  EXPECT_EQ(Types(to_server), "BEBS");  // a Bind of ours that fails, then the client's Sync
  EXPECT_NE(to_server.find("pgw_no_such_statement"), std::string::npos);
  std::string out = FromServer(Msg('2', "") + Msg('C', std::string("SELECT 1") + '\0') +
                               Error("26000", "no such statement") + Z('I'));
  EXPECT_EQ(Types(out), "2CEZ");
  EXPECT_NE(out.find("42P05"), std::string::npos);  // the client's error
  EXPECT_EQ(out.find("26000"), std::string::npos);  // ours is swallowed
}

// The server may hold another client's statement under any name: in
// transaction pooling a client reaches only its own.
TEST_F(RequestQueueTest, UnknownNameIsAnsweredAsPostgreSQLWould) {
  std::string to_server = FromClient(Bind("pgw_0123") + Execute() + Sync());
  EXPECT_EQ(Types(to_server), "BS");
  EXPECT_EQ(to_server.find("pgw_0123"), std::string::npos);
  std::string out = FromServer(Error("26000", "x") + Z());
  EXPECT_EQ(Types(out), "EZ");
  EXPECT_NE(out.find("prepared statement \"pgw_0123\" does not exist"), std::string::npos);
  // Closing a name it does not have closes nothing, as in PostgreSQL.
  to_server = FromClient(Msg('C', std::string("S") + "nope" + '\0') + Sync());
  EXPECT_EQ(Types(to_server), "S");
  EXPECT_EQ(Types(FromServer(Z())), "3Z");
}

TEST_F(RequestQueueTest, UnnamedStatementFollowsTheClientToAnotherServer) {
  FromClient(Parse("", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  MoveToOtherServer(/*shared=*/false);
  std::string to_server = FromClient(Bind("") + Execute() + Sync());
  EXPECT_EQ(Types(to_server), "PBES");  // prepared again from its text first
  EXPECT_EQ(Types(FromServer(Msg('1', "") + Msg('2', "") +
                             Msg('C', std::string("SELECT 1") + '\0') + Z())),
            "2CZ");
  // A simple query drops it, as in PostgreSQL.
  FromClient(Query("SELECT 2"));
  FromServer(Msg('C', std::string("SELECT 1") + '\0') + Z());
  to_server = FromClient(Bind("") + Execute() + Sync());
  EXPECT_EQ(Types(to_server), "BS");
  std::string out = FromServer(Error("26000", "x") + Z());
  EXPECT_NE(out.find("unnamed prepared statement does not exist"), std::string::npos);
}

TEST_F(RequestQueueTest, FlushSendsWhatTheProxyAnswersItself) {
  FromClient(Parse("s", "SELECT 1") + Sync());
  FromServer(Msg('1', "") + Z());
  queue_.ForgetStatements();  // another client's, prepared there already
  answered_.clear();
  std::string to_server = FromClient(Parse("s", "SELECT 1") + Msg('H', ""));
  EXPECT_EQ(Types(to_server), "H");
  EXPECT_EQ(Types(answered_), "1");  // without waiting for a server message that never comes
}

TEST_F(RequestQueueTest, CopyInIsNotAnAnswerAwaited) {
  FromClient(Query("COPY t FROM STDIN"));
  EXPECT_TRUE(queue_.EndsWithSync());
  FromServer(Msg('G', std::string(3, '\0')));
  EXPECT_TRUE(queue_.copying_in());
  EXPECT_FALSE(queue_.EndsWithSync());  // a client gone now is not waited for
  FromServer(Msg('C', std::string("COPY 0") + '\0') + Z());
  EXPECT_FALSE(queue_.copying_in());
}

TEST_F(RequestQueueTest, ServerStatementNamesAreDigestsOfTheText) {
  std::string a = FromClient(Parse("a", "SELECT 1") + Sync());
  std::string b = FromClient(Parse("b", "SELECT 2") + Sync());
  auto name = [](const std::string& bytes) {
    size_t at = bytes.find("pgw_");
    return bytes.substr(at, bytes.find('\0', at) - at);
  };
  EXPECT_EQ(name(a).size(), 4u + 32u);
  EXPECT_NE(name(a), name(b));
}

TEST_F(RequestQueueTest, OpenBatchIsNotIdle) {
  FromClient(Parse("", "SELECT 1") + Bind("") + Execute());
  FromServer(Msg('1', "") + Msg('2', "") + Msg('C', std::string("SELECT 1") + '\0'));
  EXPECT_TRUE(queue_.empty());
  EXPECT_FALSE(queue_.Idle());  // the server is inside the pipeline's implicit transaction
  FromClient(Sync());
  FromServer(Z());
  EXPECT_TRUE(queue_.Idle());
}

}  // namespace
}  // namespace pgwarden::proxy
