// The proxy: workers and listeners, the connector threads, the janitor, the client registry.
#include "proxy/proxy.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <sstream>

#include "common/log.h"
#include "proxy/client.h"

namespace pgwarden::proxy {
namespace asio = boost::asio;
namespace {
constexpr const char* kLog = "proxy";
}  // namespace

// ---------------------------------------------------------------- Worker

Worker::Worker(Proxy& proxy, int index) : proxy_(proxy), index_(index) {}

Status Worker::Listen(const config::HostPort& at) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(at.host == "*" ? "0.0.0.0" : at.host, ec);
  if (ec) {
    asio::ip::tcp::resolver r(ioc_);
    auto res = r.resolve(at.host, std::to_string(at.port), ec);
    if (ec || res.empty()) return InvalidArgument("cannot resolve proxy.listen host " + at.host);
    addr = res.begin()->endpoint().address();
  }
  asio::ip::tcp::endpoint ep(addr, at.port);
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(ioc_);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(4096, ec);
  if (ec) return IoError("cannot listen on " + at.ToString() + ": " + ec.message());
  return Status::Ok();
}

void Worker::Accept() {
  if (!acceptor_ || !acceptor_->is_open()) return;
  // One listening socket (no SO_REUSEPORT: a second proxy on the same port
  // must fail to start, not silently share the clients); accepted
  // connections are dealt to the workers in turn.
  acceptor_->async_accept(ioc_, [this](boost::system::error_code ec, asio::ip::tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec && !proxy_.shutting_down()) {
      Worker& target = proxy_.worker(next_worker_++ % proxy_.worker_count());
      if (&target == this) {
        std::make_shared<ClientSession>(*this, std::move(s))->Start();
      } else {
        boost::system::error_code pe;
        auto proto = s.local_endpoint(pe).protocol();
        int fd = s.release();
        asio::post(target.ioc(), [&target, fd, proto] {
          asio::ip::tcp::socket sock(target.ioc());
          boost::system::error_code e;
          sock.assign(proto, fd, e);
          if (e) {
            ::close(fd);
            return;
          }
          std::make_shared<ClientSession>(target, std::move(sock))->Start();
        });
      }
    } else if (ec) {
      LOG_WARN(kLog, "accept: " << ec.message());
    }
    Accept();
  });
}

void Worker::Start() {
  scratch_.reserve(64 * 1024);
  Accept();
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(ioc_);
    ioc_.run();
  });
}

void Worker::StopAccepting() {
  asio::post(ioc_, [this] {
    boost::system::error_code ec;
    if (acceptor_) acceptor_->close(ec);
  });
}

void Worker::Join() {
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------- Proxy

Proxy::Proxy(config::Config cluster, ProxyConfig cfg)
    : cluster_(std::move(cluster)), cfg_(std::move(cfg)) {}

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
  // Sessions still referenced by pending handlers go with the io_contexts.
  workers_.clear();
}

Status Proxy::Start() {
  started_at_ = std::chrono::steady_clock::now();
  if (!cfg_.auth_file.empty()) {
    auto users = pgwire::LoadUserListFile(cfg_.auth_file);
    if (!users.ok()) return users.status();
    std::lock_guard lock(users_mu_);
    userlist_ = std::move(*users);
  }
  if (cfg_.client_tls.sslmode != "disable") {
    auto t = TlsContext::ForClients(cfg_.client_tls);
    if (!t.ok()) return t.status();
    client_tls_ = *t;
  }
  if (cfg_.server_tls.sslmode != "disable") {
    auto t = TlsContext::ForServers(cfg_.server_tls);
    if (!t.ok()) return t.status();
    server_tls_ = *t;
  }
  int n = cfg_.workers > 0 ? cfg_.workers
                           : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>(*this, i));
  PGW_RETURN_IF_ERROR(workers_[0]->Listen(cfg_.listen));
  if (cfg_.metrics_listen) {
    net::HttpServerOptions o;
    o.host = cfg_.metrics_listen->host;
    o.port = cfg_.metrics_listen->port;
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
  janitor_ = std::make_unique<asio::steady_timer>(workers_[0]->ioc());
  JanitorTick();
  LOG_INFO(kLog, "listening on " << cfg_.listen.ToString() << " with " << n << " worker thread(s), "
                                 << PoolModeName(cfg_.pool_mode) << " pooling");
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
  if (shutting_down_.exchange(true)) return;
  LOG_INFO(kLog, "shutting down: no new clients; waiting up to "
                     << cfg_.shutdown_timeout.count() / 1000 << " s for transactions to finish");
  for (auto& w : workers_) w->StopAccepting();
  auto deadline = std::chrono::steady_clock::now() + cfg_.shutdown_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool busy = false;
    {
      std::lock_guard lock(clients_mu_);
      for (const auto& [id, c] : clients_) {
        std::lock_guard l(c->mu);
        busy = busy || c->state == "active" || c->state == "waiting";
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

Status Proxy::Reload() {
  if (!cfg_.auth_file.empty()) {
    auto users = pgwire::LoadUserListFile(cfg_.auth_file);
    if (!users.ok()) return users.status();
    std::lock_guard lock(users_mu_);
    userlist_ = std::move(*users);
  }
  LOG_INFO(kLog, "reloaded auth_file");
  return Status::Ok();
}

Pool* Proxy::FindOrCreatePool(const std::string& database, const std::string& user) {
  std::lock_guard lock(pools_mu_);
  auto key = std::make_pair(database, user);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  auto db = cfg_.databases.find(database);
  if (db == cfg_.databases.end()) db = cfg_.databases.find("*");
  if (db == cfg_.databases.end()) return nullptr;
  DatabaseConfig d = db->second;
  if (d.dbname.empty()) d.dbname = database;
  int size = d.pool_size.value_or(cfg_.default_pool_size);
  PoolMode mode = d.pool_mode.value_or(cfg_.pool_mode);
  auto pool = std::make_unique<Pool>(database, user, d, size, cfg_.reserve_pool_size, mode,
                                     &db_connections_[database], &db_mu_, cfg_.max_db_connections,
                                     cfg_.server_lifetime);
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
  RunOnConnector([this, pool] {
    ServerTarget t = pool->target();
    auto r =
        LoginServer(t, cfg_.server_connect_timeout, server_tls_.get(), cfg_.server_tls.sslmode);
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

void Proxy::LookupUser(const std::string& database, const std::string& user,
                       std::function<void(Result<pgwire::UserCredential>)> done) {
  {
    std::lock_guard lock(users_mu_);
    if (auto it = userlist_.find(user); it != userlist_.end()) {
      pgwire::UserCredential c = it->second;
      done(c);
      return;
    }
  }
  if (cfg_.auth_user.empty() || database == "pgwarden") {
    done(NotFound("unknown user " + user));
    return;
  }
  auto db = cfg_.databases.find(database);
  if (db == cfg_.databases.end()) db = cfg_.databases.find("*");
  ServerTarget t;
  t.host = db->second.host;
  t.port = db->second.port;
  t.database = db->second.dbname.empty() ? database : db->second.dbname;
  t.user = cfg_.auth_user;
  {
    std::lock_guard lock(users_mu_);
    if (auto it = userlist_.find(cfg_.auth_user); it != userlist_.end())
      t.password = it->second.value;
  }
  RunOnConnector([this, t, user, done = std::move(done)] {
    auto r = LookupCredential(t, cfg_.auth_query, user, cfg_.server_connect_timeout);
    if (!r.ok()) {
      done(r.status());
      return;
    }
    done(pgwire::ClassifyCredential(*r));
  });
}

AuthMethod Proxy::MethodFor(const std::string& database, const std::string& user, uint32_t ipv4,
                            bool is_ipv4) const {
  if (cfg_.hba.empty()) return cfg_.auth_type;
  auto matches = [](const std::vector<std::string>& list, const std::string& v) {
    for (const auto& x : list) {
      if (x == "all" || x == v) return true;
    }
    return false;
  };
  for (const auto& r : cfg_.hba) {
    if (r.local) continue;  // unix sockets are not served
    if (!matches(r.databases, database) || !matches(r.users, user)) continue;
    if (!r.any_address && (!is_ipv4 || (ipv4 & r.mask) != r.addr)) continue;
    return r.method;
  }
  return AuthMethod::kReject;
}

bool Proxy::IsAdmin(const std::string& user) const {
  for (const auto& u : cfg_.admin_users) {
    if (u == user) return true;
  }
  return false;
}

bool Proxy::IsStatsUser(const std::string& user) const {
  for (const auto& u : cfg_.stats_users) {
    if (u == user) return true;
  }
  return false;
}

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
    if (c->state != "active") return;  // nothing running: nothing to cancel
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

void Proxy::JanitorTick() {
  if (shutting_down_) return;
  auto now = std::chrono::steady_clock::now();
  for (auto* p : Pools()) {
    int n = p->Maintain(now, cfg_);
    for (int i = 0; i < n; ++i) OpenServer(p);
  }
  janitor_->expires_after(std::chrono::seconds(1));
  janitor_->async_wait([this](boost::system::error_code ec) {
    if (!ec) JanitorTick();
  });
}

std::string Proxy::MetricsText() const {
  std::ostringstream m;
  auto now = std::chrono::steady_clock::now();
  std::map<std::string, int> states;
  for (const auto& c : Clients()) {
    std::lock_guard l(c->mu);
    states[c->state]++;
  }
  m << "# HELP pgwarden_proxy_clients Client connections by state.\n"
    << "# TYPE pgwarden_proxy_clients gauge\n";
  for (const char* s : {"login", "idle", "waiting", "active"}) {
    m << "pgwarden_proxy_clients{state=\"" << s << "\"} " << states[s] << "\n";
  }
  m << "# HELP pgwarden_proxy_servers Server connections by pool and state.\n"
    << "# TYPE pgwarden_proxy_servers gauge\n";
  std::ostringstream xact, query, recv, sent, wait, waiting;
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
  }
  m << "# TYPE pgwarden_proxy_transactions_total counter\n"
    << xact.str() << "# TYPE pgwarden_proxy_queries_total counter\n"
    << query.str() << "# TYPE pgwarden_proxy_received_bytes_total counter\n"
    << recv.str() << "# TYPE pgwarden_proxy_sent_bytes_total counter\n"
    << sent.str() << "# TYPE pgwarden_proxy_wait_seconds_total counter\n"
    << wait.str() << "# TYPE pgwarden_proxy_waiting_clients gauge\n"
    << waiting.str();
  return m.str();
}

}  // namespace pgwarden::proxy
