// Integration tests against a real etcd 3.4 started on free 127.0.0.1 ports: Dcs semantics,
// failover.
#include "dcs/etcd_dcs.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/process.h"
#include "dcs/dcs_contract_test.h"
#include "net/http_client.h"

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using Clk = std::chrono::steady_clock;

constexpr const char* kEtcdBinary = "/usr/bin/etcd";

// A TCP socket on 127.0.0.1 with a kernel-chosen port; closed on destruction.
class BoundSocket {
 public:
  BoundSocket() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~BoundSocket() {
    if (fd_ >= 0) close(fd_);
  }
  BoundSocket(const BoundSocket&) = delete;
  BoundSocket& operator=(const BoundSocket&) = delete;
  // Accepts connections into the backlog but never reads: requests hang.
  void Listen() { listen(fd_, 16); }
  int port() const { return port_; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// An endpoint where nothing listens: connections are refused.
std::string ClosedEndpoint() {
  BoundSocket s;
  return s.endpoint();  // the port is free again once `s` closes
}

// One etcd child process with a temporary data directory. Stopped by PID in
// Stop() and in the destructor, so a failing test does not leave it behind.
class EtcdServer {
 public:
  ~EtcdServer() { Stop(); }

  Status Start() {
    char tmpl[] = "/tmp/pgwarden-etcd-test-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return IoError("mkdtemp failed");
    dir_ = tmpl;
    std::string client, peer;
    {
      BoundSocket c, p;  // both held open at once, so they differ
      client = "http://" + c.endpoint();
      peer = "http://" + p.endpoint();
      endpoint_ = c.endpoint();
    }
    std::vector<std::string> argv = {
        kEtcdBinary, "--name=pgwtest", "--data-dir=" + dir_ + "/data",
        "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
        "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
        "--initial-cluster=pgwtest=" + peer,
        // Fast election; also lowers the minimum lease TTL to 1 s.
        "--heartbeat-interval=50", "--election-timeout=500", "--logger=zap", "--log-level=warn"};
    ProcessOptions opts;
    opts.log_file = dir_ + "/etcd.log";
    auto pid = SpawnProcess(argv, opts);
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    net::HttpClient http;
    const auto deadline = Clk::now() + std::chrono::seconds(15);
    while (Clk::now() < deadline) {
      if (!ProcessAlive(pid_)) return IoError("etcd exited: " + LogTail());
      auto r = http.Get(endpoint_, "/health", milliseconds(500));
      if (r.ok() && r->status == 200 && r->body.find("\"true\"") != std::string::npos) {
        return Status::Ok();
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return Timeout("etcd did not become healthy: " + LogTail());
  }

  void Stop() {
    if (pid_ > 0) {
      StopProcess(pid_, SIGTERM, std::chrono::seconds(5));
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  const std::string& endpoint() const { return endpoint_; }

 private:
  std::string LogTail() const {
    std::ifstream in(dir_ + "/etcd.log");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    return s.size() > 2000 ? s.substr(s.size() - 2000) : s;
  }

  pid_t pid_ = -1;
  std::string dir_;
  std::string endpoint_;
};

// The one etcd of this test binary, started on first use and stopped by the
// environment's TearDown (and, failing that, by its destructor at exit).
EtcdServer* SharedEtcd() {
  static std::unique_ptr<EtcdServer> server;
  static Status started = [] {
    if (access(kEtcdBinary, X_OK) != 0) return NotFound(std::string(kEtcdBinary) + " missing");
    server = std::make_unique<EtcdServer>();
    return server->Start();
  }();
  if (!started.ok()) {
    ADD_FAILURE() << "cannot start etcd: " << started.ToString();
    return nullptr;
  }
  return server.get();
}

class EtcdEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    // Only stops what SharedEtcd() started; does not start it.
    if (started_) SharedEtcd()->Stop();
  }
  static inline std::atomic<bool> started_{false};
};
[[maybe_unused]] ::testing::Environment* const kEtcdEnvironment =
    ::testing::AddGlobalTestEnvironment(new EtcdEnvironment);

EtcdServer* Etcd() {
  EtcdServer* s = SharedEtcd();
  if (s != nullptr) EtcdEnvironment::started_ = true;
  return s;
}

// A fresh cluster prefix for each test, so tests do not see each other's keys.
std::string UniquePrefix() {
  static std::atomic<int> n{0};
  return "/service/etcdtest-" + std::to_string(getpid()) + "-" + std::to_string(++n) + "/";
}

class EtcdBackend : public DcsBackend {
 public:
  explicit EtcdBackend(std::string endpoint)
      : endpoint_(std::move(endpoint)),
        prefix_(UniquePrefix()),
        raw_({endpoint_}, milliseconds(2000)) {}
  std::unique_ptr<KvDcs> NewDcs(int ttl_seconds) override {
    return std::make_unique<EtcdDcs>(std::vector<std::string>{endpoint_}, prefix_, ttl_seconds,
                                     milliseconds(2000));
  }
  int ShortTtl() const override { return 1; }
  void LetLeasesExpire(int ttl_seconds) override {
    // etcd looks for expired leases every 500 ms and revokes through raft.
    std::this_thread::sleep_for(std::chrono::seconds(ttl_seconds) + milliseconds(1500));
  }
  KvStore& Store() override { return raw_; }
  std::string Prefix() const override { return prefix_; }

 private:
  std::string endpoint_;
  std::string prefix_;
  EtcdClient raw_;
};

INSTANTIATE_TEST_SUITE_P(Etcd, DcsContractTest,
                         ::testing::Values(BackendParam{"etcd",
                                                        []() -> std::unique_ptr<DcsBackend> {
                                                          EtcdServer* etcd = Etcd();
                                                          if (etcd == nullptr) return nullptr;
                                                          return std::make_unique<EtcdBackend>(
                                                              etcd->endpoint());
                                                        }}),
                         [](const auto& info) { return info.param.name; });

class EtcdDcsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = Etcd();
    ASSERT_NE(etcd_, nullptr);
  }
  EtcdServer* etcd_ = nullptr;
};

TEST_F(EtcdDcsTest, FailsOverFromAClosedEndpointAndRemembersTheWorkingOne) {
  const std::string closed = ClosedEndpoint();
  EtcdDcs dcs({closed, etcd_->endpoint()}, UniquePrefix(), 10, milliseconds(2000));
  auto won = dcs.TryInitialize("");
  ASSERT_TRUE(won.ok()) << won.status().ToString();
  EXPECT_TRUE(*won);
  EXPECT_EQ(dcs.client().current_endpoint(), etcd_->endpoint());
  ASSERT_TRUE(*dcs.AcquireLeader("a"));
  auto view = dcs.Load();
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->leader->name, "a");
  auto changed = dcs.WaitForChange(0, milliseconds(2000));
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_TRUE(*changed);
}

TEST_F(EtcdDcsTest, NoEndpointAnsweringIsDcsUnavailableNamingEachEndpoint) {
  const std::string a = ClosedEndpoint(), b = ClosedEndpoint();
  EtcdDcs dcs({a, b}, UniquePrefix(), 10, milliseconds(2000));
  const auto start = Clk::now();
  auto view = dcs.Load();
  EXPECT_LT(Clk::now() - start, milliseconds(2000)) << "refused connections fail at once";
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_NE(view.status().message().find(a), std::string::npos) << view.status().message();
  EXPECT_NE(view.status().message().find(b), std::string::npos) << view.status().message();
  EXPECT_EQ(dcs.AcquireLeader("a").status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_EQ(dcs.RenewLeader("a").status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_EQ(dcs.PublishMember(Member{}).code(), ErrorCode::kDcsUnavailable);
  auto changed = dcs.WaitForChange(1, milliseconds(1000));
  EXPECT_EQ(changed.status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_TRUE(dcs.Close().ok()) << "no lease was granted: nothing to revoke";
}

TEST_F(EtcdDcsTest, UnresponsiveEndpointTimesOutThenFailsOver) {
  BoundSocket hang;  // accepts TCP connections, never answers
  hang.Listen();
  const milliseconds timeout(400);
  EtcdDcs dcs({hang.endpoint(), etcd_->endpoint()}, UniquePrefix(), 10, timeout);
  auto start = Clk::now();
  auto view = dcs.Load();
  auto took = Clk::now() - start;
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + milliseconds(1500));
  start = Clk::now();
  ASSERT_TRUE(dcs.Load().ok());
  EXPECT_LT(Clk::now() - start, timeout) << "the working endpoint is tried first now";

  EtcdDcs alone({hang.endpoint()}, UniquePrefix(), 10, timeout);
  start = Clk::now();
  auto failed = alone.Load();
  took = Clk::now() - start;
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), ErrorCode::kDcsUnavailable);
  EXPECT_NE(failed.status().message().find("timed out"), std::string::npos)
      << failed.status().message();
  EXPECT_LT(took, timeout + milliseconds(1500));
}

TEST_F(EtcdDcsTest, ClientReportsMissingLeasesAndKeepsConnectionsUsable) {
  EtcdClient client({etcd_->endpoint()}, milliseconds(2000));
  auto ttl = client.KeepAliveLease(0x7777);
  ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
  EXPECT_EQ(*ttl, 0);
  EXPECT_EQ(client.RevokeLease(0x7777).code(), ErrorCode::kNotFound);
  EXPECT_EQ(client.Put("/pgw-test/k", "v", 0x7777).status().code(), ErrorCode::kNotFound);
  // Many requests on the kept-alive connection, also after error answers.
  const std::string prefix = UniquePrefix();
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(client.Put(prefix + std::to_string(i), std::string(i, 'x'), 0).ok()) << i;
  }
  auto range = client.Range(prefix, etcd::PrefixRangeEnd(prefix));
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->kvs.size(), 50u);
  auto deleted = client.DeleteRange(prefix, etcd::PrefixRangeEnd(prefix));
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 50);
  // Binary keys and values survive base64 both ways.
  const std::string key = prefix + std::string("\x00\xff\x80", 3);
  ASSERT_TRUE(client.Put(key, std::string("\x01\x00\xfe", 3), 0).ok());
  auto got = client.Range(key, "");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].value, std::string("\x01\x00\xfe", 3));
}

TEST_F(EtcdDcsTest, WatchFromACompactedRevisionCountsAsAChange) {
  EtcdClient client({etcd_->endpoint()}, milliseconds(2000));
  const std::string prefix = UniquePrefix();
  ASSERT_TRUE(client.Put(prefix + "a", "1", 0).ok());
  auto rev = client.Put(prefix + "a", "2", 0);
  ASSERT_TRUE(rev.ok());
  auto compact = client.Call("/v3/kv/compaction", {{"revision", std::to_string(*rev)}});
  ASSERT_TRUE(compact.ok()) << compact.status().ToString();
  auto changed = client.WaitForChange(prefix, etcd::PrefixRangeEnd(prefix), 1, milliseconds(2000));
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_TRUE(*changed);
}

TEST_F(EtcdDcsTest, HttpClientStreamsWatchLinesAndStopsOnRequest) {
  net::HttpClient http;
  const std::string prefix = UniquePrefix();
  EtcdClient client({etcd_->endpoint()}, milliseconds(2000));
  auto first = client.Put(prefix + "x", "1", 0);  // (another test compacts the history)
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(client.Put(prefix + "y", "2", 0).ok());
  net::HttpClientRequest req;
  req.method = "POST";
  req.target = "/v3/watch";
  req.body = etcd::EncodeWatchCreate(prefix, etcd::PrefixRangeEnd(prefix), *first).dump();
  std::vector<std::string> lines;
  auto end = http.Stream(etcd_->endpoint(), req, milliseconds(3000), [&](std::string_view line) {
    lines.emplace_back(line);
    return lines.size() < 2;
  });
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  EXPECT_EQ(*end, net::StreamEnd::kStopped);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("\"created\":true"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("\"events\""), std::string::npos) << lines[1];

  // Nothing after "created" from now on: the stream times out.
  req.body = etcd::EncodeWatchCreate(prefix, etcd::PrefixRangeEnd(prefix), 0).dump();
  lines.clear();
  auto start = Clk::now();
  end = http.Stream(etcd_->endpoint(), req, milliseconds(400), [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  });
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  EXPECT_EQ(*end, net::StreamEnd::kTimedOut);
  EXPECT_EQ(lines.size(), 1u);
  EXPECT_LT(Clk::now() - start, milliseconds(1500));
}

}  // namespace
}  // namespace pgwarden::dcs
