// Helpers for the integration tests: temp dirs, running commands, local clusters, SQL, HTTP, polls.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/process.h"
#include "common/status.h"
#include "config/config.h"
#include "net/http_client.h"
#include "pg/connection.h"

namespace pgwarden::itest {

using namespace std::chrono_literals;

// The pgwarden binary under test (build dir).
const char* PgwardenBinary();

// True when the tests run as root (PostgreSQL then runs as the OS user postgres).
bool RunningAsRoot();

// A fresh directory /tmp/<prefix>-XXXXXX, mode 0755 so the postgres user can
// traverse it; removed with everything in it by the destructor. Owned by one
// test; not thread-safe.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "pgw-itest");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// What a finished command left, with stdout and stderr apart.
struct CommandResult {
  int exit_code = -1;   // exit status, or -1 when killed by a signal / not started
  int term_signal = 0;  // the signal that ended it, or 0
  bool timed_out = false;
  std::string out;  // stdout
  std::string err;  // stderr (or why the command could not start)
  // "argv: exited with N\nstdout: ...\nstderr: ..." for failure messages.
  std::string Describe() const;
  std::string argv;  // the command line, for Describe()
};

// Runs argv[0] (a path) to completion through pgwarden::RunProcess, with
// stdout and stderr captured separately (a /bin/sh wrapper sends stderr to a
// temp file). The child is killed after `timeout`. `opts.os_user` is not
// supported here (the stderr file is ours); use RunCombined for that.
CommandResult Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 60s,
                  const ProcessOptions& opts = {});

// Runs argv[0] with stdout+stderr combined (RunProcess as is); any os_user.
ProcessResult RunCombined(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = 60s, const ProcessOptions& opts = {});

// Runs `pgwarden args...`.
CommandResult RunPgwarden(const std::vector<std::string>& args,
                          std::chrono::milliseconds timeout = 60s);

// Polls `predicate` every `interval` until it returns true or `timeout`
// passes; returns its last answer. Always bounded in time.
bool WaitFor(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval = 200ms);

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t FreePort();

// The whole content of a file, or "" when it cannot be read.
std::string ReadFile(const std::string& path);
// Writes `content` to `path` (truncating); false on error.
bool WriteFile(const std::string& path, const std::string& content);

// --- SQL ---------------------------------------------------------------------

// Opens a libpq connection (5 s connect timeout).
Result<pg::ConnectionPtr> Connect(const std::string& conninfo);
// Opens a connection, runs `sql`, closes.
Result<pg::QueryResult> QueryOnce(const std::string& conninfo, const std::string& sql);
// The first column of the first row of `sql` on a fresh connection; an
// error (or NotFound when there is no row, "" for NULL).
Result<std::string> QueryValue(const std::string& conninfo, const std::string& sql);
// The same on an open connection.
Result<std::string> QueryValue(pg::Connection& conn, const std::string& sql);

// --- HTTP --------------------------------------------------------------------

// GET http://<endpoint><target> on a fresh connection.
Result<net::HttpClientResponse> HttpGet(const std::string& endpoint, const std::string& target,
                                        std::chrono::milliseconds timeout = 3s);
// The HTTP status of GET, or 0 when there was no answer.
int HttpStatus(const std::string& endpoint, const std::string& target);

// --- Child processes ---------------------------------------------------------

// A child process we started and stop by PID. Owned by one test.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // Stop() when still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] (a path) with stdout+stderr appended to `log_file`.
  Status Start(const std::vector<std::string>& argv, const std::string& log_file,
               const ProcessOptions& base = {});
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !result_; }
  // Waits up to `timeout` for the child to exit; its result, or nullopt.
  std::optional<ProcessResult> Wait(std::chrono::milliseconds timeout);
  // Sends `sig`, waits up to `grace` for the exit (then SIGKILL); the result.
  std::optional<ProcessResult> Stop(int sig = 15, std::chrono::milliseconds grace = 10s);
  const std::string& log_file() const { return log_file_; }

 private:
  pid_t pid_ = -1;
  std::optional<ProcessResult> result_;
  std::string log_file_;
};

// A one-member etcd on free loopback ports with its data under `dir`.
class EtcdServer {
 public:
  // Starts /usr/bin/etcd and waits (up to 20 s) until /health answers.
  Status Start(const std::string& dir);
  // "127.0.0.1:<client port>"
  const std::string& endpoint() const { return endpoint_; }

 private:
  ChildProcess process_;
  std::string endpoint_;
};

// --- Local clusters made by `pgwarden up` -------------------------------------

// One member of a local cluster, from D/<name>/node.yml.
struct NodeInfo {
  std::string name;
  std::string pg_conninfo;  // superuser over TCP
  std::string rest;         // "127.0.0.1:<port>"
  uint16_t pg_port = 0;
  config::RoleAuth superuser;
};

// Names of the nodes whose PostgreSQL answers pg_is_in_recovery() = false.
std::vector<std::string> PrimariesAmong(const std::vector<NodeInfo>& nodes);

// Runs `pgwarden up --dir D ...` on demand; the destructor runs `pgwarden down
// --dir D` and then SIGKILLs any process still alive whose PID is in
// D/*/agent.pid, D/etcd.pid or D/*/data/postmaster.pid (and whose command
// line shows it is ours). Owned by one test.
class LocalClusterGuard {
 public:
  explicit LocalClusterGuard(std::string dir) : dir_(std::move(dir)) {}
  ~LocalClusterGuard();
  LocalClusterGuard(const LocalClusterGuard&) = delete;
  LocalClusterGuard& operator=(const LocalClusterGuard&) = delete;

  const std::string& dir() const { return dir_; }
  // `pgwarden up --dir D extra...`
  CommandResult Up(const std::vector<std::string>& extra = {},
                   std::chrono::milliseconds timeout = 180s);
  // `pgwarden down --dir D`
  CommandResult Down(std::chrono::milliseconds timeout = 120s);
  // `pgwarden <cmd> --dir D extra...`
  CommandResult Pgwarden(const std::string& cmd, const std::vector<std::string>& extra = {},
                         std::chrono::milliseconds timeout = 60s);

  // Member names (directories with a node.yml), sorted.
  std::vector<std::string> Nodes() const;
  // The member's addresses and credentials; throws config::ConfigError.
  NodeInfo Node(const std::string& name) const;
  std::vector<NodeInfo> AllNodes() const;
  // The PID in D/<name>/agent.pid, or -1.
  pid_t AgentPid(const std::string& name) const;
  // `status --json` parsed; a null json when it failed.
  nlohmann::json StatusJson();
  // The leader's name from `status --json`, or "".
  std::string Leader();
  // The last lines of every agent.log and postgresql.log, for failure messages.
  std::string Logs(int lines = 30) const;
  // SIGKILLs whatever of ours is still alive (by PID from the pid files).
  void KillLeftovers() const;

 private:
  std::string dir_;
};

// PID on the first line of `pid_file`, or -1.
pid_t ReadPidFile(const std::string& pid_file);

}  // namespace pgwarden::itest
