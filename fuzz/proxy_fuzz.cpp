// libFuzzer target for the proxy's client session state machine: startup, TLS and cancel
// requests, authentication, the admin console, and forwarding with transaction pooling.
//
// Each input is what one client sends. The harness hands one end of a socket
// pair to a worker of an in-process Proxy (as the acceptor does), writes the
// input in chunks while reading whatever comes back, half-closes, and waits
// until the proxy has closed the connection and freed the session. A session
// that does not end, a crash, undefined behaviour or a leak is a finding.
//
// Input layout: byte 0 seeds the chunk sizes; the rest is the client's bytes.
//
// The server: PGW_FUZZ_PG_PORT, PGW_FUZZ_PG_USER and PGW_FUZZ_PG_PASSWORD name
// a real PostgreSQL on 127.0.0.1 (fuzz/run.sh proxy starts one), so that
// requests go through pools to real server connections and come back. Without
// them the databases point at a closed port and sessions end at "could not
// connect". Build and run with fuzz/run.sh.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "common/log.h"
#include "proxy/client.h"
#include "proxy/proxy.h"
#include "proxy/proxy_config.h"

namespace pgwarden::proxy {
namespace {

using Clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How long a session may take to end once the client has sent everything:
// generous, because a server round trip on a loaded machine can be slow.
constexpr auto kSessionDeadline = 15s;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "proxy_fuzz: %s\n", what);
  std::abort();
}

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// A port nothing listens on (bound, never listened to, kept for the run).
uint16_t ClosedPort() {
  static int fd = -1;
  static uint16_t port = 0;
  if (fd < 0) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      Fail("cannot reserve a closed port");
    port = ntohs(a.sin_port);
  }
  return port;
}

ProxyConfig FuzzConfig(const std::string& userlist) {
  ProxyConfig cfg;
  cfg.listen = {"127.0.0.1", 0};
  cfg.workers = 1;
  cfg.worker_busy = 0;
  cfg.max_packet_size = 64 * 1024;  // small, so that "message too large" is reachable
  cfg.client_login_timeout = 10s;
  cfg.client_message_timeout = 10s;
  cfg.query_wait_timeout = 10s;
  cfg.server_connect_timeout = 5s;
  cfg.shutdown_timeout = 1s;
  cfg.auth_file = userlist;
  cfg.stats_users = {"stats"};  // SHOW only: no SHUTDOWN, PAUSE or RELOAD from fuzz input
  // Users pick the method: md5user md5, scramuser SCRAM, everyone else trust.
  auto rule = [](const char* user, AuthMethod m) {
    HbaRule r;
    r.databases = {"all"};
    r.users = {user};
    r.any_address = true;
    r.method = m;
    return r;
  };
  cfg.hba = {rule("md5user", AuthMethod::kMd5), rule("scramuser", AuthMethod::kScram),
             rule("all", AuthMethod::kTrust)};
  std::string port = Env("PGW_FUZZ_PG_PORT", "");
  DatabaseConfig db;
  db.host = "127.0.0.1";
  db.port = port.empty() ? ClosedPort() : static_cast<uint16_t>(std::stoi(port));
  db.dbname = "postgres";
  db.user = Env("PGW_FUZZ_PG_USER", "fuzz");
  db.password = Env("PGW_FUZZ_PG_PASSWORD", "fuzz");
  db.pool_size = 4;
  db.name = "db";
  cfg.databases["db"] = db;
  DatabaseConfig session = db;
  session.name = "sess";
  session.pool_mode = PoolMode::kSession;
  cfg.databases["sess"] = session;
  return cfg;
}

Proxy& TheProxy() {
  static Proxy* proxy = [] {
    // PGW_FUZZ_LOG=debug shows what the proxy does with one input.
    LogLevel level = LogLevel::kError;
    ParseLogLevel(Env("PGW_FUZZ_LOG", "error"), &level);
    SetLogLevel(level);
    char dir[] = "/tmp/pgw-proxy-fuzz.XXXXXX";
    if (::mkdtemp(dir) == nullptr) Fail("mkdtemp");
    std::string userlist = std::string(dir) + "/userlist.txt";
    std::ofstream(userlist) << "\"md5user\" \"secret\"\n\"scramuser\" \"secret\"\n";
    auto* p = new Proxy(config::Config{}, FuzzConfig(userlist));
    if (!p->Start().ok()) Fail("the proxy did not start");
    return p;
  }();
  return *proxy;
}

// Reads what is there (up to `wait`); false once the peer closed.
bool Drain(int fd, std::chrono::milliseconds wait) {
  char buf[16384];
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return true;
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
}

}  // namespace
}  // namespace pgwarden::proxy

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pgwarden::proxy;
  if (size < 1) return 0;
  Proxy& proxy = TheProxy();
  const int before = proxy.client_count();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Fail("socketpair");
  ::fcntl(sv[0], F_SETFL, O_NONBLOCK);
  int proxy_end = sv[0], client = sv[1];
  Worker& w = proxy.worker(0);
  w.loop().Post([&w, proxy_end] { w.Adopt(proxy_end); });

  // The client: chunks of 1..64 bytes or the rest, as the seed byte says,
  // reading replies in between (a client that waits now and then).
  uint32_t seed = data[0];
  const uint8_t* p = data + 1;
  size_t left = size - 1;
  bool open = true;
  while (left > 0 && open) {
    seed = seed * 1103515245u + 12345u;
    size_t chunk = (seed >> 16) % 4 == 0 ? left : 1 + (seed >> 8) % 64;
    if (chunk > left) chunk = left;
    ssize_t n = ::send(client, p, chunk, MSG_NOSIGNAL);
    if (n <= 0) break;  // the proxy closed on us
    p += n;
    left -= static_cast<size_t>(n);
    open = Drain(client, (seed >> 24) % 8 == 0 ? 5ms : 0ms);
  }
  ::shutdown(client, SHUT_WR);
  auto deadline = Clk::now() + kSessionDeadline;
  while (open) {
    if (Clk::now() > deadline) Fail("the proxy did not close a client that had stopped sending");
    open = Drain(client, 50ms);
  }
  ::close(client);
  // The session is freed on the worker's thread shortly after closing.
  while (proxy.client_count() > before) {
    if (Clk::now() > deadline) Fail("a closed client's session was not freed");
    std::this_thread::sleep_for(1ms);
  }
  return 0;
}
