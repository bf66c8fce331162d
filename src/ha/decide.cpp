// decide(): Patroni's chain of early returns, in a fixed order, as a pure function.
#include "ha/decide.h"

#include <algorithm>
#include <sstream>

namespace pgwarden::ha {
namespace {

Action Do(ActionType type, std::string target = {}) { return Action{type, std::move(target), {}}; }

Decision Say(std::string reason, std::vector<Action> actions = {}) {
  return Decision{std::move(actions), std::move(reason)};
}

long Seconds(Millis d) { return static_cast<long>(d.count() / 1000); }

bool TagTrue(const dcs::Member& m, const char* tag) {
  auto it = m.tags.find(tag);
  if (it == m.tags.end()) return false;
  const auto& v = it->second;
  return v == "true" || v == "on" || v == "yes" || v == "1";
}

// Standbys fit to be synchronous: streaming from us, known members, not tagged nosync.
std::vector<std::string> HealthySyncCandidates(const Observation& obs) {
  std::vector<std::string> out;
  for (const auto& s : obs.local.standbys) {
    if (!s.streaming) continue;
    const dcs::Member* m = obs.cluster.FindMember(s.application_name);
    if (m == nullptr || TagTrue(*m, "nosync")) continue;
    out.push_back(s.application_name);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Safety rule 5: `sync` is written before synchronous_standby_names is
// narrowed, and only names a standby PostgreSQL reports as synchronous.
void PlanSynchronousReplication(const Observation& obs, const HaConfig& cfg,
                                std::vector<Action>& actions, std::string& note) {
  std::string recorded;
  if (obs.cluster.sync && obs.cluster.sync->leader == cfg.name) {
    recorded = obs.cluster.sync->sync_standby;
  }
  const auto& current_names = obs.local.sync_names;
  if (!cfg.synchronous_mode) {
    if (!recorded.empty()) actions.push_back(Do(ActionType::kWriteSync, ""));
    if (!current_names.empty()) {
      actions.push_back(Action{ActionType::kSetSyncStandbys, {}, {}});
      note = "; synchronous mode off: clearing synchronous_standby_names";
    }
    return;
  }
  std::vector<std::string> healthy = HealthySyncCandidates(obs);
  auto is_healthy = [&](const std::string& n) {
    return std::find(healthy.begin(), healthy.end(), n) != healthy.end();
  };
  // The standby PostgreSQL waits for now.
  std::string actual;
  for (const auto& s : obs.local.standbys) {
    if (s.sync_state == "sync" && is_healthy(s.application_name) &&
        std::find(current_names.begin(), current_names.end(), s.application_name) !=
            current_names.end()) {
      actual = s.application_name;
    }
  }
  auto named = [&](const std::string& n) {
    return std::find(current_names.begin(), current_names.end(), n) != current_names.end();
  };
  // `sync` may only name a standby that is synchronous now: the recorded one
  // while it streams and stays in the setting, else whatever PostgreSQL uses.
  bool recorded_valid = recorded.empty() || (is_healthy(recorded) && named(recorded));
  std::string keep = recorded;
  if (!recorded_valid || (!actual.empty() && actual != recorded)) {
    keep = actual;
    if (keep != recorded) {
      actions.push_back(Do(ActionType::kWriteSync, keep));
      note = keep.empty() ? "; synchronous standby " + recorded + " is gone"
                          : "; synchronous standby is now " + keep;
    }
  }
  // Desired setting: the recorded/actual sync standby first, then the others.
  std::vector<std::string> desired;
  if (!keep.empty()) desired.push_back(keep);
  for (const auto& n : healthy) {
    if (n != keep) desired.push_back(n);
  }
  if (desired != current_names) {
    actions.push_back(Action{ActionType::kSetSyncStandbys, {}, desired});
    if (note.empty()) {
      note = desired.empty() ? "; no healthy standby for synchronous replication"
                             : "; synchronous_standby_names over " +
                                   std::to_string(desired.size()) + " standby(s)";
    }
  }
}

// Housekeeping of a healthy leader: lease, slots, synchronous replication, status.
Decision LeaderSteadyState(const Observation& obs, const HaConfig& cfg) {
  std::vector<Action> actions{Do(ActionType::kRenewLeader)};
  std::string note;
  if (cfg.use_slots) {
    std::set<std::string> wanted = WantedSlots(obs, cfg);
    for (const auto& slot : wanted) {
      if (!obs.local.slots.count(slot)) actions.push_back(Do(ActionType::kCreateSlot, slot));
    }
    for (const auto& slot : obs.local.slots) {
      if (!wanted.count(slot) && obs.member_slots.count(slot)) {
        actions.push_back(Do(ActionType::kDropSlot, slot));
        note += "; dropping slot " + slot + " of a member gone for over " +
                std::to_string(Seconds(cfg.member_slots_ttl)) + " s";
      }
    }
  }
  PlanSynchronousReplication(obs, cfg, actions, note);
  actions.push_back(Do(ActionType::kWriteStatus));
  return Say("no action: I am " + cfg.name + ", the leader with the lease" + note,
             std::move(actions));
}

int FailoverPriority(const dcs::Member& m) {
  auto it = m.tags.find("failover_priority");
  if (it == m.tags.end()) return 1;
  try {
    return std::stoi(it->second);
  } catch (...) {
    return 1;
  }
}

// The leader key is gone and this member is a healthy standby: may it lead?
// (Safety rule 3.) It must be allowed to (nofailover, the sync standby in
// synchronous mode), close enough to the leader's last published position,
// and ahead of every other candidate that answers, ties going to the higher
// failover_priority, then the smaller name.
Decision ElectionOfAStandby(const Observation& obs, const HaConfig& cfg) {
  const dcs::ClusterView& cluster = obs.cluster;
  if (cfg.nofailover) return Say("no leader: waiting for one (this member is tagged nofailover)");
  const Lsn mine = CandidatePosition(obs.local);
  const bool sync_recorded =
      cfg.synchronous_mode && cluster.sync && !cluster.sync->sync_standby.empty();
  if (sync_recorded && cluster.sync->sync_standby != cfg.name) {
    return Say("no leader: waiting; in synchronous mode only the synchronous standby " +
               cluster.sync->sync_standby + " may be promoted");
  }
  if (cluster.last_leader_optime.valid() && cluster.last_leader_optime > mine &&
      cluster.last_leader_optime.BytesAfter(mine) > cfg.maximum_lag_on_failover) {
    return Say("no leader: not a candidate, " +
               std::to_string(cluster.last_leader_optime.BytesAfter(mine)) +
               " bytes behind the leader's last position " + cluster.last_leader_optime.ToString() +
               " (maximum_lag_on_failover " + std::to_string(cfg.maximum_lag_on_failover) + ")");
  }
  // The member that led last (status.leader), back and starting with the
  // data of the primary: it takes its key again, nobody needs to fail over.
  const std::string former =
      cluster.status && cluster.status->is_object() ? cluster.status->value("leader", "") : "";
  if (!former.empty() && former != cfg.name) {
    const dcs::Member* m = cluster.FindMember(former);
    auto peer = obs.peers.find(former);
    if (m != nullptr && m->role == "primary" && peer != obs.peers.end() && peer->second.reachable) {
      return Say("no leader: waiting for former leader " + former +
                 ", which is back, to take its key");
    }
  }
  if (!sync_recorded) {
    const dcs::Member* me = cluster.FindMember(cfg.name);
    const int my_priority = me ? FailoverPriority(*me) : cfg.failover_priority;
    for (const auto& [name, m] : cluster.members) {
      if (name == cfg.name || TagTrue(m, "nofailover") || FailoverPriority(m) <= 0) continue;
      auto it = obs.peers.find(name);
      if (it == obs.peers.end() || !it->second.reachable) continue;  // silence is no veto
      const PeerPosition& p = it->second;
      if (p.pg_running && !p.in_recovery) {
        return Say("no leader: waiting for " + name + ", which runs as primary, to take the key");
      }
      if (!p.pg_running) continue;
      const bool ahead =
          p.wal_position > mine ||
          (p.wal_position == mine && (FailoverPriority(m) > my_priority ||
                                      (FailoverPriority(m) == my_priority && name < cfg.name)));
      if (ahead) {
        return Say("no leader: " + name + " is the better candidate (at " +
                   p.wal_position.ToString() + ", this member at " + mine.ToString() +
                   "); waiting for it to take over");
      }
    }
  }
  return Say("no leader: promoting, this member is the most advanced healthy standby (at " +
                 mine.ToString() + ")",
             {Do(ActionType::kAcquireLeader), Do(ActionType::kPromote)});
}

}  // namespace

Lsn CandidatePosition(const LocalState& local) {
  return std::max(local.receive_lsn, local.replay_lsn);
}

const char* ActionName(ActionType type) {
  switch (type) {
    case ActionType::kRaceInitialize:
      return "race_initialize";
    case ActionType::kBaseBackup:
      return "base_backup";
    case ActionType::kStartPrimary:
      return "start_primary";
    case ActionType::kStartStandby:
      return "start_standby";
    case ActionType::kFollow:
      return "follow";
    case ActionType::kPromote:
      return "promote";
    case ActionType::kStopPostgres:
      return "stop_postgres";
    case ActionType::kFencePostgres:
      return "fence_postgres";
    case ActionType::kAcquireLeader:
      return "acquire_leader";
    case ActionType::kRenewLeader:
      return "renew_leader";
    case ActionType::kCreateSlot:
      return "create_slot";
    case ActionType::kDropSlot:
      return "drop_slot";
    case ActionType::kSetSyncStandbys:
      return "set_sync_standbys";
    case ActionType::kWriteSync:
      return "write_sync";
    case ActionType::kWriteStatus:
      return "write_status";
    case ActionType::kRefuse:
      return "refuse";
    case ActionType::kRewind:
      return "rewind";
    case ActionType::kDeleteLeader:
      return "delete_leader";
  }
  return "?";
}

std::string SlotNameForMember(const std::string& member) {
  std::string out;
  for (char c : member) {
    if (c >= 'A' && c <= 'Z')
      out += static_cast<char>(c - 'A' + 'a');
    else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
      out += c;
    else
      out += '_';
  }
  return out.substr(0, 63);
}

std::set<std::string> WantedSlots(const Observation& obs, const HaConfig& cfg) {
  std::set<std::string> out;
  for (const auto& [name, m] : obs.cluster.members) {
    if (name != cfg.name) out.insert(SlotNameForMember(name));
  }
  for (const auto& [name, seen] : obs.member_last_seen) {
    if (name != cfg.name && obs.now - seen <= cfg.member_slots_ttl) {
      out.insert(SlotNameForMember(name));
    }
  }
  return out;
}

std::vector<std::string> ParseSyncStandbyNames(const std::string& value) {
  std::string list = value;
  auto open = list.find('(');
  if (open != std::string::npos) {
    auto close = list.rfind(')');
    list = list.substr(open + 1, close == std::string::npos ? std::string::npos : close - open - 1);
  }
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i <= list.size(); ++i) {
    char c = i < list.size() ? list[i] : ',';
    if (quoted) {
      if (c == '"' && i + 1 < list.size() && list[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      if (!cur.empty() && cur != "*") out.push_back(cur);
      cur.clear();
    } else if (c != ' ' && c != '\t') {
      cur += c;
    }
  }
  return out;
}

Decision Decide(const Observation& obs, const HaConfig& cfg) {
  const LocalState& local = obs.local;
  const dcs::ClusterView& cluster = obs.cluster;

  // 1. A long action owns the node until it finishes.
  if (obs.in_progress == LongAction::kBootstrap) return Say("bootstrap in progress");
  if (obs.in_progress == LongAction::kBaseBackup) {
    return Say("creating a replica from leader " +
               (cluster.HasLeader() ? cluster.leader->name : std::string("?")));
  }
  if (obs.in_progress == LongAction::kRewind) {
    return Say("rewinding this former primary to rejoin leader " +
               (cluster.HasLeader() ? cluster.leader->name : std::string("?")));
  }

  // 2. A data directory we cannot use is never started.
  if (local.data_dir == DataDir::kInvalid) {
    return Say("refusing to start PostgreSQL: " + local.data_dir_problem,
               {Do(ActionType::kRefuse, local.data_dir_problem)});
  }

  // 3. Without etcd nobody can prove leadership: a leader fences itself
  //    before its lease can expire (safety rule 2).
  if (!obs.dcs_ok) {
    bool writable_primary = local.pg_running && !local.in_recovery;
    if (obs.leader_renewed_at && writable_primary) {
      TimePoint deadline = *obs.leader_renewed_at + cfg.ttl - cfg.retry_timeout;
      if (obs.now >= deadline) {
        return Say("demoting: etcd unreachable (" + obs.dcs_error +
                       ") and the leader lease is about to expire",
                   {Do(ActionType::kFencePostgres)});
      }
      auto left = std::chrono::duration_cast<Millis>(deadline - obs.now);
      return Say("etcd unreachable (" + obs.dcs_error + "); still the leader for " +
                 std::to_string(Seconds(left)) + " s unless etcd answers");
    }
    if (writable_primary) {
      // Safety rule 1: a primary with no lease of ours must not take writes.
      return Say("demoting: etcd unreachable (" + obs.dcs_error +
                     ") and this primary holds no leader lease",
                 {Do(ActionType::kFencePostgres)});
    }
    return Say("etcd unreachable (" + obs.dcs_error + "); keeping the current role");
  }

  // 4. No cluster yet: race for `initialize`. With a leader but no key (it was
  //    deleted), the cluster exists: only the leader writes it back.
  if (!cluster.initialize && cluster.HasLeader()) {
    if (cluster.leader->name == cfg.name && local.data_dir == DataDir::kInitialized) {
      return Say(
          "the initialize key is missing: restoring it with this leader's system "
          "identifier " +
              local.system_identifier,
          {Do(ActionType::kRaceInitialize)});
    }
    return Say("the initialize key is missing: waiting for leader " + cluster.leader->name +
               " to restore it");
  }
  if (!cluster.initialize) {
    if (local.data_dir == DataDir::kEmpty) {
      return Say("no cluster yet: racing to initialize it", {Do(ActionType::kRaceInitialize)});
    }
    return Say(
        "cluster has no initialize key: claiming it with the existing data (system "
        "identifier " +
            local.system_identifier + ")",
        {Do(ActionType::kRaceInitialize)});
  }
  const std::string& cluster_sysid = *cluster.initialize;

  // 5. Another cluster's data is never started here.
  if (local.data_dir == DataDir::kInitialized && !cluster_sysid.empty() &&
      cluster_sysid != local.system_identifier) {
    std::string why = "the data directory's database system identifier " + local.system_identifier +
                      " differs from the cluster's " + cluster_sysid +
                      ": it belongs to another cluster. Remove or move the data directory to "
                      "let this member rebuild from the leader, or point it at another scope";
    return Say("refusing to start PostgreSQL: " + why, {Do(ActionType::kRefuse, why)});
  }

  // Another member's bootstrap is still running: nothing here may lead yet.
  if (cluster_sysid.empty()) return Say("waiting for the cluster's bootstrap to finish");

  const bool have_leader = cluster.HasLeader();
  const bool i_lead = have_leader && cluster.leader->name == cfg.name;
  const std::string leader = have_leader ? cluster.leader->name : "";

  // 6. Empty data directory: wait for the bootstrap, then copy the leader.
  if (local.data_dir == DataDir::kEmpty) {
    if (!have_leader) return Say("waiting for a leader to take a base backup from");
    if (i_lead) {
      return Say(
          "the leader key names this member but its data directory is empty; waiting "
          "for the key to expire");
    }
    if (cfg.use_slots && !obs.leader_slots.count(SlotNameForMember(cfg.name))) {
      return Say("waiting for leader " + leader + " to create replication slot " +
                 SlotNameForMember(cfg.name));
    }
    return Say("creating a replica from leader " + leader, {Do(ActionType::kBaseBackup, leader)});
  }

  // 7. Data but no postmaster: start in the role the cluster gives us.
  if (!local.pg_running) {
    if (i_lead) {
      return Say("starting as primary: this member holds the leader key",
                 {Do(ActionType::kRenewLeader), Do(ActionType::kStartPrimary)});
    }
    if (have_leader && !local.standby_signal) {
      // A former primary: its timeline may have gone past the point where
      // the leader's began. Safety: never stream onto a diverged history.
      if (cfg.use_pg_rewind && !obs.rewind_failure.empty()) {
        return Say("staying stopped: pg_rewind against leader " + leader + " failed (" +
                   obs.rewind_failure +
                   "); re-create this member (empty its data directory) to rejoin");
      }
      if (cfg.use_pg_rewind) {
        return Say(
            "rejoining leader " + leader + " as a standby: pg_rewind of this former primary first",
            {Do(ActionType::kRewind, leader)});
      }
      return Say("staying stopped: this former primary may have diverged from leader " + leader +
                 " and use_pg_rewind is off; re-create it (empty its data directory) or turn "
                 "use_pg_rewind on");
    }
    if (have_leader) {
      return Say("starting as a standby of leader " + leader,
                 {Do(ActionType::kStartStandby, leader)});
    }
    if (!local.standby_signal) {
      return Say(
          "no leader: this member's data was the primary; taking the leader key and "
          "starting as primary",
          {Do(ActionType::kAcquireLeader), Do(ActionType::kStartPrimary)});
    }
    return Say("no leader: starting as a standby and waiting for one",
               {Do(ActionType::kStartStandby)});
  }

  if (!local.pg_ready) return Say("waiting for PostgreSQL to accept connections");

  // 8. The leader.
  if (i_lead) {
    if (local.in_recovery) {
      return Say("promoting: this member holds the leader key",
                 {Do(ActionType::kRenewLeader), Do(ActionType::kPromote)});
    }
    return LeaderSteadyState(obs, cfg);
  }

  // 9. No leader.
  if (!have_leader) {
    if (!local.in_recovery) {
      return Say("no leader: acquiring the leader key as the running primary",
                 {Do(ActionType::kAcquireLeader)});
    }
    return ElectionOfAStandby(obs, cfg);
  }

  // 10. Someone else leads.
  if (!local.in_recovery) {
    return Say("demoting: " + leader + " holds the leader key and this member runs as primary",
               {Do(ActionType::kStopPostgres)});
  }
  if (cfg.confirmed_death_checks > 0 && obs.leader_refusals >= cfg.confirmed_death_checks) {
    return Say("leader " + leader + " confirmed dead: its PostgreSQL and REST ports refused " +
                   std::to_string(obs.leader_refusals) +
                   " checks in a row while the WAL stream was down; deleting its leader key",
               {Do(ActionType::kDeleteLeader, leader)});
  }
  if (local.following != leader) {
    return Say("following new leader " + leader +
                   (local.following.empty() ? "" : " instead of " + local.following),
               {Do(ActionType::kFollow, leader)});
  }
  return Say("no action: I am " + cfg.name + ", a secondary, and following leader " + leader);
}

}  // namespace pgwarden::ha
