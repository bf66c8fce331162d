// Judges an agent's own /patroni answer and the change between two proxy sections, for `up`.
#include "cli/up_check.h"

#include <yaml-cpp/yaml.h>

#include <optional>
#include <set>

#include <nlohmann/json.hpp>

namespace pgwarden::cli {
namespace {

// Keys Proxy::Reload keeps at their old value (they take effect after a restart).
const std::set<std::string>& RestartOnlyKeys() {
  static const std::set<std::string> kKeys = {"listen",     "workers",    "metrics_listen",
                                              "client_tls", "server_tls", "track_extra_parameters"};
  return kKeys;
}

std::string Flow(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "(none)";
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

// The same YAML value, whatever its style (flow or block, quoting).
bool SameValue(const YAML::Node& a, const YAML::Node& b) {
  if (!a.IsDefined() || !b.IsDefined()) return a.IsDefined() == b.IsDefined();  // a missing key
  if (a.Type() != b.Type()) return false;
  switch (a.Type()) {
    case YAML::NodeType::Scalar:
      return a.Scalar() == b.Scalar();
    case YAML::NodeType::Sequence:
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!SameValue(a[i], b[i])) return false;
      }
      return true;
    case YAML::NodeType::Map:
      if (a.size() != b.size()) return false;
      for (const auto& kv : a) {
        if (!kv.first.IsScalar() || !b[kv.first.Scalar()] ||
            !SameValue(kv.second, b[kv.first.Scalar()]))
          return false;
      }
      return true;
    default:  // Null, Undefined
      return true;
  }
}

// The mapping under proxy:, or nullopt when the text is no such YAML.
std::optional<YAML::Node> ProxyMap(const std::string& text) {
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap() || !root["proxy"] || !root["proxy"].IsMap()) return std::nullopt;
    return root["proxy"];
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::string AgentNotReadyReason(const std::string& name, bool leader, int http_status,
                                const std::string& body) {
  if (http_status == 0) return name + ": its agent does not answer on its REST API";
  if (http_status != 200)
    return name + ": its agent answers GET /patroni with " + std::to_string(http_status);
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return name + ": its agent answers no JSON on /patroni";
  auto text = [&j](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  std::string who;
  if (auto p = j.find("patroni"); p != j.end() && p->is_object()) {
    if (auto n = p->find("name"); n != p->end() && n->is_string()) who = n->get<std::string>();
  }
  if (who != name) {
    return name + ": its REST port is answered by " +
           (who.empty() ? std::string("something that is not its agent") : "member '" + who + "'");
  }
  std::string state = text("state"), role = text("role");
  if (state != "running") return name + ": PostgreSQL is " + (state.empty() ? "?" : state);
  if (leader) {
    if (role != "primary") return name + ": holds the leader key but runs as " + role;
    return "";
  }
  if (role != "replica") return name + ": runs as " + role + ", not as a replica";
  if (text("replication_state") != "streaming") return name + ": a replica not streaming yet";
  return "";
}

ProxySectionDiff DiffProxySections(const std::string& running, const std::string& wanted) {
  ProxySectionDiff diff;
  auto old_map = ProxyMap(running);
  auto new_map = ProxyMap(wanted);
  if (!old_map || !new_map) {
    if (running == wanted) return diff;
    diff.changed = {"proxy"};
    diff.descriptions = {"proxy: the section in cluster.yml is not a YAML mapping"};
    diff.needs_restart = true;
    return diff;
  }
  const YAML::Node old_proxy = *old_map, new_proxy = *new_map;
  std::set<std::string> keys;
  try {
    for (const auto& kv : old_proxy) keys.insert(kv.first.as<std::string>());
    for (const auto& kv : new_proxy) keys.insert(kv.first.as<std::string>());
  } catch (const YAML::Exception&) {
    diff.changed = {"proxy"};
    diff.descriptions = {"proxy: a key in cluster.yml is not a plain name"};
    diff.needs_restart = true;
    return diff;
  }
  for (const auto& key : keys) {
    const YAML::Node before = old_proxy[key], after = new_proxy[key];
    if (SameValue(before, after)) continue;
    diff.changed.push_back(key);
    diff.descriptions.push_back("proxy." + key + ": " + Flow(before) + " -> " + Flow(after));
    if (RestartOnlyKeys().count(key)) diff.needs_restart = true;
  }
  return diff;
}

}  // namespace pgwarden::cli
