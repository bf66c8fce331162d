// In-memory etcd stand-in (MemoryStore) and the Dcs nodes of a simulation use on it (MemoryDcs).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "common/clock.h"
#include "dcs/kv_dcs.h"
#include "dcs/kv_store.h"

namespace pgwarden::dcs {

// The shared state of a simulated etcd: keys with create/mod revisions and
// versions, one global revision, leases whose deadlines come from `clock`.
// Every operation first expires the leases whose deadline has passed (their
// keys are deleted in one revision, as etcd does). Shared by the MemoryDcs
// of every simulated node; thread-safe (one mutex guards everything below).
// The clock is not owned and must outlive the store; with a ManualClock,
// move it from the thread that calls the store (ManualClock is not
// thread-safe).
class MemoryStore final : public KvStore {
 public:
  explicit MemoryStore(const Clock& clock);

  Result<RangeResponse> Range(const std::string& key, const std::string& range_end) override;
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease) override;
  Result<int64_t> DeleteRange(const std::string& key, const std::string& range_end) override;
  Result<TxnResponse> Txn(const TxnRequest& txn) override;
  Result<LeaseGrant> GrantLease(int64_t ttl_seconds) override;
  Result<int64_t> KeepAliveLease(int64_t id) override;
  Status RevokeLease(int64_t id) override;
  // The store answers at once, so nothing can run past a deadline; a
  // MemoryConnection applies its node's deadline.
  void SetDeadline(std::optional<TimePoint>) override {}
  // The store's clock.
  TimePoint Now() const { return clock_.Now(); }
  // Waits in real time (a condition variable), not clock time. Changes
  // are remembered for the last kHistory revisions; older start revisions
  // count as compacted (true).
  Result<bool> WaitForChange(const std::string& key, const std::string& range_end,
                             int64_t start_revision, std::chrono::milliseconds timeout) override;

  // Deletes the keys of every lease whose deadline has passed. Every
  // operation calls it; tests may call it after moving the clock.
  void ExpireLeases();
  // false: every operation fails with DcsUnavailable, as with etcd down.
  void SetAvailable(bool available) { available_ = available; }
  // The current revision (of the last write).
  int64_t revision() const;
  // A key's current state, for tests.
  std::optional<KeyValue> Get(const std::string& key) const;
  // Number of live leases, for tests.
  size_t lease_count() const;

  static constexpr size_t kHistory = 10000;

 private:
  struct Lease {
    int64_t ttl = 0;  // seconds
    TimePoint deadline;
    std::set<std::string> keys;
  };

  Status CheckAvailable() const;
  void ExpireLeasesLocked();
  // Writes at revision `rev` (the revision the current write operation will have).
  void PutLocked(const std::string& key, const std::string& value, int64_t lease, int64_t rev);
  int64_t DeleteRangeLocked(const std::string& key, const std::string& range_end, int64_t rev);
  std::vector<KeyValue> RangeLocked(const std::string& key, const std::string& range_end) const;
  bool CompareLocked(const Compare& c) const;
  // Makes `rev` the current revision and wakes waiters when anything was written.
  void CommitLocked(int64_t rev);

  const Clock& clock_;
  std::atomic<bool> available_{true};
  mutable std::mutex mu_;
  std::condition_variable changed_;                      // notified on every commit
  std::map<std::string, KeyValue> kv_;                   // GUARDED_BY(mu_)
  std::map<int64_t, Lease> leases_;                      // GUARDED_BY(mu_)
  std::deque<std::pair<int64_t, std::string>> changes_;  // GUARDED_BY(mu_): (revision, key)
  int64_t revision_ = 1;                                 // GUARDED_BY(mu_)
  int64_t compacted_revision_ = 0;  // GUARDED_BY(mu_): changes up to here are forgotten
  int64_t next_lease_id_ = 0x1000;  // GUARDED_BY(mu_)
  bool dirty_ = false;              // GUARDED_BY(mu_): the write in progress changed something
};

namespace internal {
// One node's line to the MemoryStore, which can be cut (SetReachable).
class MemoryConnection final : public KvStore {
 public:
  explicit MemoryConnection(MemoryStore& store) : store_(store) {}
  Result<RangeResponse> Range(const std::string& key, const std::string& range_end) override;
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease) override;
  Result<int64_t> DeleteRange(const std::string& key, const std::string& range_end) override;
  Result<TxnResponse> Txn(const TxnRequest& txn) override;
  Result<LeaseGrant> GrantLease(int64_t ttl_seconds) override;
  Result<int64_t> KeepAliveLease(int64_t id) override;
  Status RevokeLease(int64_t id) override;
  void SetDeadline(std::optional<TimePoint> deadline) override { deadline_ = deadline; }
  Result<bool> WaitForChange(const std::string& key, const std::string& range_end,
                             int64_t start_revision, std::chrono::milliseconds timeout) override;
  std::atomic<bool> reachable{true};

 private:
  Status Check() const;
  MemoryStore& store_;
  std::optional<TimePoint> deadline_;  // SetDeadline's, on the store's clock
};

struct MemoryConnectionHolder {
  explicit MemoryConnectionHolder(MemoryStore& store) : connection(store) {}
  MemoryConnection connection;
};
}  // namespace internal

// One simulated node's Dcs on a shared MemoryStore, with the same semantics
// as EtcdDcs (both are KvDcs) and its own lease. Thread-compatible like
// EtcdDcs. The store must outlive it.
class MemoryDcs final : private internal::MemoryConnectionHolder, public KvDcs {
 public:
  MemoryDcs(MemoryStore& store, std::string key_prefix, int ttl_seconds);

  // false: this node's requests fail with DcsUnavailable (a partition
  // between this node and etcd); the store and other nodes carry on.
  void SetReachable(bool reachable) { connection.reachable = reachable; }
};

}  // namespace pgwarden::dcs
