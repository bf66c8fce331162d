// Blocking HTTP/1.1 client: Beast async operations run to completion on a private io_context.
#include "net/http_client.h"

#include <fcntl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <optional>

namespace pgwarden::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clk = std::chrono::steady_clock;

// Largest response body Send() accepts.
constexpr uint64_t kMaxBodyBytes = 64ull << 20;

// One TCP connection with the bytes read past the last message.
struct Connection {
  explicit Connection(asio::io_context& ioc) : stream(ioc) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool reused = false;  // a whole exchange already happened on it
};

// Starts an operation with a handler that records its error code, then runs
// the io_context until that handler ran. The operation must be bounded (a
// tcp_stream deadline) so that this returns.
template <typename Start>
error_code RunOp(asio::io_context& ioc, Start&& start) {
  std::optional<error_code> result;
  start([&result](error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  while (!result && ioc.run_one() > 0) {
  }
  return result.value_or(asio::error::operation_aborted);
}

// True when a kept-alive connection failed the way an idle connection closed
// by the server fails: the request never reached a live peer.
bool IsStaleConnectionError(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

std::string Millis(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

}  // namespace

Status SplitHostPort(std::string_view endpoint, std::string* host, std::string* port) {
  std::string_view s = endpoint;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (s.substr(0, scheme.size()) == scheme) s.remove_prefix(scheme.size());
  }
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  size_t colon;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return InvalidArgument("bad endpoint '" + std::string(endpoint) + "': want [addr]:port");
    }
    *host = std::string(s.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return InvalidArgument("bad endpoint '" + std::string(endpoint) + "': want host:port");
    }
    *host = std::string(s.substr(0, colon));
  }
  std::string_view p = s.substr(colon + 1);
  bool digits = !p.empty() && p.size() <= 5;
  for (char c : p) digits = digits && c >= '0' && c <= '9';
  if (!digits || std::stoi(std::string(p)) == 0 || std::stoi(std::string(p)) > 65535) {
    return InvalidArgument("bad endpoint '" + std::string(endpoint) + "': bad port");
  }
  *port = std::string(p);
  return Status::Ok();
}

struct HttpClient::Impl {
  asio::io_context ioc;
  // Kept-alive connections by endpoint. Declared after ioc: destroyed first.
  std::map<std::string, std::unique_ptr<Connection>> pool;

  // Resolves host:port (numeric addresses without a lookup) before `deadline`.
  Result<std::vector<tcp::endpoint>> Resolve(const std::string& host, const std::string& port,
                                             Clk::time_point deadline) {
    error_code ec;
    asio::ip::address addr = asio::ip::make_address(host, ec);
    if (!ec) return std::vector<tcp::endpoint>{tcp::endpoint(addr, std::stoi(port))};
    tcp::resolver resolver(ioc);
    std::optional<error_code> result;
    std::vector<tcp::endpoint> out;
    resolver.async_resolve(host, port,
                           [&](error_code e, const tcp::resolver::results_type& results) {
                             result = e;
                             for (const auto& r : results) out.push_back(r.endpoint());
                           });
    ioc.restart();
    while (!result && ioc.run_one_until(deadline) > 0) {
    }
    if (!result) {
      resolver.cancel();
      ioc.restart();
      while (!result && ioc.run_one() > 0) {
      }
      return Timeout("resolving " + host + ": timed out");
    }
    if (*result) return IoError("resolving " + host + ": " + result->message());
    if (out.empty()) return IoError("resolving " + host + ": no address");
    return out;
  }

  Result<std::unique_ptr<Connection>> Connect(const std::string& endpoint, Clk::time_point deadline,
                                              std::chrono::milliseconds timeout) {
    std::string host, port;
    PGW_RETURN_IF_ERROR(SplitHostPort(endpoint, &host, &port));
    auto addrs = Resolve(host, port, deadline);
    if (!addrs.ok()) return addrs.status();
    auto conn = std::make_unique<Connection>(ioc);
    conn->stream.expires_at(deadline);
    error_code ec =
        RunOp(ioc, [&](auto handler) { conn->stream.async_connect(*addrs, std::move(handler)); });
    if (ec == beast::error::timeout) {
      return Timeout("connecting to " + endpoint + ": timed out after " + Millis(timeout));
    }
    if (ec) return IoError("connecting to " + endpoint + ": " + ec.message());
    conn->stream.socket().set_option(tcp::no_delay(true), ec);
    ::fcntl(conn->stream.socket().native_handle(), F_SETFD, FD_CLOEXEC);
    return conn;
  }

  static http::request<http::string_body> BuildRequest(const std::string& endpoint,
                                                       const HttpClientRequest& request) {
    http::request<http::string_body> req;
    req.method_string(request.method);
    req.target(request.target);
    req.version(11);
    std::string_view host = endpoint;
    if (host.substr(0, 7) == "http://") host.remove_prefix(7);
    req.set(http::field::host, beast::string_view(host.data(), host.size()));
    req.set(http::field::user_agent, "pgwarden");
    for (const auto& [name, value] : request.headers) req.set(name, value);
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
      req.set(http::field::content_type, request.content_type);
      req.body() = request.body;
    }
    req.keep_alive(true);
    req.prepare_payload();
    return req;
  }

  Result<HttpClientResponse> Send(const std::string& endpoint, const HttpClientRequest& request,
                                  std::chrono::milliseconds timeout) {
    const Clk::time_point deadline = Clk::now() + timeout;
    const std::string what = request.method + " " + endpoint + request.target;
    http::request<http::string_body> req = BuildRequest(endpoint, request);
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<Connection> conn;
      if (auto it = pool.find(endpoint); it != pool.end()) {
        conn = std::move(it->second);
        pool.erase(it);
      } else {
        auto c = Connect(endpoint, deadline, timeout);
        if (!c.ok()) return c.status();
        conn = std::move(*c);
      }
      const bool was_reused = conn->reused;
      conn->stream.expires_at(deadline);
      error_code ec = RunOp(
          ioc, [&](auto handler) { http::async_write(conn->stream, req, std::move(handler)); });
      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxBodyBytes);
      if (!ec) {
        ec = RunOp(ioc, [&](auto handler) {
          http::async_read(conn->stream, conn->buffer, parser, std::move(handler));
        });
      }
      if (ec) {
        error_code ignored;
        conn->stream.socket().close(ignored);
        if (was_reused && attempt == 0 && IsStaleConnectionError(ec)) continue;
        if (ec == beast::error::timeout) {
          return Timeout(what + ": timed out after " + Millis(timeout));
        }
        return IoError(what + ": " + ec.message());
      }
      http::response<http::string_body> res = parser.release();
      HttpClientResponse out;
      out.status = static_cast<int>(res.result_int());
      out.content_type = std::string(res[http::field::content_type]);
      out.body = std::move(res.body());
      if (res.keep_alive()) {
        conn->reused = true;
        pool[endpoint] = std::move(conn);
      } else {
        error_code ignored;
        conn->stream.socket().close(ignored);
      }
      return out;
    }
  }

  Result<StreamEnd> Stream(const std::string& endpoint, const HttpClientRequest& request,
                           std::chrono::milliseconds timeout, const LineCallback& on_line) {
    const Clk::time_point deadline = Clk::now() + timeout;
    const std::string what = request.method + " " + endpoint + request.target;
    auto c = Connect(endpoint, deadline, timeout);
    if (!c.ok()) return c.status();  // connection errors, also timeouts, are errors here
    std::unique_ptr<Connection> conn = std::move(*c);
    struct Closer {
      Connection& c;
      ~Closer() {
        error_code ignored;
        c.stream.socket().close(ignored);
      }
    } closer{*conn};

    http::request<http::string_body> req = BuildRequest(endpoint, request);
    req.keep_alive(false);
    conn->stream.expires_at(deadline);
    error_code ec =
        RunOp(ioc, [&](auto handler) { http::async_write(conn->stream, req, std::move(handler)); });
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    if (!ec) {
      ec = RunOp(ioc, [&](auto handler) {
        http::async_read_header(conn->stream, conn->buffer, parser, std::move(handler));
      });
    }
    if (ec == beast::error::timeout) return StreamEnd::kTimedOut;
    if (ec) return IoError(what + ": " + ec.message());

    const int status = static_cast<int>(parser.get().result_int());
    const bool success = status >= 200 && status < 300;
    std::string pending;  // bytes of a line not yet complete (or the error body)
    char chunk[8192];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      ec = RunOp(ioc, [&](auto handler) {
        http::async_read_some(conn->stream, conn->buffer, parser, std::move(handler));
      });
      if (ec == http::error::need_buffer) ec = {};
      if (ec == beast::error::timeout) {
        if (!success) break;
        return StreamEnd::kTimedOut;
      }
      if (ec == http::error::end_of_stream || ec == http::error::partial_message) break;
      if (ec) return IoError(what + ": " + ec.message());
      pending.append(chunk, sizeof chunk - parser.get().body().size);
      if (!success) {
        if (pending.size() > 4096) break;
        continue;
      }
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string_view line(pending.data() + start, nl - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        if (!on_line(line)) return StreamEnd::kStopped;
      }
      pending.erase(0, start);
    }
    if (!success) {
      return IoError(what + ": HTTP " + std::to_string(status) + ": " + pending.substr(0, 512));
    }
    if (!pending.empty() && !on_line(pending)) return StreamEnd::kStopped;
    return StreamEnd::kEndOfStream;
  }
};

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {}
HttpClient::~HttpClient() = default;

Result<HttpClientResponse> HttpClient::Send(const std::string& endpoint,
                                            const HttpClientRequest& request,
                                            std::chrono::milliseconds timeout) {
  return impl_->Send(endpoint, request, timeout);
}

Result<HttpClientResponse> HttpClient::Get(const std::string& endpoint, const std::string& target,
                                           std::chrono::milliseconds timeout) {
  HttpClientRequest r;
  r.method = "GET";
  r.target = target;
  return impl_->Send(endpoint, r, timeout);
}

Result<HttpClientResponse> HttpClient::Post(const std::string& endpoint, const std::string& target,
                                            std::string body, std::chrono::milliseconds timeout) {
  HttpClientRequest r;
  r.method = "POST";
  r.target = target;
  r.body = std::move(body);
  return impl_->Send(endpoint, r, timeout);
}

Result<StreamEnd> HttpClient::Stream(const std::string& endpoint, const HttpClientRequest& request,
                                     std::chrono::milliseconds timeout,
                                     const LineCallback& on_line) {
  return impl_->Stream(endpoint, request, timeout, on_line);
}

void HttpClient::CloseConnections() {
  for (auto& [endpoint, conn] : impl_->pool) {
    error_code ignored;
    conn->stream.socket().close(ignored);
  }
  impl_->pool.clear();
}

}  // namespace pgwarden::net
