// The proxy process: worker threads with their event loops, listeners, pools, connector and
// janitor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "net/event_loop.h"
#include "net/http_server.h"
#include "pgwire/userlist.h"
#include "proxy/client_state.h"
#include "proxy/pool.h"
#include "proxy/proxy_config.h"
#include "proxy/requests.h"
#include "proxy/session_params.h"
#include "proxy/tls.h"

namespace pgwarden::proxy {

class ClientSession;
class Proxy;

// What the admin console and metrics read about a client; written by its
// worker thread, read by others under `mu`.
struct ClientInfo {
  mutable std::mutex mu;  // guards the fields below `id`
  uint64_t id = 0;
  std::string user, database, application_name;
  std::string addr;
  int port = 0;
  ClientState state = ClientState::kLogin;
  // Why the client keeps its server connection for its whole session (empty:
  // it does not; transaction pooling only).
  std::string pinned;
  TimePoint connect_time;
  TimePoint request_time;
  int32_t cancel_pid = 0, cancel_key = 0;  // what the client got in BackendKeyData
  // The server backend running this client's query now, for CancelRequest.
  std::string server_host;
  uint16_t server_port = 0;
  int32_t server_pid = 0, server_key = 0;
  bool tls = false;
};

// One event loop on one thread, with the client sessions it serves and the
// server connections registered with it. Owned by the Proxy; its sessions and
// registrations are touched only on its thread.
class Worker {
 public:
  Worker(Proxy& proxy, int index);
  ~Worker();
  net::EventLoop& loop() { return loop_; }
  // The configuration as this worker's thread sees it (RELOAD posts a new one).
  const ProxyConfig& config() const { return *cfg_; }
  // The same, to keep beyond the current event (RELOAD may replace it).
  std::shared_ptr<const ProxyConfig> config_ptr() const { return cfg_; }
  void SetConfig(std::shared_ptr<const ProxyConfig> cfg) { cfg_ = std::move(cfg); }
  int index() const { return index_; }
  Proxy& proxy() { return proxy_; }
  // Scratch buffer for reads on this thread (never held across events).
  std::string& scratch() { return scratch_; }
  static constexpr size_t kReadBuffer = 64 * 1024;
  char* read_buffer() { return read_buffer_.get(); }

  [[nodiscard]] Status Init();
  // Binds the listening socket (worker 0 only). Errors: InvalidArgument, Io.
  [[nodiscard]] Status Listen(const config::HostPort& at);
  void Start();
  void StopAccepting();
  void Join();

  // Loop thread: starts a session for an accepted connection.
  void Adopt(int fd);
  // Loop thread: takes over a session another worker let go of.
  void Adopt(std::shared_ptr<ClientSession> session);
  // Loop thread: the session is done; it is freed after the current batch.
  void Forget(ClientSession* session);
  // Loop thread: lets go of a session that moves to another worker.
  std::shared_ptr<ClientSession> Detach(ClientSession* session);
  int session_count() const { return session_count_.load(std::memory_order_relaxed); }
  // CPU time of this worker's thread so far (any thread).
  std::chrono::nanoseconds CpuTime() const;
  // Balancer (any thread): hand up to `count` idle sessions to worker `to`.
  void ShedSessions(int to, int count);
  // Loop thread, for a session that is idle: where it should move (-1: stay).
  int TakeShed();
  // Loop thread: readiness of a registered server connection that no session
  // of ours holds (idle in its pool, or on its way to a client).
  void OnIdleServerIo(ServerConn* server);

 private:
  class Listener : public net::IoHandler {
   public:
    explicit Listener(Worker& w) : w_(w) {}
    void OnIo(uint32_t events) override;
    Worker& w_;
  };
  void AcceptAll();

  Proxy& proxy_;
  const int index_;
  std::shared_ptr<const ProxyConfig> cfg_;  // this thread's copy
  net::EventLoop loop_;
  int listen_fd_ = -1;
  Listener listener_{*this};
  std::thread thread_;
  std::string scratch_;
  std::unique_ptr<char[]> read_buffer_;
  std::unordered_map<ClientSession*, std::shared_ptr<ClientSession>> sessions_;
  std::atomic<int> session_count_{0};
  std::atomic<int> shed_to_{-1};
  std::atomic<int> shed_count_{0};
  clockid_t cpu_clock_{};     // of thread_, set by Start()
  unsigned next_worker_ = 0;  // round robin of accepted connections (worker 0 only)
};

// Owns everything; Run() blocks until shutdown.
class Proxy {
 public:
  Proxy(config::Config cluster, ProxyConfig cfg);
  ~Proxy();

  // Binds the listeners (and metrics), starts threads. Errors: listen failures.
  Status Start();
  // Blocks until Shutdown() or a signal handled by the caller sets it.
  void Wait();
  // Stops accepting, lets transactions finish up to shutdown_timeout, closes.
  void Shutdown();
  // RELOAD / SIGHUP: reads the configuration again (through the reloader, when
  // set) and applies it without dropping clients: auth_file, hba, users, pool
  // sizes and limits, timeouts, databases (a changed server address moves the
  // pool's connections). listen, workers, metrics_listen and TLS keep their
  // values until a restart (a warning says so). On error nothing changes.
  Status Reload();
  // How Reload() gets the new configuration (the proxy command re-reads its file).
  void SetReloader(std::function<Result<ProxyConfig>()> reloader) {
    reloader_ = std::move(reloader);
  }

  // The configuration in effect (any thread; a snapshot).
  std::shared_ptr<const ProxyConfig> config() const {
    std::lock_guard lock(cfg_mu_);
    return cfg_;
  }
  // TLS contexts; null when that side is not configured for TLS.
  const TlsContext* client_tls() const { return client_tls_.get(); }
  const TlsContext* server_tls() const { return server_tls_.get(); }
  Worker& worker(int i) { return *workers_[static_cast<size_t>(i)]; }
  int worker_count() const { return static_cast<int>(workers_.size()); }

  // --- used by sessions (any thread) ---
  // The pool for (database, user), created on first use; nullptr when the
  // database is unknown.
  Pool* FindOrCreatePool(const std::string& database, const std::string& user);
  // Asks the connector thread for a new server connection for `pool`.
  void OpenServer(Pool* pool);
  // Gives a server back to its pool (and opens a replacement if needed).
  // Called on the thread of the worker the server is registered with.
  void ReleaseServer(ServerConnPtr server);
  // Closes a server connection on the thread of the worker it is registered
  // with (so no event of that loop still refers to it). Any thread.
  void DisposeServer(ServerConnPtr server);
  // Before `server` goes to a session of worker `to`: unregisters it from its
  // worker when called on that worker's thread.
  void MoveServer(ServerConn& server, int to);
  // Looks up a user's credential: auth_file, then auth_query (blocking: the
  // callback runs on the connector thread).
  void LookupUser(const std::string& database, const std::string& user,
                  std::function<void(Result<pgwire::UserCredential>)> done);
  // hba: the method for this client.
  AuthMethod MethodFor(const std::string& database, const std::string& user, uint32_t ipv4,
                       bool is_ipv4) const;
  // Admin console access: admin_users may run every command, stats_users
  // only SHOW commands.
  bool IsAdmin(const std::string& user) const;
  bool IsStatsUser(const std::string& user) const;
  // The tracked session parameters (fixed at start).
  const ParamCatalog& params() const { return *params_; }
  // Proxy-wide generations of prepared statement texts.
  StatementRegistry& statements() { return statements_; }
  // The per-process secret behind mock authentication's stable salts.
  const std::string& mock_secret() const { return mock_secret_; }
  // A failed login: user, database, client address and why, rate-limited to
  // kFailedLoginLogsPerSecond lines a second (the rest are counted and
  // reported with the next line that is written).
  void LogFailedLogin(std::string_view user, std::string_view database, std::string_view address,
                      std::string_view why);
  void LogLoginProblem(const std::string& message);
  static constexpr int kFailedLoginLogsPerSecond = 10;

  // Client registry (admin console, cancel, limits).
  std::shared_ptr<ClientInfo> RegisterClient();
  void UnregisterClient(uint64_t id);
  // Forwards a CancelRequest to the backend serving the client that got (pid, key).
  void Cancel(int32_t pid, int32_t key);
  int client_count() const { return client_count_.load(); }
  // A session moved between workers (metrics).
  void NoteSessionMoved() { sessions_moved_.fetch_add(1, std::memory_order_relaxed); }
  // The worker a new client goes to (balancer's choice; -1: round robin).
  int accept_worker() const { return accept_worker_.load(std::memory_order_relaxed); }
  bool shutting_down() const { return shutting_down_.load(); }

  // Admin console commands.
  std::vector<std::shared_ptr<ClientInfo>> Clients() const;
  std::vector<Pool*> Pools() const;
  void PauseAll(const std::string& database, bool paused);
  // True once no pool of `database` ("" : any) that is still paused has a
  // server lent to a client; their idle servers are then closed (PAUSE is
  // for restarting PostgreSQL).
  bool PauseDone(const std::string& database);
  void RequestShutdown();
  std::string MetricsText() const;
  const config::Config& cluster() const { return cluster_; }
  TimePoint started_at() const { return started_at_; }

 private:
  void ConnectorLoop();
  void JanitorTick();
  // Measures each worker's load and applies PlanBalance (on worker 0).
  void BalanceTick();
  void RunOnConnector(std::function<void()> job);

  config::Config cluster_;
  mutable std::mutex cfg_mu_;
  std::shared_ptr<const ProxyConfig> cfg_;  // guarded by cfg_mu_
  std::function<Result<ProxyConfig>()> reloader_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<net::HttpServer> metrics_;
  std::shared_ptr<TlsContext> client_tls_;
  std::shared_ptr<TlsContext> server_tls_;

  mutable std::mutex pools_mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;  // guarded
  std::map<std::string, int> db_connections_;                                   // guarded by db_mu_
  std::mutex db_mu_;

  mutable std::mutex users_mu_;
  std::map<std::string, pgwire::UserCredential> userlist_;  // guarded by users_mu_

  mutable std::mutex clients_mu_;
  std::map<uint64_t, std::shared_ptr<ClientInfo>> clients_;  // guarded by clients_mu_
  std::map<uint64_t, uint64_t> cancel_keys_;                 // (pid<<32|key) → client id; guarded
  std::atomic<uint64_t> next_client_id_{1};
  std::atomic<int> client_count_{0};

  std::mutex connector_mu_;
  std::condition_variable connector_cv_;
  std::deque<std::function<void()>> connector_jobs_;  // guarded by connector_mu_
  bool connector_stop_ = false;                       // guarded by connector_mu_
  std::vector<std::thread> connectors_;

  net::EventLoop::TimerId janitor_;  // on worker 0
  std::atomic<int> accept_worker_{-1};
  std::atomic<uint64_t> sessions_moved_{0};
  // Balancer state (worker 0's thread): CPU time at the last tick, smoothed load.
  std::vector<std::chrono::nanoseconds> last_cpu_;
  std::vector<double> busy_;
  TimePoint last_balance_{};
  // Last measured load per worker, for metrics (any thread).
  std::unique_ptr<std::atomic<double>[]> busy_shown_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<const ParamCatalog> params_;
  StatementRegistry statements_;
  std::string mock_secret_;
  std::mutex login_log_mu_;
  TimePoint login_log_second_{};    // guarded by login_log_mu_
  int login_log_count_ = 0;         // guarded by login_log_mu_
  uint64_t login_log_dropped_ = 0;  // guarded by login_log_mu_
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;  // guarded by done_mu_
  TimePoint started_at_;
};

}  // namespace pgwarden::proxy
