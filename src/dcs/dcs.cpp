// Member JSON (Patroni's fields plus ours), ClusterView lookups and Dcs defaults.
#include "dcs/dcs.h"

#include <algorithm>
#include <charconv>

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;

// Tags Patroni reads as integers; every other tag is a string or a boolean.
bool IsIntegerTag(const std::string& name) { return name == "failover_priority"; }

std::string StringField(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

int IntField(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int>();
  if (it->is_string()) return static_cast<int>(ParseInt(it->get<std::string>()).value_or(0));
  return 0;
}

// An LSN written as bytes (Patroni), as a decimal string, or as "X/Y".
Lsn LsnField(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return Lsn();
  if (it->is_number_unsigned()) return Lsn(it->get<uint64_t>());
  if (it->is_number_integer()) return Lsn(static_cast<uint64_t>(std::max<int64_t>(0, *it)));
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (auto lsn = Lsn::Parse(s)) return *lsn;
    if (auto v = ParseInt(s); v && *v >= 0) return Lsn(static_cast<uint64_t>(*v));
  }
  return Lsn();
}

}  // namespace

json Member::ToJson() const {
  json j = {
      {"conn_url", conn_url},
      {"api_url", api_url},
      {"state", state},
      {"role", role},
      {"version", version},
      {"xlog_location", xlog_location.value()},
      {"timeline", timeline},
      {"receive_lsn", receive_lsn.value()},
      {"replay_lsn", replay_lsn.value()},
      {"pgwarden_format", kMemberFormatVersion},
  };
  if (!tags.empty()) {
    json t = json::object();
    for (const auto& [name, value] : tags) {
      if (value == "true" || value == "false") {
        t[name] = value == "true";
      } else if (auto v = ParseInt(value); v && IsIntegerTag(name)) {
        t[name] = *v;
      } else {
        t[name] = value;
      }
    }
    j["tags"] = std::move(t);
  }
  return j;
}

Member Member::FromJson(const std::string& name, const json& j) {
  Member m;
  m.name = name;
  if (!j.is_object()) return m;
  m.conn_url = StringField(j, "conn_url");
  m.api_url = StringField(j, "api_url");
  m.state = StringField(j, "state");
  m.role = StringField(j, "role");
  if (m.role == "master") m.role = "primary";  // Patroni before 3.0
  m.version = StringField(j, "version");
  m.timeline = IntField(j, "timeline");
  m.xlog_location = LsnField(j, "xlog_location");
  m.receive_lsn = LsnField(j, "receive_lsn");
  m.replay_lsn = LsnField(j, "replay_lsn");
  if (auto it = j.find("tags"); it != j.end() && it->is_object()) {
    for (const auto& [tag, value] : it->items()) {
      if (value.is_null()) continue;
      m.tags[tag] = value.is_string() ? value.get<std::string>() : value.dump();
    }
  }
  return m;
}

const Member* ClusterView::FindMember(const std::string& name) const {
  auto it = members.find(name);
  return it == members.end() ? nullptr : &it->second;
}

Status Dcs::WriteConfig(const json&, int64_t) { return Fatal("WriteConfig: not supported"); }
Status Dcs::WriteFailover(const json&, int64_t) { return Fatal("WriteFailover: not supported"); }
Status Dcs::DeleteFailover(int64_t) { return Fatal("DeleteFailover: not supported"); }
Status Dcs::WriteHistory(const json&) { return Fatal("WriteHistory: not supported"); }

}  // namespace pgwarden::dcs
