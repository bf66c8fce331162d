// REST API request handling: Patroni's health checks, /patroni and /cluster documents.
#include "agent/rest_api.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/units.h"

namespace pgwarden::agent {
namespace {

using nlohmann::json;

constexpr const char* kAllowedMethods = "GET, HEAD, OPTIONS";

// What a health-check path asks of this node.
enum class Check {
  kPrimary,         // the leader running as primary (/primary, /master, /read-write, /leader, /)
  kStandbyLeader,   // the leader of a standby cluster: never, we have none
  kReplica,         // a replica that takes load (/replica)
  kReadOnly,        // the primary or a replica (/read-only)
  kSynchronous,     // a synchronous standby (/sync, /synchronous)
  kAsynchronous,    // an asynchronous standby (/async, /asynchronous)
  kReadOnlySync,    // the primary or a synchronous standby (/read-only-sync)
  kQuorum,          // a quorum standby: never, we have no quorum commit
  kReadOnlyQuorum,  // the primary (no quorum standbys)
  kHealth,          // PostgreSQL running (/health)
};

// Every path answered like Patroni's do_GET, i.e. with the node JSON.
const std::vector<std::pair<std::string_view, Check>>& HealthPaths() {
  static const std::vector<std::pair<std::string_view, Check>> paths = {
      {"/", Check::kPrimary},
      {"/primary", Check::kPrimary},
      {"/master", Check::kPrimary},
      {"/read-write", Check::kPrimary},
      {"/leader", Check::kPrimary},
      {"/standby-leader", Check::kStandbyLeader},
      {"/standby_leader", Check::kStandbyLeader},
      {"/replica", Check::kReplica},
      {"/read-only", Check::kReadOnly},
      {"/synchronous", Check::kSynchronous},
      {"/sync", Check::kSynchronous},
      {"/asynchronous", Check::kAsynchronous},
      {"/async", Check::kAsynchronous},
      {"/read-only-sync", Check::kReadOnlySync},
      {"/read-only-synchronous", Check::kReadOnlySync},
      {"/quorum", Check::kQuorum},
      {"/read-only-quorum", Check::kReadOnlyQuorum},
      {"/health", Check::kHealth},
  };
  return paths;
}

// Leader checks ignore ?tag_ filters, like Patroni.
bool IgnoresTags(Check check) { return check == Check::kPrimary || check == Check::kStandbyLeader; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Patroni's parse_bool for tag values: true/yes/on/1 (any case).
std::optional<bool> ParseBool(std::string_view text) {
  std::string v = Lower(text);
  if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "off" || v == "0") return false;
  return std::nullopt;
}

bool HasTrueTag(const NodeStatus& node, const std::string& tag) {
  auto it = node.tags.find(tag);
  return it != node.tags.end() && ParseBool(it->second).value_or(false);
}

net::HttpResponse JsonResponse(int status, const json& body) {
  net::HttpResponse res;
  res.status = status;
  res.content_type = "application/json";
  res.body = body.dump();
  return res;
}

net::HttpResponse ErrorResponse(int status, const std::string& message) {
  return JsonResponse(status, json{{"error", message}});
}

// Parses ?<name>= as a byte size. nullopt: absent. Error: present and bad.
Result<std::optional<uint64_t>> ParseLagParam(const net::HttpRequest& req, const char* name) {
  auto it = req.query.find(name);
  if (it == req.query.end()) return std::optional<uint64_t>();
  auto bytes = ParseByteSize(it->second);
  if (!bytes) {
    return InvalidArgument(std::string("invalid ") + name + " '" + it->second +
                           "': expected bytes or a size such as 16kB, 64MB, 1GB");
  }
  return std::optional<uint64_t>(*bytes);
}

// Patroni's "replication_state": "streaming" for a replica whose WAL receiver streams.
std::optional<std::string> ReplicationState(const NodeStatus& node) {
  if (node.pg_running && node.in_recovery && node.streaming) return std::string("streaming");
  return std::nullopt;
}

bool PrimaryOk(const NodeStatus& node) {
  return node.is_leader && node.pg_running && !node.in_recovery && node.role == "primary";
}

// A running replica without noloadbalance, within ?lag= and ?replication_state=.
bool ReplicaOk(const NodeStatus& node, const net::HttpRequest& req,
               std::optional<uint64_t> max_lag) {
  if (!node.pg_running || !node.in_recovery || node.role != "replica") return false;
  if (HasTrueTag(node, "noloadbalance")) return false;
  if (max_lag) {
    auto lag = node.ReplicationLagBytes();
    if (!lag || *lag > *max_lag) return false;
  }
  auto wanted = req.query.find("replication_state");
  if (wanted != req.query.end() && ReplicationState(node) != wanted->second) return false;
  return true;
}

// ?tag_<key>=<value>: every such filter must match a tag of this node.
bool TagsMatch(const NodeStatus& node, const net::HttpRequest& req) {
  constexpr std::string_view kPrefix = "tag_";
  for (const auto& [key, value] : req.query) {
    if (key.size() <= kPrefix.size() || key.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    auto tag = node.tags.find(key.substr(kPrefix.size()));
    if (tag == node.tags.end()) return false;
    if (tag->second == value) continue;
    auto a = ParseBool(tag->second);
    auto b = ParseBool(value);
    if (!a || !b || *a != *b) return false;
  }
  return true;
}

int HealthStatus(const NodeStatus& node, const net::HttpRequest& req, Check check,
                 std::optional<uint64_t> max_lag) {
  bool primary = PrimaryOk(node);
  bool ok = false;
  switch (check) {
    case Check::kPrimary:
      ok = primary;
      break;
    case Check::kStandbyLeader:
    case Check::kQuorum:
      ok = false;
      break;
    case Check::kReplica:
      ok = ReplicaOk(node, req, max_lag);
      break;
    case Check::kReadOnly:
      ok = primary || ReplicaOk(node, req, max_lag);
      break;
    case Check::kSynchronous:
      ok = node.dcs_reachable && node.is_sync_standby && ReplicaOk(node, req, max_lag);
      break;
    case Check::kAsynchronous:
      ok = node.dcs_reachable && !node.is_sync_standby && ReplicaOk(node, req, max_lag);
      break;
    case Check::kReadOnlySync:
      ok = primary || (node.dcs_reachable && node.is_sync_standby && ReplicaOk(node, req, max_lag));
      break;
    case Check::kReadOnlyQuorum:
      ok = primary;
      break;
    case Check::kHealth:
      ok = node.pg_running;
      break;
  }
  if (ok && !IgnoresTags(check) && !TagsMatch(node, req)) ok = false;
  return ok ? 200 : 503;
}

// maximum_lag_on_failover from the dynamic configuration, or Patroni's default.
uint64_t MaximumLagOnFailover(const dcs::ClusterView& cluster) {
  if (cluster.config && cluster.config->is_object()) {
    auto it = cluster.config->find("maximum_lag_on_failover");
    if (it != cluster.config->end()) {
      if (it->is_number_unsigned()) return it->get<uint64_t>();
      if (it->is_number_integer() && it->get<int64_t>() >= 0) return it->get<int64_t>();
      if (it->is_string()) {
        if (auto v = ParseByteSize(it->get<std::string>())) return *v;
      }
    }
  }
  return kDefaultMaximumLagOnFailover;
}

// Why this node is not ready for traffic, or "" when it is (Patroni's _readiness).
std::string NotReadyReason(const NodeStatus& node, std::optional<uint64_t> max_lag,
                           bool write_mode) {
  if (PrimaryOk(node)) return "";
  if (!node.pg_running) return "PostgreSQL is not running";
  if (!node.in_recovery) return "PostgreSQL is not a replica and this node is not the leader";
  if (!node.streaming) return "PostgreSQL replication state is not streaming";
  Lsn leader = LeaderPosition(node.cluster);
  if (!leader.valid()) return "the leader's WAL position is unknown";
  Lsn local = write_mode ? node.receive_lsn : node.replay_lsn;
  uint64_t lag = leader.BytesAfter(local);
  uint64_t limit = max_lag ? *max_lag : MaximumLagOnFailover(node.cluster);
  if (lag > limit) {
    return std::string("replication ") + (write_mode ? "write" : "apply") + " lag " +
           std::to_string(lag) + " exceeds maximum allowable " + std::to_string(limit);
  }
  return "";
}

// Host and port of "postgres://[user[:pw]@]host[:port][/db][?opts]".
void SplitConnUrl(const std::string& url, std::string* host, std::optional<int>* port) {
  std::string_view rest = url;
  size_t scheme = rest.find("://");
  if (scheme != std::string_view::npos) rest.remove_prefix(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("/?"));
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) rest.remove_prefix(at + 1);
  std::string_view port_text;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      *host = std::string(rest);
      return;
    }
    *host = std::string(rest.substr(1, close - 1));
    if (close + 1 < rest.size() && rest[close + 1] == ':') port_text = rest.substr(close + 2);
  } else {
    size_t colon = rest.rfind(':');
    *host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
  }
  if (!port_text.empty() && port_text.size() <= 5 &&
      std::all_of(port_text.begin(), port_text.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    *port = std::stoi(std::string(port_text));
  }
}

std::set<std::string> SyncStandbys(const dcs::ClusterView& cluster) {
  std::set<std::string> names;
  if (!cluster.sync) return names;
  std::string_view list = cluster.sync->sync_standby;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view name = list.substr(0, comma);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (!name.empty()) names.emplace(name);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return names;
}

bool IsHealthMethod(const std::string& method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS";
}

std::string NormalizePath(const std::string& path) {
  std::string p = path.empty() ? "/" : path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

Lsn LeaderPosition(const dcs::ClusterView& cluster) {
  Lsn position = cluster.last_leader_optime;
  if (cluster.HasLeader()) {
    auto it = cluster.members.find(cluster.leader->name);
    if (it != cluster.members.end() && it->second.xlog_location > position) {
      position = it->second.xlog_location;
    }
  }
  return position;
}

json NodeStatusToJson(const NodeStatus& node) {
  json j = json::object();
  if (node.pg_running) {
    j["state"] = "running";
  } else if (!node.state.empty() && node.state != "running" && node.state != "streaming") {
    j["state"] = node.state;
  } else {
    j["state"] = "stopped";
  }
  if (node.pg_running && !node.postmaster_start_time.empty()) {
    j["postmaster_start_time"] = node.postmaster_start_time;
  }
  j["role"] = node.role.empty() ? "uninitialized" : node.role;
  if (node.pg_running) {
    if (node.server_version > 0) j["server_version"] = node.server_version;
    if (node.in_recovery) {
      Lsn received = node.receive_lsn.valid() ? node.receive_lsn : node.replay_lsn;
      j["xlog"] = {
          {"received_location", received.value()},
          {"replayed_location", node.replay_lsn.value()},
          {"replayed_timestamp",
           node.last_replay_timestamp ? json(*node.last_replay_timestamp) : json(nullptr)},
          {"paused", node.replay_paused},
      };
    } else {
      j["xlog"] = {{"location", node.wal_lsn.value()}};
    }
    if (node.timeline > 0) j["timeline"] = node.timeline;
    if (auto rs = ReplicationState(node)) j["replication_state"] = *rs;
  }
  if (node.is_sync_standby) j["sync_standby"] = true;
  if (!node.cluster.HasLeader()) j["cluster_unlocked"] = true;
  if (!node.tags.empty()) j["tags"] = node.tags;
  if (!node.system_identifier.empty()) j["database_system_identifier"] = node.system_identifier;
  j["patroni"] = {{"version", PGWARDEN_VERSION}, {"scope", node.scope}, {"name", node.name}};
  return j;
}

json ClusterToJson(const dcs::ClusterView& cluster) {
  const std::string leader_name = cluster.HasLeader() ? cluster.leader->name : std::string();
  const std::set<std::string> sync = SyncStandbys(cluster);
  const Lsn leader_position = LeaderPosition(cluster);

  json members = json::array();
  // cluster.members is a std::map: already sorted by name.
  for (const auto& [name, m] : cluster.members) {
    json member = json::object();
    member["name"] = name;
    std::string role = "replica";
    if (name == leader_name) {
      role = "leader";
    } else if (sync.count(name)) {
      role = "sync_standby";
    }
    member["role"] = role;
    member["state"] = m.state;
    member["api_url"] = m.api_url;
    std::string host;
    std::optional<int> port;
    SplitConnUrl(m.conn_url, &host, &port);
    if (!host.empty()) member["host"] = host;
    if (port) member["port"] = *port;
    if (m.timeline > 0) member["timeline"] = m.timeline;
    if (!m.tags.empty()) member["tags"] = m.tags;
    if (name != leader_name) {
      Lsn position = m.replay_lsn.valid() ? m.replay_lsn : m.xlog_location;
      if (!position.valid() || !leader_position.valid()) {
        member["lag"] = "unknown";
      } else {
        member["lag"] = leader_position.BytesAfter(position);
      }
    }
    members.push_back(std::move(member));
  }
  return json{{"members", std::move(members)}};
}

net::HttpResponse HandleRestRequest(const NodeStatus& node, const net::HttpRequest& req) {
  const std::string path = NormalizePath(req.path);
  const bool options = req.method == "OPTIONS";

  for (const auto& [health_path, check] : HealthPaths()) {
    if (path != health_path) continue;
    if (!IsHealthMethod(req.method)) break;
    auto max_lag = ParseLagParam(req, "lag");
    if (!max_lag.ok()) return ErrorResponse(400, max_lag.status().message());
    int status = HealthStatus(node, req, check, *max_lag);
    if (options) return net::HttpResponse{status, "", "", {}};
    return JsonResponse(status, NodeStatusToJson(node));
  }

  // Documents and probes, GET/HEAD/OPTIONS only.
  static const std::set<std::string> kOtherPaths = {"/patroni", "/cluster",  "/history",
                                                    "/config",  "/liveness", "/readiness"};
  bool known = kOtherPaths.count(path) > 0;
  for (const auto& [health_path, check] : HealthPaths()) known = known || path == health_path;
  if (!known) return ErrorResponse(404, "no such endpoint: " + path);
  if (!IsHealthMethod(req.method)) {
    net::HttpResponse res =
        ErrorResponse(405, "method " + req.method + " is not allowed on " + path);
    res.headers.emplace_back("Allow", kAllowedMethods);
    return res;
  }

  net::HttpResponse res;
  if (path == "/liveness") {
    if (node.ha_loop_stale) {
      res = JsonResponse(
          503, json{{"status", "stale"}, {"reason", "the HA loop has not run for too long"}});
    } else {
      res = JsonResponse(200, json{{"status", "alive"}});
    }
  } else if (path == "/readiness") {
    auto max_lag = ParseLagParam(req, "lag");
    if (!max_lag.ok()) return ErrorResponse(400, max_lag.status().message());
    auto mode = req.query.find("mode");
    bool write_mode = mode != req.query.end() && mode->second == "write";
    std::string reason = NotReadyReason(node, *max_lag, write_mode);
    res = reason.empty() ? JsonResponse(200, json{{"status", "ready"}})
                         : JsonResponse(503, json{{"status", "not ready"}, {"reason", reason}});
  } else if (path == "/patroni") {
    res = JsonResponse(200, NodeStatusToJson(node));
  } else if (path == "/cluster") {
    json body = ClusterToJson(node.cluster);
    body["scope"] = node.scope;
    res = JsonResponse(200, body);
  } else if (path == "/history") {
    res = JsonResponse(200, node.cluster.history ? *node.cluster.history : json::array());
  } else {  // /config
    if (!node.cluster.config) return ErrorResponse(502, "no dynamic configuration in the DCS");
    res = JsonResponse(200, *node.cluster.config);
  }
  if (options) {
    res.body.clear();
    res.content_type.clear();
  }
  return res;
}

}  // namespace pgwarden::agent
