// Helpers for the proxy integration tests: a one-node cluster with an application role, a running
// `pgwarden proxy`, raw protocol sockets.
#include "proxy_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "pg/controller.h"

namespace pgwarden::itest {
using Clk = std::chrono::steady_clock;

rlim_t RaiseFileLimit(rlim_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t target = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
  if (rl.rlim_cur < target) {
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

// --- ProxyBackend ----------------------------------------------------------------

Status ProxyBackend::Start() {
  CommandResult up = cluster_.Up({"--nodes", "1"});
  if (up.exit_code != 0) {
    // `up` sometimes reports a just-spawned agent as exited while it is alive
    // (seen under load with several clusters starting at once): note what
    // really happened, then start over once.
    pid_t agent = cluster_.AgentPid("node1");
    std::this_thread::sleep_for(1s);
    bool alive = agent > 0 && ProcessAlive(agent);
    std::fprintf(stderr,
                 "[itest] pgwarden up failed (agent pid %d %s a second later); retrying:\n%s\n",
                 static_cast<int>(agent), alive ? "ALIVE" : "gone", up.Describe().c_str());
    cluster_.Down();
    cluster_.KillLeftovers();
    up = cluster_.Up({"--nodes", "1"});
  }
  if (up.exit_code != 0) return IoError(up.Describe() + "\n" + cluster_.Logs());
  try {
    node_ = cluster_.Node("node1");
  } catch (const std::exception& e) {
    return IoError(std::string("reading node1/node.yml: ") + e.what());
  }
  bool ready = WaitFor([&] { return QueryValue(node_.pg_conninfo, "SELECT 1").ok(); }, 30s);
  if (!ready) return IoError("PostgreSQL of node1 does not answer\n" + cluster_.Logs());
  auto conn = Connect(node_.pg_conninfo);
  if (!conn.ok()) return conn.status();
  Status st = (*conn)->Exec("CREATE ROLE " + std::string(kAppUser) + " LOGIN CREATEDB PASSWORD " +
                            pg::QuoteLiteral(kAppPassword));
  if (!st.ok()) return st;
  return (*conn)->Exec("GRANT CREATE ON SCHEMA public TO " + std::string(kAppUser));
}

std::string ProxyBackend::DirectConninfo(const std::string& extra) const {
  std::string ci = "host=127.0.0.1 port=" + std::to_string(node_.pg_port) + " user=" + kAppUser +
                   " password=" + pg::QuoteConninfoValue(kAppPassword) +
                   " dbname=postgres connect_timeout=5";
  return extra.empty() ? ci : ci + " " + extra;
}

Result<std::string> ProxyBackend::AppScramSecret() const {
  return QueryValue(node_.pg_conninfo, "SELECT rolpassword FROM pg_authid WHERE rolname = " +
                                           pg::QuoteLiteral(kAppUser));
}

// --- ProxyProcess ----------------------------------------------------------------

namespace {

std::string QuoteUserlist(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string UserlistEntry(const std::string& user, const std::string& secret) {
  return QuoteUserlist(user) + " " + QuoteUserlist(secret) + "\n";
}

Status ProxyProcess::Start(const std::string& dir, uint16_t pg_port, const ProxyOptions& opts) {
  port_ = FreePort();
  config_path_ = dir + "/proxy.yml";
  log_path_ = dir + "/proxy.log";
  userlist_path_ = dir + "/userlist.txt";
  const std::string& userlist = userlist_path_;
  if (!WriteFile(userlist, UserlistEntry(kAppUser, opts.app_secret) + opts.extra_userlist))
    return IoError("cannot write " + userlist);
  std::ostringstream y;
  y << "scope: proxy-itest\n"
    << "log:\n  level: info\n"
    << "proxy:\n"
    << "  listen: 127.0.0.1:" << port_ << "\n"
    << "  workers: " << opts.workers << "\n"
    << "  pool_mode: " << opts.pool_mode << "\n"
    << "  default_pool_size: " << opts.default_pool_size << "\n"
    << "  auth_type: scram-sha-256\n"
    << "  auth_file: " << userlist << "\n"
    << "  admin_users: [postgres]\n"
    << "  client_login_timeout: " << opts.client_login_timeout << "\n"
    << "  client_message_timeout: " << opts.client_message_timeout << "\n"
    << "  query_wait_timeout: " << opts.query_wait_timeout << "\n";
  if (!opts.max_packet_size.empty()) y << "  max_packet_size: " << opts.max_packet_size << "\n";
  y << opts.extra_yaml;
  std::vector<ProxyDatabase> dbs = opts.databases;
  bool has_postgres = false;
  for (const auto& d : dbs) has_postgres = has_postgres || d.name == "postgres";
  if (!has_postgres) dbs.insert(dbs.begin(), ProxyDatabase{"postgres", "", 0, ""});
  y << "  databases:\n";
  for (const auto& d : dbs) {
    y << "    " << d.name << ":\n"
      << "      host: 127.0.0.1\n"
      << "      port: " << pg_port << "\n"
      << "      dbname: " << (d.dbname.empty() ? d.name : d.dbname) << "\n";
    if (d.pool_size > 0) y << "      pool_size: " << d.pool_size << "\n";
    if (!d.pool_mode.empty()) y << "      pool_mode: " << d.pool_mode << "\n";
  }
  if (!WriteFile(config_path_, y.str())) return IoError("cannot write " + config_path_);

  Status st = process_.Start({PgwardenBinary(), "proxy", "-c", config_path_}, log_path_);
  if (!st.ok()) return st;
  bool ready = WaitFor(
      [&] {
        if (!alive()) return true;
        return QueryValue(Conninfo(), "SELECT 1").ok();
      },
      20s, 100ms);
  if (!alive()) return IoError("pgwarden proxy exited at start:\n" + Log());
  if (!ready) return Timeout("pgwarden proxy did not serve SELECT 1 within 20 s:\n" + Log());
  return Status::Ok();
}

void ProxyProcess::Stop() {
  if (process_.running()) process_.Stop(SIGTERM, 10s);
}

bool ProxyProcess::alive() { return process_.running() && !process_.Wait(0ms); }

std::string ProxyProcess::Conninfo(const std::string& db, const std::string& extra) const {
  std::string ci = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + kAppUser +
                   " password=" + pg::QuoteConninfoValue(kAppPassword) +
                   " dbname=" + pg::QuoteConninfoValue(db) + " connect_timeout=5";
  return extra.empty() ? ci : ci + " " + extra;
}

std::string ProxyProcess::Log(int lines) const {
  std::ifstream in(log_path_);
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l);
  size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out = "=== " + log_path_ + "\n";
  for (size_t i = from; i < all.size(); ++i) out += "    " + all[i] + "\n";
  return out;
}

Status ProxyClusterEnv::StartCluster(const std::string& prefix) {
  tmp = std::make_unique<TempDir>(prefix);
  backend = std::make_unique<ProxyBackend>(tmp->path());
  proxy = std::make_unique<ProxyProcess>();
  return backend->Start();
}

void ProxyClusterEnv::TearDown() {
  proxy.reset();    // stops the proxy by PID
  backend.reset();  // pgwarden down, then leftovers by PID
  tmp.reset();
}

Result<std::string> FindPythonWithPsycopg2(std::chrono::milliseconds timeout) {
  for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
    if (access(p, X_OK) == 0 && Run({p, "-c", "import psycopg2"}, timeout).exit_code == 0)
      return std::string(p);
  }
  return NotFound(
      "no python3 with psycopg2 in /usr/bin or /usr/local/bin: Debian's python3-psycopg2 is "
      "needed (scripts/install-deps.sh installs it)");
}

Result<NodePostgres> InstallNodePostgres(const std::string& dir,
                                         std::chrono::milliseconds timeout) {
  NodePostgres out;
  std::string npm;
  for (const char* p : {"/usr/bin/node", "/usr/local/bin/node"})
    if (out.node.empty() && access(p, X_OK) == 0) out.node = p;
  for (const char* p : {"/usr/bin/npm", "/usr/local/bin/npm"})
    if (npm.empty() && access(p, X_OK) == 0) npm = p;
  if (out.node.empty() || npm.empty())
    return NotFound(
        "node and npm are needed (in /usr/bin or /usr/local/bin): scripts/install-deps.sh "
        "installs them");
  CommandResult install =
      Run({npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", "pg@8"},
          timeout);
  if (install.exit_code != 0) return IoError("npm install pg@8 failed: " + install.Describe());
  out.node_modules = dir + "/node_modules";
  return out;
}

std::string ValueOr(const Result<std::string>& r, const std::string& fallback) {
  return r.ok() ? *r : fallback + " (" + r.status().ToString() + ")";
}

// --- Raw libpq ----------------------------------------------------------------------

PqConn OpenPq(const std::string& conninfo, std::string* error) {
  PqConn c(PQconnectdb(conninfo.c_str()));
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    if (error) *error = c ? PQerrorMessage(c.get()) : "out of memory";
    return nullptr;
  }
  return c;
}

PqOutcome Outcome(PGconn* conn, PGresult* res) {
  PqOutcome o;
  if (res == nullptr) {
    o.error = PQerrorMessage(conn);
    return o;
  }
  ExecStatusType s = PQresultStatus(res);
  if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
    o.ok = true;
    o.rows = PQntuples(res);
    if (o.rows > 0 && PQnfields(res) > 0) o.value = PQgetvalue(res, 0, 0);
    return o;
  }
  const char* st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  o.sqlstate = st ? st : "";
  o.error = PQresultErrorMessage(res);
  return o;
}

PqOutcome PqExec(PGconn* conn, const std::string& sql) {
  PqResult r(PQexec(conn, sql.c_str()));
  return Outcome(conn, r.get());
}

PqResult WaitResult(PGconn* conn, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (PQisBusy(conn)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return nullptr;
    pollfd p{PQsocket(conn), POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (!PQconsumeInput(conn)) break;
  }
  PqResult r(PQgetResult(conn));
  while (PGresult* more = PQgetResult(conn)) PQclear(more);
  return r;
}

// --- Raw protocol sockets --------------------------------------------------------

int ConnectTcp(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

namespace {

ReadOutcome ReadWhile(int fd, size_t want, std::chrono::milliseconds timeout) {
  ReadOutcome r;
  auto start = Clk::now();
  auto deadline = start + timeout;
  char buf[65536];
  while (r.bytes.size() < want) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int pr = poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.closed = true;
      break;
    }
    r.bytes.append(buf, static_cast<size_t>(n));
  }
  r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clk::now() - start);
  return r;
}

}  // namespace

ReadOutcome ReadUntilClosed(int fd, std::chrono::milliseconds timeout) {
  return ReadWhile(fd, static_cast<size_t>(-1), timeout);
}

ReadOutcome ReadAtLeast(int fd, size_t n, std::chrono::milliseconds timeout) {
  return ReadWhile(fd, n, timeout);
}

std::vector<WireMessage> SplitMessages(const std::string& bytes) {
  std::vector<WireMessage> out;
  size_t pos = 0;
  while (pos + 5 <= bytes.size()) {
    uint32_t len = 0;
    std::memcpy(&len, bytes.data() + pos + 1, 4);
    len = ntohl(len);
    if (len < 4 || pos + 1 + len > bytes.size()) break;
    out.push_back({bytes[pos], bytes.substr(pos + 5, len - 4)});
    pos += 1 + len;
  }
  return out;
}

std::map<char, std::string> ErrorFields(const std::string& body) {
  std::map<char, std::string> out;
  size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    char code = body[pos++];
    size_t end = body.find('\0', pos);
    if (end == std::string::npos) break;
    out[code] = body.substr(pos, end - pos);
    pos = end + 1;
  }
  return out;
}

std::string Int32(uint32_t v) {
  uint32_t be = htonl(v);
  return std::string(reinterpret_cast<const char*>(&be), 4);
}

std::string StartupPacket(const std::string& user, const std::string& database, uint32_t version) {
  std::string body = Int32(version);
  body += std::string("user") + '\0' + user + '\0';
  body += std::string("database") + '\0' + database + '\0';
  body += '\0';
  return Int32(static_cast<uint32_t>(body.size() + 4)) + body;
}

}  // namespace pgwarden::itest
