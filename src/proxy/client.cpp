// Client sessions: I/O, the state machine, and lending servers without carrying state between
// clients.
#include "proxy/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace pgwarden::proxy {
namespace {

constexpr const char* kLog = "client";
constexpr uint32_t kMaxServerMessage = 1u << 30;

bool ValidFrontendType(char t) {
  switch (t) {
    case 'B':
    case 'C':
    case 'c':
    case 'd':
    case 'D':
    case 'E':
    case 'f':
    case 'F':
    case 'H':
    case 'P':
    case 'Q':
    case 'S':
    case 'X':
      return true;
    default:
      return false;
  }
}

int64_t Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

bool IsFatal(const std::map<char, std::string>& f) {
  auto it = f.find('V');  // not localized (PostgreSQL 9.6+)
  if (it == f.end()) it = f.find('S');
  return it != f.end() && (it->second == "FATAL" || it->second == "PANIC");
}

const char* ProxyQueryName(ProxyQueryKind k) {
  switch (k) {
    case ProxyQueryKind::kCheck:
      return "server_check_query";
    case ProxyQueryKind::kParams:
      return "setting of session parameters";
    case ProxyQueryKind::kReadback:
      return "reading of session parameters";
    case ProxyQueryKind::kReset:
      return "server_reset_query";
    case ProxyQueryKind::kDiscardSequences:
      return "DISCARD SEQUENCES";
  }
  return "query";
}

}  // namespace

const char* ClientStateName(ClientState s) {
  switch (s) {
    case ClientState::kLogin:
    case ClientState::kSetup:
      return "login";
    case ClientState::kIdle:
      return "idle";
    case ClientState::kWaiting:
      return "waiting";
    case ClientState::kPreparing:
    case ClientState::kActive:
      return "active";
    case ClientState::kResetting:
    case ClientState::kClosing:
      return "closing";
    case ClientState::kClosed:
      return "closed";
  }
  return "?";
}

ClientSession::ClientSession(Worker& worker, int fd)
    : worker_(&worker),
      proxy_(worker.proxy()),
      fd_(fd),
      params_(worker.proxy().params()),
      queue_(*this, worker.proxy().statements()),
      client_cursor_(worker.config().max_packet_size),
      server_cursor_(kMaxServerMessage) {}

ClientSession::~ClientSession() {
  if (fd_ >= 0) ::close(fd_);
  if (info_) proxy_.UnregisterClient(info_->id);
  if (pins_ != 0 && pool_) pool_->stats().pinned.fetch_sub(1, std::memory_order_relaxed);
}

void ClientSession::Start() {
  info_ = proxy_.RegisterClient();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ClientAddress address;
  char host[INET6_ADDRSTRLEN] = "";
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      address.port = ntohs(a->sin_port);
      address.is_ipv4 = true;
      address.ipv4 = a->sin_addr.s_addr;
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      address.port = ntohs(a->sin6_port);
    }
  }
  address.host = host;
  {
    std::lock_guard lock(info_->mu);
    info_->addr = address.host;
    info_->port = address.port;
    info_->state = ClientState::kLogin;
    info_->connect_time = std::chrono::steady_clock::now();
    info_->request_time = info_->connect_time;
  }
  login_ = std::make_unique<ClientLogin>(proxy_, worker_->config_ptr(), std::move(address), false);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (Status st = worker_->loop().Add(fd_, this); !st.ok()) {
    LOG_WARN(kLog, "client " << info_->id << ": " << st.message());
    SetState(ClientState::kClosed);
    worker_->Forget(this);
    return;
  }
  if (proxy_.client_count() > worker_->config().max_client_conn) {
    FailFatal("53300", "no more connections allowed (max_client_conn)");
    Pump();
    return;
  }
  login_timer_ =
      worker_->loop().After(worker_->config().client_login_timeout, [w = weak_from_this()] {
        auto self = w.lock();
        if (!self || self->state_ != ClientState::kLogin) return;
        self->login_timer_ = {};
        self->FailFatal("08P01", "authentication timeout: the client did not log in in time");
        self->Pump();
      });
}

void ClientSession::SetState(ClientState s) {
  if (state_ == s) return;
  state_ = s;
  if (s != ClientState::kLogin) worker_->loop().Cancel(login_timer_);
  std::lock_guard lock(info_->mu);
  info_->state = s;
  if (s == ClientState::kWaiting || s == ClientState::kActive)
    info_->request_time = std::chrono::steady_clock::now();
}

// ---------------------------------------------------------------- I/O

void ClientSession::OnIo(uint32_t events) {
  if (state_ == ClientState::kClosed) return;
  if (events & EPOLLOUT) client_writable_ = true;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) client_readable_ = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) client_hup_ = true;
  Pump();
}

void ClientSession::OnServerIo(uint32_t events) {
  if (state_ == ClientState::kClosed || !server_) return;
  if (events & EPOLLOUT) server_writable_ = true;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) server_readable_ = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) server_hup_ = true;
  Pump();
}

bool ClientSession::ClientMayRead() const {
  // Read on only while what we read can be passed on.
  switch (state_) {
    case ClientState::kLogin:
      if (login_ == nullptr) return false;
      break;
    case ClientState::kIdle:
    case ClientState::kActive:
      break;
    default:  // waiting for a server or for our own queries, or leaving
      return false;
  }
  if (admin_ && admin_->pausing()) return false;
  // What the last transaction's SET / RESET left is being read back: the
  // client's next statement waits for its parameters to be settled.
  if (server_ &&
      (restore_barrier_ || queue_.retrying() || queue_.Awaiting(ProxyQueryKind::kReadback)))
    return false;
  return !client_eof_ && !client_done_ && !ServerOutputPending() &&
         !(ClientOutputPending() && !server_);
}

void ClientSession::Pump() {
  if (pumping_) {  // called again from inside: the loop below goes round once more
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  // Bounded: a busy pair of sockets yields to the loop's other events and
  // continues in a posted job.
  bool more = false;
  for (int round = 0; state_ != ClientState::kClosed; ++round) {
    if (round == 64) {
      more = true;
      break;
    }
    pump_again_ = false;
    bool moved = false;
    if (ClientOutputPending() && client_writable_) moved |= FlushClient();
    if (server_ && ServerOutputPending() && server_writable_) moved |= FlushServer();
    if (server_ && server_readable_ && !ClientOutputPending()) moved |= ReadServer();
    if (state_ == ClientState::kClosed) break;
    if (client_readable_ && ClientMayRead()) moved |= ReadClient();
    if (state_ == ClientState::kClosing && !server_ && (!ClientOutputPending() || client_eof_)) {
      FinishClose();
      break;
    }
    // After the answers to its last requests; once every Sync and Query has
    // been answered nothing more will come from the server either.
    if (client_done_ && state_ != ClientState::kClosing && state_ != ClientState::kResetting &&
        (!server_ || (queue_.syncs() == 0 && in_.empty()))) {
      Close("client closed the connection");
      continue;
    }
    if (!moved && !pump_again_) break;
  }
  pumping_ = false;
  if (more && !pump_posted_) {
    pump_posted_ = true;
    worker_->loop().Post([self = shared_from_this()] {
      self->pump_posted_ = false;
      self->Pump();
    });
    return;
  }
  if (Movable()) {
    int to = worker_->TakeShed();
    if (to >= 0) MoveTo(proxy_.worker(to));
  }
}

bool ClientSession::Movable() const {
  return state_ == ClientState::kIdle && !server_ && !pumping_ && !pump_posted_ &&
         !(admin_ && admin_->pausing()) && in_.empty() && !ClientOutputPending() &&
         !ServerOutputPending() && fd_ >= 0;
}

void ClientSession::MoveTo(Worker& to) {
  // Nothing else refers to an idle session: no timer, no pool waiter, no
  // queued job. Unregistered here, it is registered there by that thread.
  Worker& from = *worker_;
  from.loop().Remove(fd_, this);
  std::shared_ptr<ClientSession> self = from.Detach(this);
  if (!self) return;
  worker_ = &to;
  proxy_.NoteSessionMoved();
  to.loop().Post([self] { self->worker_->Adopt(self); });
}

void ClientSession::Arrive(Worker& worker) {
  worker_ = &worker;
  if (Status st = worker_->loop().Add(fd_, this); !st.ok()) {
    LOG_WARN(kLog, "client " << info_->id << ": " << st.message());
    client_eof_ = true;
    Close("cannot register the connection");
  }
  Pump();
}

bool ClientSession::ReadClient() {
  char* buf = worker_->read_buffer();
  const size_t cap = Worker::kReadBuffer;
  ssize_t n = ::recv(fd_, buf, cap, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      client_readable_ = false;
      return false;
    }
    if (errno == EINTR) return true;
    client_eof_ = true;
    Close("client read error");
    return true;
  }
  if (n == 0) {
    client_done_ = true;
    client_readable_ = false;
    // Requests it sent whole, up to a Sync or a Query, still get their
    // answers, as from PostgreSQL itself (the client may have closed only its
    // sending side); then the session closes (Pump). A message cut off by
    // the close, or requests after the last Sync (the server would wait for
    // more), end it at once. Before its startup packet it just goes.
    if (server_ && queue_.EndsWithSync() && !client_cursor_.InMessage() && !queue_.batch_open())
      return true;
    client_eof_ = true;
    Close("client closed the connection");
    return true;
  }
  // A short read drained the socket, unless the peer has closed: then the
  // end of stream is still to be read and no new edge will say so.
  if (static_cast<size_t>(n) < cap && !client_hup_) client_readable_ = false;
  if (pool_)
    pool_->stats().bytes_received.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  std::string_view data(buf, static_cast<size_t>(n));
  std::string plain;
  if (tls_) {
    Status st = tls_->Feed(data, &plain, &client_raw_);
    if (!st.ok() || tls_->closed()) {
      // After a close_notify the client is gone; after an error the TLS
      // alert in client_raw_ is still worth sending.
      if (!st.ok()) LOG_INFO(kLog, "client " << info_->id << ": " << st.message());
      client_eof_ = st.ok();
      Close(st.ok() ? "client closed the TLS session" : "client TLS error");
      return true;
    }
    data = plain;
  }
  if (state_ == ClientState::kLogin)
    HandleLoginBytes(data);
  else if (admin_)
    HandleAdminBytes(data);
  else
    HandleClientData(data);
  return true;
}

void ClientSession::ServerLost(const std::string& what) {
  if (!server_fatal_)
    LOG_WARN(kLog, "server connection " << server_->id << " to " << server_->addr << ": " << what);
  const bool mid_request = !queue_.empty();
  // Inside a transaction the client would otherwise COMMIT on a new server
  // what was lost with this one.
  const bool in_transaction = server_->txn_status != 'I';
  const bool was_pinned = pinned();
  const ClientState was = state_;
  ReleaseServer(true);
  switch (was) {
    case ClientState::kResetting:
      SetState(ClientState::kClosing);  // Pump finishes the close
      return;
    case ClientState::kPreparing:
    case ClientState::kSetup:
      // Lost while our own queries ran: nothing of the client's was sent. It
      // gets another server.
      if (was == ClientState::kPreparing) SetState(ClientState::kWaiting);
      RequestServer();
      return;
    default:
      break;
  }
  if (state_ == ClientState::kClosing || state_ == ClientState::kClosed) return;
  // The backend that held the client's session or its transaction is gone:
  // the client is told once (the server's own FATAL, forwarded, is enough)
  // and closed, as a direct connection would be. Between transactions in
  // transaction pooling the loss is the pool's business, not the client's.
  if (mid_request || in_transaction || was_pinned || server_fatal_) {
    if (!server_fatal_)
      pgwire::AppendErrorResponse(
          out_, "FATAL", "08006",
          "server connection lost" + (mid_request      ? " while running the request (" + what + ")"
                                      : in_transaction ? " inside a transaction (" + what + ")"
                                                       : " (" + what + ")"));
    Close("server connection lost");
  }
}

bool ClientSession::ReadServer() {
  char* buf = worker_->read_buffer();
  const size_t cap = Worker::kReadBuffer;
  ssize_t n = ::recv(server_->fd, buf, cap, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      server_readable_ = false;
      return false;
    }
    if (errno == EINTR) return true;
    ServerLost(std::strerror(errno));
    return true;
  }
  if (n == 0) {
    ServerLost("closed by the server");
    return true;
  }
  if (static_cast<size_t>(n) < cap && !server_hup_) server_readable_ = false;  // drained
  std::string_view data(buf, static_cast<size_t>(n));
  std::string plain;
  if (server_->tls) {
    Status st = server_->tls->Feed(data, &plain, &srv_raw_);
    if (!st.ok() || server_->tls->closed()) {
      ServerLost(std::string("TLS ") + (st.ok() ? "closed" : st.message()));
      return true;
    }
    data = plain;
  }
  ProcessServerBytes(data);
  if (server_ && ShouldRelease()) ReleaseServer(false);
  return true;
}

bool ClientSession::FlushClient() {
  if (state_ == ClientState::kClosed) return false;
  if (tls_ && !out_.empty()) {
    if (!tls_->Encrypt(out_, &client_raw_).ok()) {
      out_.clear();
      client_eof_ = true;
      Close("client TLS error");
      return true;
    }
    out_.clear();
  }
  std::string& wire = tls_ ? client_raw_ : out_;
  if (wire.empty()) return false;
  ssize_t n = ::send(fd_, wire.data(), wire.size(), MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      client_writable_ = false;
      return false;
    }
    if (errno == EINTR) return true;
    out_.clear();
    client_raw_.clear();
    client_eof_ = true;
    Close("client write error");
    return true;
  }
  if (pool_)
    pool_->stats().bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  if (static_cast<size_t>(n) < wire.size()) {
    client_writable_ = false;  // the socket buffer is full: wait for EPOLLOUT
    wire.erase(0, static_cast<size_t>(n));
  } else {
    wire.clear();
    wire.shrink_to_fit();  // idle clients hold no buffer
  }
  return true;
}

bool ClientSession::FlushServer() {
  if (!server_) return false;
  if (server_->tls && !srv_out_.empty()) {
    if (!server_->tls->Encrypt(srv_out_, &srv_raw_).ok()) srv_raw_.clear();
    srv_out_.clear();
  }
  std::string& wire = server_->tls ? srv_raw_ : srv_out_;
  if (wire.empty()) return false;
  ssize_t n = ::send(server_->fd, wire.data(), wire.size(), MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      server_writable_ = false;
      return false;
    }
    if (errno == EINTR) return true;
    ServerLost(std::strerror(errno));
    return true;
  }
  if (static_cast<size_t>(n) < wire.size()) {
    server_writable_ = false;
    wire.erase(0, static_cast<size_t>(n));
  } else {
    wire.clear();
    wire.shrink_to_fit();
  }
  return true;
}

void ClientSession::Close(const char* why) {
  if (state_ == ClientState::kClosed || state_ == ClientState::kClosing) return;
  if (state_ == ClientState::kResetting) {  // the reset went wrong: the server is closed
    ReleaseServer(true);
    SetState(ClientState::kClosing);
    return;
  }
  LOG_DEBUG(kLog, "closing client " << info_->id << ": " << why);
  if (state_ == ClientState::kWaiting || state_ == ClientState::kSetup) {
    if (pool_) pool_->CancelWait(info_->id);
  }
  if (server_) {
    const bool clean = ServerIdleAndClean() && state_ == ClientState::kActive;
    if (clean && pinned() && !admin_) {
      // It held the server for its session: reset it before anyone else
      // gets it (it goes back when the reset answers, or is closed if the
      // reset fails). Without a reset query it is closed, and so it is when
      // the client did what a reset does not undo, or what the proxy could
      // not see into.
      const std::string& reset = worker_->config().server_reset_query;
      if (!reset.empty() && !BeyondReset()) {
        SetState(ClientState::kResetting);
        queue_.AddProxyQuery({ProxyQueryKind::kReset, {}}, reset, &srv_out_);
        if (!proxy_.params().readback_query().empty())
          queue_.AddProxyQuery({ProxyQueryKind::kReadback, proxy_.params().unreported()},
                               proxy_.params().readback_query(), &srv_out_);
        if (client_eof_) {
          out_.clear();
          client_raw_.clear();
        }
        return;
      }
      ReleaseServer(true);
    } else {
      ReleaseServer(!clean);
    }
  }
  // Pump() finishes the close once the output has gone out.
  SetState(ClientState::kClosing);
  if (client_eof_) {
    out_.clear();
    client_raw_.clear();
  }
}

void ClientSession::FinishClose() {
  if (state_ == ClientState::kClosed) return;
  if (server_) ReleaseServer(true);
  SetState(ClientState::kClosed);
  worker_->loop().Cancel(login_timer_);
  worker_->loop().Cancel(message_timer_);
  worker_->loop().Cancel(admin_timer_);
  worker_->loop().Remove(fd_, this);
  ::shutdown(fd_, SHUT_RDWR);
  ::close(fd_);
  fd_ = -1;
  worker_->Forget(this);
}

void ClientSession::FailFatal(std::string_view sqlstate, std::string_view message) {
  pgwire::AppendErrorResponse(out_, "FATAL", sqlstate, message);
  Close(std::string(message).c_str());
}

// ---------------------------------------------------------------- login

void ClientSession::HandleLoginBytes(std::string_view data) {
  OnLoginStep(login_->OnBytes(data, &out_));
}

void ClientSession::OnLoginStep(ClientLogin::Next next) {
  using Next = ClientLogin::Next;
  switch (next) {
    case Next::kMore:
      return;
    case Next::kSslRequest:
      StartTls();
      return;
    case Next::kGssRequest:
      // GSSAPI encryption is never offered.
      out_.push_back('N');
      FlushClient();
      OnLoginStep(login_->OnBytes({}, &out_));
      return;
    case Next::kCancel:
      proxy_.Cancel(login_->cancel_pid(), login_->cancel_key());
      client_eof_ = true;
      Close("cancel request");
      return;
    case Next::kLookup: {
      // The lookup may block (auth_query): it runs off this thread and the
      // answer comes back here. Client bytes wait in the login meanwhile.
      {
        std::lock_guard lock(info_->mu);
        info_->user = login_->user();
        info_->database = login_->database();
      }
      proxy_.LookupUser(login_->database(), login_->user(),
                        [self = shared_from_this()](Result<pgwire::UserCredential> r) {
                          self->worker_->loop().Post([self, r = std::move(r)]() mutable {
                            self->OnCredential(std::move(r));
                            self->Pump();
                          });
                        });
      return;
    }
    case Next::kDone:
      LoggedIn();
      return;
    case Next::kFail:
      Close("login refused");
      return;
    case Next::kSilentClose:
      client_eof_ = true;
      Close("closed before its startup packet");
      return;
  }
}

void ClientSession::StartTls() {
  if (proxy_.client_tls() == nullptr || tls_) {
    // No TLS configured for clients (or asked twice).
    out_.push_back('N');
    FlushClient();
    OnLoginStep(login_->OnBytes({}, &out_));
    return;
  }
  out_.push_back('S');
  FlushClient();
  if (ClientOutputPending()) {
    Close("cannot answer SSLRequest");
    return;
  }
  tls_ = std::make_unique<TlsStream>(*proxy_.client_tls(), /*server=*/true);
  login_->SetTls();
  {
    std::lock_guard lock(info_->mu);
    info_->tls = true;
  }
  // A ClientHello sent right behind the request is TLS already.
  std::string raw = login_->TakeRest(), plain;
  if (!raw.empty() && !tls_->Feed(raw, &plain, &client_raw_).ok()) {
    Close("client TLS error");
    return;
  }
  if (!plain.empty()) OnLoginStep(login_->OnBytes(plain, &out_));
}

void ClientSession::OnCredential(Result<pgwire::UserCredential> cred) {
  if (state_ != ClientState::kLogin || !login_) return;
  OnLoginStep(login_->OnCredential(std::move(cred), &out_));
}

void ClientSession::LoggedIn() {
  user_ = login_->user();
  database_ = login_->database();
  std::string rest = login_->TakeRest();
  {
    std::lock_guard lock(info_->mu);
    info_->user = user_;
    info_->database = database_;
  }
  if (login_->admin()) {
    admin_ = std::make_unique<AdminSession>(proxy_, login_->may_modify());
    login_.reset();
    for (const auto& [k, v] : std::map<std::string, std::string>{
             {"server_version", "15.0 (pgwarden " PGWARDEN_VERSION ")"},
             {"server_encoding", "UTF8"},
             {"client_encoding", "UTF8"},
             {"DateStyle", "ISO, MDY"},
             {"integer_datetimes", "on"},
             {"standard_conforming_strings", "on"}})
      pgwire::AppendParameterStatus(out_, k, v);
    FinishWelcome();
    if (!rest.empty()) HandleAdminBytes(rest);
    return;
  }
  pool_ = login_->pool();
  std::vector<std::pair<int, std::string>> asked = login_->parameters();
  login_.reset();
  in_ = std::move(rest);  // sent ahead of the welcome: handled after it
  params_.SetDefaults(pool_->defaults());
  if (params_.TakeStartup(std::move(asked))) {
    // The server checks and spells them (or tells the pool its parameters).
    SetState(ClientState::kSetup);
    RequestServer();
    return;
  }
  SendWelcome();
}

void ClientSession::SendWelcome() {
  // What the pool's first login reported, with the client's own values.
  auto server_params = pool_->server_params();
  const ParamCatalog& catalog = proxy_.params();
  if (server_params) {
    for (const auto& [k, v] : *server_params) {
      int id = catalog.Find(k);
      if (id >= 0 && !catalog.reported(id)) continue;  // read by us, never reported
      const std::string* mine = id >= 0 ? params_.values().Find(id) : nullptr;
      pgwire::AppendParameterStatus(out_, k, mine ? *mine : v);
    }
  }
  if (const std::string* app = params_.values().Find(catalog.application_name_id())) {
    std::lock_guard lock(info_->mu);
    info_->application_name = *app;
  }
  queue_.set_standard_conforming_strings(params_.standard_conforming_strings());
  FinishWelcome();
  CheckCarriedValues();
  if (!in_.empty()) {
    std::string pending = std::move(in_);
    in_.clear();
    HandleClientData(pending);
  }
}

void ClientSession::FinishWelcome() {
  int32_t pid = 0, key = 0;
  {
    std::lock_guard lock(info_->mu);
    pid = info_->cancel_pid;
    key = info_->cancel_key;
  }
  pgwire::AppendBackendKeyData(out_, pid, key);
  pgwire::AppendReadyForQuery(out_, 'I');
  SetState(ClientState::kIdle);
}

void ClientSession::FinishSetup() {
  // Our queries are done: the client's parameters are checked and spelled
  // as the server spells them, or refused with the server's own error.
  if (proxy_failure_) {
    auto e = std::move(proxy_failure_->fields);
    proxy_failure_.reset();
    ReleaseServer(false);
    std::string code = e.count('C') ? e['C'] : "22023";
    pgwire::AppendErrorResponse(out_, "FATAL", code, e.count('M') ? e['M'] : "invalid parameter");
    proxy_.LogFailedLogin(user_, database_, info_->addr, "bad startup parameter");
    Close("bad startup parameter");
    return;
  }
  params_.FinishStartup();
  ReleaseServer(false);
  SendWelcome();
}

// ---------------------------------------------------------------- admin console

void ClientSession::HandleAdminBytes(std::string_view data) {
  switch (admin_->OnBytes(data, worker_->config().max_packet_size, &out_)) {
    case AdminSession::Next::kMore:
      return;
    case AdminSession::Next::kClose:
      client_eof_ = true;
      Close("terminate");
      return;
    case AdminSession::Next::kFail:
      Close("invalid message");
      return;
    case AdminSession::Next::kPause:
      AwaitPause();
      return;
  }
}

void ClientSession::AwaitPause() {
  admin_timer_ = worker_->loop().After(std::chrono::milliseconds(20), [w = weak_from_this()] {
    auto self = w.lock();
    if (!self || self->state_ != ClientState::kIdle) return;
    self->admin_timer_ = {};
    if (self->admin_->PollPause(&self->out_))
      self->HandleAdminBytes({});  // what the admin sent meanwhile
    else
      self->AwaitPause();
    self->Pump();
  });
}

// ---------------------------------------------------------------- client → server

void ClientSession::HandleClientData(std::string_view data) {
  if (server_ && (state_ == ClientState::kActive)) {
    ProcessClientBytes(data);
    // The proxy may have answered it all by itself (a DEALLOCATE).
    if (server_ && ShouldRelease()) ReleaseServer(false);
    return;
  }
  // No server yet (or it is being prepared): keep the bytes and get one.
  in_.append(data);
  if (state_ == ClientState::kIdle) {
    SetState(ClientState::kWaiting);
    RequestServer();
  }
}

void ClientSession::ProcessClientBytes(std::string_view data) {
  const bool tp = transaction_pooling();
  client_cursor_.set_max_length(worker_->config().max_packet_size);  // RELOAD may change it
  while (state_ == ClientState::kActive) {
    pgwire::MessageCursor::Step step = client_cursor_.Next(&data);
    using Step = pgwire::MessageCursor::Step;
    if (step == Step::kNeedMore) break;
    if (step == Step::kError) {
      uint32_t len = client_cursor_.error_length();
      FailFatal("08P01", len > worker_->config().max_packet_size
                             ? "message too large (" + std::to_string(len) +
                                   " bytes, over proxy.max_packet_size)"
                             : std::string("invalid message from client"));
      return;
    }
    if (step == Step::kHeader) {
      const pgwire::Header& h = client_cursor_.header();
      ++message_count_;
      if (!ValidFrontendType(h.type)) {
        FailFatal("08P01", std::string("unknown or unexpected message type '") + h.type + "'");
        return;
      }
      if (h.type == 'X' || RequestQueue::TakeWhole(h.type, tp)) {
        client_cursor_.Take();
      } else {
        if (h.type == 'E') {
          pool_->stats().query_count.fetch_add(1, std::memory_order_relaxed);
          StartQueryClock();
        }
        queue_.FromClientStreamed(h);
        client_cursor_.Pass();
      }
      continue;
    }
    if (step == Step::kMessage) {
      const char type = client_cursor_.header().type;
      if (!HandleClientMessage(client_cursor_.header(), client_cursor_.message())) return;
      if (params_.holding() && (type == 'Q' || type == 'F' || type == 'S')) {
        // The batch RESET what the client gave at startup: what it sent
        // behind it waits until the values are put back.
        restore_barrier_ = true;
        in_.append(data);
        break;
      }
      continue;
    }
    srv_out_.append(client_cursor_.bytes());  // kBytes
  }
  WatchIncompleteMessage();
}

bool ClientSession::HandleClientMessage(const pgwire::Header& h, std::string_view msg) {
  if (h.type == 'X') {
    client_eof_ = true;
    Close("terminate");
    return false;
  }
  auto& st = pool_->stats();
  if (h.type == 'Q' || h.type == 'F' || h.type == 'E') {
    st.query_count.fetch_add(1, std::memory_order_relaxed);
    StartQueryClock();
  }
  queue_.set_server_mid_message(server_cursor_.InMessage());
  if (!queue_.FromClient(h, msg, transaction_pooling(), &srv_out_, &out_)) {
    FailFatal("08P01", std::string("malformed '") + h.type + "' message");
    return false;
  }
  return state_ == ClientState::kActive;
}

void ClientSession::StartQueryClock() {
  if (query_timing_) return;
  query_timing_ = true;
  query_start_ = std::chrono::steady_clock::now();
}

void ClientSession::WatchIncompleteMessage() {
  // client_message_timeout bounds each whole message from its first byte:
  // the clock is not restarted while the same message trickles in.
  if (!server_ || !client_cursor_.InMessage()) {
    if (message_timer_) worker_->loop().Cancel(message_timer_);
    return;
  }
  if (message_timer_ && timed_message_ == message_count_) return;  // already timing this one
  worker_->loop().Cancel(message_timer_);
  timed_message_ = message_count_;
  message_timer_ =
      worker_->loop().After(worker_->config().client_message_timeout, [w = weak_from_this()] {
        auto self = w.lock();
        if (!self) return;
        self->message_timer_ = {};
        if (!self->server_ || !self->client_cursor_.InMessage()) return;
        self->FailFatal("08P01",
                        "the client left a message unfinished for longer than "
                        "proxy.client_message_timeout");
        self->Pump();
      });
}

void ClientSession::Replay(std::string bytes) {
  // A batch that failed on a stale shared statement, sent again: framed on
  // its own (the client's cursor may hold the start of its next message).
  pgwire::MessageCursor cursor(worker_->config().max_packet_size);
  std::string_view data = bytes;
  const bool tp = transaction_pooling();
  for (;;) {
    auto step = cursor.Next(&data);
    using Step = pgwire::MessageCursor::Step;
    if (step == Step::kHeader) {
      cursor.Take();
      continue;
    }
    if (step != Step::kMessage) break;
    if (!queue_.FromClient(cursor.header(), cursor.message(), tp, &srv_out_, &out_)) break;
  }
}

// ---------------------------------------------------------------- server → client

void ClientSession::ProcessServerBytes(std::string_view data) {
  using Step = pgwire::MessageCursor::Step;
  // What the queue's observer does may give the server back (and even get
  // another one): the rest of `data` belongs to the server it came from.
  const ServerConn* from = server_.get();
  while (server_ && server_.get() == from) {
    Step step = server_cursor_.Next(&data);
    if (step == Step::kNeedMore) return;
    if (step == Step::kError) {
      LOG_ERROR(kLog, "malformed message from server " << server_->addr);
      ReleaseServer(true);
      FailFatal("08P01", "malformed message from the server");
      return;
    }
    if (step == Step::kHeader) {
      const pgwire::Header& h = server_cursor_.header();
      if (queue_.WantWhole(h.type)) {
        server_cursor_.Take();
      } else if (queue_.FromServer(h, {}, &out_)) {
        server_cursor_.Pass();
      } else {
        server_cursor_.Skip();
      }
      continue;
    }
    if (step == Step::kMessage) {
      // Synthetic answers due before the message go to out_ first; what the
      // observer has to tell the client goes after it.
      std::string_view m = server_cursor_.message();
      if (queue_.FromServer(server_cursor_.header(), m, &out_)) out_.append(m);
      if (!after_message_.empty()) {
        out_.append(after_message_);
        after_message_.clear();
      }
      if (resume_client_) {
        // After the answer that lowered the barrier went to the client.
        resume_client_ = false;
        std::string waiting = std::move(in_);
        in_.clear();
        if (!waiting.empty() && state_ == ClientState::kActive) ProcessClientBytes(waiting);
      }
      continue;
    }
    out_.append(server_cursor_.bytes());  // kBytes
  }
}

// ---------------------------------------------------------------- lending

void ClientSession::RequestServer() {
  // The pool's waiter entry keeps the session alive while it waits (nothing
  // else does: we do not read from the client meanwhile).
  auto self = shared_from_this();
  bool open_new = false;
  ServerConnPtr s = pool_->Acquire(
      worker_->index(), info_->id,
      [self](ServerConnPtr server, Status error) {
        auto holder = std::make_shared<ServerConnPtr>(std::move(server));
        self->worker_->loop().Post([self, holder, error]() mutable {
          self->OnServer(std::move(*holder), error);
          self->Pump();
        });
      },
      std::chrono::steady_clock::now(), &open_new);
  if (open_new) proxy_.OpenServer(pool_);
  if (s) OnServer(std::move(s), Status::Ok());
}

void ClientSession::OnServer(ServerConnPtr server, Status error) {
  const bool wanted = state_ == ClientState::kWaiting || state_ == ClientState::kSetup;
  if (!server) {
    if (wanted) {
      std::string msg = error.code() == ErrorCode::kTimeout
                            ? error.message()
                            : "could not connect to the server: " + error.message();
      pgwire::AppendErrorResponse(out_, "FATAL",
                                  error.code() == ErrorCode::kTimeout ? "57014" : "08006", msg);
      Close("no server");
    }
    return;
  }
  if (!wanted) {
    // We went away meanwhile: give it back untouched.
    proxy_.ReleaseServer(std::move(server));
    return;
  }
  if (server->home >= 0 && server->home != worker_->index()) {
    // Registered with another worker's loop: that worker's thread lets go
    // of it (no event of its loop may still refer to it), then it comes here.
    Worker& from = proxy_.worker(server->home);
    auto holder = std::make_shared<ServerConnPtr>(std::move(server));
    from.loop().Post([&from, holder, self = shared_from_this()] {
      ServerConn& s = **holder;
      from.loop().Remove(s.fd, &s);
      s.home = -1;
      s.worker = nullptr;
      s.missed_events = 0;
      self->worker_->loop().Post([self, holder] {
        self->OnServer(std::move(*holder), Status::Ok());
        self->Pump();
      });
    });
    return;
  }
  AttachServer(std::move(server));
}

void ClientSession::AttachServer(ServerConnPtr server) {
  server_ = std::move(server);
  server_writable_ = true;
  server_fatal_ = false;
  if (server_->home != worker_->index()) {
    // First use on this worker: register it (its current readiness is
    // reported as an event).
    if (Status st = worker_->loop().Add(server_->fd, server_.get()); !st.ok()) {
      LOG_WARN(kLog, "server connection " << server_->id << ": " << st.message());
      ReleaseServer(true);
      pgwire::AppendErrorResponse(out_, "FATAL", "08006", "server connection lost");
      Close("server registration failed");
      return;
    }
    server_->home = worker_->index();
    server_->worker = worker_;
    server_readable_ = false;
  } else {
    // Readiness that arrived while no session held it.
    server_readable_ = (server_->missed_events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    server_hup_ = (server_->missed_events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  }
  server_->missed_events = 0;
  server_->session = this;
  queue_.Attach(server_.get());
  xact_start_ = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(info_->mu);
    info_->server_host = server_->host;
    info_->server_port = server_->port;
    info_->server_pid = server_->backend_pid;
    info_->server_key = server_->backend_key;
  }
  if (state_ == ClientState::kSetup) {
    // Login: learn the pool's defaults if they were not known, then have the
    // server check and spell the parameters the client asked for.
    if (!params_.has_defaults()) params_.SetDefaults(pool_->defaults());
    for (auto& q : params_.SetupQueries())
      queue_.AddProxyQuery({ProxyQueryKind::kParams, std::move(q.columns)}, q.sql, &srv_out_);
    if (queue_.Idle()) FinishSetup();
    return;
  }
  const auto& cfg = worker_->config();
  bool hold = false;
  if (!cfg.server_check_query.empty() && server_->used &&
      xact_start_ - server_->last_used >= cfg.server_check_delay) {
    // Idle for a while: make sure it still works before the client's request
    // goes to it (server_check_query, answered to no one).
    queue_.AddProxyQuery({ProxyQueryKind::kCheck, {}}, cfg.server_check_query, &srv_out_);
    hold = true;
  }
  hold |= QueueParameters();
  if (hold) {
    SetState(ClientState::kPreparing);
    return;
  }
  StartServing();
}

bool ClientSession::QueueParameters() {
  bool may_fail = false;
  for (auto& q : params_.Reconcile(&server_->params, server_->reset_values, &may_fail))
    queue_.AddProxyQuery({ProxyQueryKind::kParams, std::move(q.columns)}, q.sql, &srv_out_);
  return may_fail;
}

void ClientSession::StartServing() {
  SetState(ClientState::kActive);
  queue_.set_standard_conforming_strings(params_.standard_conforming_strings());
  std::string pending = std::move(in_);
  in_.clear();
  in_.shrink_to_fit();
  if (!pending.empty()) ProcessClientBytes(pending);
}

bool ClientSession::ServerIdleAndClean() const {
  return server_ && queue_.Idle() && server_->txn_status == 'I' && !client_cursor_.InMessage() &&
         !server_cursor_.InMessage() && !ServerOutputPending();
}

bool ClientSession::ShouldRelease() const {
  return state_ == ClientState::kActive && !pinned() && ServerIdleAndClean() && in_.empty();
}

void ClientSession::ReleaseServer(bool broken) {
  if (!server_) return;
  // It stays registered with our loop; its events now go to the worker (idle
  // watch). Unread input is remembered for its next holder.
  server_->session = nullptr;
  if (state_ != ClientState::kSetup) server_->used = true;  // a login's setup is no use
  server_->last_client = info_->id;
  server_->missed_events = server_readable_ ? uint32_t{EPOLLIN} : 0u;
  server_readable_ = false;
  if (server_hup_ || server_fatal_) broken = true;  // it is going away: never lend it again
  server_hup_ = false;
  if (broken) server_->broken = true;
  if (pool_) {
    auto& st = pool_->stats();
    st.xact_time_us.fetch_add(
        static_cast<uint64_t>(Micros(std::chrono::steady_clock::now() - xact_start_)),
        std::memory_order_relaxed);
  }
  {
    std::lock_guard lock(info_->mu);
    info_->server_pid = 0;
    info_->server_key = 0;
  }
  queue_.Detach();
  server_cursor_.Reset();
  if (client_cursor_.InMessage()) client_cursor_.Reset();  // only when the session ends
  query_timing_ = false;
  worker_->loop().Cancel(message_timer_);
  proxy_failure_.reset();
  srv_out_.clear();
  srv_raw_.clear();
  proxy_.ReleaseServer(std::move(server_));
  if (state_ == ClientState::kActive || state_ == ClientState::kPreparing)
    SetState(ClientState::kIdle);
}

void ClientSession::Pin(uint32_t reason, const std::string& what) {
  const bool first = pins_ == 0;
  pins_ |= reason;  // also in session pooling: it decides how the server is given back
  if (!first || !transaction_pooling()) return;  // session pooling keeps the server anyway
  pool_->stats().pinned.fetch_add(1, std::memory_order_relaxed);
  pool_->stats().pinned_total.fetch_add(1, std::memory_order_relaxed);
  LOG_INFO(kLog,
           "client " << info_->id << " (" << user_ << "@" << database_
                     << ") keeps its server connection for the rest of its session: " << what);
  std::lock_guard lock(info_->mu);
  info_->pinned = what;
}

void ClientSession::CheckCarriedValues() {
  const ParamCatalog& catalog = proxy_.params();
  if (sql::IsUnsafeClientEncoding(params_.Value(catalog.client_encoding_id())))
    Pin(sql::kPinEncoding, sql::PinReasonText(sql::kPinEncoding));
  int search_path = catalog.Find("search_path");
  if (search_path >= 0) {
    std::string v = params_.Value(search_path);
    for (char& c : v) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    // pg_temp in the path makes plain CREATE TABLE create temporary tables.
    if (v.find("pg_temp") != std::string::npos)
      Pin(sql::kPinTempObject, "a search_path with pg_temp in it");
  }
}

void ClientSession::RestoreStartupParameters(char txn_status) {
  restore_barrier_ = false;
  resume_client_ = true;
  for (auto& q : params_.FinishBatch(txn_status, &out_))
    queue_.AddProxyQuery({ProxyQueryKind::kParams, std::move(q.columns)}, q.sql, &srv_out_);
}

// ---------------------------------------------------------------- what the traffic tells

void ClientSession::OnEffects(const sql::SessionEffects& e) {
  if (e.pins) Pin(e.pins, sql::PinReasonText(e.pins));
  for (const auto& name : params_.OnStatement(e))
    Pin(sql::kPinParameter,
        "SET of the untracked parameter " + name + " (proxy.track_extra_parameters)");
  if (server_) {
    // A statement dropped by name may be one of the proxy's shared ones:
    // this server's list of them can no longer be trusted.
    for (const auto& name : e.deallocated) {
      if (name.rfind("pgw_", 0) == 0) server_->broken = true;
    }
    // currval() / lastval() read the session's sequence cache: on a server
    // another client used last it would show that client's values.
    if (e.sequences && queue_.fresh() && server_->last_client != 0 &&
        server_->last_client != info_->id)
      queue_.AddProxyQuery({ProxyQueryKind::kDiscardSequences, {}}, "DISCARD SEQUENCES", &srv_out_);
  }
}

void ClientSession::OnReady(char status, bool ours) {
  if (!ours) {
    if (status == 'I' && pool_) pool_->stats().xact_count.fetch_add(1, std::memory_order_relaxed);
    if (query_timing_ && queue_.syncs() == 0 && pool_) {
      // The server answered everything sent: time spent running queries.
      query_timing_ = false;
      pool_->stats().query_time_us.fetch_add(
          static_cast<uint64_t>(Micros(std::chrono::steady_clock::now() - query_start_)),
          std::memory_order_relaxed);
    }
    // Everything the client sent has been answered (what is queued now is ours).
    const bool answered = queue_.syncs() == 0;
    if (restore_barrier_ && answered) RestoreStartupParameters(status);
    if (status == 'I' && state_ == ClientState::kActive && answered && params_.TakeReadbackDue()) {
      // The transaction is over and touched an unreported parameter: its
      // value as the transaction left it is read back.
      queue_.AddProxyQuery({ProxyQueryKind::kReadback, proxy_.params().unreported()},
                           proxy_.params().readback_query(), &srv_out_);
    }
    return;
  }
  // One of ours finished; when they all have, the phase they guarded ends.
  if (!queue_.Idle()) return;
  switch (state_) {
    case ClientState::kSetup:
      FinishSetup();
      return;
    case ClientState::kPreparing: {
      if (proxy_failure_) {
        ProxyFailure f = std::move(*proxy_failure_);
        proxy_failure_.reset();
        auto& e = f.fields;
        ReleaseServer(true);
        if (f.kind == ProxyQueryKind::kCheck) {  // the request goes to another server
          SetState(ClientState::kWaiting);
          RequestServer();
          return;
        }
        pgwire::AppendErrorResponse(
            out_, "FATAL", "08006",
            "the proxy could not set the session's parameters on a server connection: " +
                (e.count('M') ? e['M'] : std::string("error")));
        Close("cannot set parameters");
        return;
      }
      StartServing();
      return;
    }
    case ClientState::kResetting:
      // The reset answered: the server goes back clean, or is closed.
      ReleaseServer(proxy_failure_.has_value());
      SetState(ClientState::kClosing);
      return;
    default:
      return;
  }
}

bool ClientSession::OnParameterStatus(std::string_view name, std::string_view value, bool ours) {
  const ParamCatalog& catalog = proxy_.params();
  int id = catalog.Find(name);
  bool pass = !server_ || params_.OnParameterStatus(id, name, value, ours, &server_->params);
  if (!ours) {
    if (id == catalog.application_name_id()) {
      std::lock_guard lock(info_->mu);
      info_->application_name = std::string(value);
    }
    if (id == catalog.standard_conforming_strings_id())
      queue_.set_standard_conforming_strings(value == "on");
  }
  // However it got there (a function's set_config(), say): the proxy cannot
  // read this client's SQL any more.
  if (id == catalog.client_encoding_id() && sql::IsUnsafeClientEncoding(value))
    Pin(sql::kPinEncoding, sql::PinReasonText(sql::kPinEncoding));
  return pass;
}

void ClientSession::OnCommandTag(std::string_view tag) {
  // DISCARD ALL at the top level leaves the server as fresh as a new one:
  // whatever tied the client to it is gone.
  if (tag == "DISCARD ALL" && pins_ != 0 && !BeyondReset() && transaction_pooling()) {
    pool_->stats().pinned.fetch_sub(1, std::memory_order_relaxed);
    pins_ = 0;
    std::lock_guard lock(info_->mu);
    info_->pinned.clear();
  }
}

void ClientSession::OnClientError(const std::map<char, std::string>& fields) {
  // The server ends the connection after a FATAL: the client has its reason
  // and gets no second one from us.
  if (IsFatal(fields)) server_fatal_ = true;
  params_.OnClientError();
}

void ClientSession::OnProxyRow(const ProxyQuery& q, const std::vector<std::string>& values) {
  if (!server_) return;
  params_.OnRow(q.columns, values, &server_->params, state_ != ClientState::kResetting);
  CheckCarriedValues();
}

void ClientSession::OnProxyError(const ProxyQuery& q, const std::map<char, std::string>& fields) {
  if (state_ != ClientState::kSetup)
    LOG_WARN(kLog, "server connection "
                       << (server_ ? server_->id : 0) << ": the proxy's " << ProxyQueryName(q.kind)
                       << " failed: " << (fields.count('M') ? fields.at('M') : "?"));
  if (!proxy_failure_) proxy_failure_ = ProxyFailure{q.kind, fields};
  // After a failed query of ours nothing about the server's state is sure,
  // except a set_config() at login that the server refused (it changed nothing).
  if (server_ && !(q.kind == ProxyQueryKind::kParams && state_ == ClientState::kSetup))
    server_->broken = true;
}

}  // namespace pgwarden::proxy
