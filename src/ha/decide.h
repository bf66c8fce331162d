// The HA decision: a pure function from an observation of the node and the cluster to actions.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/lsn.h"
#include "dcs/dcs.h"

namespace pgwarden::ha {

// The static knobs decide() reads (from the config and the dynamic config).
struct HaConfig {
  std::string name;   // this member
  Millis ttl{30000};  // leader lease
  Millis loop_wait{10000};
  Millis retry_timeout{10000};
  bool synchronous_mode = false;
  bool use_slots = true;
  Millis member_slots_ttl{1800 * 1000};  // keep a departed member's slot this long
  bool nosync = false;                   // tag: never a synchronous standby (self)
  bool nofailover = false;               // tag: never promoted (self)
  int failover_priority = 1;             // tag: breaks a tie of positions, higher first (self)
  uint64_t maximum_lag_on_failover = 1048576;  // bytes behind status.optime a candidate may be
  bool use_pg_rewind = false;                  // rewind a former primary to rejoin
  int confirmed_death_checks = 3;              // 0: only lease expiry ends a leader
};

// What is in the local data directory.
enum class DataDir {
  kEmpty,        // nothing yet: bootstrap or base backup
  kInitialized,  // a PostgreSQL 15 data directory
  kInvalid,      // something else: refuse
};

// A standby streaming from this primary (pg_stat_replication).
struct StandbyInfo {
  std::string application_name;
  bool streaming = false;  // state = 'streaming'
  std::string sync_state;  // async | sync | potential | quorum
};

// The local node as observed this cycle.
struct LocalState {
  DataDir data_dir = DataDir::kEmpty;
  std::string data_dir_problem;   // for kInvalid
  std::string system_identifier;  // of the data directory
  bool standby_signal = false;    // configured as a standby
  bool pg_running = false;        // postmaster process exists
  bool pg_ready = false;          // and answered the state query
  bool in_recovery = false;
  int timeline = 0;
  Lsn wal_lsn;
  Lsn receive_lsn;  // standby: last WAL flushed from the primary
  Lsn replay_lsn;
  std::string following;                // member whose host:port primary_conninfo names ("" none)
  std::set<std::string> slots;          // physical slots on this server
  std::vector<StandbyInfo> standbys;    // primary: pg_stat_replication
  std::vector<std::string> sync_names;  // parsed synchronous_standby_names members
};

// A long action running on the side (initdb, base backup).
enum class LongAction {
  kNone,        // nothing running
  kBootstrap,   // initdb + first start as primary
  kBaseBackup,  // pg_basebackup from the leader
  kRewind,      // pg_rewind of a former primary against the leader, then start as its standby
};

// What another member's REST API said this cycle (asked only during an election).
struct PeerPosition {
  bool reachable = false;   // it answered
  bool in_recovery = true;  // it runs as a standby (false: a primary)
  bool pg_running = false;  // its PostgreSQL runs
  Lsn wal_position;         // standby: max(received, replayed); primary: current WAL
};

// Everything decide() looks at: an immutable snapshot.
struct Observation {
  TimePoint now;
  bool dcs_ok = false;    // the cluster view below is fresh
  std::string dcs_error;  // why not
  dcs::ClusterView cluster;
  LocalState local;
  LongAction in_progress = LongAction::kNone;
  // When we last renewed the leader lease successfully (nullopt: we do not lead).
  std::optional<TimePoint> leader_renewed_at;
  // Members last seen in the cluster view, with when (for slot retention).
  std::map<std::string, TimePoint> member_last_seen;
  // Slots the leader reports in the `status` key (the slots it has).
  std::set<std::string> leader_slots;
  // Slots pgwarden created for members (`status.retain_slots`): the only ones it drops.
  std::set<std::string> member_slots;
  // Consecutive checks, with our WAL stream down, in which the leader's
  // PostgreSQL and REST ports both refused a connection (RST; a timeout
  // resets the count): the leader's node is confirmed dead.
  int leader_refusals = 0;
  // Why the last pg_rewind against the current leader failed ("": it did not).
  std::string rewind_failure;
  // Without a leader: every other member's answer (or silence), by name.
  std::map<std::string, PeerPosition> peers;
};

// One step the executor takes.
enum class ActionType {
  kRaceInitialize,   // TryInitialize; the winner bootstraps (long action kBootstrap)
  kBaseBackup,       // long action kBaseBackup from `target`
  kStartPrimary,     // write primary config, start postgres
  kStartStandby,     // write standby config following `target`, start postgres
  kFollow,           // rewrite primary_conninfo for `target`, reload
  kPromote,          // pg_promote
  kStopPostgres,     // fast shutdown: another member leads (demotion)
  kFencePostgres,    // immediate shutdown: we may no longer hold the lease (safety rule 6)
  kAcquireLeader,    // create the leader key on our lease; abort the rest on failure
  kRenewLeader,      // renew the lease and check the key; demote on failure
  kCreateSlot,       // `target` = slot name
  kDropSlot,         // `target` = slot name
  kSetSyncStandbys,  // synchronous_standby_names = FIRST 1 (`names`) or '' when empty
  kWriteSync,        // sync key: leader = us, sync_standby = `target`
  kWriteStatus,      // status key: optime and slots
  kRefuse,           // the data directory is not ours: stay stopped, say why
  kRewind,           // long action kRewind against leader `target`
  kDeleteLeader,     // delete the leader key of a confirmed-dead leader (CAS on its revision)
};

struct Action {
  ActionType type;
  std::string target;              // member, slot name or sync standby, per type
  std::vector<std::string> names;  // kSetSyncStandbys
  friend bool operator==(const Action&, const Action&) = default;
};

// What to do this cycle, and the one sentence that says why.
struct Decision {
  std::vector<Action> actions;
  std::string reason;
};

Decision Decide(const Observation& obs, const HaConfig& cfg);

// Name of an action type, for logs and tests.
const char* ActionName(ActionType type);

// Members that should have a slot on the leader: every member but us seen
// within member_slots_ttl. Exposed for tests.
std::set<std::string> WantedSlots(const Observation& obs, const HaConfig& cfg);

// Slot name PostgreSQL accepts for a member: lower case, [a-z0-9_] only.
std::string SlotNameForMember(const std::string& member);

// This node's WAL position as a failover candidate: a standby will replay
// all it received, so the larger of received and replayed.
Lsn CandidatePosition(const LocalState& local);

// Parses "FIRST 1 (a, "b")" / "ANY 1 (a)" / "a, b" into member names.
std::vector<std::string> ParseSyncStandbyNames(const std::string& value);

}  // namespace pgwarden::ha
