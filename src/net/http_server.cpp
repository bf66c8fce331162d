// HTTP/1.1 server: an async accept loop and one keep-alive session per connection.
#include "net/http_server.h"

#include <fcntl.h>

#include <cctype>
#include <exception>
#include <optional>
#include <set>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"

namespace pgwarden::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr const char* kLogComponent = "http";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes "%xx" and "+" (form encoding); malformed escapes are kept as they are.
std::string DecodeQueryComponent(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 &&
               HexValue(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

}  // namespace

void ParseRequestTarget(std::string_view target, std::string* path,
                        std::map<std::string, std::string>* query) {
  size_t q = target.find('?');
  *path = std::string(target.substr(0, q));
  query->clear();
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  size_t hash = rest.find('#');
  if (hash != std::string_view::npos) rest = rest.substr(0, hash);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key = DecodeQueryComponent(pair.substr(0, eq));
    std::string value =
        eq == std::string_view::npos ? std::string() : DecodeQueryComponent(pair.substr(eq + 1));
    (*query)[std::move(key)] = std::move(value);
  }
}

// Everything that lives on the server thread. Sessions are tracked (weakly) so
// that Stop() can close their sockets.
struct HttpServer::Impl {
  class Session;

  Impl(const HttpServerOptions& o, const HttpHandler& h) : options(o), handler(h) {}

  void DoAccept();
  void CloseAll();

  const HttpServerOptions& options;
  const HttpHandler& handler;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer accept_retry{ioc};
  std::thread thread;
  // Touched only on the server thread.
  std::set<std::weak_ptr<Session>, std::owner_less<std::weak_ptr<Session>>> sessions;
  bool stopping = false;  // server thread only
};

// One connection: read a request, answer it, repeat while keep-alive.
// Owned by the shared_ptrs held in its pending completion handlers.
class HttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& server, tcp::socket&& socket) : server_(server), stream_(std::move(socket)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_address_ = ep.address().to_string();
  }

  void Start() { DoRead(); }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_.options.max_request_bytes));
    parser_->body_limit(server_.options.max_request_bytes);
    stream_.expires_after(server_.options.idle_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (server_.stopping) return;
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == beast::error::timeout || ec == asio::error::connection_reset ||
        ec == asio::error::eof) {
      Close();
      return;
    }
    if (ec == http::error::body_limit || ec == http::error::header_limit ||
        ec == http::error::buffer_overflow) {
      ReplyError(413, "request too large");
      return;
    }
    if (ec) {
      LOG_DEBUG(kLogComponent, "bad request from " << remote_address_ << ": " << ec.message());
      ReplyError(400, "bad request: " + ec.message());
      return;
    }
    Handle(parser_->release());
  }

  // Answers a request we could not parse, then closes the connection.
  void ReplyError(int status, const std::string& message) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<unsigned>(status));
    res->version(11);
    res->set(http::field::server, server_.options.server_header);
    res->set(http::field::content_type, "application/json");
    res->body() = nlohmann::json{{"error", message}}.dump();
    res->keep_alive(false);
    res->prepare_payload();
    Write(std::move(res), /*head_only=*/false, /*close=*/true);
  }

  void Handle(http::request<http::string_body>&& raw) {
    HttpRequest req;
    req.method = std::string(raw.method_string());
    req.target = std::string(raw.target());
    ParseRequestTarget(req.target, &req.path, &req.query);
    for (const auto& field : raw) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers[std::move(name)] = std::string(field.value());
    }
    req.body = std::move(raw.body());
    req.remote_address = remote_address_;

    HttpResponse out;
    try {
      out = server_.handler(req);
    } catch (const std::exception& e) {
      LOG_ERROR(kLogComponent,
                "handler failed on " << req.method << " " << req.target << ": " << e.what());
      out = HttpResponse{500, "application/json", R"({"error": "internal error"})", {}};
    }

    if (out.status < 100 || out.status > 599) out.status = 500;
    if (out.status < 200 || out.status == 204 || out.status == 304) out.body.clear();
    bool keep_alive = raw.keep_alive();
    bool head = raw.method() == http::verb::head;
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<unsigned>(out.status));
    res->version(raw.version());
    res->set(http::field::server, server_.options.server_header);
    if (!out.content_type.empty()) res->set(http::field::content_type, out.content_type);
    for (const auto& [name, value] : out.headers) res->set(name, value);
    res->keep_alive(keep_alive);
    // HEAD: the headers GET would send (Content-Length included), no body.
    res->body() = std::move(out.body);
    res->prepare_payload();
    Write(std::move(res), head, !keep_alive);
  }

  // Writes `res`; `head_only`: the header alone (HEAD). Then reads the next
  // request, or closes (lingering, so the peer reads the answer) when `close`.
  void Write(std::shared_ptr<http::response<http::string_body>> res, bool head_only, bool close) {
    stream_.expires_after(server_.options.idle_timeout);
    auto sr = std::make_shared<http::response_serializer<http::string_body>>(*res);
    auto on_written = [self = shared_from_this(), res, sr, close](beast::error_code ec, size_t) {
      if (ec || self->server_.stopping) {
        self->Close();
      } else if (close) {
        self->LingerClose();
      } else {
        self->DoRead();
      }
    };
    if (head_only) {
      http::async_write_header(stream_, *sr, std::move(on_written));
    } else {
      http::async_write(stream_, *sr, std::move(on_written));
    }
  }

  // Half-closes, then discards what the peer still sends (e.g. the rest of an
  // oversized body) for a short while: closing a socket with unread input makes
  // the kernel send a reset that can destroy our answer before it is read.
  void LingerClose() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(kLingerTime);
    Drain();
  }

  void Drain() {
    drain_buffer_.resize(16 * 1024);
    stream_.async_read_some(asio::buffer(drain_buffer_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec || self->server_.stopping) {
                                self->Close();
                                return;
                              }
                              self->Drain();
                            });
  }

  static constexpr std::chrono::seconds kLingerTime{2};

  Impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_address_;
  std::vector<char> drain_buffer_;
};

void HttpServer::Impl::DoAccept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (stopping || ec == asio::error::operation_aborted) return;
    if (ec) {
      // E.g. out of file descriptors: back off a little instead of spinning.
      LOG_WARN(kLogComponent, "accept failed: " << ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !stopping) DoAccept();
      });
      return;
    }
    ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    auto session = std::make_shared<Session>(*this, std::move(socket));
    for (auto it = sessions.begin(); it != sessions.end();) {
      it = it->expired() ? sessions.erase(it) : std::next(it);
    }
    sessions.insert(session);
    session->Start();
    DoAccept();
  });
}

void HttpServer::Impl::CloseAll() {
  stopping = true;
  beast::error_code ec;
  acceptor.close(ec);
  accept_retry.cancel();
  for (const auto& weak : sessions) {
    if (auto s = weak.lock()) s->Close();
  }
  sessions.clear();
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { Stop(); }

std::string HttpServer::address() const {
  return FormatHostPort(options_.host, bound_port_ != 0 ? bound_port_ : options_.port);
}

Status HttpServer::Start() {
  if (impl_) return InvalidArgument("HTTP server on " + address() + " already started");
  auto impl = std::make_unique<Impl>(options_, handler_);
  const std::string where = FormatHostPort(options_.host, options_.port);
  beast::error_code ec;

  tcp::endpoint endpoint;
  auto addr = asio::ip::make_address(options_.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(addr, options_.port);
  } else {
    tcp::resolver resolver(impl->ioc);
    auto results =
        resolver.resolve(options_.host, std::to_string(options_.port), tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return IoError("cannot listen on " + where +
                     ": cannot resolve host: " + (ec ? ec.message() : std::string("no address")));
    }
    endpoint = results.begin()->endpoint();
  }

  impl->acceptor.open(endpoint.protocol(), ec);
  // Not inherited by anything we start (process.cpp closes the rest).
  if (!ec) ::fcntl(impl->acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return IoError("cannot listen on " + where + ": " + ec.message());
  bound_port_ = impl->acceptor.local_endpoint(ec).port();

  impl->DoAccept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    try {
      raw->ioc.run();
    } catch (const std::exception& e) {
      LOG_ERROR(kLogComponent, "server loop stopped: " << e.what());
    }
  });
  impl_ = std::move(impl);
  LOG_DEBUG(kLogComponent, "listening on " << address());
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!impl_) return;
  Impl* raw = impl_.get();
  asio::post(raw->ioc, [raw] { raw->CloseAll(); });
  if (raw->thread.joinable()) raw->thread.join();
  impl_.reset();
}

}  // namespace pgwarden::net
