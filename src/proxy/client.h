// A client session: I/O, its state machine, and the lending of server connections to it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/event_loop.h"
#include "pgwire/cursor.h"
#include "pgwire/message.h"
#include "proxy/admin_session.h"
#include "proxy/client_params.h"
#include "proxy/client_state.h"
#include "proxy/login.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/requests.h"
#include "proxy/session_params.h"
#include "proxy/tls.h"

namespace pgwarden::proxy {

// One client connection. Owned by its Worker (and kept alive by jobs posted
// for it, which hold a shared_ptr); touched only on that worker's thread.
//
// What it is made of, one concern each: ClientLogin (startup and
// authentication), AdminSession (the console), RequestQueue (what the server
// owes, prepared statements) and the session parameters (ParamSet, relative
// to the pool's defaults). This class does the I/O and the lending: which
// server, when it is given back, and that it never reaches another client
// carrying this one's state.
//
// I/O: the client socket and the attached server's socket are registered
// edge-triggered with the worker's loop. Events only note readiness and call
// Pump(), the one place that reads and writes: it flushes output, then reads
// from whichever side may be read (a side is read while what comes from it can
// be passed on), until nothing moves.
class ClientSession final : public net::IoHandler,
                            public std::enable_shared_from_this<ClientSession>,
                            private RequestQueue::Observer {
 public:
  // Takes ownership of the connected, non-blocking socket `fd`.
  ClientSession(Worker& worker, int fd);
  ~ClientSession() override;
  void Start();
  // On the thread of the worker it moved to (Worker::Adopt): registers the
  // socket there and goes on.
  void Arrive(Worker& worker);

  // Readiness of the client socket.
  void OnIo(uint32_t events) override;
  // Readiness of the attached server's socket.
  void OnServerIo(uint32_t events);
  // Called on our thread with a server from the pool (or an error).
  void OnServer(ServerConnPtr server, Status error);
  // Called on our thread when the credential lookup finishes.
  void OnCredential(Result<pgwire::UserCredential> cred);

 private:
  void SetState(ClientState s);
  bool transaction_pooling() const { return pool_ && pool_->mode() == PoolMode::kTransaction; }
  // Keeps its server connection for the rest of its session (session
  // pooling, or state the proxy cannot carry between servers).
  bool pinned() const { return !transaction_pooling() || pins_ != 0; }
  // Between transactions, holding nothing that ties it to its thread: a
  // session the balancer may move.
  bool Movable() const;
  void MoveTo(Worker& to);

  // I/O. Pump() moves bytes until nothing moves; the others return whether
  // they moved any.
  void Pump();
  bool ClientMayRead() const;
  bool ReadClient();
  bool ReadServer();
  bool FlushClient();
  bool FlushServer();
  void ServerLost(const std::string& what);
  void Close(const char* why);
  void FinishClose();
  void FailFatal(std::string_view sqlstate, std::string_view message);

  // Login and welcome.
  void HandleLoginBytes(std::string_view data);
  void OnLoginStep(ClientLogin::Next next);
  void StartTls();
  void LoggedIn();
  void SendWelcome();
  // BackendKeyData (the proxy's cancel key) and the first ReadyForQuery.
  void FinishWelcome();
  void FinishSetup();

  // Client → server.
  void HandleClientData(std::string_view data);
  void ProcessClientBytes(std::string_view data);
  // False when the message ended the session (or was malformed).
  bool HandleClientMessage(const pgwire::Header& h, std::string_view msg);
  void WatchIncompleteMessage();
  void StartQueryClock();

  // Server → client.
  void ProcessServerBytes(std::string_view data);

  // Lending.
  void RequestServer();
  void AttachServer(ServerConnPtr server);
  // Queues set_config() / RESET for what differs between the client's and the
  // server's parameters; true when something was queued that may fail (the
  // client's request then waits for it).
  bool QueueParameters();
  void StartServing();
  // A batch that RESET parameters the client gave at startup is answered:
  // put those back (PostgreSQL's RESET returns to them), then go on with what
  // the client sent behind it.
  void RestoreStartupParameters(char txn_status);
  bool ServerIdleAndClean() const;
  // In transaction pooling: the server goes back after this transaction.
  bool ShouldRelease() const;
  void ReleaseServer(bool broken);
  void Pin(uint32_t reason, const std::string& what);
  // It did what a server reset does not undo, or what the proxy could not
  // see into: its server is closed when it leaves, and DISCARD ALL unpins
  // nothing.
  bool BeyondReset() const {
    return (pins_ & sql::kPinsBeyondDiscard) != 0 || params_.set_placeholder();
  }
  // Pins the client for values the proxy cannot carry between servers (a
  // search_path with pg_temp, a client_encoding it cannot lex).
  void CheckCarriedValues();
  bool ClientOutputPending() const { return !out_.empty() || !client_raw_.empty(); }
  bool ServerOutputPending() const { return !srv_out_.empty() || !srv_raw_.empty(); }

  // The admin console.
  void HandleAdminBytes(std::string_view data);
  void AwaitPause();

  // RequestQueue::Observer.
  void OnEffects(const sql::SessionEffects& effects) override;
  void OnReady(char txn_status, bool ours) override;
  bool OnParameterStatus(std::string_view name, std::string_view value, bool ours) override;
  void OnCommandTag(std::string_view tag) override;
  void OnClientError(const std::map<char, std::string>& fields) override;
  void OnProxyRow(const ProxyQuery& q, const std::vector<std::string>& values) override;
  void OnProxyError(const ProxyQuery& q, const std::map<char, std::string>& fields) override;
  void Replay(std::string bytes) override;

  Worker* worker_;  // changes only when the session moves (MoveTo)
  Proxy& proxy_;
  int fd_;  // the client socket (owned)
  std::shared_ptr<ClientInfo> info_;
  ClientState state_ = ClientState::kLogin;
  net::EventLoop::TimerId login_timer_;
  net::EventLoop::TimerId message_timer_;  // a client message left unfinished
  net::EventLoop::TimerId admin_timer_;    // polls a waiting PAUSE

  // Reads go to the worker's buffer and are handled at once: an idle client
  // holds no buffer.
  std::string in_;                  // client bytes waiting for a server (only while needed)
  std::string out_;                 // bytes for the client not yet written
  std::string srv_out_;             // bytes for the server not yet written (plaintext)
  std::string srv_raw_;             // encrypted bytes for a TLS server not yet written
  std::unique_ptr<TlsStream> tls_;  // TLS with the client, after SSLRequest
  std::string client_raw_;          // encrypted bytes for the client not yet written
  // Edge-triggered readiness: "readable" until a short read or EAGAIN,
  // "writable" until a send is cut short.
  bool client_readable_ = false, client_writable_ = true;
  bool server_readable_ = false, server_writable_ = true;
  // The peer closed its side (EPOLLRDHUP/HUP/ERR seen): read on until EOF.
  bool client_hup_ = false, server_hup_ = false;
  bool client_eof_ = false;   // the client is gone: nothing more is read or written
  bool client_done_ = false;  // the client has finished sending (EOF read)
  bool pumping_ = false, pump_again_ = false;
  bool pump_posted_ = false;  // a Pump() job for this session is queued

  // Who.
  std::unique_ptr<ClientLogin> login_;   // while logging in
  std::unique_ptr<AdminSession> admin_;  // the admin console's session, when it is one
  std::string user_, database_;
  Pool* pool_ = nullptr;

  // Session parameters (ClientParams). While a batch that RESET a startup
  // parameter is answered, what the client sent behind it waits in in_.
  ClientParams params_;
  bool restore_barrier_ = false;  // the batch is complete: the client's next bytes wait
  bool resume_client_ = false;    // the barrier is down: send what waited in in_
  uint32_t pins_ = 0;             // sql::PinReason bits: why it keeps its server
  // The first failure of our own queries in this lending.
  struct ProxyFailure {
    ProxyQueryKind kind;
    std::map<char, std::string> fields;
  };
  std::optional<ProxyFailure> proxy_failure_;
  std::string after_message_;  // for the client, after the server message being handled

  // Server side.
  ServerConnPtr server_;
  RequestQueue queue_;
  pgwire::MessageCursor client_cursor_;
  pgwire::MessageCursor server_cursor_;
  bool server_fatal_ = false;   // the server sent a FATAL (forwarded): it is about to close
  uint64_t message_count_ = 0;  // client message headers seen (client_message_timeout)
  uint64_t timed_message_ = 0;  // the message the timer runs for
  TimePoint xact_start_{};
  // Query time (SHOW STATS): from the first query sent while none ran to the
  // ReadyForQuery that answers the last one.
  bool query_timing_ = false;
  TimePoint query_start_{};
};

}  // namespace pgwarden::proxy
