// The admin console: parses PgBouncer-style commands and answers them from the pools and clients.
#include "proxy/admin.h"

#include <arpa/inet.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <utility>

#include "pgwire/message.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"

namespace pgwarden::proxy {
namespace {

using Row = AdminReply::Row;
using SysClock = std::chrono::system_clock;

constexpr const char* kHelp =
    "Console usage\n"
    "\tSHOW HELP|POOLS|CLIENTS|SERVERS|LISTS|VERSION\n"
    "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES [db]\n"
    "\tSHOW DATABASES [db]\n"
    "\tSHOW CONFIG [key]\n"
    "\tRELOAD\n"
    "\tPAUSE [db]\n"
    "\tRESUME [db]\n"
    "\tSHUTDOWN";

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// "name" → name (with "" inside meaning one quote); anything else unchanged.
std::string Unquote(std::string_view s) {
  if (s.size() < 2 || s.front() != '"' || s.back() != '"') return std::string(s);
  std::string out;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    out.push_back(s[i]);
    if (s[i] == '"' && s[i + 1] == '"') ++i;
  }
  return out;
}

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string Num(int64_t v) { return std::to_string(v); }

AdminReply Error(std::string sqlstate, std::string message, std::string hint = {}) {
  AdminReply r;
  r.error_sqlstate = std::move(sqlstate);
  r.error_message = std::move(message);
  r.error_hint = std::move(hint);
  return r;
}

AdminReply Unknown(const AdminCommand& cmd) {
  return Error("42601", "unknown admin command: " + cmd.text, "SHOW HELP lists the commands");
}

// One instant on both clocks: steady time points are shown as wall-clock
// time by their distance from `steady`.
struct Moment {
  TimePoint steady = std::chrono::steady_clock::now();
  SysClock::time_point system = SysClock::now();
};

// 'YYYY-MM-DD HH:MM:SS UTC', or NULL for a time never set.
std::optional<std::string> FormatTime(TimePoint t, const Moment& now) {
  if (t == TimePoint{}) return std::nullopt;
  auto wall = now.system - std::chrono::duration_cast<SysClock::duration>(now.steady - t);
  std::time_t tt = SysClock::to_time_t(wall);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return std::string(buf);
}

int64_t Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

// A duration as the configuration accepts it: whole seconds plain, else "<n>ms".
std::string FormatDuration(Seconds d) {
  if (d.count() % 1000 == 0) return Num(d.count() / 1000);
  return Num(d.count()) + "ms";
}

// "host:port" → (host, port); IPv6 keeps its brackets off.
std::pair<std::string, std::string> SplitAddr(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) return {addr, ""};
  std::string host = addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, addr.substr(colon + 1)};
}

// Identifies a server connection the way both sides know it: the client
// records host, port and backend pid of the server it runs on.
std::string ServerKey(const std::string& addr, int32_t pid) {
  return addr + "#" + std::to_string(pid);
}

std::string ClientPtr(uint64_t id) { return "c" + std::to_string(id); }
std::string ServerPtr(uint64_t id) { return "s" + std::to_string(id); }

// A copy of one ClientInfo, taken under its lock.
struct ClientRow {
  uint64_t id = 0;
  std::string user, database, application_name, addr, pinned;
  ClientState state = ClientState::kLogin;
  int port = 0;
  TimePoint connect_time, request_time;
  std::string server_key;  // ServerKey of the linked server; empty when none
  bool tls = false;
};

std::vector<ClientRow> SnapshotClients(const Proxy& proxy) {
  std::vector<ClientRow> out;
  for (const auto& c : proxy.Clients()) {
    std::lock_guard lock(c->mu);
    ClientRow r;
    r.id = c->id;
    r.user = c->user;
    r.database = c->database;
    r.application_name = c->application_name;
    r.addr = c->addr;
    r.state = c->state;
    r.pinned = c->pinned;
    r.port = c->port;
    r.connect_time = c->connect_time;
    r.request_time = c->request_time;
    if (c->server_pid != 0) {
      r.server_key =
          ServerKey(c->server_host + ":" + std::to_string(c->server_port), c->server_pid);
    }
    r.tls = c->tls;
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

// The user a pool logs in to its server as.
std::string ServerUser(const Pool& p) { return p.db().user.empty() ? p.user() : p.db().user; }

// ---------------------------------------------------------------- SHOW

AdminReply ShowPools(const Proxy& proxy, const Moment& now) {
  AdminReply r;
  r.columns = {"database",
               "user",
               "cl_active",
               "cl_waiting",
               "cl_active_cancel_req",
               "cl_waiting_cancel_req",
               "sv_active",
               "sv_active_cancel",
               "sv_being_canceled",
               "sv_idle",
               "sv_used",
               "sv_tested",
               "sv_login",
               "maxwait",
               "maxwait_us",
               "pool_mode"};
  std::map<std::pair<std::string, std::string>, std::pair<int, int>> clients;  // active, waiting
  for (const auto& c : SnapshotClients(proxy)) {
    auto& n = clients[{c.database, c.user}];
    if (c.state == ClientState::kIdle || c.state == ClientState::kActive ||
        c.state == ClientState::kPreparing)
      ++n.first;
    if (c.state == ClientState::kWaiting) ++n.second;
  }
  for (const Pool* p : proxy.Pools()) {
    auto c = p->counts(now.steady);
    auto n = clients[{p->database(), p->user()}];
    // Cancel requests are forwarded at once and servers are not re-tested
    // after idling, so the cancel, used and tested columns stay 0.
    r.rows.push_back({p->database(), p->user(), Num(n.first), Num(n.second), "0", "0",
                      Num(c.active), "0", "0", Num(c.idle), "0", "0", Num(c.connecting),
                      Num(c.max_wait_us / 1000000), Num(c.max_wait_us % 1000000),
                      PoolModeName(p->mode())});
  }
  return r;
}

const std::vector<std::string>& ConnectionColumns() {
  static const std::vector<std::string> kColumns = {
      "type",       "user",       "database",         "state",        "addr",
      "port",       "local_addr", "local_port",       "connect_time", "request_time",
      "wait",       "wait_us",    "close_needed",     "ptr",          "link",
      "remote_pid", "tls",        "application_name", "pinned"};
  return kColumns;
}

AdminReply ShowClients(const Proxy& proxy, const Moment& now) {
  AdminReply r;
  r.columns = ConnectionColumns();
  std::map<std::string, uint64_t> servers;  // ServerKey → server id
  for (const Pool* p : proxy.Pools()) {
    for (const auto& s : p->servers()) servers[ServerKey(s.addr, s.pid)] = s.id;
  }
  // Clients arrive on every worker's listener: the local end is the listen address.
  auto cfg = proxy.config();
  const auto& listen = cfg->listen;
  std::string local_addr = listen.host == "*" ? "0.0.0.0" : listen.host;
  for (const auto& c : SnapshotClients(proxy)) {
    int64_t wait_us = c.state == ClientState::kWaiting ? Micros(now.steady - c.request_time) : 0;
    std::optional<std::string> link;
    if (auto it = servers.find(c.server_key); !c.server_key.empty() && it != servers.end())
      link = ServerPtr(it->second);
    r.rows.push_back({"C", c.user, c.database, ClientStateName(c.state), c.addr, Num(c.port),
                      local_addr, Num(listen.port), FormatTime(c.connect_time, now),
                      FormatTime(c.request_time, now), Num(wait_us / 1000000),
                      Num(wait_us % 1000000), "0", ClientPtr(c.id), link, "0", c.tls ? "TLS" : "",
                      c.application_name, c.pinned});
  }
  return r;
}

AdminReply ShowServers(const Proxy& proxy, const Moment& now) {
  AdminReply r;
  r.columns = ConnectionColumns();
  std::map<std::string, const ClientRow*> linked;  // ServerKey → client
  auto clients = SnapshotClients(proxy);
  for (const auto& c : clients) {
    if (!c.server_key.empty() &&
        (c.state == ClientState::kActive || c.state == ClientState::kPreparing ||
         c.state == ClientState::kSetup || c.state == ClientState::kResetting))
      linked[c.server_key] = &c;
  }
  auto lifetime = proxy.config()->server_lifetime;
  for (const Pool* p : proxy.Pools()) {
    auto list = p->servers();
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (const auto& s : list) {
      auto [host, port] = SplitAddr(s.addr);
      const ClientRow* c = nullptr;
      if (auto it = linked.find(ServerKey(s.addr, s.pid)); it != linked.end()) c = it->second;
      // A server past server_lifetime is closed when it is next released.
      bool close_needed = now.steady - s.connect_time >= lifetime;
      // The local address is not recorded (only the port); wait does not apply to servers.
      r.rows.push_back({"S", ServerUser(*p), p->database(), ServerStateName(s.state), host, port,
                        std::nullopt, Num(s.local_port), FormatTime(s.connect_time, now),
                        FormatTime(s.last_used, now), "0", "0", close_needed ? "1" : "0",
                        ServerPtr(s.id),
                        c ? std::optional<std::string>(ClientPtr(c->id)) : std::nullopt, Num(s.pid),
                        "", c ? c->application_name : "", ""});
    }
  }
  return r;
}

struct DbStats {
  uint64_t xact = 0, query = 0, received = 0, sent = 0, xact_us = 0, query_us = 0, wait_us = 0;
  uint64_t pinned_total = 0, pinned = 0;
};

// SHOW STATS, STATS_TOTALS, STATS_AVERAGES: the pools' counters summed per
// database. PgBouncer's averages cover its last stats_period; we keep no
// history, so ours are over the whole time since the proxy started: rates
// (counts, bytes) per second of uptime, durations per transaction or query.
// avg_wait_time divides by transactions, which equals server assignments in
// transaction pooling (in session pooling it understates the wait).
AdminReply ShowStats(const Proxy& proxy, const Moment& now, bool totals, bool averages,
                     const std::string& only) {
  AdminReply r;
  r.columns = {"database"};
  if (totals) {
    for (const char* c : {"total_xact_count", "total_query_count", "total_received", "total_sent",
                          "total_xact_time", "total_query_time", "total_wait_time"})
      r.columns.emplace_back(c);
  }
  if (averages) {
    for (const char* c : {"avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
                          "avg_xact_time", "avg_query_time", "avg_wait_time"})
      r.columns.emplace_back(c);
  }
  // Ours, after PgBouncer's columns: transaction-pooled clients that kept
  // their server for their session (state the proxy cannot carry), ever and now.
  if (totals) {
    r.columns.emplace_back("total_pinned_clients");
    r.columns.emplace_back("pinned_clients");
  }
  std::map<std::string, DbStats> dbs;
  for (Pool* p : proxy.Pools()) {
    if (!only.empty() && p->database() != only) continue;
    const PoolStats& st = p->stats();
    DbStats& d = dbs[p->database()];
    d.xact += st.xact_count.load(std::memory_order_relaxed);
    d.query += st.query_count.load(std::memory_order_relaxed);
    d.received += st.bytes_received.load(std::memory_order_relaxed);
    d.sent += st.bytes_sent.load(std::memory_order_relaxed);
    d.xact_us += st.xact_time_us.load(std::memory_order_relaxed);
    d.query_us += st.query_time_us.load(std::memory_order_relaxed);
    d.wait_us += st.wait_time_us.load(std::memory_order_relaxed);
    d.pinned_total += st.pinned_total.load(std::memory_order_relaxed);
    d.pinned +=
        static_cast<uint64_t>(std::max<int64_t>(0, st.pinned.load(std::memory_order_relaxed)));
  }
  uint64_t uptime_s = static_cast<uint64_t>(std::max<int64_t>(
      1,
      std::chrono::duration_cast<std::chrono::seconds>(now.steady - proxy.started_at()).count()));
  auto per = [](uint64_t v, uint64_t n) { return std::to_string(n == 0 ? 0 : v / n); };
  for (const auto& [name, d] : dbs) {
    Row row = {name};
    if (totals) {
      for (uint64_t v : {d.xact, d.query, d.received, d.sent, d.xact_us, d.query_us, d.wait_us})
        row.push_back(std::to_string(v));
    }
    if (averages) {
      row.push_back(per(d.xact, uptime_s));
      row.push_back(per(d.query, uptime_s));
      row.push_back(per(d.received, uptime_s));
      row.push_back(per(d.sent, uptime_s));
      row.push_back(per(d.xact_us, d.xact));
      row.push_back(per(d.query_us, d.query));
      row.push_back(per(d.wait_us, d.xact));
    }
    if (totals) {
      row.push_back(std::to_string(d.pinned_total));
      row.push_back(std::to_string(d.pinned));
    }
    r.rows.push_back(std::move(row));
  }
  return r;
}

// A database as SHOW DATABASES and SHOW LISTS see it: each named entry of
// `databases`, and each database a client reached through the "*" entry.
struct DbRow {
  DatabaseConfig d;
  int connections = 0;
  bool paused = false;
};

std::map<std::string, DbRow> CollectDatabases(const Proxy& proxy, const Moment& now) {
  std::map<std::string, DbRow> dbs;
  auto cfg = proxy.config();
  for (const auto& [name, d] : cfg->databases) {
    if (name != "*") dbs[name].d = d;
  }
  for (const Pool* p : proxy.Pools()) {
    auto it = dbs.find(p->database());
    if (it == dbs.end()) it = dbs.emplace(p->database(), DbRow{p->db()}).first;
    auto c = p->counts(now.steady);
    it->second.connections += c.active + c.idle + c.connecting;
    it->second.paused = it->second.paused || p->paused();
  }
  return dbs;
}

AdminReply ShowDatabases(const Proxy& proxy, const Moment& now, const std::string& only) {
  AdminReply r;
  r.columns = {"name",
               "host",
               "port",
               "database",
               "force_user",
               "pool_size",
               "min_pool_size",
               "reserve_pool",
               "server_lifetime",
               "pool_mode",
               "max_connections",
               "current_connections",
               "paused",
               "disabled"};
  auto cfg_ptr = proxy.config();
  const auto& cfg = *cfg_ptr;
  for (const auto& [name, db] : CollectDatabases(proxy, now)) {
    if (!only.empty() && name != only) continue;
    const DatabaseConfig& d = db.d;
    std::optional<std::string> force_user, mode;
    if (!d.user.empty()) force_user = d.user;
    if (d.pool_mode) mode = PoolModeName(*d.pool_mode);  // NULL: the global pool_mode applies
    r.rows.push_back(
        {name, d.host, Num(d.port), d.dbname.empty() ? name : d.dbname, force_user,
         Num(d.pool_size.value_or(cfg.default_pool_size)), Num(cfg.min_pool_size),
         Num(cfg.reserve_pool_size),
         Num(std::chrono::duration_cast<std::chrono::seconds>(cfg.server_lifetime).count()), mode,
         Num(cfg.max_db_connections), Num(db.connections), db.paused ? "1" : "0", "0"});
  }
  return r;
}

AdminReply ShowLists(const Proxy& proxy, const Moment& now) {
  AdminReply r;
  r.columns = {"list", "items"};
  auto clients = SnapshotClients(proxy);
  auto pools = proxy.Pools();
  std::set<std::string> users;
  int login = 0, servers = 0;
  for (const auto& c : clients) {
    if (!c.user.empty()) users.insert(c.user);
    if (c.state == ClientState::kLogin || c.state == ClientState::kSetup) ++login;
  }
  for (const Pool* p : pools) {
    users.insert(p->user());
    auto c = p->counts(now.steady);
    servers += c.active + c.idle + c.connecting;
  }
  // Nothing is kept on free lists and names are resolved by the system, so
  // the free_* and dns_* lists are empty.
  std::vector<std::pair<const char*, int64_t>> items = {
      {"databases", static_cast<int64_t>(CollectDatabases(proxy, now).size())},
      {"users", static_cast<int64_t>(users.size())},
      {"pools", static_cast<int64_t>(pools.size())},
      {"free_clients", 0},
      {"used_clients", static_cast<int64_t>(clients.size())},
      {"login_clients", login},
      {"free_servers", 0},
      {"used_servers", servers},
      {"dns_names", 0},
      {"dns_zones", 0},
      {"dns_queries", 0},
      {"dns_pending", 0}};
  for (const auto& [name, n] : items) r.rows.push_back({name, Num(n)});
  return r;
}

std::string HbaText(const std::vector<HbaRule>& rules) {
  std::vector<std::string> out;
  for (const auto& r : rules) {
    std::string s = std::string(r.local ? "local " : "host ") + Join(r.databases, ",") + " " +
                    Join(r.users, ",") + " ";
    if (!r.local && r.any_address) {
      s += "all ";
    } else if (!r.local) {
      char buf[INET_ADDRSTRLEN] = {};
      in_addr a{};
      a.s_addr = r.addr;
      inet_ntop(AF_INET, &a, buf, sizeof buf);
      s += std::string(buf) + "/" + Num(std::popcount(ntohl(r.mask))) + " ";
    }
    out.push_back(s + AuthMethodName(r.method));
  }
  return Join(out, "; ");
}

std::string FormatShare(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Every ProxyConfig field as (key, value) in the YAML's spelling; database
// entries are listed by name only (SHOW DATABASES has the rest, passwords stay out).
std::vector<std::pair<std::string, std::string>> ConfigItems(const ProxyConfig& c) {
  std::vector<std::string> dbs;
  for (const auto& [name, d] : c.databases) dbs.push_back(name);
  std::vector<std::pair<std::string, std::string>> items = {
      {"listen", c.listen.ToString()},
      {"workers", Num(c.workers)},
      {"worker_busy", FormatShare(c.worker_busy)},
      {"pool_mode", PoolModeName(c.pool_mode)},
      {"default_pool_size", Num(c.default_pool_size)},
      {"min_pool_size", Num(c.min_pool_size)},
      {"reserve_pool_size", Num(c.reserve_pool_size)},
      {"reserve_pool_timeout", FormatDuration(c.reserve_pool_timeout)},
      {"max_client_conn", Num(c.max_client_conn)},
      {"max_db_connections", Num(c.max_db_connections)},
      {"server_lifetime", FormatDuration(c.server_lifetime)},
      {"server_idle_timeout", FormatDuration(c.server_idle_timeout)},
      {"query_wait_timeout", FormatDuration(c.query_wait_timeout)},
      {"client_login_timeout", FormatDuration(c.client_login_timeout)},
      {"server_connect_timeout", FormatDuration(c.server_connect_timeout)},
      {"shutdown_timeout", FormatDuration(c.shutdown_timeout)},
      {"server_reset_query", c.server_reset_query},
      {"track_extra_parameters", Join(c.track_extra_parameters, ",")},
      {"ignore_startup_parameters", Join(c.ignore_startup_parameters, ",")},
      {"client_message_timeout", FormatDuration(c.client_message_timeout)},
      {"server_check_query", c.server_check_query},
      {"server_check_delay", FormatDuration(c.server_check_delay)},
      {"max_packet_size", Num(c.max_packet_size)},
      {"auth_type", AuthMethodName(c.auth_type)},
      {"hba", HbaText(c.hba)},
      {"auth_file", c.auth_file},
      {"auth_query", c.auth_query},
      {"auth_user", c.auth_user},
      {"admin_users", Join(c.admin_users, ",")},
      {"stats_users", Join(c.stats_users, ",")},
      {"metrics_listen", c.metrics_listen ? c.metrics_listen->ToString() : ""},
      {"databases", Join(dbs, ",")},
  };
  for (const auto& [prefix, tls] :
       {std::pair{"client_tls.", &c.client_tls}, std::pair{"server_tls.", &c.server_tls}}) {
    items.emplace_back(std::string(prefix) + "sslmode", tls->sslmode);
    items.emplace_back(std::string(prefix) + "cert_file", tls->cert_file);
    items.emplace_back(std::string(prefix) + "key_file", tls->key_file);
    items.emplace_back(std::string(prefix) + "ca_file", tls->ca_file);
  }
  std::sort(items.begin(), items.end());
  return items;
}

// Nothing can be SET at run time (RELOAD re-reads the file instead), so every
// key says changeable = no.
AdminReply ShowConfig(const ProxyConfig& cfg, const std::string& only) {
  AdminReply r;
  r.columns = {"key", "value", "default", "changeable"};
  std::map<std::string, std::string> defaults;
  for (auto& [k, v] : ConfigItems(ProxyConfig{})) defaults[k] = std::move(v);
  for (const auto& [k, v] : ConfigItems(cfg)) {
    if (!only.empty() && Lower(only) != k) continue;
    r.rows.push_back({k, v, defaults[k], "no"});
  }
  return r;
}

AdminReply Show(Proxy& proxy, const AdminCommand& cmd) {
  Moment now;
  const std::string& s = cmd.subject;
  AdminReply r;
  if (s == "stats" || s == "stats_totals" || s == "stats_averages") {
    r = ShowStats(proxy, now, s != "stats_averages", s != "stats_totals", cmd.argument);
  } else if (s == "databases") {
    r = ShowDatabases(proxy, now, cmd.argument);
  } else if (s == "config") {
    r = ShowConfig(*proxy.config(), cmd.argument);
  } else if (!cmd.argument.empty()) {
    return Unknown(cmd);
  } else if (s == "pools") {
    r = ShowPools(proxy, now);
  } else if (s == "clients") {
    r = ShowClients(proxy, now);
  } else if (s == "servers") {
    r = ShowServers(proxy, now);
  } else if (s == "lists") {
    r = ShowLists(proxy, now);
  } else if (s == "version") {
    r.columns = {"version"};
    r.rows.push_back({std::string("pgwarden ") + PGWARDEN_VERSION});
  } else if (s == "help") {
    r.notice = kHelp;
  } else {
    return Unknown(cmd);
  }
  r.tag = "SHOW";
  return r;
}

bool DatabaseKnown(const Proxy& proxy, const std::string& name) {
  if (proxy.config()->databases.count(name)) return true;
  for (const Pool* p : proxy.Pools()) {
    if (p->database() == name) return true;
  }
  return false;
}

}  // namespace

AdminCommand ParseAdminCommand(std::string_view sql) {
  AdminCommand cmd;
  size_t b = 0, e = sql.size();
  while (b < e && IsSpace(sql[b])) ++b;
  while (e > b && (IsSpace(sql[e - 1]) || sql[e - 1] == ';')) --e;
  cmd.text = std::string(sql.substr(b, e - b));
  std::vector<std::string_view> words;
  for (size_t i = b; i < e;) {
    while (i < e && IsSpace(sql[i])) ++i;
    size_t start = i;
    while (i < e && !IsSpace(sql[i])) ++i;
    if (i > start) words.push_back(sql.substr(start, i - start));
  }
  if (words.empty()) {
    cmd.verb = AdminVerb::kEmpty;
    return cmd;
  }
  const std::string verb = Lower(words[0]);
  const size_t args = words.size() - 1;
  if (verb == "show" && (args == 1 || args == 2)) {
    cmd.verb = AdminVerb::kShow;
    cmd.subject = Lower(words[1]);
    if (args == 2) cmd.argument = Unquote(words[2]);
  } else if (verb == "reload" && args == 0) {
    cmd.verb = AdminVerb::kReload;
  } else if (verb == "shutdown" && args == 0) {
    cmd.verb = AdminVerb::kShutdown;
  } else if ((verb == "pause" || verb == "resume") && args <= 1) {
    cmd.verb = verb == "pause" ? AdminVerb::kPause : AdminVerb::kResume;
    if (args == 1) cmd.argument = Unquote(words[1]);
  }
  return cmd;
}

AdminReply ExecuteAdminCommand(Proxy& proxy, const AdminCommand& cmd, bool may_modify) {
  AdminReply r;
  switch (cmd.verb) {
    case AdminVerb::kEmpty:
      r.empty_query = true;
      return r;
    case AdminVerb::kUnknown:
      return Unknown(cmd);
    case AdminVerb::kShow:
      return Show(proxy, cmd);
    default:
      break;
  }
  if (!may_modify) {
    std::string verb = Upper(cmd.text.substr(0, cmd.text.find_first_of(" \t\n\r\f\v")));
    return Error("42501", "permission denied: only admin_users may run " + verb,
                 "stats_users may run SHOW commands");
  }
  switch (cmd.verb) {
    case AdminVerb::kReload: {
      Status st = proxy.Reload();
      if (!st.ok()) return Error("F0000", "reload failed: " + st.message());
      r.tag = "RELOAD";
      return r;
    }
    case AdminVerb::kPause:
    case AdminVerb::kResume: {
      if (!cmd.argument.empty() && !DatabaseKnown(proxy, cmd.argument))
        return Error("3D000", "no such database: " + cmd.argument);
      bool pause = cmd.verb == AdminVerb::kPause;
      proxy.PauseAll(cmd.argument, pause);
      r.tag = pause ? "PAUSE" : "RESUME";
      r.wait_for_pause = pause;
      r.pause_database = cmd.argument;
      return r;
    }
    case AdminVerb::kShutdown:
      proxy.RequestShutdown();
      r.tag = "SHUTDOWN";
      return r;
    default:
      return Unknown(cmd);
  }
}

std::string EncodeAdminReply(const AdminReply& reply) {
  std::string out;
  if (!reply.error_sqlstate.empty()) {
    pgwire::AppendErrorResponse(out, "ERROR", reply.error_sqlstate, reply.error_message, {},
                                reply.error_hint);
    return out;
  }
  if (reply.empty_query) {
    pgwire::AppendEmptyQueryResponse(out);
    return out;
  }
  if (!reply.columns.empty()) {
    pgwire::AppendRowDescription(out, reply.columns);
    for (const auto& row : reply.rows) pgwire::AppendDataRow(out, row);
  }
  if (!reply.notice.empty()) pgwire::AppendNoticeResponse(out, "00000", reply.notice);
  pgwire::AppendCommandComplete(out, reply.tag);
  return out;
}

AdminResult RunAdminCommand(Proxy& proxy, std::string_view sql, bool may_modify) {
  AdminReply reply = ExecuteAdminCommand(proxy, ParseAdminCommand(sql), may_modify);
  return {EncodeAdminReply(reply), reply.wait_for_pause, reply.pause_database};
}

}  // namespace pgwarden::proxy
