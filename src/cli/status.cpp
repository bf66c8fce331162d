// `pgwarden status` and `pgwarden dsn`: what the cluster looks like, and how to connect.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "agent/rest_api.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/local_cluster.h"
#include "cli/status_rows.h"
#include "common/units.h"
#include "dcs/etcd_dcs.h"
#include "ha/decide.h"
#include "pg/connection.h"
#include "pg/controller.h"
#include "proxy/proxy_config.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kStatusHelp =
    R"TXT(usage: pgwarden status [--dir D | -c FILE] [--json] [--watch [SECONDS]]

Shows every member of the cluster: name, role, state, timeline, and from the
primary's pg_stat_replication the sent / write / flush / replay LSN, replay
lag in bytes, write / flush / replay lag time and sync_state, the WAL each
member's slot retains, and on each replica the time since the last replayed
transaction (now() - pg_last_xact_replay_timestamp()).

A member whose agent is down keeps its row after its member key expired, as
"stopped (no member key)" with role unknown, while the leader still keeps its
slot (named by the slot then) or, with --dir, while D names it.

options:
  --dir D        a cluster started by `pgwarden up` (default ./pgwarden-data)
  -c FILE        a configuration file naming scope and etcd3 hosts
  --json         Patroni's /cluster shape, with the extra columns per member
  --watch        refresh every 2 seconds until Ctrl-C
  -h, --help     this help
)TXT";

constexpr const char* kDsnHelp =
    R"TXT(usage: pgwarden dsn [--dir D | -c FILE] [--member NAME | --role primary|replica|proxy-rw]

Prints a libpq connection URI with the superuser's credentials, for psql,
pgbench or any libpq client: psql "$(pgwarden dsn --dir D)".

options:
  --role primary     the leader (default)
  --role replica     a streaming replica (the least lagging one)
  --role proxy-rw    the pooler `pgwarden up` starts (transaction pooling)
  --member NAME      that member
  --dir D / -c FILE  as for status
)TXT";

std::string PercentEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Members the directory of a local cluster names (empty for -c FILE): those
// stay listed when their member key is gone.
std::vector<KnownMember> KnownMembersOf(const std::optional<std::string>& config_file,
                                        const std::string& dir) {
  std::vector<KnownMember> out;
  if (config_file) return out;
  LocalCluster lc{AbsoluteDir(dir)};
  for (const auto& name : lc.Nodes()) {
    KnownMember k{name, "", ""};
    try {
      config::Config ncfg = config::LoadConfigFile(lc.NodeFile(name), config::ConfigUse::kClient);
      k.conn_url = ncfg.ConnUrl();
      k.api_url = ncfg.ApiUrl();
    } catch (const config::ConfigError&) {
      // The name alone still says the member exists.
    }
    out.push_back(std::move(k));
  }
  return out;
}

std::vector<StatusRow> CollectRows(const config::Config& cfg, const dcs::ClusterView& view,
                                   const std::vector<KnownMember>& known) {
  std::vector<StatusRow> rows = BuildStatusRows(view, known);
  // The leader's pg_stat_replication and slots.
  for (auto& r : rows) {
    if (r.role != "leader" || r.port == 0) continue;
    auto conn = pg::Connection::Open(
        pg::SuperuserConninfo(r.host, r.port, cfg.postgresql.superuser), std::chrono::seconds(3));
    if (!conn.ok()) continue;
    auto rep = (*conn)->Query(
        "SELECT application_name, sent_lsn, write_lsn, flush_lsn, replay_lsn, "
        "COALESCE(write_lag::text, ''), COALESCE(flush_lag::text, ''), "
        "COALESCE(replay_lag::text, ''), sync_state, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
        "FROM pg_stat_replication");
    if (rep.ok()) {
      for (size_t i = 0; i < rep->rows.size(); ++i) {
        for (auto& o : rows) {
          if (o.name != rep->text(i, 0)) continue;
          o.sent_lsn = rep->text(i, 1);
          o.write_lsn = rep->text(i, 2);
          o.flush_lsn = rep->text(i, 3);
          o.replay_lsn = rep->text(i, 4);
          o.write_lag = rep->text(i, 5);
          o.flush_lag = rep->text(i, 6);
          o.replay_lag = rep->text(i, 7);
          o.sync_state = rep->text(i, 8);
          o.lag = std::strtoull(rep->text(i, 9, "0").c_str(), nullptr, 10);
        }
      }
    }
    auto slots = (*conn)->Query(
        "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_type = 'physical'");
    if (slots.ok()) {
      for (size_t i = 0; i < slots->rows.size(); ++i) {
        for (auto& o : rows) {
          if (ha::SlotNameForMember(o.name) == slots->text(i, 0) && slots->at(i, 1)) {
            o.slot_retained = std::strtoull(slots->text(i, 1).c_str(), nullptr, 10);
          }
        }
      }
    }
  }
  // Each replica's replay delay in time.
  for (auto& r : rows) {
    if (r.role == "leader" || r.port == 0) continue;
    auto conn = pg::Connection::Open(
        pg::SuperuserConninfo(r.host, r.port, cfg.postgresql.superuser), std::chrono::seconds(3));
    if (!conn.ok()) continue;
    auto q = (*conn)->Query("SELECT COALESCE((now() - pg_last_xact_replay_timestamp())::text, '')");
    if (q.ok() && !q->rows.empty()) r.replay_delay = q->text(0, 0);
  }
  return rows;
}

nlohmann::json RowsToJson(const config::Config& cfg, const dcs::ClusterView& view,
                          const std::vector<StatusRow>& rows) {
  nlohmann::json out = agent::ClusterToJson(view);
  out["scope"] = cfg.scope;
  nlohmann::json members = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json m = {{"name", r.name},        {"role", r.role}, {"state", r.state},
                        {"host", r.host},        {"port", r.port}, {"api_url", r.api_url},
                        {"timeline", r.timeline}};
    if (r.role != "leader") {
      if (r.lag)
        m["lag"] = *r.lag;
      else
        m["lag"] = "unknown";
    }
    auto opt = [&](const char* key, const std::string& v) {
      m[key] = v.empty() ? nlohmann::json(nullptr) : nlohmann::json(v);
    };
    opt("sent_lsn", r.sent_lsn);
    opt("write_lsn", r.write_lsn);
    opt("flush_lsn", r.flush_lsn);
    opt("replay_lsn", r.replay_lsn);
    opt("write_lag", r.write_lag);
    opt("flush_lag", r.flush_lag);
    opt("replay_lag", r.replay_lag);
    opt("sync_state", r.sync_state);
    opt("replay_delay", r.replay_delay);
    m["slot_retained_bytes"] =
        r.slot_retained ? nlohmann::json(*r.slot_retained) : nlohmann::json(nullptr);
    members.push_back(std::move(m));
  }
  out["members"] = std::move(members);
  return out;
}

std::string Or(const std::string& s) { return s.empty() ? "-" : s; }

void PrintTable(const config::Config& cfg, const dcs::ClusterView& view,
                const std::vector<StatusRow>& rows) {
  std::printf("cluster %s (system identifier %s)%s\n", cfg.scope.c_str(),
              view.initialize.value_or("?").c_str(), view.HasLeader() ? "" : "  ** no leader **");
  int state_width = 10;  // wider for "stopped (no member key)"
  for (const auto& r : rows) state_width = std::max(state_width, static_cast<int>(r.state.size()));
  std::printf(
      "%-8s %-12s %-*s %-15s %3s %-11s %-11s %-11s %-11s %10s %-16s %-16s %-16s %-7s %10s %-16s\n",
      "Member", "Role", state_width, "State", "Host", "TL", "Sent LSN", "Write LSN", "Flush LSN",
      "Replay LSN", "Lag bytes", "Write lag", "Flush lag", "Replay lag", "Sync", "Slot WAL",
      "Replay delay");
  for (const auto& r : rows) {
    std::string hostport = r.host.empty() ? "-" : r.host + ":" + std::to_string(r.port);
    std::string lag = r.role == "leader" ? "" : (r.lag ? std::to_string(*r.lag) : "unknown");
    std::string slot = r.slot_retained ? FormatBytes(*r.slot_retained) : "-";
    std::printf(
        "%-8s %-12s %-*s %-15s %3d %-11s %-11s %-11s %-11s %10s %-16s %-16s %-16s %-7s %10s "
        "%-16s\n",
        r.name.c_str(), r.role.c_str(), state_width, r.state.c_str(), hostport.c_str(), r.timeline,
        Or(r.sent_lsn).c_str(), Or(r.write_lsn).c_str(), Or(r.flush_lsn).c_str(),
        Or(r.replay_lsn).c_str(), Or(lag).c_str(), Or(r.write_lag).c_str(), Or(r.flush_lag).c_str(),
        Or(r.replay_lag).c_str(), Or(r.sync_state).c_str(), slot.c_str(),
        Or(r.replay_delay).c_str());
  }
}

}  // namespace

int StatusCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first, {"dir", "config"}, {"json", "watch", "help"},
            {{"c", "config"}, {"h", "help"}, {"w", "watch"}});
  if (args.Flag("help")) {
    std::cout << kStatusHelp;
    return kExitOk;
  }
  config::Config cfg;
  try {
    cfg = LoadClientConfig(args.Get("config"), args.GetOr("dir", "pgwarden-data"));
  } catch (const config::ConfigError& e) {
    std::cerr << "pgwarden status: " << e.what() << "\n";
    return kExitUsage;
  }
  auto dcs = MakeClientDcs(cfg, std::chrono::milliseconds(3000));
  std::vector<KnownMember> known =
      KnownMembersOf(args.Get("config"), args.GetOr("dir", "pgwarden-data"));
  for (int round = 0;; ++round) {
    auto view = dcs->Load();
    if (!view.ok()) {
      std::cerr << "pgwarden status: " << view.status().message() << "\n";
      if (!args.Flag("watch")) return kExitFailure;
    } else {
      auto rows = CollectRows(cfg, *view, known);
      if (args.Flag("watch") && isatty(1)) std::printf("\033[H\033[2J");
      if (args.Flag("json"))
        std::printf("%s\n", RowsToJson(cfg, *view, rows).dump(2).c_str());
      else
        PrintTable(cfg, *view, rows);
      std::fflush(stdout);
    }
    if (!args.Flag("watch")) return kExitOk;
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
}

int DsnCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first, {"dir", "config", "member", "role"}, {"help"},
            {{"c", "config"}, {"h", "help"}, {"m", "member"}, {"r", "role"}});
  if (args.Flag("help")) {
    std::cout << kDsnHelp;
    return kExitOk;
  }
  std::string role = args.GetOr("role", "primary");
  if (role != "primary" && role != "replica" && role != "proxy-rw") {
    throw UsageError{"--role must be primary, replica or proxy-rw (got '" + role + "')"};
  }
  if (args.Has("member") && args.Has("role")) {
    throw UsageError{"give --member or --role, not both"};
  }
  config::Config cfg;
  try {
    cfg = LoadClientConfig(args.Get("config"), args.GetOr("dir", "pgwarden-data"));
  } catch (const config::ConfigError& e) {
    std::cerr << "pgwarden dsn: " << e.what() << "\n";
    return kExitUsage;
  }
  const auto& su = cfg.postgresql.superuser;
  auto uri_for = [&su](std::string host, uint16_t port) {
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    std::string uri = "postgresql://" + PercentEncode(su.username);
    if (!su.password.empty()) uri += ":" + PercentEncode(su.password);
    return uri + "@" + host + ":" + std::to_string(port) + "/postgres";
  };
  if (role == "proxy-rw") {
    if (!cfg.proxy_yaml) {
      std::cerr << "pgwarden dsn: the configuration has no proxy section (pgwarden up adds one)\n";
      return kExitUsage;
    }
    try {
      auto listen = proxy::ParseProxyConfig(cfg).listen;
      std::string host = listen.host == "0.0.0.0" || listen.host == "*" ? "127.0.0.1" : listen.host;
      std::printf("%s\n", uri_for(host, listen.port).c_str());
      return kExitOk;
    } catch (const config::ConfigError& e) {
      std::cerr << "pgwarden dsn: " << e.what() << "\n";
      return kExitUsage;
    }
  }
  auto view = MakeClientDcs(cfg, std::chrono::milliseconds(3000))->Load();
  if (!view.ok()) {
    std::cerr << "pgwarden dsn: " << view.status().message() << "\n";
    return kExitFailure;
  }
  const dcs::Member* chosen = nullptr;
  if (auto name = args.Get("member")) {
    chosen = view->FindMember(*name);
    if (chosen == nullptr) {
      std::cerr << "pgwarden dsn: no member named '" << *name << "' in cluster " << cfg.scope
                << "\n";
      return kExitFailure;
    }
  } else if (role == "primary") {
    if (view->HasLeader()) chosen = view->FindMember(view->leader->name);
    if (chosen == nullptr) {
      std::cerr << "pgwarden dsn: cluster " << cfg.scope << " has no leader right now\n";
      return kExitFailure;
    }
  } else {
    Lsn best;
    for (const auto& [name, m] : view->members) {
      if (view->HasLeader() && view->leader->name == name) continue;
      if (m.role != "replica" || m.state != "streaming") continue;
      if (chosen == nullptr || m.replay_lsn > best) {
        chosen = &m;
        best = m.replay_lsn;
      }
    }
    if (chosen == nullptr) {
      std::cerr << "pgwarden dsn: cluster " << cfg.scope << " has no streaming replica\n";
      return kExitFailure;
    }
  }
  auto ep = config::HostPortOfUrl(chosen->conn_url);
  if (!ep) {
    std::cerr << "pgwarden dsn: member " << chosen->name << " publishes no usable conn_url ("
              << chosen->conn_url << ")\n";
    return kExitFailure;
  }
  std::printf("%s\n", uri_for(ep->host, ep->port).c_str());
  return kExitOk;
}

}  // namespace pgwarden::cli
