// A client session: the state machine from startup through authentication to forwarding.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/fifo.h"
#include "net/event_loop.h"
#include "pgwire/auth.h"
#include "pgwire/message.h"
#include "pgwire/userlist.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"

namespace pgwarden::proxy {

// Where a session is; changed only in SetState().
enum class ClientState {
  kStartup,  // reading the startup packet (or SSLRequest / CancelRequest)
  kLookup,   // waiting for the user's credential (auth_file / auth_query)
  kAuth,     // authentication exchange
  kWelcome,  // authenticated; waiting for a first server login to learn its parameters
  kIdle,     // logged in, no request in flight, no server
  kWaiting,  // has a request and waits for a server connection
  kActive,   // a server connection is attached
  kClosing,  // draining output / resetting the server, then closed
  kClosed,   // done
};
const char* ClientStateName(ClientState s);

// An expected response, in the order the server will answer (extended
// protocol pipelining): what to forward, synthesize or swallow.
enum class Pending : uint8_t {
  kParse,         // client Parse forwarded: ParseComplete ends it
  kBind,          // BindComplete
  kDescribe,      // ParameterDescription? then RowDescription / NoData
  kClose,         // CloseComplete
  kExecute,       // CommandComplete / EmptyQueryResponse / PortalSuspended
  kSync,          // ReadyForQuery
  kQuery,         // simple query / function call: everything up to ReadyForQuery
  kSynthParse,    // Parse skipped (already prepared here): send ParseComplete ourselves
  kSynthClose,    // Close of a statement kept in the server cache: send CloseComplete
  kSwallowParse,  // Parse we injected: drop its ParseComplete
  kSwallowQuery,  // query we injected (SET, reset): drop everything up to ReadyForQuery
  kSynthError,    // an error we answer ourselves (e.g. a statement name already in use)
};

// One client connection. Owned by its Worker (and kept alive by jobs posted
// for it, which hold a shared_ptr); touched only on that worker's thread.
//
// I/O: the client socket and the attached server's socket are registered
// edge-triggered with the worker's loop. Events only note readiness and call
// Pump(), the one place that reads and writes: it flushes output, then reads
// from whichever side may be read (a side is read while what comes from it can
// be passed on), until nothing moves.
class ClientSession final : public net::IoHandler,
                            public std::enable_shared_from_this<ClientSession> {
 public:
  // Takes ownership of the connected, non-blocking socket `fd`.
  ClientSession(Worker& worker, int fd);
  ~ClientSession();
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
  struct Statement {
    std::string server_name;  // proxy-wide name: "pgw_" + hash of the Parse body
    std::string parse_tail;   // Parse body after the statement name (query, types)
  };

  void SetState(ClientState s);
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
  void ServerLost(const char* what);
  bool FlushClient();
  bool FlushServer();
  void Close(const char* why);
  void FinishClose();
  // Startup and authentication.
  void HandleStartupBytes(std::string_view data);
  void HandleStartupPacket(const pgwire::StartupPacket& p);
  void BeginAuth();
  void HandleAuthMessage(char type, std::string_view body);
  void AuthSucceeded();
  void SendWelcome(const std::map<std::string, std::string>& server_params);
  void FailFatal(std::string_view sqlstate, std::string_view message);
  // Forwarding.
  void HandleClientData(std::string_view data);
  void ProcessClientBytes(std::string_view data);
  bool HandleWholeClientMessage(const pgwire::Header& h, std::string_view msg);
  bool StartStreamedClientMessage(char type);
  void StartQueryClock();
  void EnsurePrepared(const Statement& st);
  void ProcessServerBytes(std::string_view data);
  void StartServerMessage(const pgwire::Header& h, std::string_view whole);
  void EmitSynthetic();
  void OnServerError();
  void AttachServer(ServerConnPtr server);
  // Sends what the client has waiting to the attached server.
  void BeginRequest();
  // The answer to server_check_query is in: go on, or try another server.
  void FinishCheck();
  void ApplySessionParameters();
  void RequestServer();
  void MaybeReleaseServer();
  void ReleaseServer(bool broken);
  void HandleAdminQuery(std::string_view sql);
  // Polls Proxy::PauseDone, then sends the PAUSE reply `wire`.
  void AwaitPause(std::string database, std::string wire);
  bool ServerIdleAndClean() const;
  bool ClientOutputPending() const;
  bool ServerOutputPending() const;
  // Arms or disarms the slow-sender timer after client bytes were handled.
  void WatchIncompleteMessage();

  Worker* worker_;  // changes only when the session moves (MoveTo)
  Proxy& proxy_;
  int fd_;  // the client socket (owned)
  std::shared_ptr<ClientInfo> info_;
  ClientState state_ = ClientState::kStartup;
  net::EventLoop::TimerId login_timer_;
  net::EventLoop::TimerId message_timer_;  // only for slow senders

  // Reads go to the worker's buffer and are handled at once: an idle client
  // holds no buffer.
  std::string in_;                  // client bytes not yet processed (only while needed)
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

  // Who and what.
  std::string user_, database_;
  std::vector<std::pair<std::string, std::string>> params_;  // session parameters to keep
  bool admin_ = false;
  bool admin_wait_ = false;  // a PAUSE waits for transactions; nothing else is read meanwhile
  net::EventLoop::TimerId admin_timer_;
  Pool* pool_ = nullptr;
  AuthMethod method_ = AuthMethod::kScram;
  std::optional<pgwire::UserCredential> credential_;
  std::unique_ptr<pgwire::ScramServer> scram_;
  std::string scram_server_key_;
  uint8_t md5_salt_[4] = {0, 0, 0, 0};
  int auth_step_ = 0;

  // Server side.
  ServerConnPtr server_;
  // Fifo, not std::deque: libstdc++'s deque allocates ~600 bytes when it is
  // constructed, for each of these three, in every idle session.
  Fifo<Pending> pending_;
  Fifo<std::string> pending_names_;  // statement names of kParse / kSwallowParse items
  int syncs_ = 0;                    // Query/Sync sent, ReadyForQuery not yet received
  std::unordered_map<std::string, Statement> statements_;
  // Framing state per direction: bytes of the current message still to pass
  // through, and the start of a message split across reads.
  size_t c_skip_ = 0, s_skip_ = 0;
  bool s_drop_ = false;             // the message being skipped is swallowed, not forwarded
  bool c_drop_ = false;             // the client message being skipped is dropped, not forwarded
  bool c_skip_until_sync_ = false;  // after a made-up error, until the client's Sync
  Fifo<std::string> synth_errors_;  // ErrorResponses of kSynthError items
  std::string c_partial_, s_partial_;
  bool release_ready_ = false;
  bool checking_ = false;      // server_check_query is running on the attached server
  bool check_failed_ = false;  // ... and answered with an error
  TimePoint xact_start_{};
  // Query time (SHOW STATS): from the first query sent while none ran to the
  // ReadyForQuery that answers the last one.
  bool query_timing_ = false;
  TimePoint query_start_{};
};

}  // namespace pgwarden::proxy
