// Control of one local PostgreSQL server: data directory, initdb, base backup, start/stop, queries.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"
#include "config/config.h"
#include "pg/connection.h"

namespace pgwarden::pg {

// What the controller needs to know; built from the config and the cluster's
// dynamic configuration.
struct PgSettings {
  std::string member_name;
  std::string data_dir;
  std::string bin_dir;
  std::string os_user;   // run PostgreSQL as this user when we are root
  std::string log_file;  // PostgreSQL's stderr
  config::HostPort listen;
  config::RoleAuth superuser;
  config::RoleAuth replication;
  config::RoleAuth rewind;  // pg_rewind's role; empty username: the superuser
  std::vector<std::string> initdb_args;
  std::map<std::string, std::string> parameters;  // dcs parameters overlaid with local ones
  std::vector<std::string> pg_hba;                // extra lines, before ours
  std::chrono::seconds start_timeout{60};
};

// The kind of thing found at data_dir.
enum class DataDirKind {
  kEmpty,        // missing or empty directory: bootstrap needed
  kInitialized,  // a PostgreSQL data directory with a readable pg_control
  kInvalid,      // something else; `problem` says what
};

struct DataDirInfo {
  DataDirKind kind = DataDirKind::kEmpty;
  std::string system_identifier;  // from global/pg_control
  bool standby_signal = false;    // standby.signal present
  std::string problem;
};

// The server to stream from when running as a standby; an empty host means
// "standby without a primary yet" (standby.signal, no primary_conninfo).
struct StandbyTarget {
  std::string host;
  uint16_t port = 0;
  std::string slot;  // primary_slot_name; empty: none
  friend bool operator==(const StandbyTarget&, const StandbyTarget&) = default;
};

// How to stop PostgreSQL.
enum class StopMode {
  kFast,       // SIGINT: abort transactions, checkpoint, exit
  kImmediate,  // SIGQUIT: exit at once, crash recovery on next start
};

// One row of pg_stat_replication on a primary.
struct ReplicationRow {
  std::string application_name;
  std::string state;  // streaming, catchup, ...
  Lsn sent_lsn, write_lsn, flush_lsn, replay_lsn;
  std::string write_lag, flush_lag, replay_lag;  // intervals as text, may be empty
  std::string sync_state;                        // async, sync, potential, quorum
};

// One physical replication slot.
struct SlotRow {
  std::string name;
  bool active = false;
  Lsn restart_lsn;
};

// What a query of the running server tells.
struct PgState {
  bool in_recovery = false;
  int timeline = 0;
  Lsn wal_lsn;      // primary: pg_current_wal_lsn()
  Lsn receive_lsn;  // standby
  Lsn replay_lsn;   // standby
  std::optional<std::string> last_replay_timestamp;
  bool replay_paused = false;
  std::string wal_receiver_status;  // "streaming", ... or "" when none
  std::string wal_receiver_host;    // sender_host of pg_stat_wal_receiver
  std::string postmaster_start_time;
  int server_version = 0;
  std::string system_identifier;
  std::string synchronous_standby_names;
  std::vector<ReplicationRow> replication;  // primary only
  std::vector<SlotRow> slots;               // physical slots
};

// Controls the PostgreSQL of this node. Owned by the agent; used from the HA
// loop thread and the long-action thread, never both at once for the same
// operation (the agent serialises them).
class PgController {
 public:
  virtual ~PgController() = default;

  virtual DataDirInfo InspectDataDir() const = 0;
  // Checks that os_user can reach and create data_dir; a clear error otherwise.
  virtual Status CheckDataDirReachable() const = 0;
  // initdb into an empty data_dir, then our config files.
  virtual Status Initdb() = 0;
  // After the first start of a fresh cluster: passwords and the replication role.
  virtual Status CreateRoles() = 0;
  // Removes everything in data_dir (a failed bootstrap's leftovers).
  // REQUIRES: PostgreSQL is stopped.
  virtual Status ClearDataDir() = 0;
  // pg_basebackup -X stream from `from` into an empty data_dir.
  virtual Status BaseBackup(const StandbyTarget& from) = 0;
  // pg_rewind of this (stopped) data directory onto the history of `from`,
  // so it can follow it; pg_rewind runs crash recovery first when the server
  // was not shut down cleanly. REQUIRES: PostgreSQL is stopped.
  virtual Status Rewind(const StandbyTarget& from) = 0;
  // Writes postgresql.conf and pg_hba.conf; standby.signal when `follow` is set.
  virtual Status WriteConfig(const std::optional<StandbyTarget>& follow,
                             const std::string& synchronous_standby_names) = 0;
  // Starts the postmaster and waits until it accepts connections.
  virtual Status Start() = 0;
  virtual Status Stop(StopMode mode) = 0;
  virtual Status Reload() = 0;
  virtual Status Promote() = 0;
  // True while the postmaster process exists.
  virtual bool IsRunning() = 0;
  // The postmaster's pid as of the last start, adoption or IsRunning(); -1: none.
  virtual pid_t postmaster_pid() const = 0;
  // Queries the running server.
  virtual Result<PgState> Observe() = 0;
  virtual Status CreateSlot(const std::string& name) = 0;
  virtual Status DropSlot(const std::string& name) = 0;
  // The standby target written at the last WriteConfig (nullopt: primary config).
  virtual std::optional<StandbyTarget> CurrentFollow() const = 0;
  // Replaces the configured parameters (the cluster's dynamic configuration
  // changed); takes effect at the next WriteConfig.
  virtual void SetParameters(std::map<std::string, std::string> parameters) = 0;
};

using PgControllerPtr = std::unique_ptr<PgController>;

PgControllerPtr MakePgController(PgSettings settings);

// Reads the system identifier from <data_dir>/global/pg_control.
Result<std::string> ReadSystemIdentifier(const std::string& data_dir);

// max_slot_wal_keep_size when the configuration sets none: a fifth of the
// free space of the data directory's file system (at least 256 MB), e.g.
// "2048MB". A slot that would keep more is invalidated; its member then needs
// a new base backup (or the archive) instead of the disk filling up.
std::string DefaultMaxSlotWalKeepSize(uint64_t free_bytes);

// Connection string to this node's server for the superuser over TCP
// (host, port from the arguments).
std::string SuperuserConninfo(const std::string& host, uint16_t port, const config::RoleAuth& su,
                              const std::string& dbname = "postgres");

}  // namespace pgwarden::pg
