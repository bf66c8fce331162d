// KvStore: the part of etcd's v3 API (ranges, transactions, leases, watches) the Dcs is built on.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace pgwarden::dcs {

// One key as etcd returns it. Keys and values are raw bytes.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // revision that created the key
  int64_t mod_revision = 0;     // revision of the last write to the key
  int64_t version = 0;          // writes since creation (1 after creation)
  int64_t lease = 0;            // lease the key is attached to, 0: none
};

// The keys of one range read and the store revision it saw.
struct RangeResponse {
  int64_t revision = 0;
  std::vector<KeyValue> kvs;
};

// Which field of a key a Compare looks at.
enum class CompareTarget {
  kVersion,         // `number` against the key's version (0: absent)
  kCreateRevision,  // `number` against create_revision (0: absent)
  kModRevision,     // `number` against mod_revision (0: absent)
  kValue,           // `value` against the value (an absent key never matches)
  kLease,           // `number` against the lease id (0: none or absent)
};

// How a Compare compares: key's field <op> the given operand.
enum class CompareOp {
  kEqual,     // ==
  kNotEqual,  // !=
  kGreater,   // >
  kLess,      // <
};

// One condition of a transaction.
struct Compare {
  std::string key;
  CompareTarget target = CompareTarget::kVersion;
  CompareOp op = CompareOp::kEqual;
  int64_t number = 0;  // for every target but kValue
  std::string value;   // for kValue

  static Compare Absent(std::string key) {  // create_revision == 0
    return {std::move(key), CompareTarget::kCreateRevision, CompareOp::kEqual, 0, {}};
  }
  static Compare ValueIs(std::string key, std::string value) {
    return {std::move(key), CompareTarget::kValue, CompareOp::kEqual, 0, std::move(value)};
  }
  static Compare ModRevisionIs(std::string key, int64_t revision) {
    return {std::move(key), CompareTarget::kModRevision, CompareOp::kEqual, revision, {}};
  }
  static Compare LeaseIs(std::string key, int64_t lease) {
    return {std::move(key), CompareTarget::kLease, CompareOp::kEqual, lease, {}};
  }
};

// What a transaction operation does.
enum class TxnOpType {
  kRange,        // read key (or [key, range_end))
  kPut,          // write key = value on lease
  kDeleteRange,  // delete key (or [key, range_end))
};

// One operation of a transaction branch.
struct TxnOp {
  TxnOpType type = TxnOpType::kRange;
  std::string key;
  std::string range_end;  // empty: just `key`
  std::string value;      // kPut
  int64_t lease = 0;      // kPut: 0 for none

  static TxnOp Get(std::string key) { return {TxnOpType::kRange, std::move(key), {}, {}, 0}; }
  static TxnOp Put(std::string key, std::string value, int64_t lease = 0) {
    return {TxnOpType::kPut, std::move(key), {}, std::move(value), lease};
  }
  static TxnOp Delete(std::string key) {
    return {TxnOpType::kDeleteRange, std::move(key), {}, {}, 0};
  }
};

// If every compare holds, run `success`, else `failure`; atomically.
struct TxnRequest {
  std::vector<Compare> compare;
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct TxnResponse {
  int64_t revision = 0;    // store revision after the transaction
  bool succeeded = false;  // the compares held
  // One entry per operation of the branch that ran; kvs are filled for kRange.
  std::vector<RangeResponse> responses;
};

// A granted lease.
struct LeaseGrant {
  int64_t id = 0;
  int64_t ttl = 0;  // seconds, as granted (the store may raise a small request)
};

// A key-value store with etcd v3 semantics: a global revision bumped by
// every write, create/mod revisions per key, leases that delete their keys
// when they expire. Implemented by EtcdClient (over HTTP) and MemoryStore.
// Errors: DcsUnavailable when the store cannot be reached, NotFound when a
// put names a lease that does not exist (any more), others as they come.
class KvStore {
 public:
  virtual ~KvStore() = default;

  // Reads `key`, or [key, range_end) when range_end is not empty.
  virtual Result<RangeResponse> Range(const std::string& key, const std::string& range_end) = 0;
  // Returns the revision of the write.
  virtual Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease) = 0;
  // Deletes `key` or [key, range_end); returns how many keys went.
  virtual Result<int64_t> DeleteRange(const std::string& key, const std::string& range_end) = 0;
  virtual Result<TxnResponse> Txn(const TxnRequest& txn) = 0;

  virtual Result<LeaseGrant> GrantLease(int64_t ttl_seconds) = 0;
  // Renews the lease; returns its new TTL in seconds, 0 when it no longer exists.
  virtual Result<int64_t> KeepAliveLease(int64_t id) = 0;
  // Revokes the lease and deletes its keys. NotFound when it does not exist.
  virtual Status RevokeLease(int64_t id) = 0;

  // Blocks until a key in [key, range_end) changes at a revision >=
  // start_revision, or `timeout` passes. true: a change (or history from
  // start_revision is compacted away, so a change cannot be ruled out).
  // Until changed, every request but WaitForChange must be answered by
  // `deadline` (nullopt: no limit beyond the per-request timeout): one that
  // cannot start in time is not sent, one under way is cut off at it, both
  // DcsUnavailable. A leader sets its fencing deadline here, so that a hung
  // store cannot keep it waiting past the moment it must stop PostgreSQL.
  virtual void SetDeadline(std::optional<TimePoint> deadline) = 0;
  virtual Result<bool> WaitForChange(const std::string& key, const std::string& range_end,
                                     int64_t start_revision, std::chrono::milliseconds timeout) = 0;
};

}  // namespace pgwarden::dcs
