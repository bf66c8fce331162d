// A small blocking HTTP/1.1 client (Boost.Beast) with per-request deadlines and streaming reads.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pgwarden::net {

// What the client sends. (HttpRequest / HttpResponse are the server's types.)
struct HttpClientRequest {
  std::string method = "GET";  // "GET", "POST", "PUT", "DELETE", ...
  std::string target = "/";    // path and query, e.g. "/v3/kv/range"
  std::string body;
  std::string content_type = "application/json";             // sent only with a body
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// What came back.
struct HttpClientResponse {
  int status = 0;  // e.g. 200
  std::string body;
  std::string content_type;  // the Content-Type header, or ""
};

// How a streaming read ended (errors are returned as a Status instead).
enum class StreamEnd {
  kStopped,      // the line callback returned false
  kTimedOut,     // the timeout passed with the stream still open
  kEndOfStream,  // the server finished the response body
};

// Called with each line of a streamed body (without the "\n" or "\r\n");
// return false to stop reading.
using LineCallback = std::function<bool(std::string_view line)>;

// Splits "host:port", "[v6addr]:port" or "http://host:port/" into host and
// port. InvalidArgument when there is no valid port.
Status SplitHostPort(std::string_view endpoint, std::string* host, std::string* port);

// Blocking HTTP/1.1 client. Runs every operation on a private io_context
// bounded by the request's deadline, and keeps one keep-alive connection per
// endpoint for the next request. Endpoints are "host:port" (an "http://"
// prefix is accepted). Owned by one user; not thread-safe: one request at a
// time per instance.
class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends `request` and reads the whole response, all within `timeout`.
  // Any HTTP status is a success; errors: Io (resolve, connect, reset, bad
  // response), Timeout, InvalidArgument (bad endpoint).
  Result<HttpClientResponse> Send(const std::string& endpoint, const HttpClientRequest& request,
                                  std::chrono::milliseconds timeout);
  Result<HttpClientResponse> Get(const std::string& endpoint, const std::string& target,
                                 std::chrono::milliseconds timeout);
  Result<HttpClientResponse> Post(const std::string& endpoint, const std::string& target,
                                  std::string body, std::chrono::milliseconds timeout);

  // Sends `request` on a fresh connection and hands the response body to
  // `on_line` one line at a time as it arrives (chunked or not), until the
  // callback returns false, `timeout` passes or the body ends. The
  // connection is closed afterwards. Failing to connect (also in time) is an
  // error; a timeout once connected is kTimedOut. A non-2xx status is an Io
  // error carrying the status and the start of the body.
  Result<StreamEnd> Stream(const std::string& endpoint, const HttpClientRequest& request,
                           std::chrono::milliseconds timeout, const LineCallback& on_line);

  // Closes every kept-alive connection.
  void CloseConnections();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgwarden::net
