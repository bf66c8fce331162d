// One pool of server connections per (database, user), shared by all worker threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "proxy/proxy_config.h"
#include "proxy/server_conn.h"

namespace pgwarden::proxy {

class ClientSession;

// Counters of a pool (PgBouncer's SHOW STATS); updated with relaxed atomics.
struct PoolStats {
  std::atomic<uint64_t> xact_count{0};
  std::atomic<uint64_t> query_count{0};
  std::atomic<uint64_t> bytes_received{0};  // from clients
  std::atomic<uint64_t> bytes_sent{0};      // to clients
  std::atomic<uint64_t> xact_time_us{0};
  std::atomic<uint64_t> query_time_us{0};
  std::atomic<uint64_t> wait_time_us{0};
  std::atomic<uint64_t> server_logins{0};
  std::atomic<uint64_t> server_login_failures{0};
  // Transaction pooling: clients holding their server for their whole
  // session now (state the proxy cannot carry), and how many ever did.
  std::atomic<int64_t> pinned{0};
  std::atomic<uint64_t> pinned_total{0};
};

// What a waiting client is handed: a server, or the reason there is none.
using ServerCallback = std::function<void(ServerConnPtr server, Status error)>;
// Takes the server connections a pool closes, to close them on the right thread.
using ServerDisposer = std::function<void(ServerConnPtr server)>;
// Told before a server goes to a waiter of worker `to` (it may unregister the
// server from its current worker when called on that worker's thread).
using ServerMover = std::function<void(ServerConn& server, int to)>;

// The pool's lists and limits; every method is thread-safe (one mutex).
// Servers are handed to waiters through `deliver`, which posts to the
// waiter's own thread.
class Pool {
 public:
  Pool(std::string database, std::string user, DatabaseConfig db, int pool_size, int reserve_size,
       PoolMode mode, int* db_connection_count, std::mutex* db_mu, int max_db_connections,
       Millis server_lifetime = std::chrono::hours(1), ServerDisposer dispose = nullptr,
       ServerMover mover = nullptr, const ParamCatalog* catalog = nullptr);

  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }
  // The database entry this pool serves (a copy: RELOAD may change it).
  DatabaseConfig db() const;
  PoolMode mode() const { return mode_; }
  PoolStats& stats() { return stats_; }

  // Takes an idle server now (preferring one registered with `worker`, then
  // one registered nowhere), or queues `waiter` and returns nullptr. `client_id` identifies the
  // waiter. When a new connection is needed, `*open_new` is set: the caller asks the connector for
  // one (Pool::OpenDone reports back).
  ServerConnPtr Acquire(int worker, uint64_t client_id, ServerCallback waiter, TimePoint now,
                        bool* open_new);
  // Removes a queued waiter (its client went away); true if it was queued.
  bool CancelWait(uint64_t client_id);
  // Gives a server back: to the first waiter, else to the idle list. A
  // broken or expired server is closed instead (and a replacement opened for
  // waiters: *open_new).
  void Release(ServerConnPtr server, TimePoint now, bool* open_new);
  // A connection attempt finished.
  void OpenDone(Result<ServerConnPtr> result, TimePoint now, bool* open_new);

  // Janitor work: closes idle servers past idle timeout / lifetime, fails
  // waiters past query_wait_timeout, lets the reserve pool open for waiters
  // older than reserve_pool_timeout, tops up min_pool_size. Returns how many
  // new connections to open.
  int Maintain(TimePoint now, const ProxyConfig& cfg);

  // What the first login reported (every reported parameter and the
  // unreported tracked ones), for new clients' welcome; and the tracked
  // parameters' values by id, which every server's and client's ParamSet is
  // relative to. Null until a server has logged in.
  std::shared_ptr<const std::map<std::string, std::string>> server_params() const;
  std::shared_ptr<const ParamDefaults> defaults() const;
  void SetTarget(ServerTarget target);
  ServerTarget target() const;
  bool has_credentials() const;

  // For SHOW POOLS / SHOW SERVERS.
  struct Counts {
    int active = 0, idle = 0, connecting = 0, waiting = 0;
    int64_t max_wait_us = 0;
  };
  Counts counts(TimePoint now) const;
  struct ServerInfo {
    uint64_t id;
    ServerState state;
    std::string addr;
    int local_port;
    int32_t pid;
    TimePoint connect_time;
    TimePoint last_used;
  };
  std::vector<ServerInfo> servers() const;
  // PAUSE/RESUME: while paused no server is handed out.
  void SetPaused(bool paused);
  bool paused() const;
  // Closes every idle connection (SHUTDOWN, PAUSE).
  void CloseIdle();
  // RELOAD: new limits apply at once; a changed server address, database or
  // forced user applies to new connections, and the servers logged in with
  // the old ones are closed (idle ones now, lent ones when given back).
  void Reconfigure(const DatabaseConfig& db, int pool_size, int reserve_size,
                   int max_db_connections, Millis server_lifetime);
  // A registered idle server showed readiness (its home worker's thread):
  // if it is still idle and was closed or sent something, it is dropped.
  void CheckIdle(ServerConn* server);

 private:
  struct Waiter {
    uint64_t client_id;
    int worker;
    ServerCallback cb;
    TimePoint since;
  };
  bool CanOpenLocked(bool use_reserve) const;
  // The one place a server's state changes: it keeps lent_ and the database's
  // connection count in step (the idle list holds the idle ones by ownership:
  // the caller moves the pointer in or out of idle_).
  void ChangeServerStateLocked(ServerConn* s, ServerState to, TimePoint now);
  // The first login fixes the pool's parameter defaults.
  void LearnParamsLocked(ServerConn& s);
  void Dispose(std::vector<ServerConnPtr>& servers);
  // Hands `server` to the first waiter (lock held; the callback runs after unlock).
  struct Handoff {
    ServerCallback cb;
    ServerConnPtr server;
    int worker;
  };
  void ServeWaiterLocked(ServerConnPtr server, TimePoint now, std::vector<Handoff>* handoffs);
  void Deliver(std::vector<Handoff>& handoffs);

  const std::string database_, user_;
  const PoolMode mode_;  // fixed for the pool's life (RELOAD applies pool_mode to new pools)
  int* const db_count_;  // connections to this database over all pools; guarded by *db_mu_
  std::mutex* const db_mu_;
  // Settings RELOAD changes; guarded by mu_.
  DatabaseConfig db_;
  int pool_size_, reserve_size_;
  int max_db_connections_;
  Millis server_lifetime_;        // older servers are closed when given back
  uint64_t generation_ = 0;       // bumped when db_'s server side changes
  const ServerDisposer dispose_;  // null: closed where they are dropped
  const ServerMover mover_;       // may be null
  PoolStats stats_;

  mutable std::mutex mu_;
  std::deque<ServerConnPtr> idle_;  // guarded by mu_; most recently used at the back
  // Servers lent to clients (each knows its index here); guarded by mu_. Only
  // their fields fixed at login, and lent_since, are read through it.
  std::vector<ServerConn*> lent_;
  int connecting_ = 0;                                                       // guarded by mu_
  bool reserve_open_ = false;                                                // guarded by mu_
  bool paused_ = false;                                                      // guarded by mu_
  std::deque<Waiter> waiters_;                                               // guarded by mu_
  const ParamCatalog* const catalog_;                                        // may be null (tests)
  std::shared_ptr<const std::map<std::string, std::string>> server_params_;  // guarded by mu_
  std::shared_ptr<const ParamDefaults> defaults_;                            // guarded by mu_
  ServerTarget target_;                                                      // guarded by mu_
  bool has_credentials_ = false;                                             // guarded by mu_
};

}  // namespace pgwarden::proxy
