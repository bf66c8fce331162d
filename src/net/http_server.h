// A small HTTP/1.1 server (Boost.Beast) that hands each request to one handler function.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pgwarden::net {

// One parsed request, as the handler sees it.
struct HttpRequest {
  std::string method;                          // as sent, e.g. "GET", "HEAD", "OPTIONS", "POST"
  std::string target;                          // the raw request target, e.g. "/replica?lag=1MB"
  std::string path;                            // target without the query string, e.g. "/replica"
  std::map<std::string, std::string> query;    // decoded query parameters (last one wins)
  std::map<std::string, std::string> headers;  // header names in lower case
  std::string body;
  std::string remote_address;  // peer IP address, e.g. "127.0.0.1"
};

// What the handler answers. The server adds Content-Length, Server and
// Connection; for HEAD it sends the headers of this response without its body.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";  // empty: no Content-Type header
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// Called on the server thread, one request at a time; must not block for long.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";        // address or name to listen on; "0.0.0.0" / "::" for all
  uint16_t port = 8008;                  // 0: the kernel picks one (see HttpServer::port())
  size_t max_request_bytes = 64 * 1024;  // header + body; larger requests get 413
  std::chrono::milliseconds idle_timeout{10000};  // to read one request, or between requests
  std::string server_header = std::string("pgwarden/") + PGWARDEN_VERSION;
};

// Splits a request target into its path and decoded query parameters
// ("%41" and "+" decoded in the query; the path is kept as sent).
void ParseRequestTarget(std::string_view target, std::string* path,
                        std::map<std::string, std::string>* query);

// Owns one io_context and the one thread that runs it. Start(), Stop() and
// port() may be called from any one thread (not concurrently); the handler
// runs on the server thread.
class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // Stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the server thread. Fails (IoError "cannot listen
  // on host:port: <reason>") when the address cannot be bound; InvalidArgument
  // when already started.
  Status Start();
  // Closes the listener and every connection, then joins the thread.
  // Safe to call twice, or without Start().
  void Stop();

  // The bound port (useful with port 0). REQUIRES: Start() succeeded.
  uint16_t port() const { return bound_port_; }
  // "host:port" as bound, for logs.
  std::string address() const;

 private:
  struct Impl;
  HttpServerOptions options_;
  HttpHandler handler_;
  std::unique_ptr<Impl> impl_;
  uint16_t bound_port_ = 0;
};

using HttpServerPtr = std::unique_ptr<HttpServer>;

}  // namespace pgwarden::net
