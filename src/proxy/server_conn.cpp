// Blocking login to a PostgreSQL server (run on the connector thread), cancel requests, auth_query.
#include "proxy/server_conn.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "pg/connection.h"
#include "pgwire/auth.h"
#include "pgwire/message.h"

namespace pgwarden::proxy {
namespace {

using Clk = std::chrono::steady_clock;
std::atomic<uint64_t> g_next_server_id{1};

int MillisLeft(Clk::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// A blocking-with-deadline socket for the login exchange.
class LoginSocket {
 public:
  explicit LoginSocket(Clk::time_point deadline) : deadline_(deadline) {}
  ~LoginSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  int fd() const { return fd_; }

  Status Connect(const std::string& host, uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string p = std::to_string(port);
    int rc = getaddrinfo(host.c_str(), p.c_str(), &hints, &res);
    if (rc != 0) return PgUnavailable("cannot resolve " + host + ": " + gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
      if (r != 0 && errno == EINPROGRESS) {
        pollfd pfd{fd, POLLOUT, 0};
        r = poll(&pfd, 1, MillisLeft(deadline_));
        if (r == 1) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          r = err == 0 ? 0 : -1;
          errno = err;
        } else {
          r = -1;
          errno = ETIMEDOUT;
        }
      }
      if (r == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        fd_ = fd;
        freeaddrinfo(res);
        return Status::Ok();
      }
      last = std::strerror(errno);
      ::close(fd);
    }
    freeaddrinfo(res);
    return PgUnavailable("cannot connect to " + host + ":" + p + ": " + last);
  }

  // After TLS is negotiated everything goes through it.
  void SetTls(std::unique_ptr<TlsStream> tls) { tls_ = std::move(tls); }
  std::unique_ptr<TlsStream> TakeTls() { return std::move(tls_); }

  Status SendAll(const std::string& plain) {
    if (!tls_) return SendRaw(plain);
    std::string raw;
    PGW_RETURN_IF_ERROR(tls_->Encrypt(plain, &raw));
    return SendRaw(raw);
  }

  // One raw byte (the answer to SSLRequest).
  Result<char> ReadRawByte() {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, MillisLeft(deadline_)) != 1)
      return Timeout("server did not answer SSLRequest");
    char c;
    if (::recv(fd_, &c, 1, 0) != 1)
      return PgUnavailable("server closed the connection at SSLRequest");
    return c;
  }

  // Runs the TLS handshake to completion.
  Status Handshake() {
    std::string raw;
    PGW_RETURN_IF_ERROR(tls_->Start(&raw));
    while (!tls_->handshake_done()) {
      if (!raw.empty()) {
        PGW_RETURN_IF_ERROR(SendRaw(raw));
        raw.clear();
      }
      PGW_RETURN_IF_ERROR(ReadMore());
    }
    if (!raw.empty()) PGW_RETURN_IF_ERROR(SendRaw(raw));
    return Status::Ok();
  }

  Status SendRaw(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd pfd{fd_, POLLOUT, 0};
        if (poll(&pfd, 1, MillisLeft(deadline_)) != 1) return Timeout("server write timed out");
        continue;
      }
      return PgUnavailable(std::string("server write failed: ") + std::strerror(errno));
    }
    return Status::Ok();
  }

  // Reads one whole typed message.
  Status ReadMessage(pgwire::Header* h, std::string* body) {
    for (;;) {
      if (buf_.size() >= 5) {
        auto st = pgwire::DecodeHeader(buf_, 64u << 20, h);
        if (st == pgwire::DecodeStatus::kError)
          return PgUnavailable("malformed message from server");
        if (st == pgwire::DecodeStatus::kReady && buf_.size() >= h->wire_size()) {
          body->assign(buf_, 5, h->body_size());
          buf_.erase(0, h->wire_size());
          return Status::Ok();
        }
      }
      PGW_RETURN_IF_ERROR(ReadMore());
    }
  }

  // Reads what the socket has (waiting up to the deadline); through TLS when on.
  Status ReadMore() {
    for (;;) {
      pollfd pfd{fd_, POLLIN, 0};
      int left = MillisLeft(deadline_);
      if (left == 0 || poll(&pfd, 1, left) != 1) return Timeout("server did not answer in time");
      char tmp[8192];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n == 0) return PgUnavailable("server closed the connection during login");
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return PgUnavailable(std::string("server read failed: ") + std::strerror(errno));
      }
      if (!tls_) {
        buf_.append(tmp, n);
        return Status::Ok();
      }
      std::string raw_out;
      Status st = tls_->Feed(std::string_view(tmp, n), &buf_, &raw_out);
      if (!raw_out.empty()) PGW_RETURN_IF_ERROR(SendRaw(raw_out));
      if (!st.ok()) return PgUnavailable("TLS with the server: " + st.message());
      return Status::Ok();
    }
  }

  bool HasBufferedInput() const { return !buf_.empty(); }

 private:
  Clk::time_point deadline_;
  int fd_ = -1;
  std::string buf_;  // plaintext not yet consumed
  std::unique_ptr<TlsStream> tls_;
};

std::string ServerError(const std::string& body) {
  auto f = pgwire::ParseErrorFields(body);
  std::string msg = f.count('M') ? f['M'] : "unknown error";
  if (f.count('C')) msg += " (SQLSTATE " + f['C'] + ")";
  return msg;
}

}  // namespace

ServerConn::~ServerConn() {
  if (fd >= 0) ::close(fd);
}

const char* ServerStateName(ServerState s) {
  switch (s) {
    case ServerState::kIdle:
      return "idle";
    case ServerState::kActive:
      return "active";
    case ServerState::kClosed:
      return "closed";
  }
  return "?";
}

namespace {

// Reads the unreported tracked parameters after login (a simple query).
Status ReadParameters(LoginSocket& s, const ParamCatalog& catalog,
                      std::map<std::string, std::string>* out) {
  std::string q;
  pgwire::AppendQuery(q, catalog.readback_query());
  PGW_RETURN_IF_ERROR(s.SendAll(q));
  pgwire::Header h;
  std::string body;
  Status result = PgUnavailable("no answer to reading the session parameters");
  for (;;) {
    PGW_RETURN_IF_ERROR(s.ReadMessage(&h, &body));
    if (h.type == 'D') {
      std::vector<std::string> values;
      if (!ParseDataRow(body, &values) || values.size() != catalog.unreported().size())
        return PgUnavailable("malformed answer to reading the session parameters");
      for (size_t i = 0; i < values.size(); ++i)
        (*out)[catalog.name(catalog.unreported()[i])] = values[i];
      result = Status::Ok();
    } else if (h.type == 'E') {
      result = PgUnavailable("reading the session parameters failed: " + ServerError(body));
    } else if (h.type == 'Z') {
      return result;
    }
  }
}

}  // namespace

Result<ServerConnPtr> LoginServer(const ServerTarget& t, std::chrono::milliseconds timeout,
                                  const TlsContext* tls, const std::string& sslmode,
                                  const ParamCatalog* catalog) {
  LoginSocket s(Clk::now() + timeout);
  PGW_RETURN_IF_ERROR(s.Connect(t.host, t.port));
  std::string out;
  if (tls != nullptr && sslmode != "disable") {
    pgwire::Writer w(out);
    w.Int32(8);
    w.Int32(pgwire::kSslRequestCode);
    PGW_RETURN_IF_ERROR(s.SendRaw(out));
    out.clear();
    auto answer = s.ReadRawByte();
    if (!answer.ok()) return answer.status();
    bool required = sslmode == "require" || sslmode == "verify-ca" || sslmode == "verify-full";
    if (*answer == 'S') {
      s.SetTls(std::make_unique<TlsStream>(*tls, /*server=*/false, t.host));
      Status hs = s.Handshake();
      if (!hs.ok()) return PgUnavailable("TLS handshake with " + t.host + ": " + hs.message());
    } else if (*answer == 'N') {
      if (required) {
        return PgUnavailable("server " + t.host + ":" + std::to_string(t.port) +
                             " does not support TLS (proxy.server_tls.sslmode: " + sslmode + ")");
      }
    } else {
      return PgUnavailable("unexpected answer to SSLRequest from the server");
    }
  }
  pgwire::AppendStartupMessage(out, {{"user", t.user}, {"database", t.database}});
  PGW_RETURN_IF_ERROR(s.SendAll(out));
  auto conn = std::make_unique<ServerConn>();
  std::optional<pgwire::ScramClient> scram;
  pgwire::Header h;
  std::string body;
  for (;;) {
    PGW_RETURN_IF_ERROR(s.ReadMessage(&h, &body));
    size_t pos = 0;
    switch (h.type) {
      case 'R': {
        int32_t code = 0;
        if (!pgwire::ReadInt32(body, &pos, &code))
          return PgUnavailable("bad authentication message");
        out.clear();
        if (code == 0) break;  // AuthenticationOk
        if (code == 3) {       // cleartext
          if (t.password.empty())
            return PgUnavailable("server asks for a password and none is known for user " + t.user);
          pgwire::AppendPasswordMessage(out, t.password);
        } else if (code == 5) {  // md5
          if (t.password.empty())
            return PgUnavailable("server asks for an md5 password and none is known for user " +
                                 t.user);
          if (body.size() < 8) return PgUnavailable("bad md5 request");
          uint8_t salt[4];
          std::memcpy(salt, body.data() + 4, 4);
          std::string stored = t.password.rfind("md5", 0) == 0 && t.password.size() == 35
                                   ? t.password
                                   : pgwire::Md5PasswordHash(t.password, t.user);
          pgwire::AppendPasswordMessage(out, pgwire::Md5SaltedResponse(stored, salt));
        } else if (code == 10) {  // SASL
          if (!t.password.empty())
            scram = pgwire::ScramClient::WithPassword(t.password);
          else if (!t.scram_client_key.empty())
            scram = pgwire::ScramClient::WithClientKey(t.scram_client_key, t.scram_server_key);
          else
            return PgUnavailable("server asks for SCRAM and no password or key is known for user " +
                                 t.user);
          pgwire::AppendSaslInitialResponse(out, "SCRAM-SHA-256", scram->ClientFirst());
        } else if (code == 11) {  // SASL continue
          if (!scram) return PgUnavailable("unexpected SASL continue");
          auto r = scram->HandleServerFirst(std::string_view(body).substr(4));
          if (!r.ok()) return PgUnavailable("SCRAM: " + r.status().message());
          pgwire::AppendSaslResponse(out, *r);
        } else if (code == 12) {  // SASL final
          if (!scram) return PgUnavailable("unexpected SASL final");
          Status st = scram->HandleServerFinal(std::string_view(body).substr(4));
          if (!st.ok()) return PgUnavailable("SCRAM: " + st.message());
        } else {
          return PgUnavailable("server asks for an unsupported authentication method (" +
                               std::to_string(code) + ")");
        }
        if (!out.empty()) PGW_RETURN_IF_ERROR(s.SendAll(out));
        break;
      }
      case 'S': {
        std::string_view name, value;
        if (pgwire::ReadCString(body, &pos, &name) && pgwire::ReadCString(body, &pos, &value)) {
          conn->login_params[std::string(name)] = std::string(value);
        }
        break;
      }
      case 'K':
        pgwire::ReadInt32(body, &pos, &conn->backend_pid);
        pgwire::ReadInt32(body, &pos, &conn->backend_key);
        break;
      case 'E':
        return PgUnavailable(ServerError(body));
      case 'N':
        break;
      case 'Z':
        if (s.HasBufferedInput()) return PgUnavailable("server sent data after ReadyForQuery");
        if (catalog != nullptr && !catalog->readback_query().empty())
          PGW_RETURN_IF_ERROR(ReadParameters(s, *catalog, &conn->login_params));
        conn->id = g_next_server_id++;
        conn->tls = s.TakeTls();
        conn->fd = s.release();
        conn->addr = t.host + ":" + std::to_string(t.port);
        conn->host = t.host;
        conn->port = t.port;
        {
          sockaddr_storage ss{};
          socklen_t len = sizeof ss;
          if (getsockname(conn->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
            if (ss.ss_family == AF_INET)
              conn->local_port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
          }
        }
        return conn;
      default:
        return PgUnavailable(std::string("unexpected message '") + h.type + "' during login");
    }
  }
}

Status SendCancel(const std::string& host, uint16_t port, int32_t pid, int32_t key,
                  std::chrono::milliseconds timeout) {
  LoginSocket s(Clk::now() + timeout);
  PGW_RETURN_IF_ERROR(s.Connect(host, port));
  std::string out;
  pgwire::AppendCancelRequest(out, pid, key);
  PGW_RETURN_IF_ERROR(s.SendAll(out));
  // The server closes the connection after reading the request.
  pollfd pfd{s.fd(), POLLIN, 0};
  poll(&pfd, 1, 1000);
  return Status::Ok();
}

Result<std::string> LookupCredential(const ServerTarget& t, const std::string& query,
                                     const std::string& user, std::chrono::milliseconds timeout) {
  std::string ci = "host=" + pg::QuoteConninfoValue(t.host) + " port=" + std::to_string(t.port) +
                   " dbname=" + pg::QuoteConninfoValue(t.database) +
                   " user=" + pg::QuoteConninfoValue(t.user) + " application_name=pgwarden-auth";
  if (!t.password.empty()) ci += " password=" + pg::QuoteConninfoValue(t.password);
  auto conn = pg::Connection::Open(
      ci, std::chrono::duration_cast<std::chrono::seconds>(timeout) + std::chrono::seconds(1));
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Query(query, {user});
  if (!r.ok()) return r.status();
  if (r->rows.empty() || r->columns.size() < 2 || !r->at(0, 1)) {
    return NotFound("auth_query found no password for user " + user);
  }
  return *r->at(0, 1);
}

bool IdleConnectionBroken(int fd) {
  char c;
  ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;  // closed
  if (n > 0) return true;   // unexpected input while idle
  return !(errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace pgwarden::proxy
