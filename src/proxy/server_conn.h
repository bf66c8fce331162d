// A logged-in connection to a PostgreSQL server, and the blocking login that makes one.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>

#include "common/clock.h"
#include "common/status.h"
#include "net/event_loop.h"
#include "proxy/session_params.h"
#include "proxy/tls.h"

namespace pgwarden::proxy {

class ClientSession;
class Pool;
class Worker;

// Where and as whom to log in.
struct ServerTarget {
  std::string host;
  uint16_t port = 0;
  std::string database;
  std::string user;
  // One of: a plain password, or a SCRAM ClientKey + ServerKey (pass-through
  // of a client's SCRAM proof), or nothing (trust).
  std::string password;
  std::string scram_client_key;
  std::string scram_server_key;
};

// Where a server connection is; changed only by Pool::ChangeServerStateLocked(),
// which keeps the pool's lists and counts in step.
enum class ServerState : uint8_t {
  kIdle,    // in its pool's idle list, owned by the pool
  kActive,  // lent to a client session, which owns it
  kClosed,  // dropped: closed on the thread of the worker it is registered with
};
const char* ServerStateName(ServerState s);

// State of a server connection: owned by its Pool while idle and by one client
// session while lent. Only the thread of the owner touches it; the fields
// `id`, `addr`, `local_port`, `backend_pid`, `backend_key` and `created` do not
// change after login and may be read by anyone who can reach it.
//
// Once used, it stays registered with the event loop of one worker (`home`),
// also while idle, so that a server that closes while idle is noticed; it
// moves to another worker only through that worker's thread.
struct ServerConn final : net::IoHandler {
  ~ServerConn();
  // Loop thread of `home`: to the session holding it, else to the worker.
  void OnIo(uint32_t events) override;

  uint64_t id = 0;
  int fd = -1;                       // owned: closed in the destructor
  int home = -1;                     // the worker whose loop it is registered with; -1: none
  Worker* worker = nullptr;          // that worker
  ClientSession* session = nullptr;  // the session on `worker` holding it
  uint32_t missed_events = 0;        // readiness seen while no session held it
  Pool* pool = nullptr;
  int32_t backend_pid = 0;
  int32_t backend_key = 0;
  ServerState state = ServerState::kIdle;  // guarded by the pool's mutex while in the pool
  // At login: every reported parameter and the unreported tracked ones.
  std::map<std::string, std::string> login_params;
  // The tracked parameters where this session differs from the pool's
  // defaults (kept by the session holding it).
  ParamSet params;
  // Where its RESET leads: its login values relative to the pool's defaults
  // (empty but for a login after ALTER ROLE / DATABASE … SET). Fixed at login.
  ParamSet reset_values;
  uint64_t last_client = 0;                  // the client that used it last (0: none yet)
  std::unordered_set<std::string> prepared;  // proxy statement names prepared here
  TimePoint created;
  TimePoint last_used;
  bool used = false;        // has served a client (fresh logins are not checked)
  uint64_t generation = 0;  // the pool's generation at login (guarded by the pool's mutex)
  size_t lent_slot = 0;     // index in the pool's list of lent servers (guarded by its mutex)
  TimePoint lent_since;     // guarded by the pool's mutex
  char txn_status = 'I';    // last ReadyForQuery status
  bool broken = false;      // do not reuse
  std::string addr;         // "host:port"
  std::string host;         // the same, apart (for cancel requests)
  uint16_t port = 0;
  int local_port = 0;
  std::unique_ptr<TlsStream> tls;  // TLS session with the server, when negotiated
};

using ServerConnPtr = std::unique_ptr<ServerConn>;

// Connects and logs in, blocking, within `timeout`. The returned connection's
// fd is non-blocking. PgUnavailable with the server's message on failure.
// With `tls` (sslmode allow/prefer/require/verify-*), TLS is asked for first;
// "require" and "verify-*" fail when the server declines it.
// After the login the unreported parameters of `catalog` are read into
// login_params (one more round trip). No application_name is sent: clients
// that set none see the server's default.
Result<ServerConnPtr> LoginServer(const ServerTarget& target, std::chrono::milliseconds timeout,
                                  const TlsContext* tls = nullptr,
                                  const std::string& sslmode = "disable",
                                  const ParamCatalog* catalog = nullptr);

// Sends a CancelRequest for (pid, key) to host:port (blocking, bounded).
Status SendCancel(const std::string& host, uint16_t port, int32_t pid, int32_t key,
                  std::chrono::milliseconds timeout);

// Runs auth_query as `target` and returns the stored password / secret of
// `user`, or NotFound.
Result<std::string> LookupCredential(const ServerTarget& target, const std::string& query,
                                     const std::string& user, std::chrono::milliseconds timeout);

// True when the idle connection's socket shows it was closed or has unexpected
// input (the server sent something while idle: a termination notice).
bool IdleConnectionBroken(int fd);

}  // namespace pgwarden::proxy
