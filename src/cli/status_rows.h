// The rows of `pgwarden status` as far as the cluster view tells them: pure, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dcs/dcs.h"

namespace pgwarden::cli {

// The state shown for a member that has no member key (its agent is down and
// its lease expired) but that is known otherwise: by its slot on the leader or
// by the directory of a local cluster.
inline constexpr const char* kNoMemberKeyState = "stopped (no member key)";

// One member's row: the /cluster fields plus what PostgreSQL itself says.
// Built by BuildStatusRows; status.cpp fills the pg_stat_replication columns.
struct StatusRow {
  std::string name;
  std::string role;   // "leader" | "sync_standby" | "replica" | "unknown" (no member key)
  std::string state;  // the member key's state, or kNoMemberKeyState
  std::string host, api_url;
  uint16_t port = 0;
  int timeline = 0;
  std::optional<uint64_t> lag;  // bytes behind the leader (not for the leader)
  std::string sent_lsn, write_lsn, flush_lsn, replay_lsn;
  std::string write_lag, flush_lag, replay_lag, sync_state;
  std::optional<uint64_t> slot_retained;  // WAL bytes the member's slot holds on the leader
  std::string replay_delay;               // now() - pg_last_xact_replay_timestamp()
};

// A member known without its member key: from the directory `up` made.
struct KnownMember {
  std::string name;
  std::string conn_url;  // postgres://host:port/postgres
  std::string api_url;   // http://host:port/patroni
};

// One row per member key, plus one per member without a key that is still
// known: each of `known`, and each member slot of the leader
// (`status.slots` that are also in `status.retain_slots`) that belongs to no
// member named so far, shown under its slot name. Those rows have role
// "unknown" and state kNoMemberKeyState. Every row whose slot is in
// `status.slots` gets the WAL it retains (the leader's position minus the
// slot's restart_lsn) when both are known. Sorted by name.
std::vector<StatusRow> BuildStatusRows(const dcs::ClusterView& view,
                                       const std::vector<KnownMember>& known);

}  // namespace pgwarden::cli
