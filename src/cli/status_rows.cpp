// Builds the rows of `pgwarden status` from the cluster view: member keys, slots, known members.
#include "cli/status_rows.h"

#include <map>
#include <set>

#include "agent/rest_api.h"
#include "config/config.h"
#include "ha/decide.h"

namespace pgwarden::cli {
namespace {

void SetEndpoint(const std::string& conn_url, StatusRow* r) {
  if (auto ep = config::HostPortOfUrl(conn_url)) {
    r->host = ep->host;
    r->port = ep->port;
  }
}

StatusRow NoMemberKeyRow(const std::string& name) {
  StatusRow r;
  r.name = name;
  r.role = "unknown";
  r.state = kNoMemberKeyState;
  return r;
}

}  // namespace

std::vector<StatusRow> BuildStatusRows(const dcs::ClusterView& view,
                                       const std::vector<KnownMember>& known) {
  std::map<std::string, StatusRow> rows;  // by name
  const Lsn leader_pos = agent::LeaderPosition(view);
  const std::string leader = view.HasLeader() ? view.leader->name : "";
  const std::string sync = view.sync ? view.sync->sync_standby : "";
  for (const auto& [name, m] : view.members) {
    StatusRow r;
    r.name = name;
    r.role = name == leader ? "leader" : (name == sync ? "sync_standby" : "replica");
    r.state = m.state;
    r.api_url = m.api_url;
    r.timeline = m.timeline;
    SetEndpoint(m.conn_url, &r);
    if (name != leader) {
      Lsn pos = m.replay_lsn.valid() ? m.replay_lsn : m.xlog_location;
      if (leader_pos.valid() && pos.valid())
        r.lag = leader_pos.BytesAfter(pos);
      else if (leader_pos.valid() && m.state == "streaming")
        r.lag = 0;
    }
    rows.emplace(name, std::move(r));
  }
  for (const auto& k : known) {
    if (rows.count(k.name)) continue;
    StatusRow r = NoMemberKeyRow(k.name);
    r.api_url = k.api_url;
    SetEndpoint(k.conn_url, &r);
    rows.emplace(k.name, std::move(r));
  }
  // Slots whose member is named nowhere else: the slot name is all we know.
  std::set<std::string> owned;
  for (const auto& [name, r] : rows) owned.insert(ha::SlotNameForMember(name));
  for (const auto& [slot, restart_lsn] : view.leader_slots) {
    if (!owned.count(slot) && view.retain_slots.count(slot) && !rows.count(slot)) {
      rows.emplace(slot, NoMemberKeyRow(slot));
    }
  }
  std::vector<StatusRow> out;
  for (auto& [name, r] : rows) {
    auto slot = view.leader_slots.find(ha::SlotNameForMember(name));
    if (name != leader && slot != view.leader_slots.end() && slot->second.valid() &&
        leader_pos.valid()) {
      r.slot_retained = leader_pos.BytesAfter(slot->second);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace pgwarden::cli
