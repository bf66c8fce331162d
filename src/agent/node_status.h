// The snapshot of one node that the agent publishes for the REST API and `status`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/lsn.h"
#include "dcs/dcs.h"

namespace pgwarden::agent {

// Written by the HA loop thread after every cycle; the REST server reads a copy
// (the agent hands out snapshots under its own mutex).
struct NodeStatus {
  std::string scope;
  std::string name;
  std::string role;   // "primary" | "replica" | "uninitialized"
  std::string state;  // "running" | "streaming" | "starting" | "stopped" | "bootstrapping" | ...
  bool pg_running = false;       // postmaster up and accepting connections
  bool in_recovery = false;      // pg_is_in_recovery()
  bool is_leader = false;        // this member holds the leader key (lease not lost)
  bool streaming = false;        // WAL receiver in state "streaming"
  bool replay_paused = false;    // pg_get_wal_replay_pause_state() != 'not paused'
  bool is_sync_standby = false;  // named in the `sync` key
  bool dcs_reachable = false;    // the last etcd request succeeded
  // The HA loop has not finished a cycle for too long (ttl on a primary, 2 x ttl
  // on a replica). Set by the agent when it hands out the snapshot, since it
  // depends on the time of the request; /liveness answers 503 while true.
  bool ha_loop_stale = false;
  int timeline = 0;
  Lsn wal_lsn;                                       // primary: pg_current_wal_lsn()
  Lsn receive_lsn;                                   // replica: pg_last_wal_receive_lsn()
  Lsn replay_lsn;                                    // replica: pg_last_wal_replay_lsn()
  std::optional<std::string> last_replay_timestamp;  // pg_last_xact_replay_timestamp()
  std::string postmaster_start_time;
  int server_version = 0;  // e.g. 150018
  std::string system_identifier;
  std::string last_decision;  // the HA loop's one-line reason
  std::map<std::string, std::string> tags;
  dcs::ClusterView cluster;  // the last cluster view read from etcd

  // Bytes this replica's replay trails the leader's last published position
  // (cluster.last_leader_optime, or the leader member's xlog_location if newer).
  // nullopt when unknown.
  std::optional<uint64_t> ReplicationLagBytes() const;
};

}  // namespace pgwarden::agent
