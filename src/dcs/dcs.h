// The distributed configuration store seen by the HA loop: cluster view types and the Dcs
// interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/lsn.h"
#include "common/status.h"

namespace pgwarden::dcs {

// Version of the JSON we write into member keys, so the format can evolve.
inline constexpr int kMemberFormatVersion = 1;

// One `members/<name>` key: what a member publishes about itself every loop.
struct Member {
  std::string name;
  std::string conn_url;  // postgres://host:port/postgres
  std::string api_url;   // http://host:port/patroni
  std::string role;      // "primary" | "replica" | "uninitialized"
  std::string state;     // "running" | "streaming" | "starting" | "stopped" | "bootstrapping" | ...
  int timeline = 0;
  Lsn xlog_location;  // primary: current WAL write position; replica: replayed position
  Lsn receive_lsn;    // replica: last WAL received (flushed) from the primary
  Lsn replay_lsn;     // replica: last WAL replayed
  std::map<std::string, std::string> tags;
  std::string version;       // pgwarden version
  int64_t mod_revision = 0;  // etcd revision of the key (read only)

  nlohmann::json ToJson() const;
  // Tolerant of Patroni's own member JSON (xlog_location as a number).
  static Member FromJson(const std::string& name, const nlohmann::json& j);
};

// The `leader` key.
struct LeaderKey {
  std::string name;          // the leader's member name
  int64_t mod_revision = 0;  // for compare-and-swap
};

// The `sync` key: who is the synchronous standby of which leader.
struct SyncKey {
  std::string leader;
  std::string sync_standby;  // empty: none
  int64_t mod_revision = 0;
};

// The cluster as read from the store in one consistent read.
struct ClusterView {
  int64_t revision = 0;                   // store revision of the read
  std::optional<std::string> initialize;  // system identifier ("" while initdb runs)
  std::optional<LeaderKey> leader;
  std::map<std::string, Member> members;  // by name
  std::optional<nlohmann::json> config;   // dynamic configuration
  int64_t config_revision = 0;            // mod_revision of `config` (0: absent), for WriteConfig
  std::optional<SyncKey> sync;
  Lsn last_leader_optime;                   // `status.optime`
  std::map<std::string, Lsn> leader_slots;  // `status.slots`: the leader's slots, restart_lsn each
  std::set<std::string> retain_slots;       // `status.retain_slots`: slots kept for members
  std::optional<nlohmann::json> status;     // the whole `status` key (slots, retain_slots)
  std::optional<nlohmann::json> failover;   // pending switchover request
  int64_t failover_revision = 0;            // mod_revision of `failover` (0: absent)
  std::optional<nlohmann::json> history;    // timeline history

  const Member* FindMember(const std::string& name) const;
  bool HasLeader() const { return leader.has_value() && !leader->name.empty(); }
};

// The cluster state store. One instance per agent; each agent owns one
// lease (TTL = ttl) that carries its member key and, when it leads, the
// leader key. Methods are blocking, bounded by the retry timeout, and
// thread-compatible (one caller at a time) unless said otherwise.
class Dcs {
 public:
  virtual ~Dcs() = default;

  // Reads every key of the cluster in one request.
  virtual Result<ClusterView> Load() = 0;

  // Creates `initialize` with `value` only if absent. true: we created it.
  virtual Result<bool> TryInitialize(const std::string& value) = 0;
  // Overwrites `initialize` (after initdb, with the system identifier) when it
  // still holds `expected`; Conflict otherwise.
  virtual Status UpdateInitialize(const std::string& expected, const std::string& value) = 0;
  // Deletes `initialize` when it holds `expected` (a failed bootstrap gives the race back).
  virtual Status CancelInitialize(const std::string& expected) = 0;

  // Creates `leader` = name on our lease, only if absent. true: we lead.
  virtual Result<bool> AcquireLeader(const std::string& name) = 0;
  // Renews our lease and checks `leader` still holds `name`. true: we still lead.
  virtual Result<bool> RenewLeader(const std::string& name) = 0;
  // Deletes `leader` only if it holds `name`.
  virtual Status ReleaseLeader(const std::string& name) = 0;
  // Deletes `leader` only if its last write is still the one at
  // `mod_revision`: a standby that confirmed the holder dead. Conflict when
  // the key changed (renewals do not change it) or is gone.
  virtual Status DeleteLeaderAt(int64_t mod_revision) = 0;

  // Writes `members/<name>` on our lease (keeping the lease alive).
  virtual Status PublishMember(const Member& member) = 0;
  // Deletes `members/<name>`.
  virtual Status DeleteMember(const std::string& name) = 0;

  // Creates `config` when absent (bootstrap.dcs); true when we wrote it.
  virtual Result<bool> InitializeConfig(const nlohmann::json& config) = 0;
  // Leader-only writes (caller checks leadership): `status` and `sync`.
  virtual Status WriteStatus(const nlohmann::json& status) = 0;
  // Writes `sync` if its mod_revision is still `expected_revision` (0: absent).
  virtual Status WriteSync(const SyncKey& sync, int64_t expected_revision) = 0;

  // Blocks until a key of the cluster changes after `after_revision`, or
  // `timeout` passes. true: something changed.
  virtual Result<bool> WaitForChange(int64_t after_revision, std::chrono::milliseconds timeout) = 0;

  // Until changed, every request (but WaitForChange) must be answered by
  // `deadline` or fail with DcsUnavailable; see KvStore::SetDeadline. The
  // agent sets its fencing deadline while it leads.
  virtual void SetRequestDeadline(std::optional<TimePoint> deadline) = 0;

  // Revokes our lease (member and leader keys go with it). For shutdown.
  virtual Status Close() = 0;

  // Additions with a default that says "not supported", so that existing
  // test fakes keep compiling; EtcdDcs and MemoryDcs implement them all.
  // Writes `config` if its mod_revision is still `expected_revision` (0:
  // absent; see ClusterView::config_revision); Conflict otherwise.
  virtual Status WriteConfig(const nlohmann::json& config, int64_t expected_revision);
  // Writes `failover` (a switchover request) if its mod_revision is still
  // `expected_revision` (0: absent); Conflict otherwise.
  virtual Status WriteFailover(const nlohmann::json& request, int64_t expected_revision);
  // Deletes `failover` if its mod_revision is still `expected_revision`
  // (0: whatever it holds). Ok when it is already gone.
  virtual Status DeleteFailover(int64_t expected_revision);
  // Overwrites `history` (leader only, after a promotion).
  virtual Status WriteHistory(const nlohmann::json& history);
};

using DcsPtr = std::unique_ptr<Dcs>;

}  // namespace pgwarden::dcs
