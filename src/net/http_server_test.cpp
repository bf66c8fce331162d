// Tests of HttpServer over real loopback sockets, and of request target parsing.
#include "net/http_server.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace pgwarden::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Answers "<method> <path> q=<query as k=v;...> body=<body>" with status from ?status=.
HttpResponse EchoHandler(const HttpRequest& req) {
  if (req.path == "/throw") throw std::runtime_error("boom");
  HttpResponse res;
  res.content_type = "text/plain";
  res.status = req.query.count("status") ? std::stoi(req.query.at("status")) : 200;
  std::string q;
  for (const auto& [k, v] : req.query) q += k + "=" + v + ";";
  res.body = req.method + " " + req.path + " q=" + q + " body=" + req.body;
  res.headers.emplace_back("X-Test", "yes");
  return res;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(StartServer(HttpServerOptions{}).ok()); }

  Status StartServer(HttpServerOptions options) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<HttpServer>(std::move(options), EchoHandler);
    return server_->Start();
  }

  tcp::socket Connect() {
    tcp::socket socket(ioc_);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    return socket;
  }

  // Sends raw bytes and returns everything the server sends until it closes.
  std::string RawExchange(const std::string& request) {
    tcp::socket socket = Connect();
    asio::write(socket, asio::buffer(request));
    std::string out;
    beast::error_code ec;
    char buf[4096];
    for (;;) {
      size_t n = socket.read_some(asio::buffer(buf), ec);
      if (ec) break;
      out.append(buf, n);
    }
    return out;
  }

  http::response<http::string_body> Get(tcp::socket& socket, const std::string& target,
                                        http::verb verb = http::verb::get,
                                        const std::string& body = "") {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "localhost");
    req.body() = body;
    req.prepare_payload();
    http::write(socket, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    return res;
  }

  asio::io_context ioc_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersWithHandlerStatusBodyAndHeaders) {
  EXPECT_NE(server_->port(), 0);
  tcp::socket socket = Connect();
  auto res = Get(socket, "/replica?lag=1MB&tag_x=a%20b");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "GET /replica q=lag=1MB;tag_x=a b; body=");
  EXPECT_EQ(res[http::field::content_type], "text/plain");
  EXPECT_EQ(res["X-Test"], "yes");
  EXPECT_THAT(std::string(res[http::field::server]), StartsWith("pgwarden/"));

  auto res503 = Get(socket, "/primary?status=503");
  EXPECT_EQ(res503.result_int(), 503);
}

TEST_F(HttpServerTest, KeepsConnectionAliveAcrossRequests) {
  tcp::socket socket = Connect();
  for (int i = 0; i < 5; ++i) {
    auto res = Get(socket, "/health?i=" + std::to_string(i));
    ASSERT_EQ(res.result_int(), 200);
    EXPECT_TRUE(res.keep_alive());
    EXPECT_THAT(res.body(), HasSubstr("i=" + std::to_string(i)));
  }
}

TEST_F(HttpServerTest, PassesPostBody) {
  tcp::socket socket = Connect();
  auto res = Get(socket, "/switchover", http::verb::post, "{\"leader\":\"a\"}");
  EXPECT_EQ(res.body(), "POST /switchover q= body={\"leader\":\"a\"}");
}

TEST_F(HttpServerTest, HeadSendsHeadersWithoutBody) {
  std::string out = RawExchange("HEAD /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(out, StartsWith("HTTP/1.1 200 OK\r\n"));
  std::string expected_len = std::to_string(std::string("HEAD /primary q= body=").size());
  EXPECT_THAT(out, HasSubstr("Content-Length: " + expected_len + "\r\n"));
  ASSERT_THAT(out, HasSubstr("\r\n\r\n"));
  EXPECT_EQ(out.substr(out.find("\r\n\r\n") + 4), "");
}

TEST_F(HttpServerTest, OptionsIsPassedToHandler) {
  tcp::socket socket = Connect();
  auto res = Get(socket, "/replica?status=503", http::verb::options);
  EXPECT_EQ(res.result_int(), 503);
  EXPECT_THAT(res.body(), StartsWith("OPTIONS /replica"));
}

TEST_F(HttpServerTest, OversizedBodyGets413) {
  std::string body(100 * 1024, 'x');
  std::string out =
      RawExchange("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\n\r\n" + body);
  EXPECT_THAT(out, StartsWith("HTTP/1.1 413 "));
  // And the server goes on serving.
  tcp::socket socket = Connect();
  EXPECT_EQ(Get(socket, "/health").result_int(), 200);
}

TEST_F(HttpServerTest, OversizedHeaderGets413) {
  std::string out = RawExchange(
      "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(80 * 1024, 'y') + "\r\n\r\n");
  EXPECT_THAT(out, StartsWith("HTTP/1.1 413 "));
}

TEST_F(HttpServerTest, GarbageGets400AndServerKeepsServing) {
  std::string out = RawExchange("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_THAT(out, StartsWith("HTTP/1.1 400 "));
  out = RawExchange(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + "\r\n\r\n");
  EXPECT_THAT(out, StartsWith("HTTP/1.1 400 "));
  tcp::socket socket = Connect();
  EXPECT_EQ(Get(socket, "/health").result_int(), 200);
}

TEST_F(HttpServerTest, HandlerExceptionGets500) {
  tcp::socket socket = Connect();
  EXPECT_EQ(Get(socket, "/throw").result_int(), 500);
  EXPECT_EQ(Get(socket, "/health").result_int(), 200);
}

TEST_F(HttpServerTest, ClosesIdleConnections) {
  HttpServerOptions options;
  options.idle_timeout = std::chrono::milliseconds(200);
  ASSERT_TRUE(StartServer(options).ok());
  tcp::socket socket = Connect();
  auto start = std::chrono::steady_clock::now();
  char c;
  beast::error_code ec;
  socket.read_some(asio::buffer(&c, 1), ec);
  EXPECT_TRUE(ec) << "expected the server to close the idle connection";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(HttpServerTest, BindErrorNamesTheAddress) {
  HttpServerOptions options;
  options.host = "127.0.0.1";
  options.port = server_->port();
  HttpServer second(options, EchoHandler);
  Status st = second.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kIo);
  EXPECT_THAT(st.message(),
              HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(server_->port()) + ": "));
  EXPECT_THAT(st.message(), HasSubstr("in use"));
}

TEST_F(HttpServerTest, StartTwiceFailsStopTwiceIsFine) {
  EXPECT_FALSE(server_->Start().ok());
  tcp::socket open_connection = Connect();  // Stop must close it, not wait for it
  server_->Stop();
  server_->Stop();
  beast::error_code ec;
  tcp::socket socket(ioc_);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()), ec);
  EXPECT_TRUE(ec) << "the listener should be closed";
}

TEST(HttpServerNoStart, StopWithoutStartIsFine) {
  HttpServer server(HttpServerOptions{}, EchoHandler);
  server.Stop();
}

TEST(ParseRequestTargetTest, SplitsPathAndDecodesQuery) {
  std::string path;
  std::map<std::string, std::string> query;
  ParseRequestTarget("/replica?lag=16kB&tag_zone=eu%2Dwest+1&flag&=x&a=1&a=2", &path, &query);
  EXPECT_EQ(path, "/replica");
  EXPECT_EQ(query.at("lag"), "16kB");
  EXPECT_EQ(query.at("tag_zone"), "eu-west 1");
  EXPECT_EQ(query.at("flag"), "");
  EXPECT_EQ(query.at("a"), "2");
  ParseRequestTarget("/health", &path, &query);
  EXPECT_EQ(path, "/health");
  EXPECT_TRUE(query.empty());
  ParseRequestTarget("/x?bad=%zz%4", &path, &query);
  EXPECT_EQ(query.at("bad"), "%zz%4");
}

}  // namespace
}  // namespace pgwarden::net
