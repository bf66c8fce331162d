// Helpers for the integration tests: temp dirs, running commands, local clusters, SQL, HTTP, polls.
#include "itest_util.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "pg/controller.h"

namespace pgwarden::itest {
namespace fs = std::filesystem;
using Clk = std::chrono::steady_clock;

const char* PgwardenBinary() { return PGWARDEN_BINARY; }

bool RunningAsRoot() { return geteuid() == 0; }

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + tmpl + " failed: " + std::strerror(errno));
  }
  path_ = buf.data();
  chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string CommandResult::Describe() const {
  std::ostringstream os;
  os << argv << ": ";
  if (timed_out)
    os << "timed out";
  else if (term_signal != 0)
    os << "killed by signal " << term_signal;
  else
    os << "exited with " << exit_code;
  os << "\n--- stdout ---\n" << out << "\n--- stderr ---\n" << err;
  return os.str();
}

namespace {

std::string JoinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Last `n` lines of a file, indented.
std::string Tail(const std::string& path, int n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > n) lines.erase(lines.begin());
  }
  std::string out;
  for (const auto& l : lines) out += "    " + l + "\n";
  return out;
}

// The command line of a live process, NULs as spaces; "" when gone.
std::string CommandLine(pid_t pid) {
  std::string all = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(all.begin(), all.end(), '\0', ' ');
  return all;
}

}  // namespace

CommandResult Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                  const ProcessOptions& opts) {
  CommandResult res;
  res.argv = JoinArgv(argv);
  char err_tmpl[] = "/tmp/pgw-itest-stderr-XXXXXX";
  int fd = mkstemp(err_tmpl);
  if (fd < 0) {
    res.err = "mkstemp failed";
    return res;
  }
  close(fd);
  std::vector<std::string> wrapped = {"/bin/sh", "-c", "exec \"$@\" 2>\"$PGW_ITEST_STDERR\"", "sh"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  ProcessOptions o = opts;
  o.env.push_back(std::string("PGW_ITEST_STDERR=") + err_tmpl);
  auto r = RunProcess(wrapped, o, timeout);
  if (!r.ok()) {
    res.err = r.status().ToString();
  } else {
    res.exit_code = r->exit_code;
    res.term_signal = r->term_signal;
    res.timed_out = r->timed_out;
    res.out = r->output;
    res.err = ReadFile(err_tmpl);
  }
  unlink(err_tmpl);
  return res;
}

ProcessResult RunCombined(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const ProcessOptions& opts) {
  auto r = RunProcess(argv, opts, timeout);
  if (r.ok()) return *r;
  ProcessResult failed;
  failed.output = r.status().ToString();
  return failed;
}

CommandResult RunPgwarden(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {PgwardenBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, timeout);
}

bool WaitFor(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval) {
  auto deadline = Clk::now() + timeout;
  for (;;) {
    if (predicate()) return true;
    if (Clk::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << content;
  out.close();
  return static_cast<bool>(out);
}

Result<pg::ConnectionPtr> Connect(const std::string& conninfo) {
  return pg::Connection::Open(conninfo, std::chrono::seconds(5));
}

Result<pg::QueryResult> QueryOnce(const std::string& conninfo, const std::string& sql) {
  auto conn = Connect(conninfo);
  if (!conn.ok()) return conn.status();
  return (*conn)->Query(sql);
}

Result<std::string> QueryValue(pg::Connection& conn, const std::string& sql) {
  auto r = conn.Query(sql);
  if (!r.ok()) return r.status();
  if (r->rows.empty() || r->columns.empty()) return NotFound("no row from: " + sql);
  return r->text(0, 0);
}

Result<std::string> QueryValue(const std::string& conninfo, const std::string& sql) {
  auto conn = Connect(conninfo);
  if (!conn.ok()) return conn.status();
  return QueryValue(**conn, sql);
}

Result<net::HttpClientResponse> HttpGet(const std::string& endpoint, const std::string& target,
                                        std::chrono::milliseconds timeout) {
  net::HttpClient client;
  return client.Get(endpoint, target, timeout);
}

int HttpStatus(const std::string& endpoint, const std::string& target) {
  auto r = HttpGet(endpoint, target);
  return r.ok() ? r->status : 0;
}

// --- ChildProcess -------------------------------------------------------------

ChildProcess::~ChildProcess() {
  if (running()) Stop(SIGTERM, std::chrono::seconds(10));
}

Status ChildProcess::Start(const std::vector<std::string>& argv, const std::string& log_file,
                           const ProcessOptions& base) {
  ProcessOptions o = base;
  o.log_file = log_file;
  auto pid = SpawnProcess(argv, o);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  result_.reset();
  log_file_ = log_file;
  return Status::Ok();
}

std::optional<ProcessResult> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || result_) return result_;
  result_ = WaitProcess(pid_, timeout);
  return result_;
}

std::optional<ProcessResult> ChildProcess::Stop(int sig, std::chrono::milliseconds grace) {
  if (pid_ <= 0 || result_) return result_;
  if (kill(pid_, sig) == 0) result_ = WaitProcess(pid_, grace);
  if (!result_) {
    kill(pid_, SIGKILL);
    result_ = WaitProcess(pid_, std::chrono::seconds(5));
  }
  return result_;
}

// --- EtcdServer ---------------------------------------------------------------

Status EtcdServer::Start(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir + "/data", ec);
  fs::permissions(dir + "/data", fs::perms::owner_all, ec);
  std::string client = "127.0.0.1:" + std::to_string(FreePort());
  std::string peer = "http://127.0.0.1:" + std::to_string(FreePort());
  Status st = process_.Start(
      {"/usr/bin/etcd", "--name", "itest", "--data-dir", dir + "/data", "--listen-client-urls",
       "http://" + client, "--advertise-client-urls", "http://" + client, "--listen-peer-urls",
       peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "itest=" + peer,
       "--log-level", "warn"},
      dir + "/etcd.log");
  if (!st.ok()) return st;
  endpoint_ = client;
  bool up = WaitFor(
      [&] {
        if (!process_.running() || process_.Wait(0ms)) return true;
        return HttpStatus(client, "/health") == 200;
      },
      20s, 100ms);
  if (!process_.running()) {
    return IoError("etcd exited at start:\n" + ReadFile(dir + "/etcd.log"));
  }
  if (!up) return Timeout("etcd did not answer on " + client + " within 20 s");
  return Status::Ok();
}

// --- LocalClusterGuard --------------------------------------------------------

pid_t ReadPidFile(const std::string& pid_file) {
  std::ifstream in(pid_file);
  long pid = -1;
  if (!(in >> pid) || pid <= 0) return -1;
  return static_cast<pid_t>(pid);
}

LocalClusterGuard::~LocalClusterGuard() {
  std::error_code ec;
  if (fs::exists(dir_ + "/cluster.yml", ec)) {
    CommandResult r = Down(120s);
    if (r.exit_code != 0) {
      std::fprintf(stderr, "[itest] cleanup: %s\n", r.Describe().c_str());
    }
  }
  KillLeftovers();
}

CommandResult LocalClusterGuard::Up(const std::vector<std::string>& extra,
                                    std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {"up", "--dir", dir_};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunPgwarden(args, timeout);
}

CommandResult LocalClusterGuard::Down(std::chrono::milliseconds timeout) {
  return RunPgwarden({"down", "--dir", dir_}, timeout);
}

CommandResult LocalClusterGuard::Pgwarden(const std::string& cmd,
                                          const std::vector<std::string>& extra,
                                          std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {cmd, "--dir", dir_};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunPgwarden(args, timeout);
}

std::vector<std::string> LocalClusterGuard::Nodes() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.is_directory(ec) && fs::exists(e.path() / "node.yml", ec)) {
      out.push_back(e.path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

NodeInfo LocalClusterGuard::Node(const std::string& name) const {
  config::Config cfg = config::LoadConfigFile(dir_ + "/" + name + "/node.yml");
  NodeInfo n;
  n.name = name;
  n.pg_port = cfg.postgresql.listen.port;
  n.pg_conninfo = pg::SuperuserConninfo(cfg.postgresql.listen.host, cfg.postgresql.listen.port,
                                        cfg.postgresql.superuser);
  n.rest = cfg.restapi.listen.ToString();
  n.superuser = cfg.postgresql.superuser;
  return n;
}

std::vector<std::string> PrimariesAmong(const std::vector<NodeInfo>& nodes) {
  std::vector<std::string> out;
  for (const auto& n : nodes) {
    auto v = QueryValue(n.pg_conninfo, "SELECT pg_is_in_recovery()");
    if (v.ok() && *v == "f") out.push_back(n.name);
  }
  return out;
}

std::vector<NodeInfo> LocalClusterGuard::AllNodes() const {
  std::vector<NodeInfo> out;
  for (const auto& n : Nodes()) out.push_back(Node(n));
  return out;
}

pid_t LocalClusterGuard::AgentPid(const std::string& name) const {
  return ReadPidFile(dir_ + "/" + name + "/agent.pid");
}

nlohmann::json LocalClusterGuard::StatusJson() {
  CommandResult r = RunPgwarden({"status", "--dir", dir_, "--json"}, 30s);
  if (r.exit_code != 0) return nullptr;
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return nullptr;
  return j;
}

std::string LocalClusterGuard::Leader() {
  nlohmann::json j = StatusJson();
  if (!j.is_object() || !j.contains("members") || !j["members"].is_array()) return "";
  for (const auto& m : j["members"]) {
    if (m.value("role", "") == "leader") return m.value("name", "");
  }
  return "";
}

std::string LocalClusterGuard::Logs(int lines) const {
  std::string out;
  for (const auto& n : Nodes()) {
    for (const char* f : {"agent.log", "postgresql.log"}) {
      std::string path = dir_ + "/" + n + "/" + f;
      out += "=== " + path + " (last " + std::to_string(lines) + " lines)\n" + Tail(path, lines);
    }
  }
  return out;
}

void LocalClusterGuard::KillLeftovers() const {
  // The proxy and the agents first (so none restarts its PostgreSQL), then postmasters, then etcd.
  std::vector<std::pair<std::string, std::string>> files;  // pid file, expected in cmdline
  files.emplace_back(dir_ + "/proxy.pid", "pgwarden");     // the proxy `up` starts
  for (const auto& n : Nodes()) files.emplace_back(dir_ + "/" + n + "/agent.pid", "pgwarden");
  for (const auto& n : Nodes()) {  // each agent's watchdog
    files.emplace_back(dir_ + "/" + n + "/data.watchdog.pid", "pgwarden");
  }
  for (const auto& n : Nodes()) {
    files.emplace_back(dir_ + "/" + n + "/data/postmaster.pid", "postgres");
  }
  files.emplace_back(dir_ + "/etcd.pid", "etcd");
  for (const auto& [file, expect] : files) {
    pid_t pid = ReadPidFile(file);
    if (pid <= 0 || !ProcessAlive(pid)) continue;
    // A PID file can outlive its process and the PID be reused: check the name.
    if (CommandLine(pid).find(expect) == std::string::npos) continue;
    std::fprintf(stderr, "[itest] cleanup: SIGKILL to pid %d left running (%s)\n", pid,
                 file.c_str());
    kill(pid, SIGKILL);
    WaitFor([pid] { return !ProcessAlive(pid); }, 5s, 50ms);
  }
}

}  // namespace pgwarden::itest
