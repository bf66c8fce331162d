// Helpers for the proxy integration tests: a one-node cluster with an application role, a running
// `pgwarden proxy`, raw protocol sockets.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include "itest_util.h"

namespace pgwarden::itest {

// The role the proxy tests log in as (through the proxy and directly).
inline constexpr const char* kAppUser = "app";
inline constexpr const char* kAppPassword = "app-pw-1";

// Raises this process's soft RLIMIT_NOFILE to `want` (or the hard limit
// when lower); children started afterwards inherit it. Returns the new soft
// limit.
rlim_t RaiseFileLimit(rlim_t want = 65536);

// A one-node `pgwarden up` cluster in `dir`/cluster with the role `app`
// (LOGIN, password kAppPassword, CREATE on schema public, CREATEDB). Owned
// by one test suite; not thread-safe.
class ProxyBackend {
 public:
  explicit ProxyBackend(const std::string& dir) : cluster_(dir + "/cluster") {}
  // `up --nodes 1`, then creates the role. Fails with the up output and logs.
  Status Start();

  LocalClusterGuard& cluster() { return cluster_; }
  uint16_t pg_port() const { return node_.pg_port; }
  // Superuser straight to PostgreSQL (dbname postgres).
  const std::string& superuser_conninfo() const { return node_.pg_conninfo; }
  // The superuser's name and password (the node's postgresql.superuser).
  const config::RoleAuth& superuser() const { return node_.superuser; }
  // `app` straight to PostgreSQL; `extra` is appended ("dbname=x ...").
  std::string DirectConninfo(const std::string& extra = "") const;
  // The stored SCRAM secret of `app` (pg_authid.rolpassword).
  Result<std::string> AppScramSecret() const;

 private:
  LocalClusterGuard cluster_;
  NodeInfo node_;
};

// One entry of proxy.databases.
struct ProxyDatabase {
  std::string name;       // what clients ask for
  std::string dbname;     // on the server ("" : same as name)
  int pool_size = 0;      // 0: default_pool_size
  std::string pool_mode;  // "" : the proxy's pool_mode
};

// What the proxy YAML says beyond listen/auth, which ProxyProcess fills in.
struct ProxyOptions {
  int workers = 2;
  int default_pool_size = 20;
  std::string pool_mode = "transaction";
  std::string client_login_timeout = "60s";
  std::string client_message_timeout = "30s";
  // More lines of the proxy section (indented by two spaces), e.g. client_tls.
  std::string extra_yaml;
  std::string max_packet_size;  // "" : the default
  std::string query_wait_timeout = "120s";
  // The userlist.txt value for `app`: the plain password by default.
  std::string app_secret = kAppPassword;
  // More userlist.txt lines after app's (each ending in a newline), e.g. UserlistEntry(...).
  std::string extra_userlist;
  std::vector<ProxyDatabase> databases;  // "postgres" is added when absent
};

// A `pgwarden proxy -c FILE` child in front of a PostgreSQL on 127.0.0.1,
// stopped by PID in Stop() / the destructor. Owned by one test suite.
class ProxyProcess {
 public:
  ProxyProcess() = default;
  ~ProxyProcess() { Stop(); }
  ProxyProcess(const ProxyProcess&) = delete;
  ProxyProcess& operator=(const ProxyProcess&) = delete;

  // Writes dir/userlist.txt and dir/proxy.yml, starts the proxy with its
  // output in dir/proxy.log and waits (up to 20 s) until `app` can run
  // SELECT 1 through it.
  Status Start(const std::string& dir, uint16_t pg_port, const ProxyOptions& opts);
  void Stop();

  uint16_t port() const { return port_; }
  pid_t pid() const { return process_.pid(); }
  // True while the child has not exited.
  bool alive();
  // Waits up to `timeout` for the child to exit by itself; its result, or nullopt.
  std::optional<ProcessResult> Wait(std::chrono::milliseconds timeout) {
    return process_.Wait(timeout);
  }
  // dir/userlist.txt, the proxy's auth_file (rewrite it and SIGHUP to reload).
  const std::string& userlist_path() const { return userlist_path_; }
  // `app` through the proxy to proxy database `db`; `extra` is appended.
  std::string Conninfo(const std::string& db = "postgres", const std::string& extra = "") const;
  // The last `lines` lines of the proxy's log.
  std::string Log(int lines = 40) const;
  const std::string& config_path() const { return config_path_; }

 private:
  ChildProcess process_;
  uint16_t port_ = 0;
  std::string config_path_;
  std::string log_path_;
  std::string userlist_path_;
};

// The global test environment of a proxy test binary: a temp dir, a one-node cluster in it and a
// ProxyProcess for the subclass to start. TearDown stops the proxy (by PID), then the cluster,
// then removes the directory; a subclass's TearDown stops its own things first, then calls it.
class ProxyClusterEnv : public ::testing::Environment {
 public:
  void TearDown() override;

  std::unique_ptr<TempDir> tmp;
  std::unique_ptr<ProxyBackend> backend;
  std::unique_ptr<ProxyProcess> proxy;  // not started by StartCluster
  Status setup = Status::Ok();

 protected:
  // Creates tmp (/tmp/<prefix>-XXXXXX), backend and proxy, then starts the backend.
  Status StartCluster(const std::string& prefix);
};

// One userlist.txt line: "user" "secret" and a newline (quotes doubled).
std::string UserlistEntry(const std::string& user, const std::string& secret);

// The value, or `fallback` with the error appended when `r` failed.
std::string ValueOr(const Result<std::string>& r, const std::string& fallback = "?");

// --- Client programs -----------------------------------------------------------------

// A python3 in /usr/bin or /usr/local/bin that can `import psycopg2` (each tried for at most
// `timeout`); NotFound, naming what is missing, when there is none.
Result<std::string> FindPythonWithPsycopg2(std::chrono::milliseconds timeout);

// node-postgres installed for the tests.
struct NodePostgres {
  std::string node;          // the node binary
  std::string node_modules;  // the NODE_PATH with pg@8 in it
};
// Finds node and npm in /usr/bin or /usr/local/bin and installs pg@8 under `dir` (which must
// exist) with `npm install --prefix dir`, killed after `timeout`. NotFound when node or npm is
// missing; IoError with npm's output when the install fails.
Result<NodePostgres> InstallNodePostgres(const std::string& dir, std::chrono::milliseconds timeout);

// --- Raw libpq ----------------------------------------------------------------------

struct PqFinish {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PqClear {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PqConn = std::unique_ptr<PGconn, PqFinish>;
using PqResult = std::unique_ptr<PGresult, PqClear>;

// A blocking libpq connection; on failure nullptr and libpq's message in `error`.
PqConn OpenPq(const std::string& conninfo, std::string* error);
// What one statement returned: the first value (or ""), SQLSTATE and message on error.
struct PqOutcome {
  bool ok = false;
  std::string value;     // first column of the first row, "" when none
  std::string sqlstate;  // on error
  std::string error;     // on error
  int rows = 0;
};
// Summarises a result (nullptr: the connection's error).
PqOutcome Outcome(PGconn* conn, PGresult* res);
// PQexec and Outcome.
PqOutcome PqExec(PGconn* conn, const std::string& sql);
// Waits for the first result of a query sent with PQsendQuery (the rest is
// drained); nullptr when nothing came within `timeout`.
PqResult WaitResult(PGconn* conn, std::chrono::milliseconds timeout);

// --- Raw protocol sockets --------------------------------------------------------

// One backend message: type byte and body (without type and length).
struct WireMessage {
  char type = 0;
  std::string body;
};

// A blocking TCP connection to 127.0.0.1:port, or -1.
int ConnectTcp(uint16_t port);
// Writes all of `bytes`; false on error.
bool SendAll(int fd, const std::string& bytes);
// What ReadUntilClosed saw.
struct ReadOutcome {
  std::string bytes;    // everything read
  bool closed = false;  // EOF or reset seen before the timeout
  std::chrono::milliseconds elapsed{0};
};
// Reads until the peer closes or `timeout` passes.
ReadOutcome ReadUntilClosed(int fd, std::chrono::milliseconds timeout);
// Reads until at least `n` bytes arrived, the peer closes, or `timeout`.
ReadOutcome ReadAtLeast(int fd, size_t n, std::chrono::milliseconds timeout);
// Splits backend bytes into messages (a trailing partial message is dropped).
std::vector<WireMessage> SplitMessages(const std::string& bytes);
// The fields of an ErrorResponse / NoticeResponse body by code ('C', 'M', ...).
std::map<char, std::string> ErrorFields(const std::string& body);
// A v3 StartupMessage for user/database (protocol `version`).
std::string StartupPacket(const std::string& user, const std::string& database,
                          uint32_t version = 196608);
// A big-endian int32.
std::string Int32(uint32_t v);

}  // namespace pgwarden::itest
