// MemoryStore: etcd's revision, transaction and lease semantics in a map; MemoryDcs on top of it.
#include "dcs/memory_dcs.h"

#include <vector>

namespace pgwarden::dcs {
namespace {

// [key, range_end) in etcd's terms: empty range_end is `key` alone, "\0" is
// every key from `key` on.
bool InRange(const std::string& k, const std::string& key, const std::string& range_end) {
  if (range_end.empty()) return k == key;
  if (k < key) return false;
  return range_end == std::string(1, '\0') || k < range_end;
}

template <typename T>
bool CompareValues(const T& a, CompareOp op, const T& b) {
  switch (op) {
    case CompareOp::kEqual:
      return a == b;
    case CompareOp::kNotEqual:
      return a != b;
    case CompareOp::kGreater:
      return a > b;
    case CompareOp::kLess:
      return a < b;
  }
  return false;
}

Status LeaseNotFound(int64_t id) {
  return NotFound("etcdserver: requested lease not found (" + std::to_string(id) + ")");
}

}  // namespace

MemoryStore::MemoryStore(const Clock& clock) : clock_(clock) {}

Status MemoryStore::CheckAvailable() const {
  if (!available_) return DcsUnavailable("memory store: unavailable (simulated outage)");
  return Status::Ok();
}

void MemoryStore::ExpireLeases() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
}

void MemoryStore::ExpireLeasesLocked() {
  const TimePoint now = clock_.Now();
  const int64_t rev = revision_ + 1;
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    std::set<std::string> keys = std::move(it->second.keys);
    it = leases_.erase(it);
    for (const std::string& k : keys) DeleteRangeLocked(k, "", rev);
  }
  CommitLocked(rev);
}

void MemoryStore::PutLocked(const std::string& key, const std::string& value, int64_t lease,
                            int64_t rev) {
  KeyValue& kv = kv_[key];
  if (kv.create_revision == 0) {
    kv.key = key;
    kv.create_revision = rev;
  }
  if (kv.lease != 0 && kv.lease != lease) {
    if (auto l = leases_.find(kv.lease); l != leases_.end()) l->second.keys.erase(key);
  }
  if (lease != 0) leases_.at(lease).keys.insert(key);
  kv.value = value;
  kv.mod_revision = rev;
  kv.version++;
  kv.lease = lease;
  changes_.emplace_back(rev, key);
  dirty_ = true;
}

int64_t MemoryStore::DeleteRangeLocked(const std::string& key, const std::string& range_end,
                                       int64_t rev) {
  int64_t deleted = 0;
  for (auto it = kv_.lower_bound(key); it != kv_.end() && InRange(it->first, key, range_end);) {
    if (it->second.lease != 0) {
      if (auto l = leases_.find(it->second.lease); l != leases_.end()) {
        l->second.keys.erase(it->first);
      }
    }
    changes_.emplace_back(rev, it->first);
    it = kv_.erase(it);
    ++deleted;
    dirty_ = true;
  }
  return deleted;
}

std::vector<KeyValue> MemoryStore::RangeLocked(const std::string& key,
                                               const std::string& range_end) const {
  std::vector<KeyValue> out;
  for (auto it = kv_.lower_bound(key); it != kv_.end() && InRange(it->first, key, range_end);
       ++it) {
    out.push_back(it->second);
  }
  return out;
}

bool MemoryStore::CompareLocked(const Compare& c) const {
  auto it = kv_.find(c.key);
  if (it == kv_.end()) {
    if (c.target == CompareTarget::kValue) return false;  // as etcd: an absent key has no value
    return CompareValues<int64_t>(0, c.op, c.number);
  }
  const KeyValue& kv = it->second;
  switch (c.target) {
    case CompareTarget::kVersion:
      return CompareValues(kv.version, c.op, c.number);
    case CompareTarget::kCreateRevision:
      return CompareValues(kv.create_revision, c.op, c.number);
    case CompareTarget::kModRevision:
      return CompareValues(kv.mod_revision, c.op, c.number);
    case CompareTarget::kValue:
      return CompareValues(kv.value, c.op, c.value);
    case CompareTarget::kLease:
      return CompareValues(kv.lease, c.op, c.number);
  }
  return false;
}

void MemoryStore::CommitLocked(int64_t rev) {
  if (!dirty_) return;
  dirty_ = false;
  revision_ = rev;
  while (changes_.size() > kHistory) {
    compacted_revision_ = changes_.front().first;
    changes_.pop_front();
  }
  changed_.notify_all();
}

Result<RangeResponse> MemoryStore::Range(const std::string& key, const std::string& range_end) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  return RangeResponse{revision_, RangeLocked(key, range_end)};
}

Result<int64_t> MemoryStore::Put(const std::string& key, const std::string& value, int64_t lease) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  if (lease != 0 && leases_.count(lease) == 0) return LeaseNotFound(lease);
  const int64_t rev = revision_ + 1;
  PutLocked(key, value, lease, rev);
  CommitLocked(rev);
  return revision_;
}

Result<int64_t> MemoryStore::DeleteRange(const std::string& key, const std::string& range_end) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  const int64_t rev = revision_ + 1;
  int64_t deleted = DeleteRangeLocked(key, range_end, rev);
  CommitLocked(rev);
  return deleted;
}

Result<TxnResponse> MemoryStore::Txn(const TxnRequest& txn) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  bool succeeded = true;
  for (const Compare& c : txn.compare) succeeded = succeeded && CompareLocked(c);
  const std::vector<TxnOp>& ops = succeeded ? txn.success : txn.failure;
  // etcd checks every lease of the branch before applying any of it.
  for (const TxnOp& op : ops) {
    if (op.type == TxnOpType::kPut && op.lease != 0 && leases_.count(op.lease) == 0) {
      return LeaseNotFound(op.lease);
    }
  }
  const int64_t rev = revision_ + 1;
  TxnResponse out;
  out.succeeded = succeeded;
  for (const TxnOp& op : ops) {
    RangeResponse r;
    switch (op.type) {
      case TxnOpType::kRange:
        r.kvs = RangeLocked(op.key, op.range_end);
        break;
      case TxnOpType::kPut:
        PutLocked(op.key, op.value, op.lease, rev);
        break;
      case TxnOpType::kDeleteRange:
        DeleteRangeLocked(op.key, op.range_end, rev);
        break;
    }
    out.responses.push_back(std::move(r));
  }
  CommitLocked(rev);
  out.revision = revision_;
  for (RangeResponse& r : out.responses) r.revision = revision_;
  return out;
}

Result<LeaseGrant> MemoryStore::GrantLease(int64_t ttl_seconds) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  const int64_t id = next_lease_id_++;
  Lease& l = leases_[id];
  l.ttl = ttl_seconds;
  l.deadline = clock_.Now() + std::chrono::seconds(ttl_seconds);
  return LeaseGrant{id, ttl_seconds};
}

Result<int64_t> MemoryStore::KeepAliveLease(int64_t id) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  auto it = leases_.find(id);
  if (it == leases_.end()) return int64_t{0};
  it->second.deadline = clock_.Now() + std::chrono::seconds(it->second.ttl);
  return it->second.ttl;
}

Status MemoryStore::RevokeLease(int64_t id) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  auto it = leases_.find(id);
  if (it == leases_.end()) return LeaseNotFound(id);
  std::set<std::string> keys = std::move(it->second.keys);
  leases_.erase(it);
  const int64_t rev = revision_ + 1;
  for (const std::string& k : keys) DeleteRangeLocked(k, "", rev);
  CommitLocked(rev);
  return Status::Ok();
}

Result<bool> MemoryStore::WaitForChange(const std::string& key, const std::string& range_end,
                                        int64_t start_revision, std::chrono::milliseconds timeout) {
  PGW_RETURN_IF_ERROR(CheckAvailable());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  ExpireLeasesLocked();
  for (;;) {
    // History before the oldest remembered change is gone: cannot rule out a change.
    if (start_revision <= compacted_revision_) return true;
    for (auto it = changes_.rbegin(); it != changes_.rend() && it->first >= start_revision; ++it) {
      if (InRange(it->second, key, range_end)) return true;
    }
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      // One last look: a change may have come with the timeout.
      for (auto it = changes_.rbegin(); it != changes_.rend() && it->first >= start_revision;
           ++it) {
        if (InRange(it->second, key, range_end)) return true;
      }
      return false;
    }
  }
}

int64_t MemoryStore::revision() const {
  std::lock_guard<std::mutex> lock(mu_);
  return revision_;
}

std::optional<KeyValue> MemoryStore::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(key);
  if (it == kv_.end()) return std::nullopt;
  return it->second;
}

size_t MemoryStore::lease_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leases_.size();
}

namespace internal {

Status MemoryConnection::Check() const {
  if (!reachable) return DcsUnavailable("memory store: unreachable from this node (simulated)");
  if (deadline_ && store_.Now() >= *deadline_) {
    return DcsUnavailable("memory store: no time left before the fencing deadline");
  }
  return Status::Ok();
}

Result<RangeResponse> MemoryConnection::Range(const std::string& key,
                                              const std::string& range_end) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.Range(key, range_end);
}
Result<int64_t> MemoryConnection::Put(const std::string& key, const std::string& value,
                                      int64_t lease) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.Put(key, value, lease);
}
Result<int64_t> MemoryConnection::DeleteRange(const std::string& key,
                                              const std::string& range_end) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.DeleteRange(key, range_end);
}
Result<TxnResponse> MemoryConnection::Txn(const TxnRequest& txn) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.Txn(txn);
}
Result<LeaseGrant> MemoryConnection::GrantLease(int64_t ttl_seconds) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.GrantLease(ttl_seconds);
}
Result<int64_t> MemoryConnection::KeepAliveLease(int64_t id) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.KeepAliveLease(id);
}
Status MemoryConnection::RevokeLease(int64_t id) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.RevokeLease(id);
}
Result<bool> MemoryConnection::WaitForChange(const std::string& key, const std::string& range_end,
                                             int64_t start_revision,
                                             std::chrono::milliseconds timeout) {
  PGW_RETURN_IF_ERROR(Check());
  return store_.WaitForChange(key, range_end, start_revision, timeout);
}

}  // namespace internal

MemoryDcs::MemoryDcs(MemoryStore& store, std::string key_prefix, int ttl_seconds)
    : MemoryConnectionHolder(store), KvDcs(connection, std::move(key_prefix), ttl_seconds) {}

}  // namespace pgwarden::dcs
