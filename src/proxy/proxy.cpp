// The proxy: workers and listeners, the connector threads, the janitor, the client registry.
#include "proxy/proxy.h"

#include <netdb.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/log.h"
#include "proxy/balance.h"
#include "proxy/client.h"

namespace pgwarden::proxy {
namespace {
constexpr const char* kLog = "proxy";
}  // namespace

// ---------------------------------------------------------------- Worker

Worker::Worker(Proxy& proxy, int index) : proxy_(proxy), index_(index) {}

Worker::~Worker() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

Status Worker::Init() {
  cfg_ = proxy_.config();
  scratch_.reserve(64 * 1024);
  read_buffer_ = std::make_unique<char[]>(kReadBuffer);
  return loop_.Init();
}

Status Worker::Listen(const config::HostPort& at) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string host = at.host == "*" ? "0.0.0.0" : at.host;
  std::string port = std::to_string(at.port);
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res)
    return InvalidArgument("cannot resolve proxy.listen host " + at.host + ": " +
                           ::gai_strerror(rc));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  std::string error;
  if (fd < 0)
    error = std::strerror(errno);
  else if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
           ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 4096) != 0)
    error = std::strerror(errno);
  ::freeaddrinfo(res);
  if (!error.empty()) {
    if (fd >= 0) ::close(fd);
    return IoError("cannot listen on " + at.ToString() + ": " + error);
  }
  listen_fd_ = fd;
  return loop_.Add(listen_fd_, &listener_);
}

void Worker::Listener::OnIo(uint32_t /*events*/) { w_.AcceptAll(); }

void Worker::AcceptAll() {
  // One listening socket (no SO_REUSEPORT: a second proxy on the same port
  // must fail to start, not silently share the clients); accepted
  // connections are dealt to the workers in turn. Edge-triggered: accept
  // until the queue is empty.
  for (int i = 0; i < 1024 && listen_fd_ >= 0; ++i) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // Out of descriptors or memory: retry shortly rather than spin.
        LOG_WARN(kLog, "accept: " << std::strerror(errno));
        loop_.After(std::chrono::milliseconds(100), [this] { AcceptAll(); });
      }
      return;
    }
    if (proxy_.shutting_down()) {
      ::close(fd);
      continue;
    }
    int to = proxy_.accept_worker();
    if (to < 0) to = static_cast<int>(next_worker_++ % proxy_.worker_count());
    Worker& target = proxy_.worker(to);
    if (&target == this)
      Adopt(fd);
    else
      target.loop().Post([&target, fd] { target.Adopt(fd); });
  }
  // More than a batch waiting: go on after the other events (unless the
  // listener was closed meanwhile).
  if (listen_fd_ >= 0) loop_.Post([this] { AcceptAll(); });
}

void Worker::Adopt(int fd) {
  auto session = std::make_shared<ClientSession>(*this, fd);
  sessions_.emplace(session.get(), session);
  session_count_.fetch_add(1, std::memory_order_relaxed);
  session->Start();
}

void Worker::Adopt(std::shared_ptr<ClientSession> session) {
  ClientSession* s = session.get();
  sessions_.emplace(s, std::move(session));
  session_count_.fetch_add(1, std::memory_order_relaxed);
  s->Arrive(*this);
}

void Worker::Forget(ClientSession* session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  loop_.Retire(std::move(it->second));
  sessions_.erase(it);
  session_count_.fetch_sub(1, std::memory_order_relaxed);
}

std::shared_ptr<ClientSession> Worker::Detach(ClientSession* session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return nullptr;
  auto s = std::move(it->second);
  sessions_.erase(it);
  session_count_.fetch_sub(1, std::memory_order_relaxed);
  return s;
}

std::chrono::nanoseconds Worker::CpuTime() const {
  timespec ts{};
  if (::clock_gettime(cpu_clock_, &ts) != 0) return std::chrono::nanoseconds(0);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

void Worker::ShedSessions(int to, int count) {
  shed_to_.store(to, std::memory_order_relaxed);
  shed_count_.store(count, std::memory_order_release);
}

int Worker::TakeShed() {
  if (shed_count_.load(std::memory_order_acquire) <= 0) return -1;
  if (shed_count_.fetch_sub(1, std::memory_order_acq_rel) <= 0) return -1;
  int to = shed_to_.load(std::memory_order_relaxed);
  return to == index_ ? -1 : to;
}

void Worker::OnIdleServerIo(ServerConn* server) {
  if (server->pool) server->pool->CheckIdle(server);
}

void Worker::Start() {
  thread_ = std::thread([this] { loop_.Run(); });
  if (::pthread_getcpuclockid(thread_.native_handle(), &cpu_clock_) != 0)
    cpu_clock_ = CLOCK_THREAD_CPUTIME_ID;  // unreachable on Linux; reads the caller's own
}

void Worker::StopAccepting() {
  loop_.Post([this] {
    if (listen_fd_ < 0) return;
    loop_.Remove(listen_fd_, &listener_);
    ::close(listen_fd_);
    listen_fd_ = -1;
  });
}

void Worker::Join() {
  loop_.Stop();
  if (thread_.joinable()) thread_.join();
}

void ServerConn::OnIo(uint32_t events) {
  if (session != nullptr) {
    session->OnServerIo(events);
    return;
  }
  // Idle in its pool, or on its way to a session of this worker: the session
  // looks at what was missed when it takes the server.
  missed_events |= events;
  if (worker != nullptr) worker->OnIdleServerIo(this);
}

// ---------------------------------------------------------------- Proxy

Proxy::Proxy(config::Config cluster, ProxyConfig cfg)
    : cluster_(std::move(cluster)),
      cfg_(std::make_shared<const ProxyConfig>(std::move(cfg))),
      params_(std::make_unique<const ParamCatalog>(cfg_->track_extra_parameters)) {
  unsigned char secret[32];
  RAND_bytes(secret, sizeof secret);
  mock_secret_.assign(reinterpret_cast<const char*>(secret), sizeof secret);
}

Proxy::~Proxy() {
  {
    std::lock_guard lock(connector_mu_);
    connector_stop_ = true;
  }
  connector_cv_.notify_all();
  for (auto& t : connectors_) {
    if (t.joinable()) t.join();
  }
  for (auto& w : workers_) w->Join();
  if (metrics_) metrics_->Stop();
  // Sessions (and the servers they hold) go with their workers.
  workers_.clear();
}

Status Proxy::Start() {
  auto cfg = config();
  started_at_ = std::chrono::steady_clock::now();
  if (!cfg->auth_file.empty()) {
    auto users = pgwire::LoadUserListFile(cfg->auth_file);
    if (!users.ok()) return users.status();
    std::lock_guard lock(users_mu_);
    userlist_ = std::move(*users);
  }
  if (cfg->client_tls.sslmode != "disable") {
    auto t = TlsContext::ForClients(cfg->client_tls);
    if (!t.ok()) return t.status();
    client_tls_ = *t;
  }
  if (cfg->server_tls.sslmode != "disable") {
    auto t = TlsContext::ForServers(cfg->server_tls);
    if (!t.ok()) return t.status();
    server_tls_ = *t;
  }
  int n = cfg->workers > 0 ? cfg->workers
                           : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(*this, i));
    PGW_RETURN_IF_ERROR(workers_.back()->Init());
  }
  busy_shown_ = std::make_unique<std::atomic<double>[]>(workers_.size());
  PGW_RETURN_IF_ERROR(workers_[0]->Listen(cfg->listen));
  if (cfg->metrics_listen) {
    net::HttpServerOptions o;
    o.host = cfg->metrics_listen->host;
    o.port = cfg->metrics_listen->port;
    metrics_ = std::make_unique<net::HttpServer>(o, [this](const net::HttpRequest& req) {
      net::HttpResponse r;
      if (req.path != "/metrics") {
        r.status = 404;
        r.body = "try /metrics\n";
        r.content_type = "text/plain";
        return r;
      }
      r.content_type = "text/plain; version=0.0.4";
      r.body = MetricsText();
      return r;
    });
    PGW_RETURN_IF_ERROR(metrics_->Start());
  }
  for (int i = 0; i < 2; ++i) connectors_.emplace_back([this] { ConnectorLoop(); });
  for (auto& w : workers_) w->Start();
  workers_[0]->loop().Post([this] { JanitorTick(); });
  if (n > 1 && cfg->worker_busy > 0) {
    accept_worker_ = 0;
    workers_[0]->loop().Post([this] { BalanceTick(); });
  }
  LOG_INFO(kLog, "listening on " << cfg->listen.ToString() << " with " << n << " worker thread(s), "
                                 << PoolModeName(cfg->pool_mode) << " pooling");
  return Status::Ok();
}

void Proxy::Wait() {
  std::unique_lock lock(done_mu_);
  done_cv_.wait(lock, [this] { return done_; });
}

void Proxy::RequestShutdown() {
  std::thread([this] { Shutdown(); }).detach();
}

void Proxy::Shutdown() {
  auto cfg = config();
  if (shutting_down_.exchange(true)) return;
  LOG_INFO(kLog, "shutting down: no new clients; waiting up to "
                     << cfg->shutdown_timeout.count() / 1000 << " s for transactions to finish");
  for (auto& w : workers_) w->StopAccepting();
  auto deadline = std::chrono::steady_clock::now() + cfg->shutdown_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool busy = false;
    {
      std::lock_guard lock(clients_mu_);
      for (const auto& [id, c] : clients_) {
        std::lock_guard l(c->mu);
        busy = busy || c->state == ClientState::kActive || c->state == ClientState::kPreparing ||
               c->state == ClientState::kWaiting || c->state == ClientState::kResetting;
      }
    }
    if (!busy) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto* p : Pools()) p->CloseIdle();
  {
    std::lock_guard lock(done_mu_);
    done_ = true;
  }
  done_cv_.notify_all();
}

namespace {
bool SameTls(const TlsConfig& a, const TlsConfig& b) {
  return a.sslmode == b.sslmode && a.cert_file == b.cert_file && a.key_file == b.key_file &&
         a.ca_file == b.ca_file;
}
bool SameHostPort(const config::HostPort& a, const config::HostPort& b) {
  return a.host == b.host && a.port == b.port;
}
}  // namespace

Status Proxy::Reload() {
  std::shared_ptr<const ProxyConfig> old = config();
  ProxyConfig fresh = *old;
  if (reloader_) {
    auto r = reloader_();
    if (!r.ok()) return r.status();
    fresh = std::move(*r);
  }
  // What the running process cannot change keeps its value, with a warning.
  auto keep = [&](bool same, const char* key) {
    if (!same) LOG_WARN(kLog, "proxy." << key << " changed: it takes effect after a restart");
  };
  keep(SameHostPort(fresh.listen, old->listen), "listen");
  fresh.listen = old->listen;
  keep(fresh.workers == old->workers, "workers");
  fresh.workers = old->workers;
  keep(fresh.metrics_listen.has_value() == old->metrics_listen.has_value() &&
           (!fresh.metrics_listen || SameHostPort(*fresh.metrics_listen, *old->metrics_listen)),
       "metrics_listen");
  fresh.metrics_listen = old->metrics_listen;
  keep(SameTls(fresh.client_tls, old->client_tls), "client_tls");
  fresh.client_tls = old->client_tls;
  keep(SameTls(fresh.server_tls, old->server_tls), "server_tls");
  fresh.server_tls = old->server_tls;
  keep(fresh.track_extra_parameters == old->track_extra_parameters, "track_extra_parameters");
  fresh.track_extra_parameters = old->track_extra_parameters;

  std::map<std::string, pgwire::UserCredential> users;
  if (!fresh.auth_file.empty()) {
    auto loaded = pgwire::LoadUserListFile(fresh.auth_file);
    if (!loaded.ok()) return loaded.status();
    users = std::move(*loaded);
  }
  auto cfg = std::make_shared<const ProxyConfig>(std::move(fresh));
  {
    std::lock_guard lock(users_mu_);
    userlist_ = std::move(users);
  }
  {
    std::lock_guard lock(cfg_mu_);
    cfg_ = cfg;
  }
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->loop().Post([worker, cfg] { worker->SetConfig(cfg); });
  }
  // Existing pools take the new limits and server address; a database that
  // is gone serves its clients until they leave (new clients are refused).
  for (auto* p : Pools()) {
    auto db = cfg->databases.find(p->database());
    if (db == cfg->databases.end()) db = cfg->databases.find("*");
    if (db == cfg->databases.end()) continue;
    DatabaseConfig d = db->second;
    if (d.dbname.empty()) d.dbname = p->database();
    p->Reconfigure(d, d.pool_size.value_or(cfg->default_pool_size), cfg->reserve_pool_size,
                   cfg->max_db_connections, cfg->server_lifetime);
  }
  LOG_INFO(kLog, "reloaded the configuration");
  return Status::Ok();
}

Pool* Proxy::FindOrCreatePool(const std::string& database, const std::string& user) {
  auto cfg = config();
  std::lock_guard lock(pools_mu_);
  auto key = std::make_pair(database, user);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  auto db = cfg->databases.find(database);
  if (db == cfg->databases.end()) db = cfg->databases.find("*");
  if (db == cfg->databases.end()) return nullptr;
  DatabaseConfig d = db->second;
  if (d.dbname.empty()) d.dbname = database;
  int size = d.pool_size.value_or(cfg->default_pool_size);
  PoolMode mode = d.pool_mode.value_or(cfg->pool_mode);
  auto pool = std::make_unique<Pool>(
      database, user, d, size, cfg->reserve_pool_size, mode, &db_connections_[database], &db_mu_,
      cfg->max_db_connections, cfg->server_lifetime,
      [this](ServerConnPtr s) { DisposeServer(std::move(s)); },
      [this](ServerConn& s, int to) { MoveServer(s, to); }, params_.get());
  Pool* p = pool.get();
  pools_[key] = std::move(pool);
  return p;
}

void Proxy::RunOnConnector(std::function<void()> job) {
  {
    std::lock_guard lock(connector_mu_);
    connector_jobs_.push_back(std::move(job));
  }
  connector_cv_.notify_one();
}

void Proxy::ConnectorLoop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(connector_mu_);
      connector_cv_.wait(lock, [this] { return connector_stop_ || !connector_jobs_.empty(); });
      if (connector_stop_) return;
      job = std::move(connector_jobs_.front());
      connector_jobs_.pop_front();
    }
    job();
  }
}

void Proxy::OpenServer(Pool* pool) {
  auto cfg = config();
  RunOnConnector([this, pool, cfg] {
    ServerTarget t = pool->target();
    auto r = LoginServer(t, cfg->server_connect_timeout, server_tls_.get(), cfg->server_tls.sslmode,
                         params_.get());
    if (!r.ok()) {
      LOG_WARN(kLog, "server login to " << t.host << ":" << t.port << " as " << t.user
                                        << " failed: " << r.status().message());
    }
    bool again = false;
    pool->OpenDone(std::move(r), std::chrono::steady_clock::now(), &again);
    if (again) OpenServer(pool);
  });
}

void Proxy::ReleaseServer(ServerConnPtr server) {
  Pool* pool = server->pool;
  bool open_new = false;
  pool->Release(std::move(server), std::chrono::steady_clock::now(), &open_new);
  if (open_new) OpenServer(pool);
}

void Proxy::DisposeServer(ServerConnPtr server) {
  if (!server) return;
  if (server->home < 0 || workers_.empty()) return;  // registered nowhere: closed here
  Worker& w = *workers_[static_cast<size_t>(server->home)];
  if (w.loop().InLoopThread()) {
    // Events of this batch for it are dropped by Remove().
    w.loop().Remove(server->fd, server.get());
    return;
  }
  auto holder = std::make_shared<ServerConnPtr>(std::move(server));
  w.loop().Post([&w, holder] { w.loop().Remove((*holder)->fd, holder->get()); });
}

void Proxy::MoveServer(ServerConn& server, int to) {
  if (server.home < 0 || server.home == to || workers_.empty()) return;
  Worker& w = *workers_[static_cast<size_t>(server.home)];
  if (!w.loop().InLoopThread()) return;  // the receiving session asks that thread
  w.loop().Remove(server.fd, &server);
  server.home = -1;
  server.worker = nullptr;
}

void Proxy::LookupUser(const std::string& database, const std::string& user,
                       std::function<void(Result<pgwire::UserCredential>)> done) {
  auto cfg = config();
  {
    std::lock_guard lock(users_mu_);
    if (auto it = userlist_.find(user); it != userlist_.end()) {
      pgwire::UserCredential c = it->second;
      done(c);
      return;
    }
  }
  if (cfg->auth_user.empty() || database == "pgwarden") {
    done(NotFound("unknown user " + user));
    return;
  }
  auto db = cfg->databases.find(database);
  if (db == cfg->databases.end()) db = cfg->databases.find("*");
  if (db == cfg->databases.end()) {
    done(NotFound("no database " + database));
    return;
  }
  ServerTarget t;
  t.host = db->second.host;
  t.port = db->second.port;
  t.database = db->second.dbname.empty() ? database : db->second.dbname;
  t.user = cfg->auth_user;
  {
    std::lock_guard lock(users_mu_);
    if (auto it = userlist_.find(cfg->auth_user); it != userlist_.end())
      t.password = it->second.value;
  }
  RunOnConnector([cfg, t, user, done = std::move(done)] {
    auto r = LookupCredential(t, cfg->auth_query, user, cfg->server_connect_timeout);
    if (!r.ok()) {
      done(r.status());
      return;
    }
    done(pgwire::ClassifyCredential(*r));
  });
}

AuthMethod Proxy::MethodFor(const std::string& database, const std::string& user, uint32_t ipv4,
                            bool is_ipv4) const {
  auto cfg = config();
  if (cfg->hba.empty()) return cfg->auth_type;
  auto matches = [](const std::vector<std::string>& list, const std::string& v) {
    for (const auto& x : list) {
      if (x == "all" || x == v) return true;
    }
    return false;
  };
  for (const auto& r : cfg->hba) {
    if (r.local) continue;  // unix sockets are not served
    if (!matches(r.databases, database) || !matches(r.users, user)) continue;
    if (!r.any_address && (!is_ipv4 || (ipv4 & r.mask) != r.addr)) continue;
    return r.method;
  }
  return AuthMethod::kReject;
}

bool Proxy::IsAdmin(const std::string& user) const {
  auto cfg = config();
  for (const auto& u : cfg->admin_users) {
    if (u == user) return true;
  }
  return false;
}

bool Proxy::IsStatsUser(const std::string& user) const {
  auto cfg = config();
  for (const auto& u : cfg->stats_users) {
    if (u == user) return true;
  }
  return false;
}

void Proxy::LogFailedLogin(std::string_view user, std::string_view database,
                           std::string_view address, std::string_view why) {
  uint64_t dropped = 0;
  {
    std::lock_guard lock(login_log_mu_);
    TimePoint now = std::chrono::steady_clock::now();
    if (now - login_log_second_ >= std::chrono::seconds(1)) {
      login_log_second_ = now;
      login_log_count_ = 0;
    }
    if (login_log_count_ >= kFailedLoginLogsPerSecond) {
      ++login_log_dropped_;
      return;
    }
    ++login_log_count_;
    dropped = login_log_dropped_;
    login_log_dropped_ = 0;
  }
  LOG_WARN(kLog,
           "failed login: user \""
               << user << "\" database \"" << database << "\" from " << address << ": " << why
               << (dropped ? " (and " + std::to_string(dropped) + " more failed logins not logged)"
                           : std::string()));
}

void Proxy::LogLoginProblem(const std::string& message) { LOG_WARN(kLog, message); }

std::shared_ptr<ClientInfo> Proxy::RegisterClient() {
  auto info = std::make_shared<ClientInfo>();
  info->id = next_client_id_++;
  std::lock_guard lock(clients_mu_);
  for (;;) {
    int32_t kv[2];
    RAND_bytes(reinterpret_cast<unsigned char*>(kv), sizeof kv);
    uint64_t k =
        (static_cast<uint64_t>(static_cast<uint32_t>(kv[0])) << 32) | static_cast<uint32_t>(kv[1]);
    if (cancel_keys_.count(k)) continue;
    info->cancel_pid = kv[0] & 0x7fffffff;
    info->cancel_key = kv[1];
    k = (static_cast<uint64_t>(static_cast<uint32_t>(info->cancel_pid)) << 32) |
        static_cast<uint32_t>(kv[1]);
    cancel_keys_[k] = info->id;
    break;
  }
  clients_[info->id] = info;
  ++client_count_;
  return info;
}

void Proxy::UnregisterClient(uint64_t id) {
  std::lock_guard lock(clients_mu_);
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  uint64_t k = (static_cast<uint64_t>(static_cast<uint32_t>(it->second->cancel_pid)) << 32) |
               static_cast<uint32_t>(it->second->cancel_key);
  cancel_keys_.erase(k);
  clients_.erase(it);
  --client_count_;
}

void Proxy::Cancel(int32_t pid, int32_t key) {
  std::string host;
  uint16_t port = 0;
  int32_t spid = 0, skey = 0;
  {
    std::lock_guard lock(clients_mu_);
    uint64_t k =
        (static_cast<uint64_t>(static_cast<uint32_t>(pid)) << 32) | static_cast<uint32_t>(key);
    auto it = cancel_keys_.find(k);
    if (it == cancel_keys_.end()) {
      LOG_DEBUG(kLog, "cancel request for an unknown key");
      return;
    }
    auto& c = clients_[it->second];
    std::lock_guard l(c->mu);
    if (c->state != ClientState::kActive) return;  // nothing running: nothing to cancel
    host = c->server_host;
    port = c->server_port;
    spid = c->server_pid;
    skey = c->server_key;
  }
  if (spid == 0) return;
  RunOnConnector([host, port, spid, skey] {
    Status st = SendCancel(host, port, spid, skey, std::chrono::seconds(5));
    if (!st.ok()) LOG_WARN(kLog, "forwarding a cancel request failed: " << st.message());
  });
}

std::vector<std::shared_ptr<ClientInfo>> Proxy::Clients() const {
  std::lock_guard lock(clients_mu_);
  std::vector<std::shared_ptr<ClientInfo>> out;
  for (const auto& [id, c] : clients_) out.push_back(c);
  return out;
}

std::vector<Pool*> Proxy::Pools() const {
  std::lock_guard lock(pools_mu_);
  std::vector<Pool*> out;
  for (const auto& [k, p] : pools_) out.push_back(p.get());
  return out;
}

void Proxy::PauseAll(const std::string& database, bool paused) {
  for (auto* p : Pools()) {
    if (database.empty() || p->database() == database) p->SetPaused(paused);
  }
}

bool Proxy::PauseDone(const std::string& database) {
  auto now = std::chrono::steady_clock::now();
  std::vector<Pool*> paused;
  for (auto* p : Pools()) {
    if (!database.empty() && p->database() != database) continue;
    if (!p->paused()) continue;  // resumed meanwhile: nothing to wait for
    if (p->counts(now).active > 0) return false;
    paused.push_back(p);
  }
  for (auto* p : paused) p->CloseIdle();
  return true;
}

void Proxy::JanitorTick() {
  if (shutting_down_) return;
  auto cfg = config();
  auto now = std::chrono::steady_clock::now();
  for (auto* p : Pools()) {
    int n = p->Maintain(now, *cfg);
    for (int i = 0; i < n; ++i) OpenServer(p);
  }
  janitor_ = workers_[0]->loop().After(std::chrono::seconds(1), [this] { JanitorTick(); });
}

void Proxy::BalanceTick() {
  auto cfg = config();
  if (shutting_down_) return;
  const size_t n = workers_.size();
  TimePoint now = std::chrono::steady_clock::now();
  if (last_cpu_.size() != n) {
    last_cpu_.assign(n, std::chrono::nanoseconds(0));
    busy_.assign(n, 0.0);
    for (size_t i = 0; i < n; ++i) last_cpu_[i] = workers_[i]->CpuTime();
  } else {
    double interval = std::chrono::duration<double>(now - last_balance_).count();
    std::vector<WorkerLoad> loads(n);
    for (size_t i = 0; i < n; ++i) {
      auto cpu = workers_[i]->CpuTime();
      double used = std::chrono::duration<double>(cpu - last_cpu_[i]).count();
      last_cpu_[i] = cpu;
      // Smoothed over about two intervals: one noisy interval moves nothing.
      busy_[i] = 0.5 * busy_[i] + 0.5 * (interval > 0 ? used / interval : 0);
      busy_shown_[i].store(busy_[i], std::memory_order_relaxed);
      loads[i] = {busy_[i], workers_[i]->session_count()};
    }
    BalancePlan plan = PlanBalance(loads, cfg->worker_busy);
    accept_worker_.store(plan.accept_to, std::memory_order_relaxed);
    for (const auto& m : plan.moves) {
      LOG_DEBUG(kLog, "balancer: moving up to " << m.count << " idle client(s) from worker "
                                                << m.from << " to worker " << m.to);
      workers_[static_cast<size_t>(m.from)]->ShedSessions(m.to, m.count);
    }
  }
  last_balance_ = now;
  workers_[0]->loop().After(std::chrono::milliseconds(250), [this] { BalanceTick(); });
}

std::string Proxy::MetricsText() const {
  std::ostringstream m;
  auto now = std::chrono::steady_clock::now();
  std::map<std::string, int> states;
  for (const auto& c : Clients()) {
    std::lock_guard l(c->mu);
    states[ClientStateName(c->state)]++;
  }
  m << "# HELP pgwarden_proxy_clients Client connections by state.\n"
    << "# TYPE pgwarden_proxy_clients gauge\n";
  for (const char* s : {"login", "idle", "waiting", "active"}) {
    m << "pgwarden_proxy_clients{state=\"" << s << "\"} " << states[s] << "\n";
  }
  m << "# HELP pgwarden_proxy_worker_clients Client connections served by each worker thread.\n"
    << "# TYPE pgwarden_proxy_worker_clients gauge\n";
  for (const auto& w : workers_) {
    m << "pgwarden_proxy_worker_clients{worker=\"" << w->index() << "\"} " << w->session_count()
      << "\n";
  }
  m << "# HELP pgwarden_proxy_worker_moves_total Idle clients moved between worker threads by "
       "the balancer.\n"
    << "# TYPE pgwarden_proxy_worker_moves_total counter\n"
    << "pgwarden_proxy_worker_moves_total " << sessions_moved_.load() << "\n";
  if (busy_shown_) {
    m << "# HELP pgwarden_proxy_worker_busy_ratio Share of one core each worker thread used "
         "lately (measured when balancing is on).\n"
      << "# TYPE pgwarden_proxy_worker_busy_ratio gauge\n";
    for (const auto& w : workers_) {
      m << "pgwarden_proxy_worker_busy_ratio{worker=\"" << w->index() << "\"} "
        << busy_shown_[static_cast<size_t>(w->index())].load(std::memory_order_relaxed) << "\n";
    }
  }
  m << "# HELP pgwarden_proxy_servers Server connections by pool and state.\n"
    << "# TYPE pgwarden_proxy_servers gauge\n";
  std::ostringstream xact, query, recv, sent, wait, waiting, pinned;
  for (auto* p : Pools()) {
    auto c = p->counts(now);
    std::string labels = "database=\"" + p->database() + "\",user=\"" + p->user() + "\"";
    m << "pgwarden_proxy_servers{" << labels << ",state=\"active\"} " << c.active << "\n"
      << "pgwarden_proxy_servers{" << labels << ",state=\"idle\"} " << c.idle << "\n"
      << "pgwarden_proxy_servers{" << labels << ",state=\"login\"} " << c.connecting << "\n";
    auto& st = p->stats();
    xact << "pgwarden_proxy_transactions_total{" << labels << "} " << st.xact_count.load() << "\n";
    query << "pgwarden_proxy_queries_total{" << labels << "} " << st.query_count.load() << "\n";
    recv << "pgwarden_proxy_received_bytes_total{" << labels << "} " << st.bytes_received.load()
         << "\n";
    sent << "pgwarden_proxy_sent_bytes_total{" << labels << "} " << st.bytes_sent.load() << "\n";
    wait << "pgwarden_proxy_wait_seconds_total{" << labels << "} " << st.wait_time_us.load() / 1e6
         << "\n";
    waiting << "pgwarden_proxy_waiting_clients{" << labels << "} " << c.waiting << "\n";
    pinned << "pgwarden_proxy_pinned_clients{" << labels << "} " << st.pinned.load() << "\n";
  }
  m << "# TYPE pgwarden_proxy_transactions_total counter\n"
    << xact.str() << "# TYPE pgwarden_proxy_queries_total counter\n"
    << query.str() << "# TYPE pgwarden_proxy_received_bytes_total counter\n"
    << recv.str() << "# TYPE pgwarden_proxy_sent_bytes_total counter\n"
    << sent.str() << "# TYPE pgwarden_proxy_wait_seconds_total counter\n"
    << wait.str() << "# TYPE pgwarden_proxy_waiting_clients gauge\n"
    << waiting.str()
    << "# HELP pgwarden_proxy_pinned_clients Transaction-pooled clients holding their server "
       "connection for their whole session (state the proxy cannot carry).\n"
    << "# TYPE pgwarden_proxy_pinned_clients gauge\n"
    << pinned.str();
  return m.str();
}

}  // namespace pgwarden::proxy
