// Pool lists, limits and hand-over of server connections to waiting clients.
#include "proxy/pool.h"

#include "common/log.h"

namespace pgwarden::proxy {
namespace {
constexpr const char* kLog = "pool";

int64_t Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}
}  // namespace

Pool::Pool(std::string database, std::string user, DatabaseConfig db, int pool_size,
           int reserve_size, PoolMode mode, int* db_connection_count, std::mutex* db_mu,
           int max_db_connections, Millis server_lifetime, ServerDisposer dispose,
           ServerMover mover, const ParamCatalog* catalog)
    : database_(std::move(database)),
      user_(std::move(user)),
      mode_(mode),
      db_count_(db_connection_count),
      db_mu_(db_mu),
      db_(std::move(db)),
      pool_size_(pool_size),
      reserve_size_(reserve_size),
      max_db_connections_(max_db_connections),
      server_lifetime_(server_lifetime),
      dispose_(std::move(dispose)),
      mover_(std::move(mover)),
      catalog_(catalog) {}

void Pool::ChangeServerStateLocked(ServerConn* s, ServerState to, TimePoint now) {
  if (to == ServerState::kActive) s->lent_since = now;  // also handed from client to client
  if (s->state == to) return;
  if (s->state == ServerState::kActive) {  // off the lent list
    size_t i = s->lent_slot;
    if (i < lent_.size() && lent_[i] == s) {
      lent_[i] = lent_.back();
      lent_[i]->lent_slot = i;
      lent_.pop_back();
    }
  }
  switch (to) {
    case ServerState::kActive:
      s->lent_slot = lent_.size();
      lent_.push_back(s);
      break;
    case ServerState::kIdle:
      s->last_used = now;
      break;
    case ServerState::kClosed: {
      std::lock_guard dl(*db_mu_);
      --*db_count_;
      break;
    }
  }
  s->state = to;
}

void Pool::LearnParamsLocked(ServerConn& s) {
  if (!server_params_)
    server_params_ = std::make_shared<const std::map<std::string, std::string>>(s.login_params);
  if (catalog_ == nullptr) return;
  if (!defaults_) {
    auto d = std::make_shared<ParamDefaults>(static_cast<size_t>(catalog_->size()));
    for (int id = 0; id < catalog_->size(); ++id) {
      auto it = s.login_params.find(catalog_->name(id));
      if (it != s.login_params.end()) (*d)[static_cast<size_t>(id)] = it->second;
    }
    defaults_ = std::move(d);
  }
  // A login that differs from the first (ALTER ROLE ... SET meanwhile):
  // its differences are this server's values.
  s.params.Clear();
  for (int id = 0; id < catalog_->size(); ++id) {
    auto it = s.login_params.find(catalog_->name(id));
    if (it != s.login_params.end())
      s.params.Assign(id, it->second, (*defaults_)[static_cast<size_t>(id)]);
  }
  s.reset_values = s.params;
}

void Pool::Dispose(std::vector<ServerConnPtr>& servers) {
  for (auto& s : servers) {
    if (dispose_)
      dispose_(std::move(s));
    else
      s.reset();
  }
  servers.clear();
}

bool Pool::CanOpenLocked(bool use_reserve) const {
  int total = static_cast<int>(idle_.size() + lent_.size()) + connecting_;
  int limit = pool_size_ + (use_reserve ? reserve_size_ : 0);
  if (total >= limit) return false;
  if (max_db_connections_ > 0) {
    std::lock_guard lock(*db_mu_);
    if (*db_count_ >= max_db_connections_) return false;
  }
  return true;
}

ServerConnPtr Pool::Acquire(int worker, uint64_t client_id, ServerCallback waiter, TimePoint now,
                            bool* open_new) {
  *open_new = false;
  std::vector<ServerConnPtr> dropped;
  ServerConnPtr got;
  {
    std::lock_guard lock(mu_);
    while (!paused_ && !idle_.empty()) {
      // Prefer a server registered with this worker's event loop (no move
      // between threads), then one registered nowhere, most recently used
      // first (warm caches).
      size_t pick = idle_.size() - 1;
      int best = 3;
      for (size_t i = idle_.size(); i-- > 0 && best > 1;) {
        int rank = idle_[i]->home == worker ? 1 : idle_[i]->home < 0 ? 2 : 3;
        if (rank < best) {
          best = rank;
          pick = i;
        }
      }
      ServerConnPtr s = std::move(idle_[pick]);
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(pick));
      // A registered server is watched by its worker, which drops it when
      // PostgreSQL ends the backend while it is idle. One registered nowhere
      // (fresh from login) is checked here with a non-blocking peek.
      if (s->home < 0 && IdleConnectionBroken(s->fd)) {
        LOG_INFO(kLog, "server connection " << s->id << " to " << s->addr
                                            << " was closed while idle; dropping it");
        ChangeServerStateLocked(s.get(), ServerState::kClosed, now);
        dropped.push_back(std::move(s));
        continue;
      }
      ChangeServerStateLocked(s.get(), ServerState::kActive, now);
      got = std::move(s);
      break;
    }
    if (!got) {
      waiters_.push_back({client_id, worker, std::move(waiter), now});
      if (!paused_ && CanOpenLocked(reserve_open_)) {
        ++connecting_;
        std::lock_guard dl(*db_mu_);
        ++*db_count_;
        *open_new = true;
      }
    }
  }
  Dispose(dropped);
  return got;
}

bool Pool::CancelWait(uint64_t client_id) {
  std::lock_guard lock(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->client_id == client_id) {
      waiters_.erase(it);
      return true;
    }
  }
  return false;
}

void Pool::Deliver(std::vector<Handoff>& handoffs) {
  for (auto& h : handoffs) {
    if (mover_) mover_(*h.server, h.worker);
    h.cb(std::move(h.server), Status::Ok());
  }
  handoffs.clear();
}

void Pool::ServeWaiterLocked(ServerConnPtr server, TimePoint now, std::vector<Handoff>* handoffs) {
  Waiter w = std::move(waiters_.front());
  waiters_.pop_front();
  stats_.wait_time_us += Micros(now - w.since);
  ChangeServerStateLocked(server.get(), ServerState::kActive, now);
  handoffs->push_back({std::move(w.cb), std::move(server), w.worker});
}

void Pool::Release(ServerConnPtr server, TimePoint now, bool* open_new) {
  *open_new = false;
  std::vector<Handoff> handoffs;
  std::vector<ServerConnPtr> dropped;
  {
    std::lock_guard lock(mu_);
    if (now - server->created > server_lifetime_) server->broken = true;  // retire it now
    if (server->generation != generation_) server->broken = true;         // RELOAD moved the pool
    if (server->broken) {
      LOG_DEBUG(kLog, "closing server connection " << server->id);
      ChangeServerStateLocked(server.get(), ServerState::kClosed, now);
      dropped.push_back(std::move(server));
      if (!waiters_.empty() && !paused_ && CanOpenLocked(reserve_open_)) {
        ++connecting_;
        std::lock_guard dl(*db_mu_);
        ++*db_count_;
        *open_new = true;
      }
    } else if (!waiters_.empty() && !paused_) {
      server->last_used = now;
      ServeWaiterLocked(std::move(server), now, &handoffs);
    } else {
      ChangeServerStateLocked(server.get(), ServerState::kIdle, now);
      idle_.push_back(std::move(server));
    }
  }
  Dispose(dropped);
  Deliver(handoffs);
}

void Pool::OpenDone(Result<ServerConnPtr> result, TimePoint now, bool* open_new) {
  *open_new = false;
  std::vector<Handoff> handoffs;
  std::vector<ServerCallback> failed;
  Status error;
  {
    std::lock_guard lock(mu_);
    --connecting_;
    if (result.ok()) {
      stats_.server_logins++;
      ServerConnPtr s = std::move(*result);
      s->pool = this;
      s->generation = generation_;
      s->created = now;
      s->last_used = now;
      s->state = ServerState::kIdle;  // born idle (counted since the attempt began)
      LearnParamsLocked(*s);
      if (!waiters_.empty() && !paused_)
        ServeWaiterLocked(std::move(s), now, &handoffs);
      else
        idle_.push_back(std::move(s));
    } else {
      stats_.server_login_failures++;
      {
        std::lock_guard dl(*db_mu_);
        --*db_count_;
      }
      error = result.status();
      // Every client waiting for this pool learns why (PgBouncer: "server login failed").
      for (auto& w : waiters_) failed.push_back(std::move(w.cb));
      waiters_.clear();
    }
  }
  Deliver(handoffs);
  for (auto& cb : failed) cb(nullptr, error);
}

int Pool::Maintain(TimePoint now, const ProxyConfig& cfg) {
  std::vector<ServerCallback> timed_out;
  std::vector<ServerConnPtr> dropped;
  int to_open = 0;
  {
    std::lock_guard lock(mu_);
    // Idle servers past their idle timeout or lifetime.
    for (auto it = idle_.begin(); it != idle_.end();) {
      ServerConn& s = **it;
      bool idle_expired = now - s.last_used > cfg.server_idle_timeout &&
                          static_cast<int>(idle_.size() + lent_.size()) > cfg.min_pool_size;
      bool too_old = now - s.created > cfg.server_lifetime;
      bool broken = IdleConnectionBroken(s.fd);
      if (idle_expired || too_old || broken) {
        LOG_DEBUG(kLog, "closing idle server " << s.id << (broken ? " (closed by server)" : ""));
        ChangeServerStateLocked(&s, ServerState::kClosed, now);
        dropped.push_back(std::move(*it));
        it = idle_.erase(it);
      } else {
        ++it;
      }
    }
    // Waiters past query_wait_timeout get an error; the reserve opens for old ones.
    while (!waiters_.empty() && now - waiters_.front().since > cfg.query_wait_timeout) {
      timed_out.push_back(std::move(waiters_.front().cb));
      waiters_.pop_front();
    }
    if (!waiters_.empty() && reserve_size_ > 0 &&
        now - waiters_.front().since > cfg.reserve_pool_timeout && !reserve_open_) {
      LOG_INFO(kLog, "pool " << database_ << "/" << user_ << ": opening the reserve pool");
      reserve_open_ = true;
    }
    if (waiters_.empty()) reserve_open_ = false;
    // Enough connections opening for the waiters, and min_pool_size.
    int total = static_cast<int>(idle_.size() + lent_.size()) + connecting_;
    int want = std::max<int>(static_cast<int>(waiters_.size()) - connecting_, 0);
    if (has_credentials_ && total < cfg.min_pool_size)
      want = std::max(want, cfg.min_pool_size - total);
    while (!paused_ && want > 0 && CanOpenLocked(reserve_open_)) {
      ++connecting_;
      std::lock_guard dl(*db_mu_);
      ++*db_count_;
      ++to_open;
      --want;
    }
  }
  Dispose(dropped);
  for (auto& cb : timed_out) {
    cb(nullptr, Timeout("query_wait_timeout: no server connection became free in time"));
  }
  return to_open;
}

std::shared_ptr<const std::map<std::string, std::string>> Pool::server_params() const {
  std::lock_guard lock(mu_);
  return server_params_;
}

std::shared_ptr<const ParamDefaults> Pool::defaults() const {
  std::lock_guard lock(mu_);
  return defaults_;
}

void Pool::SetTarget(ServerTarget target) {
  std::lock_guard lock(mu_);
  target_ = std::move(target);
  has_credentials_ = true;
}

ServerTarget Pool::target() const {
  std::lock_guard lock(mu_);
  return target_;
}

bool Pool::has_credentials() const {
  std::lock_guard lock(mu_);
  return has_credentials_;
}

Pool::Counts Pool::counts(TimePoint now) const {
  std::lock_guard lock(mu_);
  Counts c;
  c.active = static_cast<int>(lent_.size());
  c.idle = static_cast<int>(idle_.size());
  c.connecting = connecting_;
  c.waiting = static_cast<int>(waiters_.size());
  if (!waiters_.empty()) c.max_wait_us = Micros(now - waiters_.front().since);
  return c;
}

std::vector<Pool::ServerInfo> Pool::servers() const {
  std::lock_guard lock(mu_);
  std::vector<ServerInfo> out;
  for (const ServerConn* s : lent_) {
    out.push_back(
        {s->id, s->state, s->addr, s->local_port, s->backend_pid, s->created, s->lent_since});
  }
  for (const auto& s : idle_) {
    out.push_back(
        {s->id, s->state, s->addr, s->local_port, s->backend_pid, s->created, s->last_used});
  }
  return out;
}

void Pool::SetPaused(bool paused) {
  std::vector<Handoff> handoffs;
  {
    std::lock_guard lock(mu_);
    paused_ = paused;
    TimePoint now = std::chrono::steady_clock::now();
    while (!paused_ && !waiters_.empty() && !idle_.empty()) {
      ServerConnPtr s = std::move(idle_.back());
      idle_.pop_back();
      ServeWaiterLocked(std::move(s), now, &handoffs);  // changes its state
    }
  }
  Deliver(handoffs);
}

bool Pool::paused() const {
  std::lock_guard lock(mu_);
  return paused_;
}

void Pool::CloseIdle() {
  std::vector<ServerConnPtr> dropped;
  {
    std::lock_guard lock(mu_);
    TimePoint now = std::chrono::steady_clock::now();
    for (auto& s : idle_) {
      ChangeServerStateLocked(s.get(), ServerState::kClosed, now);
      dropped.push_back(std::move(s));
    }
    idle_.clear();
  }
  Dispose(dropped);
}

DatabaseConfig Pool::db() const {
  std::lock_guard lock(mu_);
  return db_;
}

void Pool::Reconfigure(const DatabaseConfig& db, int pool_size, int reserve_size,
                       int max_db_connections, Millis server_lifetime) {
  std::vector<ServerConnPtr> dropped;
  {
    std::lock_guard lock(mu_);
    bool moved = db.host != db_.host || db.port != db_.port || db.dbname != db_.dbname ||
                 db.user != db_.user || db.password != db_.password;
    bool was_forced = !db_.user.empty();
    db_ = db;
    pool_size_ = pool_size;
    reserve_size_ = reserve_size;
    max_db_connections_ = max_db_connections;
    server_lifetime_ = server_lifetime;
    if (!moved) return;
    ++generation_;
    target_.host = db.host;
    target_.port = db.port;
    target_.database = db.dbname.empty() ? database_ : db.dbname;
    if (!db.user.empty()) {
      target_.user = db.user;
      target_.password = db.password;
      target_.scram_client_key.clear();
      target_.scram_server_key.clear();
    } else if (was_forced) {
      has_credentials_ = false;  // the next client's login tells how to log in as that client
    }
    LOG_INFO(kLog, "pool " << database_ << "/" << user_ << ": now " << db.host << ":" << db.port
                           << "; closing the connections to the old server");
    TimePoint now = std::chrono::steady_clock::now();
    for (auto& s : idle_) {
      ChangeServerStateLocked(s.get(), ServerState::kClosed, now);
      dropped.push_back(std::move(s));
    }
    idle_.clear();
  }
  Dispose(dropped);
}

void Pool::CheckIdle(ServerConn* server) {
  std::vector<ServerConnPtr> dropped;
  {
    std::lock_guard lock(mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->get() != server) continue;
      if (IdleConnectionBroken(server->fd)) {
        LOG_INFO(kLog, "server connection " << server->id << " to " << server->addr
                                            << " was closed while idle; dropping it");
        ChangeServerStateLocked(server, ServerState::kClosed, std::chrono::steady_clock::now());
        dropped.push_back(std::move(*it));
        idle_.erase(it);
      }
      break;
    }
  }
  Dispose(dropped);
}

}  // namespace pgwarden::proxy
