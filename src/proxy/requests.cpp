// RequestQueue: expected responses, statement names across server connections, stale-plan replays.
#include "proxy/requests.h"

#include <openssl/sha.h>

#include <cstdio>
#include <cstring>

#include "proxy/server_conn.h"
#include "proxy/session_params.h"

namespace pgwarden::proxy {
namespace {

// A server statement's name stands for its text: SHA-256 of the Parse body
// after the name (query text and parameter types), so that no client can
// make up another text with the same name (with a fast hash one could, and
// have another client's Bind run it).
struct TextDigest {
  unsigned char bytes[SHA256_DIGEST_LENGTH];
};

TextDigest DigestOf(std::string_view tail) {
  TextDigest d;
  SHA256(reinterpret_cast<const unsigned char*>(tail.data()), tail.size(), d.bytes);
  return d;
}

uint64_t StatementKey(const TextDigest& d) {
  uint64_t k = 0;
  std::memcpy(&k, d.bytes, sizeof k);
  return k;
}

// "pgw_" + 128 bits of the digest in hex (+ "_g<generation>"): 36 to 48 bytes,
// within PostgreSQL's 63-byte names.
std::string ServerStatementName(const TextDigest& d, uint32_t generation) {
  static const char kHex[] = "0123456789abcdef";
  std::string name = "pgw_";
  for (int i = 0; i < 16; ++i) {
    name += kHex[d.bytes[i] >> 4];
    name += kHex[d.bytes[i] & 15];
  }
  if (generation != 0) name += "_g" + std::to_string(generation);
  return name;
}

// The name a Bind of ours uses to make the server fail: nothing has it.
constexpr const char* kNoSuchStatement = "pgw_no_such_statement";

// What a Describe or a Close names: 'S' (a statement) or 'P' (a portal), and its name.
bool ReadTarget(std::string_view body, char* kind, std::string_view* name) {
  if (body.empty()) return false;
  *kind = body[0];
  size_t pos = 1;
  return pgwire::ReadCString(body, &pos, name) && (*kind == 'S' || *kind == 'P');
}

// Whether a batch that starts with this message can have a Bind or Describe
// of a shared named statement as the first thing the server answers (what a
// stale-plan replay is for). Not when the server answers the message itself
// and it is not about a named statement: an unnamed Parse, Bind or Describe,
// an Execute. A Close, a Flush or a named Parse may be answered by the proxy
// and leave the next message first.
bool MayMeetSharedStatementFirst(const pgwire::Header& h, std::string_view msg) {
  std::string_view body = msg.substr(5);
  size_t pos = 0;
  std::string_view portal, name;
  switch (h.type) {
    case 'P':
      return !pgwire::ReadCString(body, &pos, &name) || !name.empty();
    case 'B':
      return !pgwire::ReadCString(body, &pos, &portal) || !pgwire::ReadCString(body, &pos, &name) ||
             !name.empty();
    case 'D':
      return body.size() > 1 && body[0] == 'S' && body[1] != '\0';
    case 'E':
      return false;
    default:
      return true;
  }
}

std::string NoSuchStatement(std::string_view name) {
  std::string err;
  pgwire::AppendErrorResponse(
      err, "ERROR", "26000",
      name.empty() ? std::string("unnamed prepared statement does not exist")
                   : "prepared statement \"" + std::string(name) + "\" does not exist");
  return err;
}

// PostgreSQL's answer when a prepared statement's result type changed
// underneath it (plancache.c, at Bind or Describe).
bool IsStalePlanError(const std::map<char, std::string>& f) {
  auto c = f.find('C'), m = f.find('M');
  return c != f.end() && c->second == "0A000" && m != f.end() &&
         m->second == "cached plan must not change result type";
}

// Functions a FunctionCall ('F', the fast-path interface) may name by OID
// whose effects outlast the transaction (PostgreSQL 15's pg_proc).
void FunctionCallEffects(int32_t oid, sql::SessionEffects* e) {
  switch (oid) {
    case 2078:  // set_config(text, text, boolean): which parameter is not known here
      e->pins |= sql::kPinParameter;
      break;
    case 2880:  // pg_advisory_lock(bigint) and the (int, int), _shared and try_ variants
    case 2881:
    case 2882:
    case 2883:
    case 2886:
    case 2887:
    case 2888:
    case 2889:
      e->pins |= sql::kPinAdvisoryLock;
      break;
    case 1575:  // currval(regclass)
    case 2559:  // lastval()
      e->sequences = true;
      break;
    default:
      break;
  }
}

}  // namespace

uint32_t StatementRegistry::Current(uint64_t key) const {
  std::lock_guard lock(mu_);
  auto it = generation_.find(key);
  return it == generation_.end() ? 0 : it->second;
}

uint32_t StatementRegistry::Retire(uint64_t key, uint32_t seen) {
  std::lock_guard lock(mu_);
  uint32_t& g = generation_[key];
  if (g <= seen) g = seen + 1;
  return g;
}

void RequestQueue::Attach(ServerConn* server) {
  server_ = server;
  fresh_ = true;
  unnamed_here_ = false;
  copy_in_ = false;
  txn_status_ = server ? server->txn_status : 'I';
}

void RequestQueue::Detach() {
  server_ = nullptr;
  pending_.clear();
  parses_.clear();
  synth_errors_.clear();
  proxy_queries_.clear();
  bind_names_.clear();
  syncs_ = 0;
  batch_open_ = skip_until_sync_ = retrying_ = replayable_ = false;
  no_replay_next_ = false;
  replay_.clear();
  if (replay_.capacity() > 1024) replay_.shrink_to_fit();
  batch_names_.clear();
  fresh_ = true;
}

bool RequestQueue::EndsWithSync() const {
  if (copy_in_) return false;  // the server waits for COPY data, not the other way round
  return !pending_.empty() &&
         (pending_.back() == Expect::kSync || pending_.back() == Expect::kQuery ||
          pending_.back() == Expect::kProxyQuery);
}

bool RequestQueue::Awaiting(ProxyQueryKind kind) const {
  for (size_t i = 0; i < proxy_queries_.size(); ++i) {
    if (proxy_queries_[i].kind == kind) return true;
  }
  return false;
}

bool RequestQueue::TakeWhole(char type, bool transaction_pooling) {
  switch (type) {
    case 'Q':  // read for their session effects (and a Sync ends a batch)
    case 'F':
    case 'P':
    case 'B':
    case 'S':
      return true;
    case 'D':
    case 'C':
    case 'E':
    case 'H':
      return transaction_pooling;  // statement names are rewritten; batches may be replayed
    default:
      return false;  // COPY data and the rest stream through
  }
}

void RequestQueue::ForgetUnnamed() {
  unnamed_tail_.clear();
  unnamed_here_ = false;
  unnamed_effects_.reset();
}

bool RequestQueue::AnswerDeallocate(const sql::SessionEffects& e, std::string* to_client) {
  // Only when nothing is outstanding: the answer goes out at once, in order
  // (and not into the middle of a server message passing through).
  if (e.statements != 1 || e.deallocated.size() != 1 || !pending_.empty() || syncs_ != 0 ||
      txn_status_ == 'E' || server_mid_message_)
    return false;
  if (statements_.erase(e.deallocated[0]) == 0) return false;
  pgwire::AppendCommandComplete(*to_client, "DEALLOCATE");
  pgwire::AppendReadyForQuery(*to_client, txn_status_);
  return true;
}

bool RequestQueue::FromClient(const pgwire::Header& h, std::string_view msg,
                              bool transaction_pooling, std::string* to_server,
                              std::string* to_client) {
  const bool extended = h.type == 'P' || h.type == 'B' || h.type == 'D' || h.type == 'C' ||
                        h.type == 'E' || h.type == 'S' || h.type == 'H';
  if (extended && transaction_pooling) {
    if (!batch_open_) {  // the first message of a batch
      replay_.clear();
      batch_names_.clear();
      // A batch that cannot meet a stale shared statement first is not copied.
      replayable_ = !no_replay_next_ && syncs_ == 0 && txn_status_ == 'I' && server_ != nullptr &&
                    MayMeetSharedStatementFirst(h, msg);
      no_replay_next_ = false;
    }
    if (replayable_) replay_.append(msg);
  } else if (h.type == 'Q' || h.type == 'F') {
    replayable_ = false;  // sent behind the batch: it cannot be sent again in order
  }
  if (skip_until_sync_ && h.type != 'S') return true;  // the protocol drops them after an error
  bool ok = ForwardClientMessage(h, msg, transaction_pooling, to_server, to_client);
  fresh_ = false;  // after the observer heard of the message's effects
  return ok;
}

bool RequestQueue::ForwardClientMessage(const pgwire::Header& h, std::string_view msg,
                                        bool transaction_pooling, std::string* to_server,
                                        std::string* to_client) {
  std::string_view body = msg.substr(5);
  size_t pos = 0;
  switch (h.type) {
    case 'Q': {
      std::string_view sql = body.substr(0, body.find('\0'));
      if (sql::MayAffectSession(sql)) {
        sql::SessionEffects e = sql::AnalyzeSessionEffects(sql, scs_);
        if (transaction_pooling && AnswerDeallocate(e, to_client)) return true;
        if (e.any() || !e.steps.empty()) observer_.OnEffects(e);
      }
      to_server->append(msg);
      Push(Expect::kQuery);
      batch_open_ = false;  // a simple query ends an open batch's implicit transaction
      ForgetUnnamed();      // PostgreSQL drops the unnamed statement at a simple query
      return true;
    }
    case 'F': {
      int32_t oid = 0;
      if (!pgwire::ReadInt32(body, &pos, &oid)) return false;
      sql::SessionEffects e;
      FunctionCallEffects(oid, &e);
      if (e.any()) observer_.OnEffects(e);
      to_server->append(msg);
      Push(Expect::kQuery);
      batch_open_ = false;
      return true;
    }
    case 'P': {
      std::string_view name;
      if (!pgwire::ReadCString(body, &pos, &name)) return false;
      std::string_view tail = body.substr(pos);
      size_t end = tail.find('\0');
      if (end == std::string_view::npos) return false;
      batch_open_ = true;
      return ClientParse(name, tail, msg, transaction_pooling, to_server);
    }
    case 'B': {
      std::string_view portal, name;
      if (!pgwire::ReadCString(body, &pos, &portal) || !pgwire::ReadCString(body, &pos, &name))
        return false;
      batch_open_ = true;
      auto it = name.empty() ? statements_.end() : statements_.find(std::string(name));
      if (transaction_pooling && it == statements_.end() &&
          (!name.empty() || !EnsureUnnamed(to_server))) {
        // The server may hold another client's statement under that name
        // (the unnamed one, or the proxy's): the client only reaches its own.
        FailBatch(NoSuchStatement(name), to_server);
        return true;
      }
      if (it == statements_.end()) {
        if (name.empty()) {
          if (unnamed_effects_) observer_.OnEffects(*unnamed_effects_);
        } else if (!transaction_pooling) {
          auto e = session_effects_.find(std::string(name));
          if (e != session_effects_.end()) observer_.OnEffects(*e->second);
        }
        to_server->append(msg);  // unnamed, or unknown: the server answers as it would
        bind_names_.emplace_back();
      } else {
        Statement& st = it->second;
        if (st.effects) observer_.OnEffects(*st.effects);
        EnsurePrepared(st, to_server);
        pgwire::Writer w(*to_server);
        size_t start = w.Begin('B');
        w.CString(portal);
        w.CString(st.server_name);
        w.Bytes(body.substr(pos));
        w.Finish(start);
        bind_names_.emplace_back(name);
      }
      Push(Expect::kBind);
      return true;
    }
    case 'D': {
      char kind = 0;
      std::string_view name;
      if (!ReadTarget(body, &kind, &name)) return false;
      batch_open_ = true;
      auto it =
          (kind != 'S' || name.empty()) ? statements_.end() : statements_.find(std::string(name));
      if (transaction_pooling && kind == 'S' && it == statements_.end() &&
          (!name.empty() || !EnsureUnnamed(to_server))) {
        FailBatch(NoSuchStatement(name), to_server);
        return true;
      }
      if (it == statements_.end()) {
        to_server->append(msg);
        bind_names_.emplace_back();
      } else {
        EnsurePrepared(it->second, to_server);
        pgwire::Writer w(*to_server);
        size_t start = w.Begin('D');
        w.Bytes("S");
        w.CString(it->second.server_name);
        w.Finish(start);
        bind_names_.emplace_back(name);
      }
      Push(Expect::kDescribe);
      return true;
    }
    case 'C': {
      char kind = 0;
      std::string_view name;
      if (!ReadTarget(body, &kind, &name)) return false;
      batch_open_ = true;
      if (kind == 'S' && !transaction_pooling) session_effects_.erase(std::string(name));
      if (transaction_pooling && kind == 'S') {
        // The server keeps the client's statements for other clients, and
        // the client has no business with anyone else's: closed for the
        // client alone (a name it does not have closes nothing, as in PostgreSQL).
        if (name.empty()) {
          ForgetUnnamed();
        } else {
          statements_.erase(std::string(name));
        }
        Push(Expect::kSynthClose);
        return true;
      }
      to_server->append(msg);
      Push(Expect::kClose);
      return true;
    }
    case 'E':
      batch_open_ = true;
      to_server->append(msg);
      Push(Expect::kExecute);
      return true;
    case 'S':
      skip_until_sync_ = false;
      batch_open_ = false;
      to_server->append(msg);
      Push(Expect::kSync);
      return true;
    case 'H':
      to_server->append(msg);  // Flush: no response of its own, but what is due goes out now
      if (!server_mid_message_) EmitSynthetic(to_client);
      return true;
    default:
      to_server->append(msg);
      return true;
  }
}

bool RequestQueue::ClientParse(std::string_view name, std::string_view tail, std::string_view msg,
                               bool transaction_pooling, std::string* to_server) {
  std::string_view query = tail.substr(0, tail.find('\0'));
  // What it will do when run: its effects, or the transaction control it is.
  std::unique_ptr<sql::SessionEffects> effects;
  if (sql::MayAffectSession(query)) {
    auto e = sql::AnalyzeSessionEffects(query, scs_);
    if (e.any() || !e.steps.empty()) effects = std::make_unique<sql::SessionEffects>(std::move(e));
  } else if (auto step = sql::TransactionStep(query)) {
    effects = std::make_unique<sql::SessionEffects>();
    effects->steps.push_back(std::move(*step));
  }
  // currval() / lastval() read the session's sequence cache: the observer may
  // want a DISCARD SEQUENCES in front, which only the first message of a
  // lending can have (a Bind of it comes after this Parse).
  if (effects && effects->sequences && fresh_) {
    sql::SessionEffects seq;
    seq.sequences = true;
    observer_.OnEffects(seq);
  }
  if (!transaction_pooling || name.empty()) {
    // Passed through: the server keeps the client's own name.
    if (name.empty()) {
      unnamed_effects_ = std::move(effects);
      if (transaction_pooling) {  // kept, to prepare it on whichever server the Bind meets
        unnamed_tail_.assign(tail);
        unnamed_here_ = true;
        to_server->append(msg);
        Push(Expect::kParse);
        parses_.push_back({{}, {}, true});
        return true;
      }
    } else if (effects) {
      session_effects_[std::string(name)] = std::move(effects);
    } else {
      session_effects_.erase(std::string(name));
    }
    to_server->append(msg);
    Push(Expect::kParse);
    parses_.push_back({});
    return true;
  }
  if (statements_.count(std::string(name))) {
    // As PostgreSQL: the first definition stays, the Parse fails.
    std::string err;
    pgwire::AppendErrorResponse(err, "ERROR", "42P05",
                                "prepared statement \"" + std::string(name) + "\" already exists");
    FailBatch(std::move(err), to_server);
    return true;
  }
  Statement st;
  st.parse_tail.assign(tail);
  TextDigest digest = DigestOf(tail);
  st.key = StatementKey(digest);
  st.generation = registry_.Current(st.key);
  st.server_name = ServerStatementName(digest, st.generation);
  st.effects = std::move(effects);
  if (server_->prepared.count(st.server_name)) {
    Push(Expect::kSynthParse);
    parses_.push_back({{}, std::string(name)});
  } else {
    pgwire::Writer w(*to_server);
    size_t start = w.Begin('P');
    w.CString(st.server_name);
    w.Bytes(tail);
    w.Finish(start);
    server_->prepared.insert(st.server_name);
    st.prepared_by = server_->id;
    Push(Expect::kParse);
    parses_.push_back({st.server_name, std::string(name)});
  }
  batch_names_.emplace_back(name);
  statements_.emplace(std::string(name), std::move(st));
  return true;
}

void RequestQueue::FailBatch(std::string error, std::string* to_server) {
  synth_errors_.push_back(std::move(error));
  Push(Expect::kSynthError);
  pgwire::Writer w(*to_server);
  size_t start = w.Begin('B');
  w.CString("");
  w.CString(kNoSuchStatement);
  w.Int16(0);
  w.Int16(0);
  w.Int16(0);
  w.Finish(start);
  Push(Expect::kSwallowError);
  skip_until_sync_ = true;
}

bool RequestQueue::EnsureUnnamed(std::string* to_server) {
  if (unnamed_here_) return true;
  if (unnamed_tail_.empty()) return false;
  pgwire::Writer w(*to_server);
  size_t start = w.Begin('P');
  w.CString("");
  w.Bytes(unnamed_tail_);
  w.Finish(start);
  Push(Expect::kSwallowParse);
  parses_.push_back({{}, {}, true});
  unnamed_here_ = true;
  return true;
}

void RequestQueue::EnsurePrepared(Statement& st, std::string* to_server) {
  if (server_->prepared.count(st.server_name)) return;
  pgwire::Writer w(*to_server);
  size_t start = w.Begin('P');
  w.CString(st.server_name);
  w.Bytes(st.parse_tail);
  w.Finish(start);
  server_->prepared.insert(st.server_name);
  Push(Expect::kSwallowParse);
  parses_.push_back({st.server_name, {}});
}

void RequestQueue::FromClientStreamed(const pgwire::Header& h) {
  fresh_ = false;
  switch (h.type) {
    case 'Q':
    case 'F':
      Push(Expect::kQuery);
      break;
    case 'S':
      Push(Expect::kSync);
      batch_open_ = false;
      break;
    case 'E':
      Push(Expect::kExecute);
      batch_open_ = true;
      break;
    case 'P':
      Push(Expect::kParse);
      parses_.push_back({});
      batch_open_ = true;
      break;
    case 'B':
      Push(Expect::kBind);
      bind_names_.emplace_back();
      batch_open_ = true;
      break;
    case 'D':
      Push(Expect::kDescribe);
      bind_names_.emplace_back();
      batch_open_ = true;
      break;
    case 'C':
      Push(Expect::kClose);
      batch_open_ = true;
      break;
    case 'H':
      break;
    default:
      break;  // d, c, f: COPY data, done, fail; answered within the query
  }
}

void RequestQueue::AddProxyQuery(ProxyQuery q, std::string_view sql, std::string* to_server) {
  pgwire::AppendQuery(*to_server, sql);
  proxy_queries_.push_back(std::move(q));
  Push(Expect::kProxyQuery);
}

bool RequestQueue::WantWhole(char type) const {
  switch (type) {
    case 'Z':
    case 'S':
    case 'E':
    case 'C':
      return true;
    case 'D':
    case 'T':
      return FirstAnswered() == Expect::kProxyQuery;  // the rows of a proxy query
    default:
      return false;
  }
}

RequestQueue::Expect RequestQueue::FirstAnswered() const {
  for (size_t i = 0; i < pending_.size(); ++i) {
    Expect e = pending_[i];
    if (e != Expect::kSynthParse && e != Expect::kSynthClose && e != Expect::kSynthError) return e;
  }
  return Expect::kQuery;  // nothing expected: whatever comes is forwarded
}

void RequestQueue::EmitSynthetic(std::string* to_client) {
  while (!pending_.empty()) {
    Expect e = pending_.front();
    if (e == Expect::kSynthParse) {
      pgwire::AppendParseComplete(*to_client);
      if (!parses_.empty()) parses_.pop_front();
    } else if (e == Expect::kSynthClose) {
      pgwire::AppendCloseComplete(*to_client);
    } else if (e == Expect::kSynthError && !synth_errors_.empty()) {
      to_client->append(synth_errors_.front());
      synth_errors_.pop_front();
    } else {
      return;
    }
    replayable_ = false;  // the client has seen part of the batch's answer
    pending_.pop_front();
  }
}

void RequestQueue::OnError() {
  // In a simple query the server goes on to its ReadyForQuery; in the
  // extended protocol it skips everything up to the next Sync.
  if (!pending_.empty() &&
      (pending_.front() == Expect::kQuery || pending_.front() == Expect::kProxyQuery))
    return;
  while (!pending_.empty() && pending_.front() != Expect::kSync &&
         pending_.front() != Expect::kQuery && pending_.front() != Expect::kProxyQuery) {
    Expect e = pending_.front();
    pending_.pop_front();
    switch (e) {
      case Expect::kSynthError:
        if (!synth_errors_.empty()) synth_errors_.pop_front();
        break;
      case Expect::kParse:
      case Expect::kSwallowParse:
      case Expect::kSynthParse:
        // A failed or skipped Parse leaves nothing behind: not on the server,
        // and not the client's name either.
        if (!parses_.empty()) {
          ParseNote& n = parses_.front();
          if (!n.server_name.empty() && e != Expect::kSynthParse && server_ != nullptr)
            server_->prepared.erase(n.server_name);
          if (!n.client_name.empty()) statements_.erase(n.client_name);
          if (n.unnamed) {
            unnamed_here_ = false;
            // The client's own Parse failed: its unnamed statement is gone, as in PostgreSQL.
            if (e != Expect::kSwallowParse) unnamed_tail_.clear();
          }
          parses_.pop_front();
        }
        break;
      case Expect::kBind:
      case Expect::kDescribe:
        if (!bind_names_.empty()) bind_names_.pop_front();
        break;
      default:
        break;
    }
  }
}

bool RequestQueue::RetryStale() {
  // The failing message is the first one the server answers: a Bind or a
  // Describe of a named statement (bind_names_ lines up with those).
  Expect failing = FirstAnswered();
  if (failing != Expect::kBind && failing != Expect::kDescribe) return false;
  if (bind_names_.empty() || bind_names_.front().empty()) return false;
  auto it = statements_.find(bind_names_.front());
  if (it == statements_.end()) return false;
  Statement& st = it->second;
  const bool own = server_ != nullptr && st.prepared_by == server_->id;
  uint32_t next = registry_.Retire(st.key, st.generation);
  if (own) return false;  // the client's own plan went stale: PostgreSQL says so too
  // From now on this client's statement is the next generation, prepared afresh.
  st.generation = next;
  st.server_name = ServerStatementName(DigestOf(st.parse_tail), next);
  st.prepared_by = 0;
  bool whole_batch_sent =
      !batch_open_ && syncs_ == 1 && !pending_.empty() && pending_.back() == Expect::kSync;
  if (!replayable_ || !whole_batch_sent) return false;
  // The names the batch's own Parses registered are registered again by the replay.
  for (const auto& n : batch_names_) statements_.erase(n);
  retrying_ = true;
  return true;
}

bool RequestQueue::FromServer(const pgwire::Header& h, std::string_view whole,
                              std::string* to_client) {
  std::map<char, std::string> fields;  // of an ErrorResponse
  if (h.type == 'E') {
    fields = pgwire::ParseErrorFields(whole.substr(5));
    // A stale shared statement: decide before any synthetic answer of the
    // batch goes out, so that a replay finds the client's view untouched.
    if (!retrying_ && FirstAnswered() != Expect::kProxyQuery && IsStalePlanError(fields) &&
        RetryStale()) {
      OnError();
      return false;
    }
  }
  EmitSynthetic(to_client);
  const Expect head = pending_.empty() ? Expect::kQuery : pending_.front();
  const bool ours = head == Expect::kProxyQuery && !pending_.empty();
  const bool swallow = ours || retrying_;
  bool forward = !swallow;
  if (h.type == 'C' || h.type == 'E' || h.type == 'Z') copy_in_ = false;
  switch (h.type) {
    case 'Z': {
      char status = whole.size() > 5 ? whole[5] : 'I';
      txn_status_ = status;
      if (server_) server_->txn_status = status;
      if (!pending_.empty() &&
          (head == Expect::kSync || head == Expect::kQuery || head == Expect::kProxyQuery)) {
        pending_.pop_front();
        if (head == Expect::kProxyQuery && !proxy_queries_.empty()) proxy_queries_.pop_front();
      }
      if (syncs_ > 0) --syncs_;
      if (head == Expect::kSync || head == Expect::kQuery) replayable_ = false;
      if (retrying_) {
        retrying_ = false;
        no_replay_next_ = true;  // one replay per batch
        std::string bytes = std::move(replay_);
        replay_.clear();
        observer_.Replay(std::move(bytes));
        return false;
      }
      observer_.OnReady(status, ours);
      return forward;
    }
    case 'S': {
      size_t pos = 5;
      std::string_view name, value;
      if (pgwire::ReadCString(whole, &pos, &name) && pgwire::ReadCString(whole, &pos, &value)) {
        bool pass = observer_.OnParameterStatus(name, value, swallow);
        if (!swallow && !pass) forward = false;
      }
      break;
    }
    case 'E': {
      if (ours && !proxy_queries_.empty()) {
        observer_.OnProxyError(proxy_queries_.front(), fields);
      } else if (!swallow) {
        observer_.OnClientError(fields);
        // The error of our Bind that failed the batch for the one we answered.
        if (!pending_.empty() && head == Expect::kSwallowError) forward = false;
      }
      OnError();
      break;
    }
    case 'C': {
      std::string_view tag = whole.substr(5);
      tag = tag.substr(0, tag.find('\0'));
      if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
        if (server_) server_->prepared.clear();
        if (!swallow) ForgetStatements();
      }
      if (!swallow) observer_.OnCommandTag(tag);
      if (!pending_.empty() && head == Expect::kExecute) pending_.pop_front();
      break;
    }
    case 'D':
      if (ours && !proxy_queries_.empty()) {
        std::vector<std::string> values;
        if (ParseDataRow(whole.substr(5), &values))
          observer_.OnProxyRow(proxy_queries_.front(), values);
      }
      break;
    case '1':
      if (!pending_.empty() && head == Expect::kSwallowParse) {
        pending_.pop_front();
        if (!parses_.empty()) parses_.pop_front();
        forward = false;
      } else if (!swallow && !pending_.empty() && head == Expect::kParse) {
        pending_.pop_front();
        if (!parses_.empty()) parses_.pop_front();
      }
      break;
    case '2':
      if (!pending_.empty() && head == Expect::kBind) {
        pending_.pop_front();
        if (!bind_names_.empty()) bind_names_.pop_front();
      }
      break;
    case '3':
      if (!pending_.empty() && head == Expect::kClose) pending_.pop_front();
      break;
    case 'n':
    case 'T':
      if (!pending_.empty() && head == Expect::kDescribe) {
        pending_.pop_front();
        if (!bind_names_.empty()) bind_names_.pop_front();
      }
      break;
    case 'I':
    case 's':
      if (!pending_.empty() && head == Expect::kExecute) pending_.pop_front();
      break;
    case 'A':
      forward = true;  // a notification is the client's whatever is running
      break;
    case 'G':
      if (forward) copy_in_ = true;  // CopyInResponse: the client sends COPY data now
      break;
    default:
      break;
  }
  if (forward) replayable_ = false;
  return forward;
}

}  // namespace pgwarden::proxy
