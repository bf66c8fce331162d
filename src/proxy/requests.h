// What a server owes a client, in order, and the client's prepared statements as server statements.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/fifo.h"
#include "pgwire/message.h"
#include "sql/session_effects.h"

namespace pgwarden::proxy {

struct ServerConn;

// Proxy-wide: the current generation of each statement text. A shared server
// statement whose result type changed (a schema change) cannot be used again
// under its name; the next generation's name is prepared afresh. Thread-safe.
class StatementRegistry {
 public:
  uint32_t Current(uint64_t key) const;
  // Moves `key` past generation `seen` (once, however many sessions report it).
  uint32_t Retire(uint64_t key, uint32_t seen);

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, uint32_t> generation_;  // guarded by mu_; absent: 0
};

// A query the proxy sends on its own behalf; everything it returns is
// swallowed, its rows and errors go to the session.
enum class ProxyQueryKind : uint8_t {
  kCheck,             // server_check_query before lending an idle server
  kParams,            // set_config() / RESET making the server's parameters the client's
  kReadback,          // current_setting() of the unreported tracked parameters
  kReset,             // server_reset_query before the server goes back to its pool
  kDiscardSequences,  // DISCARD SEQUENCES before a currval() on a server another client used
};
struct ProxyQuery {
  ProxyQueryKind kind = ProxyQueryKind::kCheck;
  std::vector<int> columns;  // kParams / kReadback: the parameter id of each column of its row
};

// The extended-protocol bookkeeping of one client session: the responses its
// server owes in order (what to forward, swallow or answer ourselves), and in
// transaction pooling the client's named statements, prepared under
// proxy-wide names on whichever server it gets (PgBouncer's prepare.c).
// Socket-free: messages in, bytes out, events to the Observer. Owned by the
// client session, used on its thread only.
class RequestQueue {
 public:
  // What the session learns from the traffic.
  class Observer {
   public:
    virtual ~Observer() = default;
    // A statement about to be sent (a Query, or the Bind of a prepared one)
    // has these effects on the session (or is transaction control); called
    // before its bytes are queued, so the observer may queue a proxy query in
    // front of it.
    virtual void OnEffects(const sql::SessionEffects& effects) = 0;
    // ReadyForQuery; `ours`: it ends a proxy query.
    virtual void OnReady(char txn_status, bool ours) = 0;
    // A ParameterStatus; for one of the client's own (not `ours`), false
    // holds it back from the client (the observer tells the client later).
    virtual bool OnParameterStatus(std::string_view name, std::string_view value, bool ours) = 0;
    // CommandComplete of a client statement.
    virtual void OnCommandTag(std::string_view tag) = 0;
    // An ErrorResponse forwarded to the client (FATAL ends the session).
    virtual void OnClientError(const std::map<char, std::string>& fields) = 0;
    // The row and the error of a proxy query (its end is OnReady, `ours`).
    virtual void OnProxyRow(const ProxyQuery& q, const std::vector<std::string>& values) = 0;
    virtual void OnProxyError(const ProxyQuery& q, const std::map<char, std::string>& fields) = 0;
    // The batch of client messages `bytes` failed only because a server
    // statement shared with other clients went stale; nothing of it reached
    // the client. The session sends `bytes` again as if the client had.
    virtual void Replay(std::string bytes) = 0;
  };

  RequestQueue(Observer& observer, StatementRegistry& registry)
      : observer_(observer), registry_(registry) {}

  // The server whose responses are tracked now (nullptr: none).
  void Attach(ServerConn* server);
  // The server is gone or given back: forgets what it owed.
  void Detach();

  // The session's standard_conforming_strings (how the parser reads backslashes).
  void set_standard_conforming_strings(bool on) { scs_ = on; }

  // Nothing is owed and no extended-protocol batch is open (the server can be
  // given back or reset).
  bool Idle() const { return pending_.empty() && syncs_ == 0 && !batch_open_; }
  // Query / Sync sent and not yet answered by ReadyForQuery.
  int syncs() const { return syncs_; }
  bool empty() const { return pending_.empty(); }
  // The last request waits for its answer (a Sync or a Query is queued last).
  bool EndsWithSync() const;
  // Extended-protocol messages were sent since the last Sync.
  bool batch_open() const { return batch_open_; }
  // The session is passing a server message through (answers of ours must
  // not go out into its middle).
  void set_server_mid_message(bool mid) { server_mid_message_ = mid; }
  // The server waits for COPY data from the client.
  bool copying_in() const { return copy_in_; }
  // A batch is being sent again (stale shared statement): the client's next
  // bytes wait until it is.
  bool retrying() const { return retrying_; }
  // A proxy query of this kind is queued and not yet answered.
  bool Awaiting(ProxyQueryKind kind) const;
  // Nothing of the client's has been sent in this lending yet.
  bool fresh() const { return fresh_; }

  // --- client → server
  // Which client messages are handed over whole (the rest stream through).
  static bool TakeWhole(char type, bool transaction_pooling);
  // A whole client message; what goes to the server is appended to
  // *to_server (rewritten statement names in transaction pooling, or
  // nothing when the proxy answers it), an answer the proxy can give at once
  // to *to_client. False: malformed.
  bool FromClient(const pgwire::Header& h, std::string_view msg, bool transaction_pooling,
                  std::string* to_server, std::string* to_client);
  // A client message passed through in pieces; `h` is its header.
  void FromClientStreamed(const pgwire::Header& h);
  // A proxy query, queued in front of what comes after.
  void AddProxyQuery(ProxyQuery q, std::string_view sql, std::string* to_server);

  // --- server → client
  // Which server messages the session must hand over whole now.
  bool WantWhole(char type) const;
  // A server message begins (`whole` holds it for the types WantWhole named).
  // Synthetic answers due before it are appended to *to_client. Returns true
  // when the message goes on to the client (the caller forwards it: `whole`
  // is not appended here), false when it is swallowed.
  bool FromServer(const pgwire::Header& h, std::string_view whole, std::string* to_client);

  // The client's statements (transaction pooling).
  void ForgetStatements() {
    statements_.clear();
    session_effects_.clear();
  }
  size_t statement_count() const { return statements_.size(); }

 private:
  // An expected response, in the order the server will answer.
  enum class Expect : uint8_t {
    kParse,         // a client Parse forwarded: ParseComplete ends it
    kBind,          // BindComplete
    kDescribe,      // ParameterDescription? then RowDescription / NoData
    kClose,         // CloseComplete
    kExecute,       // CommandComplete / EmptyQueryResponse / PortalSuspended
    kSync,          // ReadyForQuery
    kQuery,         // a simple query or function call: everything up to ReadyForQuery
    kSynthParse,    // Parse skipped (prepared there already): we send ParseComplete
    kSynthClose,    // Close of a statement the server keeps for others: CloseComplete
    kSynthError,    // an error we answer ourselves (a statement name in use, or unknown)
    kSwallowError,  // the error of a Bind of ours that makes the server skip to Sync, as
                    //   PostgreSQL would after the error we answered
    kSwallowParse,  // a Parse of ours (a statement prepared on a new server)
    kProxyQuery,    // a query of ours, up to its ReadyForQuery (see proxy_queries_)
  };
  // The statement a Parse creates, for its completion or failure.
  struct ParseNote {
    std::string server_name;  // what the server prepares ("" for the unnamed one)
    std::string client_name;  // the client's name, when it is the client's Parse
    bool unnamed = false;     // the client's own unnamed statement
  };
  struct Statement {
    std::string server_name;  // proxy-wide: "pgw_<hash>_<len>[_g<generation>]"
    std::string parse_tail;   // the Parse body after the name (query text, types)
    uint64_t key = 0;         // hash of parse_tail: the registry's key
    uint32_t generation = 0;
    uint64_t prepared_by = 0;  // the server connection the client's own Parse prepared it on
    std::unique_ptr<sql::SessionEffects> effects;  // null: none
  };

  // FromClient past the replay bookkeeping: the message itself.
  bool ForwardClientMessage(const pgwire::Header& h, std::string_view msg, bool transaction_pooling,
                            std::string* to_server, std::string* to_client);
  // A simple query that is nothing but DEALLOCATE of one of the client's
  // statements (kept under a proxy name on the server): answered here.
  bool AnswerDeallocate(const sql::SessionEffects& e, std::string* to_client);
  bool ClientParse(std::string_view name, std::string_view tail, std::string_view msg,
                   bool transaction_pooling, std::string* to_server);
  // Answers an error ourselves (the client sees `error`) and makes the server
  // skip to the client's Sync as PostgreSQL would have (rolling back what the
  // batch did before it); the client's messages up to that Sync are dropped.
  void FailBatch(std::string error, std::string* to_server);
  // Transaction pooling: the client's unnamed statement is prepared on this
  // server (again, from its text) before a Bind or Describe of it; false when
  // the client has none (the caller answers 26000).
  bool EnsureUnnamed(std::string* to_server);
  // The client's unnamed statement is gone (a simple query, a Close of it).
  void ForgetUnnamed();
  void EnsurePrepared(Statement& st, std::string* to_server);
  void EmitSynthetic(std::string* to_client);
  // An ErrorResponse: what the server skips after it is expected no more.
  void OnError();
  // A stale shared statement failed the batch: remaps the client's statement
  // to a fresh generation, and true when the batch is to be replayed.
  bool RetryStale();
  // The first expected response the server (not the proxy) will send.
  Expect FirstAnswered() const;
  void Push(Expect e) {
    pending_.push_back(e);
    if (e == Expect::kSync || e == Expect::kQuery || e == Expect::kProxyQuery) ++syncs_;
  }

  Observer& observer_;
  StatementRegistry& registry_;
  ServerConn* server_ = nullptr;
  // Fifo, not std::deque: libstdc++'s deque allocates ~600 bytes when it is
  // constructed, in every idle session.
  Fifo<Expect> pending_;
  Fifo<ParseNote> parses_;          // one per kParse / kSwallowParse
  Fifo<std::string> synth_errors_;  // one per kSynthError
  // Transaction pooling: the client's unnamed statement (the Parse body
  // after the name; empty: none), and whether this server has it now.
  std::string unnamed_tail_;
  bool unnamed_here_ = false;
  bool copy_in_ = false;  // the server awaits COPY data (CopyInResponse seen)
  bool server_mid_message_ = false;
  Fifo<ProxyQuery> proxy_queries_;  // one per kProxyQuery
  Fifo<std::string> bind_names_;    // one per kBind / kDescribe: the client's statement name
  int syncs_ = 0;                   // Query / Sync / proxy queries not yet answered
  bool batch_open_ = false;         // extended messages sent since the last Sync
  bool skip_until_sync_ = false;    // after an error we made up: drop up to the client's Sync
  bool fresh_ = true;               // nothing of the client's sent in this lending
  std::unordered_map<std::string, Statement> statements_;  // by the client's name
  std::unique_ptr<sql::SessionEffects> unnamed_effects_;   // of the last unnamed Parse
  // Session pooling: the effects of the client's named statements that have
  // any (names are the server's own there).
  std::unordered_map<std::string, std::unique_ptr<sql::SessionEffects>> session_effects_;
  // Replaying a batch that failed on a stale shared statement: the client's
  // messages of the open batch as it sent them, while the batch may still be
  // replayed (it began outside a transaction block, nothing of it has reached
  // the client, nothing was sent after it).
  std::string replay_;
  bool replayable_ = false;
  std::vector<std::string> batch_names_;  // client names the batch's Parses registered
  bool retrying_ = false;                 // swallowing the failed batch up to its ReadyForQuery
  bool no_replay_next_ = false;           // the next batch is a replay: not replayed again
  char txn_status_ = 'I';                 // as of the last ReadyForQuery
  bool scs_ = true;                       // standard_conforming_strings, for the parser
};

}  // namespace pgwarden::proxy
