// KvDcs: the Dcs over any KvStore, in Patroni's key layout; base of EtcdDcs and MemoryDcs.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "dcs/dcs.h"
#include "dcs/kv_store.h"

namespace pgwarden::dcs {

// Keys, relative to the cluster prefix.
inline constexpr std::string_view kInitializeKey = "initialize";
inline constexpr std::string_view kLeaderKey = "leader";
inline constexpr std::string_view kMembersDir = "members/";
inline constexpr std::string_view kConfigKey = "config";
inline constexpr std::string_view kStatusKey = "status";
inline constexpr std::string_view kSyncKey = "sync";
inline constexpr std::string_view kFailoverKey = "failover";
inline constexpr std::string_view kHistoryKey = "history";
inline constexpr std::string_view kOldOptimeKey = "optime/leader";  // Patroni < 2.0

// Appends "/" when missing: "/service/demo" -> "/service/demo/".
std::string NormalizeKeyPrefix(std::string prefix);

// Implements every Dcs operation as etcd transactions on a KvStore, so the
// etcd and in-memory backends share one set of semantics. Holds at most one
// lease at a time, granted lazily with TTL = ttl_seconds, carrying
// members/<name> and leader; when the store says the lease is gone, the
// next write that needs one grants a new lease.
//
// Thread-compatible: one caller at a time, except that WaitForChange() may
// run on another thread concurrently with the rest (it does not touch the
// lease). The KvStore is not owned and must outlive this object.
class KvDcs : public Dcs {
 public:
  KvDcs(KvStore& store, std::string key_prefix, int ttl_seconds);

  Result<ClusterView> Load() override;
  Result<bool> TryInitialize(const std::string& value) override;
  Status UpdateInitialize(const std::string& expected, const std::string& value) override;
  Status CancelInitialize(const std::string& expected) override;
  Result<bool> AcquireLeader(const std::string& name) override;
  Result<bool> RenewLeader(const std::string& name) override;
  Status ReleaseLeader(const std::string& name) override;
  Status DeleteLeaderAt(int64_t mod_revision) override;
  Status PublishMember(const Member& member) override;
  Status DeleteMember(const std::string& name) override;
  Result<bool> InitializeConfig(const nlohmann::json& config) override;
  Status WriteStatus(const nlohmann::json& status) override;
  Status WriteSync(const SyncKey& sync, int64_t expected_revision) override;
  Result<bool> WaitForChange(int64_t after_revision, std::chrono::milliseconds timeout) override;
  void SetRequestDeadline(std::optional<TimePoint> deadline) override {
    store_.SetDeadline(deadline);
  }
  Status Close() override;
  Status WriteConfig(const nlohmann::json& config, int64_t expected_revision) override;
  Status WriteFailover(const nlohmann::json& request, int64_t expected_revision) override;
  Status DeleteFailover(int64_t expected_revision) override;
  Status WriteHistory(const nlohmann::json& history) override;

  const std::string& key_prefix() const { return prefix_; }
  int ttl_seconds() const { return ttl_; }
  // The lease we hold, 0: none (yet, or it was found gone).
  int64_t lease_id() const { return lease_id_; }

 private:
  std::string Key(std::string_view name) const { return prefix_ + std::string(name); }
  // Our lease, granted when we have none.
  Result<int64_t> EnsureLease();
  // Renews our lease if we have one. false: the store no longer knows it
  // (it expired); it is forgotten so the next EnsureLease grants another.
  Result<bool> RefreshLease();
  // Compare-and-swap write of a permanent key; Conflict when the compare failed.
  Status WriteIfRevision(std::string_view name, std::string value, int64_t expected_revision);

  KvStore& store_;
  const std::string prefix_;
  const int ttl_;
  int64_t lease_id_ = 0;
};

}  // namespace pgwarden::dcs
