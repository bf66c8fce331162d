// Client sessions: startup, authentication, and message forwarding with transaction pooling.
#include "proxy/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "proxy/admin.h"

namespace pgwarden::proxy {
namespace {

constexpr const char* kLog = "client";
// Parameters a client sets at startup that we keep and re-apply on every
// server it gets (the reportable ones are also tracked when it SETs them).
bool IsSessionParameter(const std::string& name) {
  return name != "user" && name != "database" && name != "replication" && name != "options" &&
         name.rfind("_pq_.", 0) != 0;
}

std::string QuoteLiteral(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string QuoteIdent(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A stable proxy-wide name for a statement: FNV-1a 64 over the Parse body
// after the name (query text and parameter types).
std::string StatementName(std::string_view tail) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : tail) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "pgw_%016llx_%zx", static_cast<unsigned long long>(h),
                tail.size());
  return buf;
}

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
    case 'p':
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

}  // namespace

const char* ClientStateName(ClientState s) {
  switch (s) {
    case ClientState::kStartup:
      return "login";
    case ClientState::kLookup:
      return "login";
    case ClientState::kAuth:
      return "login";
    case ClientState::kWelcome:
      return "login";
    case ClientState::kIdle:
      return "idle";
    case ClientState::kWaiting:
      return "waiting";
    case ClientState::kActive:
      return "active";
    case ClientState::kClosing:
      return "closing";
    case ClientState::kClosed:
      return "closed";
  }
  return "?";
}

ClientSession::ClientSession(Worker& worker, int fd)
    : worker_(&worker), proxy_(worker.proxy()), fd_(fd) {}

ClientSession::~ClientSession() {
  if (fd_ >= 0) ::close(fd_);
  if (info_) proxy_.UnregisterClient(info_->id);
}

void ClientSession::Start() {
  info_ = proxy_.RegisterClient();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
  }
  {
    std::lock_guard lock(info_->mu);
    info_->addr = host;
    info_->port = port;
    info_->state = "login";
    info_->connect_time = std::chrono::steady_clock::now();
    info_->request_time = info_->connect_time;
  }
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
        if (!self || self->state_ >= ClientState::kIdle) return;
        self->login_timer_ = {};
        self->FailFatal("08P01", "authentication timeout: the client did not log in in time");
        self->Pump();
      });
}

void ClientSession::SetState(ClientState s) {
  if (state_ == s) return;
  state_ = s;
  if (s >= ClientState::kIdle) worker_->loop().Cancel(login_timer_);
  std::lock_guard lock(info_->mu);
  info_->state = ClientStateName(s);
  if (s == ClientState::kWaiting || s == ClientState::kActive) {
    info_->request_time = std::chrono::steady_clock::now();
  }
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
    case ClientState::kWaiting:
    case ClientState::kLookup:
    case ClientState::kWelcome:
    case ClientState::kClosing:
    case ClientState::kClosed:
      return false;
    default:
      break;
  }
  return !client_eof_ && !client_done_ && !admin_wait_ && !checking_ && !ServerOutputPending() &&
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
    if (client_done_ && state_ != ClientState::kClosing && (!server_ || syncs_ == 0)) {
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
  return state_ == ClientState::kIdle && !server_ && !pumping_ && !pump_posted_ && !admin_wait_ &&
         in_.empty() && c_partial_.empty() && !ClientOutputPending() && !ServerOutputPending() &&
         fd_ >= 0;
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
    // more), end it at once.
    if (server_ && !pending_.empty() && c_skip_ == 0 && c_partial_.empty() &&
        (pending_.back() == Pending::kSync || pending_.back() == Pending::kQuery))
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
  if (state_ < ClientState::kIdle) {
    if (state_ == ClientState::kStartup)
      HandleStartupBytes(data);
    else {
      in_.append(data);
      if (state_ == ClientState::kAuth) HandleStartupBytes({});
    }
  } else {
    HandleClientData(data);
  }
  return true;
}

void ClientSession::ServerLost(const char* what) {
  LOG_WARN(kLog, "server connection " << server_->id << " to " << server_->addr << ": " << what);
  if (checking_ && state_ != ClientState::kClosing) {
    // Lost during server_check_query: the client's request has not been
    // sent; it goes to another server.
    ReleaseServer(true);
    RequestServer();
    return;
  }
  bool mid_request = !pending_.empty();
  ReleaseServer(true);
  if (state_ == ClientState::kClosing) return;  // Pump finishes the close
  if (mid_request) {
    pgwire::AppendErrorResponse(
        out_, "FATAL", "08006",
        std::string("server connection lost while running the request (") + what + ")");
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
      LOG_WARN(kLog, "server connection " << server_->id << ": TLS "
                                          << (st.ok() ? "closed" : st.message()));
      ReleaseServer(true);
      pgwire::AppendErrorResponse(out_, "FATAL", "08006", "server connection lost (TLS)");
      Close("server TLS error");
      return true;
    }
    data = plain;
  }
  ProcessServerBytes(data);
  if (state_ == ClientState::kClosed) return true;
  if (checking_ && server_ && pending_.empty() && syncs_ == 0) FinishCheck();
  if (release_ready_) {
    release_ready_ = false;
    ReleaseServer(false);
  }
  return true;
}

bool ClientSession::ClientOutputPending() const { return !out_.empty() || !client_raw_.empty(); }

bool ClientSession::ServerOutputPending() const { return !srv_out_.empty() || !srv_raw_.empty(); }

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
    ServerLost(std::strerror(errno));  // during server_check_query: another server
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
  LOG_DEBUG(kLog, "closing client " << info_->id << ": " << why);
  if (state_ == ClientState::kWaiting && pool_) pool_->CancelWait(info_->id);
  if (server_) {
    if (ServerIdleAndClean() && pool_ && pool_->mode() == PoolMode::kSession && !admin_ &&
        !worker_->config().server_reset_query.empty()) {
      // Session pooling: reset the server before the next client gets it;
      // the server is given back when the reset's ReadyForQuery arrives.
      SetState(ClientState::kClosing);
      pgwire::AppendQuery(srv_out_, worker_->config().server_reset_query);
      pending_.push_back(Pending::kSwallowQuery);
      ++syncs_;
      return;
    }
    ReleaseServer(!ServerIdleAndClean());
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
  if (server_) ReleaseServer(!ServerIdleAndClean());
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

// ---------------------------------------------------------------- startup & auth

void ClientSession::HandleStartupBytes(std::string_view data) {
  if (!data.empty()) in_.append(data);
  const uint32_t max = std::min<uint32_t>(worker_->config().max_packet_size, 10000);
  while (!in_.empty() && state_ != ClientState::kClosed && state_ != ClientState::kClosing) {
    if (state_ == ClientState::kStartup) {
      pgwire::StartupPacket p;
      size_t used = 0;
      std::string error;
      auto st = pgwire::DecodeStartupPacket(in_, max, &p, &used, &error);
      if (st == pgwire::DecodeStatus::kNeedMoreData) return;
      if (st == pgwire::DecodeStatus::kError) {
        FailFatal("08P01", "invalid startup packet: " + error);
        return;
      }
      in_.erase(0, used);
      HandleStartupPacket(p);
    } else if (state_ == ClientState::kAuth) {
      pgwire::Header h;
      auto st = pgwire::DecodeHeader(in_, max, &h);
      if (st == pgwire::DecodeStatus::kNeedMoreData ||
          (st == pgwire::DecodeStatus::kReady && in_.size() < h.wire_size()))
        return;
      if (st == pgwire::DecodeStatus::kError || h.type != 'p') {
        FailFatal("08P01", "invalid authentication message");
        return;
      }
      std::string body = in_.substr(5, h.body_size());
      in_.erase(0, h.wire_size());
      HandleAuthMessage(h.type, body);
    } else {
      return;  // later states take the bytes through HandleClientData
    }
  }
  if (in_.empty()) in_.shrink_to_fit();
}

void ClientSession::HandleStartupPacket(const pgwire::StartupPacket& p) {
  using Kind = pgwire::StartupPacket::Kind;
  if (p.kind == Kind::kSslRequest && proxy_.client_tls() && !tls_) {
    out_.push_back('S');
    FlushClient();
    if (ClientOutputPending()) {
      Close("cannot answer SSLRequest");
      return;
    }
    tls_ = std::make_unique<TlsStream>(*proxy_.client_tls(), /*server=*/true);
    {
      std::lock_guard lock(info_->mu);
      info_->tls = true;
    }
    // A ClientHello sent right behind the request is TLS already.
    std::string raw = std::move(in_), plain;
    in_.clear();
    if (!raw.empty() && !tls_->Feed(raw, &plain, &client_raw_).ok()) {
      Close("client TLS error");
      return;
    }
    in_ = std::move(plain);
    return;
  }
  if (p.kind == Kind::kSslRequest || p.kind == Kind::kGssEncRequest) {
    // No TLS configured for clients (or asked twice); GSSAPI encryption never.
    out_.push_back('N');
    FlushClient();
    return;
  }
  if (p.kind == Kind::kCancel) {
    proxy_.Cancel(p.cancel_pid, p.cancel_key);
    client_eof_ = true;
    Close("cancel request");
    return;
  }
  if (!tls_ && worker_->config().client_tls.sslmode == "require") {
    FailFatal("28000", "the proxy requires TLS (proxy.client_tls.sslmode: require)");
    return;
  }
  user_ = p.Get("user").value_or("");
  database_ = p.Get("database").value_or(user_);
  if (p.Get("replication")) {
    FailFatal("08P01", "replication connections are not supported through the proxy");
    return;
  }
  for (const auto& [k, v] : p.parameters) {
    if (IsSessionParameter(k)) params_.emplace_back(k, v);
  }
  {
    std::lock_guard lock(info_->mu);
    info_->user = user_;
    info_->database = database_;
    for (const auto& [k, v] : params_) {
      if (k == "application_name") info_->application_name = v;
    }
  }
  if (database_ == "pgwarden") {
    admin_ = true;
    if (!proxy_.IsAdmin(user_) && !proxy_.IsStatsUser(user_)) {
      FailFatal("28000", "user \"" + user_ + "\" is not allowed to use the admin console");
      return;
    }
  } else {
    pool_ = proxy_.FindOrCreatePool(database_, user_);
    if (pool_ == nullptr) {
      FailFatal("3D000",
                "database \"" + database_ + "\" does not exist in the proxy configuration");
      return;
    }
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  bool is_v4 =
      ::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family == AF_INET;
  uint32_t ipv4 = is_v4 ? reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr : 0;
  method_ = proxy_.MethodFor(database_, user_, ipv4, is_v4);
  if (method_ == AuthMethod::kReject) {
    FailFatal("28000",
              "no hba rule allows user \"" + user_ + "\" to database \"" + database_ + "\"");
    return;
  }
  SetState(ClientState::kLookup);
  proxy_.LookupUser(database_, user_,
                    [self = shared_from_this()](Result<pgwire::UserCredential> r) {
                      self->worker_->loop().Post([self, r = std::move(r)]() mutable {
                        self->OnCredential(std::move(r));
                        self->Pump();
                      });
                    });
}

void ClientSession::OnCredential(Result<pgwire::UserCredential> cred) {
  if (state_ != ClientState::kLookup) return;
  if (cred.ok())
    credential_ = *cred;
  else if (cred.status().code() != ErrorCode::kNotFound) {
    LOG_WARN(kLog, "credential lookup for " << user_ << ": " << cred.status().message());
  }
  BeginAuth();
  if (state_ == ClientState::kAuth && !in_.empty()) HandleStartupBytes({});
}

void ClientSession::BeginAuth() {
  SetState(ClientState::kAuth);
  if (method_ == AuthMethod::kTrust) {
    AuthSucceeded();
    return;
  }
  using Kind = pgwire::UserCredential::Kind;
  bool md5_possible = credential_ && credential_->kind != Kind::kScram;
  if (method_ == AuthMethod::kMd5 && md5_possible) {
    RAND_bytes(md5_salt_, 4);
    pgwire::AppendAuthenticationMd5(out_, md5_salt_);
    auth_step_ = 10;
    return;
  }
  // SCRAM: against the stored secret, a secret made from a plain password, or
  // (unknown user, md5 hash only) a random one so that the exchange fails the
  // same way PostgreSQL's mock authentication does.
  pgwire::ScramSecret secret;
  std::optional<pgwire::ScramSecret> parsed;
  if (credential_ && credential_->kind == Kind::kScram)
    parsed = pgwire::ParseScramSecret(credential_->value);
  if (parsed)
    secret = *parsed;
  else if (credential_ && credential_->kind == Kind::kPlain)
    secret = pgwire::MakeScramSecret(credential_->value);
  else
    secret = pgwire::MakeScramSecret(std::to_string(info_->id) + "-no-such-user");
  scram_server_key_ = secret.server_key;
  scram_ = std::make_unique<pgwire::ScramServer>(secret);
  pgwire::AppendAuthenticationSasl(out_);
  auth_step_ = 1;
}

void ClientSession::HandleAuthMessage(char type, std::string_view body) {
  auto fail = [&] {
    FailFatal("28P01", "password authentication failed for user \"" + user_ + "\"");
  };
  if (auth_step_ == 10) {  // md5 response
    std::string given(body.substr(0, body.find('\0')));
    std::string stored = credential_->kind == pgwire::UserCredential::Kind::kMd5
                             ? credential_->value
                             : pgwire::Md5PasswordHash(credential_->value, user_);
    if (!pgwire::SecureEquals(given, pgwire::Md5SaltedResponse(stored, md5_salt_))) return fail();
    AuthSucceeded();
    return;
  }
  if (auth_step_ == 1) {  // SASLInitialResponse: mechanism, int32 length, data
    size_t pos = 0;
    std::string_view mech;
    int32_t len = 0;
    if (!pgwire::ReadCString(body, &pos, &mech) || !pgwire::ReadInt32(body, &pos, &len) ||
        mech != "SCRAM-SHA-256" || len < 0 || pos + static_cast<size_t>(len) > body.size()) {
      FailFatal("08P01", "invalid SASL initial response (only SCRAM-SHA-256 is supported)");
      return;
    }
    auto r = scram_->HandleClientFirst(body.substr(pos, static_cast<size_t>(len)));
    if (!r.ok()) {
      FailFatal("08P01", "SCRAM: " + r.status().message());
      return;
    }
    pgwire::AppendAuthenticationSaslContinue(out_, *r);
    auth_step_ = 2;
    return;
  }
  if (auth_step_ == 2) {
    auto r = scram_->HandleClientFinal(body);
    if (!r.ok()) return fail();
    pgwire::AppendAuthenticationSaslFinal(out_, *r);
    AuthSucceeded();
    return;
  }
  FailFatal("08P01", "unexpected authentication message");
}

void ClientSession::AuthSucceeded() {
  // The pool learns how to log in to the server as this user.
  if (pool_ && !pool_->has_credentials()) {
    const DatabaseConfig& db = pool_->db();
    ServerTarget t;
    t.host = db.host;
    t.port = db.port;
    t.database = db.dbname.empty() ? database_ : db.dbname;
    t.user = db.user.empty() ? user_ : db.user;
    if (!db.user.empty()) {
      t.password = db.password;
    } else if (credential_ && credential_->kind != pgwire::UserCredential::Kind::kScram) {
      t.password = credential_->value;  // plain, or an md5 hash the server's md5 accepts
    } else if (scram_ && !scram_->client_key().empty()) {
      t.scram_client_key = scram_->client_key();
      t.scram_server_key = scram_server_key_;
    }
    pool_->SetTarget(std::move(t));
  }
  scram_.reset();
  pgwire::AppendAuthenticationOk(out_);
  if (admin_) {
    SendWelcome({{"server_version", "15.0 (pgwarden " PGWARDEN_VERSION ")"},
                 {"server_encoding", "UTF8"},
                 {"client_encoding", "UTF8"},
                 {"DateStyle", "ISO, MDY"},
                 {"integer_datetimes", "on"},
                 {"standard_conforming_strings", "on"}});
    return;
  }
  if (auto params = pool_->server_params()) {
    SendWelcome(*params);
    return;
  }
  // First client of this pool: log a server in to learn its parameters.
  SetState(ClientState::kWelcome);
  RequestServer();
}

void ClientSession::SendWelcome(const std::map<std::string, std::string>& server_params) {
  std::map<std::string, std::string> shown = server_params;
  for (const auto& [k, v] : params_) {
    auto it = shown.find(k);
    if (it != shown.end())
      it->second = v;
    else if (k == "application_name")
      shown[k] = v;
  }
  for (const auto& [k, v] : shown) pgwire::AppendParameterStatus(out_, k, v);
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

// ---------------------------------------------------------------- forwarding

void ClientSession::HandleClientData(std::string_view data) {
  if (admin_) {
    in_.append(data);
    while (state_ == ClientState::kIdle && !admin_wait_) {
      pgwire::Header h;
      auto st = pgwire::DecodeHeader(in_, worker_->config().max_packet_size, &h);
      if (st == pgwire::DecodeStatus::kNeedMoreData ||
          (st == pgwire::DecodeStatus::kReady && in_.size() < h.wire_size()))
        break;
      if (st == pgwire::DecodeStatus::kError) {
        FailFatal("08P01", "invalid message");
        return;
      }
      std::string body = in_.substr(5, h.body_size());
      in_.erase(0, h.wire_size());
      if (h.type == 'X') {
        client_eof_ = true;
        Close("terminate");
        return;
      }
      if (h.type != 'Q') {
        pgwire::AppendErrorResponse(out_, "ERROR", "0A000",
                                    "the admin console supports the simple query protocol only");
        pgwire::AppendReadyForQuery(out_, 'I');
        continue;
      }
      HandleAdminQuery(std::string_view(body).substr(0, body.find('\0')));
    }
    if (in_.empty()) in_.shrink_to_fit();
    return;
  }
  if (server_) {
    ProcessClientBytes(data);
    WatchIncompleteMessage();
    return;
  }
  // No server yet: keep the bytes and get one.
  in_.append(data);
  if (state_ == ClientState::kIdle) RequestServer();
}

void ClientSession::RequestServer() {
  if (state_ == ClientState::kIdle) SetState(ClientState::kWaiting);
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
  if (!server) {
    if (state_ == ClientState::kWaiting || state_ == ClientState::kWelcome) {
      std::string msg = error.code() == ErrorCode::kTimeout
                            ? error.message()
                            : "could not connect to the server: " + error.message();
      pgwire::AppendErrorResponse(out_, "FATAL",
                                  error.code() == ErrorCode::kTimeout ? "57014" : "08006", msg);
      Close("no server");
    }
    return;
  }
  if (state_ != ClientState::kWaiting && state_ != ClientState::kWelcome) {
    // We went away meanwhile: give it back untouched.
    proxy_.ReleaseServer(std::move(server));
    return;
  }
  if (state_ == ClientState::kWelcome) {
    auto params = server->params;
    pool_->SetServerParams(params);
    proxy_.ReleaseServer(std::move(server));
    SendWelcome(params);
    if (!in_.empty()) {
      std::string pending_in = std::move(in_);
      in_.clear();
      HandleClientData(pending_in);
    }
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
  SetState(ClientState::kActive);
  xact_start_ = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(info_->mu);
    info_->server_host = server_->host;
    info_->server_port = server_->port;
    info_->server_pid = server_->backend_pid;
    info_->server_key = server_->backend_key;
  }
  if (!worker_->config().server_check_query.empty() && server_->used &&
      xact_start_ - server_->last_used >= worker_->config().server_check_delay) {
    // Idle for a while: make sure it still works before the client's request
    // goes to it (server_check_query, answered to no one).
    checking_ = true;
    check_failed_ = false;
    pgwire::AppendQuery(srv_out_, worker_->config().server_check_query);
    pending_.push_back(Pending::kSwallowQuery);
    ++syncs_;
    return;
  }
  BeginRequest();
}

void ClientSession::BeginRequest() {
  ApplySessionParameters();
  std::string pending_in = std::move(in_);
  in_.clear();
  in_.shrink_to_fit();
  if (!pending_in.empty()) ProcessClientBytes(pending_in);
  WatchIncompleteMessage();
}

void ClientSession::FinishCheck() {
  checking_ = false;
  if (check_failed_) {
    ReleaseServer(true);
    RequestServer();
    return;
  }
  BeginRequest();
}

void ClientSession::ApplySessionParameters() {
  std::string sets;
  for (const auto& [k, v] : params_) {
    auto it = server_->params.find(k);
    if (it != server_->params.end() && it->second == v) continue;
    sets += "SET " + QuoteIdent(k) + " TO " + QuoteLiteral(v) + ";";
    server_->params[k] = v;  // also for parameters the server does not report
  }
  if (sets.empty()) return;
  pgwire::AppendQuery(srv_out_, sets);
  pending_.push_back(Pending::kSwallowQuery);
  ++syncs_;
}

bool ClientSession::ServerIdleAndClean() const {
  return server_ && pending_.empty() && syncs_ == 0 && server_->txn_status == 'I' && c_skip_ == 0 &&
         c_partial_.empty() && s_skip_ == 0 && s_partial_.empty() && !ServerOutputPending();
}

void ClientSession::ReleaseServer(bool broken) {
  if (!server_) return;
  // It stays registered with our loop; its events now go to the worker (idle
  // watch). Unread input is remembered for its next holder.
  server_->session = nullptr;
  server_->used = true;
  checking_ = false;
  server_->missed_events = server_readable_ ? uint32_t{EPOLLIN} : 0u;
  server_readable_ = false;
  if (server_hup_) broken = true;  // the server has closed its side: never lend it again
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
  pending_.clear();
  pending_names_.clear();
  synth_errors_.clear();
  c_drop_ = c_skip_until_sync_ = false;
  query_timing_ = false;
  worker_->loop().Cancel(message_timer_);
  syncs_ = 0;
  c_skip_ = s_skip_ = 0;
  s_drop_ = false;
  c_partial_.clear();
  s_partial_.clear();
  srv_out_.clear();
  srv_raw_.clear();
  proxy_.ReleaseServer(std::move(server_));
  if (state_ == ClientState::kActive) SetState(ClientState::kIdle);
}

void ClientSession::MaybeReleaseServer() {
  if (pool_ && pool_->mode() == PoolMode::kTransaction && ServerIdleAndClean() && !checking_) {
    release_ready_ = true;
  }
  if (state_ == ClientState::kClosing && pending_.empty()) release_ready_ = true;
}

void ClientSession::WatchIncompleteMessage() {
  bool incomplete = server_ && (c_skip_ > 0 || !c_partial_.empty());
  worker_->loop().Cancel(message_timer_);
  if (!incomplete) return;
  // Progress restarts the clock: a large message on a slow link is fine, a
  // sender that stalls mid-message while holding a server is not.
  message_timer_ =
      worker_->loop().After(worker_->config().client_message_timeout, [w = weak_from_this()] {
        auto self = w.lock();
        if (!self) return;
        self->message_timer_ = {};
        if (self->state_ != ClientState::kActive) return;
        if (self->c_skip_ == 0 && self->c_partial_.empty()) return;
        self->FailFatal("08P01",
                        "the client left a message unfinished for longer than "
                        "proxy.client_message_timeout");
        self->Pump();
      });
}

void ClientSession::ProcessClientBytes(std::string_view data) {
  const uint32_t max = worker_->config().max_packet_size;
  while (!data.empty() && state_ == ClientState::kActive) {
    if (c_skip_ > 0) {
      size_t n = std::min(c_skip_, data.size());
      if (!c_drop_) srv_out_.append(data.substr(0, n));
      data.remove_prefix(n);
      c_skip_ -= n;
      continue;
    }
    // The message header, possibly completing a split one.
    std::string_view msg = data;
    bool partial = !c_partial_.empty();
    if (partial || data.size() < 5) {
      size_t need = c_partial_.size() < 5 ? 5 - c_partial_.size() : 0;
      size_t take = std::min(need, data.size());
      c_partial_.append(data.substr(0, take));
      data.remove_prefix(take);
      if (c_partial_.size() < 5) return;
      msg = c_partial_;
    }
    pgwire::Header h;
    if (pgwire::DecodeHeader(msg, max, &h) != pgwire::DecodeStatus::kReady) {
      uint32_t len = (uint32_t{static_cast<uint8_t>(msg[1])} << 24) |
                     (uint32_t{static_cast<uint8_t>(msg[2])} << 16) |
                     (uint32_t{static_cast<uint8_t>(msg[3])} << 8) | static_cast<uint8_t>(msg[4]);
      FailFatal("08P01", len > max ? "message too large (" + std::to_string(len) +
                                         " bytes, over proxy.max_packet_size)"
                                   : std::string("invalid message from client"));
      return;
    }
    if (!ValidFrontendType(h.type) || h.type == 'p') {
      FailFatal("08P01", std::string("unknown or unexpected message type '") + h.type + "'");
      return;
    }
    c_drop_ = false;
    if (c_skip_until_sync_ && h.type != 'S' && h.type != 'X') {
      // After an error we made up, the protocol skips everything until Sync.
      c_drop_ = true;
      if (partial) {
        c_partial_.clear();
        c_skip_ = h.body_size();
      } else {
        size_t n = std::min(h.wire_size(), data.size());
        data.remove_prefix(n);
        c_skip_ = h.wire_size() - n;
      }
      continue;
    }
    if (h.type == 'S') c_skip_until_sync_ = false;
    bool whole =
        h.type == 'X' || (pool_->mode() == PoolMode::kTransaction &&
                          (h.type == 'P' || h.type == 'B' || h.type == 'D' || h.type == 'C'));
    if (whole) {
      if (partial) {
        size_t take = std::min(h.wire_size() - c_partial_.size(), data.size());
        c_partial_.append(data.substr(0, take));
        data.remove_prefix(take);
        if (c_partial_.size() < h.wire_size()) return;
        std::string m = std::move(c_partial_);
        c_partial_.clear();
        if (!HandleWholeClientMessage(h, m)) return;
      } else if (data.size() >= h.wire_size()) {
        if (!HandleWholeClientMessage(h, data.substr(0, h.wire_size()))) return;
        data.remove_prefix(h.wire_size());
      } else {
        c_partial_.assign(data);
        return;
      }
      continue;
    }
    if (!StartStreamedClientMessage(h.type)) return;
    if (partial) {
      srv_out_.append(c_partial_, 0, 5);
      c_partial_.clear();
      c_skip_ = h.body_size();
    } else {
      size_t n = std::min(h.wire_size(), data.size());
      srv_out_.append(data.substr(0, n));
      data.remove_prefix(n);
      c_skip_ = h.wire_size() - n;
    }
  }
}

void ClientSession::StartQueryClock() {
  if (query_timing_) return;
  query_timing_ = true;
  query_start_ = std::chrono::steady_clock::now();
}

bool ClientSession::StartStreamedClientMessage(char type) {
  auto& st = pool_->stats();
  switch (type) {
    case 'Q':
    case 'F':
      pending_.push_back(Pending::kQuery);
      ++syncs_;
      st.query_count.fetch_add(1, std::memory_order_relaxed);
      StartQueryClock();
      break;
    case 'S':
      pending_.push_back(Pending::kSync);
      ++syncs_;
      break;
    case 'E':
      pending_.push_back(Pending::kExecute);
      st.query_count.fetch_add(1, std::memory_order_relaxed);
      StartQueryClock();
      break;
    case 'P':  // session mode: passed through unchanged
      pending_.push_back(Pending::kParse);
      pending_names_.emplace_back();
      break;
    case 'B':
      pending_.push_back(Pending::kBind);
      break;
    case 'D':
      pending_.push_back(Pending::kDescribe);
      break;
    case 'C':
      pending_.push_back(Pending::kClose);
      break;
    default:
      break;  // H, d, c, f: no response of their own
  }
  return true;
}

bool ClientSession::HandleWholeClientMessage(const pgwire::Header& h, std::string_view msg) {
  std::string_view body = msg.substr(5);
  size_t pos = 0;
  switch (h.type) {
    case 'X':
      client_eof_ = true;
      Close("terminate");
      return false;
    case 'P': {
      std::string_view name;
      if (!pgwire::ReadCString(body, &pos, &name)) break;
      std::string_view tail = body.substr(pos);
      if (name.empty()) {
        srv_out_.append(msg);
        pending_.push_back(Pending::kParse);
        pending_names_.emplace_back();
        return true;
      }
      if (statements_.count(std::string(name))) {
        // As PostgreSQL: the first definition stays, the Parse fails.
        std::string err;
        pgwire::AppendErrorResponse(
            err, "ERROR", "42P05",
            "prepared statement \"" + std::string(name) + "\" already exists");
        synth_errors_.push_back(std::move(err));
        pending_.push_back(Pending::kSynthError);
        c_skip_until_sync_ = true;
        return true;
      }
      Statement st{StatementName(tail), std::string(tail)};
      if (server_->prepared.count(st.server_name)) {
        pending_.push_back(Pending::kSynthParse);
      } else {
        pgwire::Writer w(srv_out_);
        size_t start = w.Begin('P');
        w.CString(st.server_name);
        w.Bytes(tail);
        w.Finish(start);
        server_->prepared.insert(st.server_name);
        pending_.push_back(Pending::kParse);
        pending_names_.push_back(st.server_name);
      }
      statements_[std::string(name)] = std::move(st);
      return true;
    }
    case 'B': {
      std::string_view portal, name;
      if (!pgwire::ReadCString(body, &pos, &portal) || !pgwire::ReadCString(body, &pos, &name))
        break;
      auto it = name.empty() ? statements_.end() : statements_.find(std::string(name));
      if (it == statements_.end()) {
        srv_out_.append(msg);  // unnamed, or unknown: the server answers as it would
      } else {
        EnsurePrepared(it->second);
        pgwire::Writer w(srv_out_);
        size_t start = w.Begin('B');
        w.CString(portal);
        w.CString(it->second.server_name);
        w.Bytes(body.substr(pos));
        w.Finish(start);
      }
      pending_.push_back(Pending::kBind);
      return true;
    }
    case 'D': {
      if (body.empty()) break;
      char kind = body[0];
      pos = 1;
      std::string_view name;
      if (!pgwire::ReadCString(body, &pos, &name)) break;
      auto it =
          (kind != 'S' || name.empty()) ? statements_.end() : statements_.find(std::string(name));
      if (it == statements_.end()) {
        srv_out_.append(msg);
      } else {
        EnsurePrepared(it->second);
        pgwire::Writer w(srv_out_);
        size_t start = w.Begin('D');
        w.Bytes("S");
        w.CString(it->second.server_name);
        w.Finish(start);
      }
      pending_.push_back(Pending::kDescribe);
      return true;
    }
    case 'C': {
      if (body.empty()) break;
      char kind = body[0];
      pos = 1;
      std::string_view name;
      if (!pgwire::ReadCString(body, &pos, &name)) break;
      if (kind == 'S' && !name.empty() && statements_.erase(std::string(name)) > 0) {
        // The server keeps it for other clients; the client sees it closed.
        pending_.push_back(Pending::kSynthClose);
        return true;
      }
      srv_out_.append(msg);
      pending_.push_back(Pending::kClose);
      return true;
    }
    default:
      break;
  }
  FailFatal("08P01", std::string("malformed '") + h.type + "' message");
  return false;
}

void ClientSession::EnsurePrepared(const Statement& st) {
  if (server_->prepared.count(st.server_name)) return;
  pgwire::Writer w(srv_out_);
  size_t start = w.Begin('P');
  w.CString(st.server_name);
  w.Bytes(st.parse_tail);
  w.Finish(start);
  server_->prepared.insert(st.server_name);
  pending_.push_back(Pending::kSwallowParse);
  pending_names_.push_back(st.server_name);
}

void ClientSession::EmitSynthetic() {
  while (!pending_.empty()) {
    if (pending_.front() == Pending::kSynthParse) {
      pgwire::AppendParseComplete(out_);
    } else if (pending_.front() == Pending::kSynthClose) {
      pgwire::AppendCloseComplete(out_);
    } else if (pending_.front() == Pending::kSynthError && !synth_errors_.empty()) {
      out_.append(synth_errors_.front());
      synth_errors_.pop_front();
    } else {
      return;
    }
    pending_.pop_front();
  }
}

void ClientSession::OnServerError() {
  // Extended protocol: the server skips everything up to Sync.
  if (!pending_.empty() &&
      (pending_.front() == Pending::kQuery || pending_.front() == Pending::kSwallowQuery))
    return;
  while (!pending_.empty() && pending_.front() != Pending::kSync &&
         pending_.front() != Pending::kQuery && pending_.front() != Pending::kSwallowQuery) {
    Pending p = pending_.front();
    pending_.pop_front();
    if (p == Pending::kSynthError && !synth_errors_.empty()) synth_errors_.pop_front();
    if (p == Pending::kParse || p == Pending::kSwallowParse) {
      if (!pending_names_.empty()) {
        if (!pending_names_.front().empty()) server_->prepared.erase(pending_names_.front());
        pending_names_.pop_front();
      }
    }
  }
}

void ClientSession::ProcessServerBytes(std::string_view data) {
  const uint32_t max = 1u << 30;
  while (!data.empty() && server_) {
    if (s_skip_ > 0) {
      size_t n = std::min(s_skip_, data.size());
      if (!s_drop_) out_.append(data.substr(0, n));
      data.remove_prefix(n);
      s_skip_ -= n;
      continue;
    }
    std::string_view msg = data;
    bool partial = !s_partial_.empty();
    if (partial || data.size() < 5) {
      size_t need = s_partial_.size() < 5 ? 5 - s_partial_.size() : 0;
      size_t take = std::min(need, data.size());
      s_partial_.append(data.substr(0, take));
      data.remove_prefix(take);
      if (s_partial_.size() < 5) return;
      msg = s_partial_;
    }
    pgwire::Header h;
    if (pgwire::DecodeHeader(msg, max, &h) != pgwire::DecodeStatus::kReady) {
      LOG_ERROR(kLog, "malformed message from server " << server_->addr);
      server_->broken = true;
      ReleaseServer(true);
      FailFatal("08P01", "malformed message from the server");
      return;
    }
    // Messages we read whole: small ones whose content matters.
    bool whole = h.type == 'Z' || h.type == 'S' || h.type == 'E' || h.type == 'C';
    if (whole) {
      std::string m;
      if (partial) {
        size_t take = std::min(h.wire_size() - s_partial_.size(), data.size());
        s_partial_.append(data.substr(0, take));
        data.remove_prefix(take);
        if (s_partial_.size() < h.wire_size()) return;
        m = std::move(s_partial_);
        s_partial_.clear();
      } else if (data.size() >= h.wire_size()) {
        m.assign(data.substr(0, h.wire_size()));
        data.remove_prefix(h.wire_size());
      } else {
        s_partial_.assign(data);
        return;
      }
      StartServerMessage(h, m);
      continue;
    }
    StartServerMessage(h, {});
    std::string_view head = partial ? std::string_view(s_partial_).substr(0, 5)
                                    : data.substr(0, std::min(h.wire_size(), data.size()));
    if (!s_drop_) out_.append(head);
    if (partial) {
      s_partial_.clear();
      s_skip_ = h.body_size();
    } else {
      data.remove_prefix(head.size());
      s_skip_ = h.wire_size() - head.size();
    }
  }
}

// Decides, at the start of each server message, whether it is forwarded or
// swallowed and what it completes. `whole` holds the message for the types
// read whole (Z, S, E, C) and is forwarded here; others are streamed by the caller.
void ClientSession::StartServerMessage(const pgwire::Header& h, std::string_view whole) {
  EmitSynthetic();
  Pending head = pending_.empty() ? Pending::kQuery : pending_.front();
  bool swallow = false;
  if (!pending_.empty() && head == Pending::kSwallowQuery) {
    swallow = true;
    if (h.type == 'E') {
      auto f = pgwire::ParseErrorFields(whole.substr(5));
      if (checking_) {
        check_failed_ = true;
        LOG_WARN(kLog,
                 "server connection " << server_->id << ": server_check_query failed: " << f['M']);
      } else {
        LOG_WARN(kLog, "server connection " << server_->id
                                            << ": a query of the proxy's own (session parameters, "
                                               "server_reset_query) failed: "
                                            << f['M']);
      }
    }
  } else if (!pending_.empty() && head == Pending::kSwallowParse && h.type == '1') {
    swallow = true;
    pending_.pop_front();
    if (!pending_names_.empty()) pending_names_.pop_front();
  }
  switch (h.type) {
    case 'Z': {
      char status = whole.size() > 5 ? whole[5] : 'I';
      server_->txn_status = status;
      if (!pending_.empty() &&
          (head == Pending::kSync || head == Pending::kQuery || head == Pending::kSwallowQuery)) {
        pending_.pop_front();
        if (head != Pending::kSwallowQuery) {
          if (status == 'I' && pool_)
            pool_->stats().xact_count.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (syncs_ > 0) --syncs_;
      if (query_timing_ && syncs_ == 0 && pool_) {
        // The server answered everything sent: time spent running queries.
        query_timing_ = false;
        pool_->stats().query_time_us.fetch_add(
            static_cast<uint64_t>(Micros(std::chrono::steady_clock::now() - query_start_)),
            std::memory_order_relaxed);
      }
      if (!swallow) out_.append(whole);
      MaybeReleaseServer();
      return;
    }
    case 'S': {
      size_t pos = 5;
      std::string_view name, value;
      if (pgwire::ReadCString(whole, &pos, &name) && pgwire::ReadCString(whole, &pos, &value)) {
        server_->params[std::string(name)] = std::string(value);
        if (!swallow) {
          for (auto& [k, v] : params_) {
            if (k == name) v = value;
          }
          if (name == "application_name") {
            bool known = false;
            for (auto& kv : params_) known = known || kv.first == name;
            if (!known) params_.emplace_back(std::string(name), std::string(value));
            std::lock_guard lock(info_->mu);
            info_->application_name = std::string(value);
          }
        }
      }
      if (!swallow) out_.append(whole);
      return;
    }
    case 'E':
      if (!swallow) out_.append(whole);
      OnServerError();
      return;
    case 'C': {
      std::string_view tag = whole.substr(5);
      if (tag.rfind("DISCARD ALL", 0) == 0 || tag.rfind("DEALLOCATE ALL", 0) == 0) {
        server_->prepared.clear();
        if (!swallow) statements_.clear();
      }
      if (!swallow) out_.append(whole);
      if (!pending_.empty() && head == Pending::kExecute) pending_.pop_front();
      return;
    }
    case '1':
      if (!swallow && !pending_.empty() && head == Pending::kParse) {
        pending_.pop_front();
        if (!pending_names_.empty()) pending_names_.pop_front();
      }
      break;
    case '2':
      if (!pending_.empty() && head == Pending::kBind) pending_.pop_front();
      break;
    case '3':
      if (!pending_.empty() && head == Pending::kClose) pending_.pop_front();
      break;
    case 'n':
    case 'T':
      if (!pending_.empty() && head == Pending::kDescribe) pending_.pop_front();
      break;
    case 'I':
    case 's':
      if (!pending_.empty() && head == Pending::kExecute) pending_.pop_front();
      break;
    default:
      break;
  }
  s_drop_ = swallow;
}

void ClientSession::HandleAdminQuery(std::string_view sql) {
  AdminResult r = RunAdminCommand(proxy_, sql, proxy_.IsAdmin(user_));
  if (r.wait_for_pause) {
    admin_wait_ = true;
    AwaitPause(std::move(r.pause_database), std::move(r.wire));
    return;
  }
  out_.append(r.wire);
  pgwire::AppendReadyForQuery(out_, 'I');
}

void ClientSession::AwaitPause(std::string database, std::string wire) {
  if (proxy_.PauseDone(database)) {
    admin_wait_ = false;
    out_.append(wire);
    pgwire::AppendReadyForQuery(out_, 'I');
    HandleClientData({});  // what the admin sent meanwhile
    return;
  }
  admin_timer_ = worker_->loop().After(
      std::chrono::milliseconds(20),
      [w = weak_from_this(), database = std::move(database), wire = std::move(wire)]() mutable {
        auto self = w.lock();
        if (!self || self->state_ != ClientState::kIdle) return;
        self->admin_timer_ = {};
        self->AwaitPause(std::move(database), std::move(wire));
        self->Pump();
      });
}

}  // namespace pgwarden::proxy
