// Dcs operations as KvStore transactions: leader lease, initialize race, CAS writes, cluster reads.
#include "dcs/kv_dcs.h"

#include <utility>

#include "common/log.h"
#include "dcs/etcd_codec.h"

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;

constexpr const char* kLog = "dcs";

std::optional<json> ParseJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// `status.optime`, a slot's LSN in `status.slots`, `optime/leader`: bytes as a number,
// a decimal string or "X/Y".
Lsn ParseOptime(const json& j) {
  if (j.is_number_unsigned()) return Lsn(j.get<uint64_t>());
  if (j.is_number_integer() && j.get<int64_t>() > 0) return Lsn(j.get<uint64_t>());
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (auto lsn = Lsn::Parse(s)) return *lsn;
    try {
      return Lsn(std::stoull(s));
    } catch (...) {
    }
  }
  return Lsn();
}

}  // namespace

std::string NormalizeKeyPrefix(std::string prefix) {
  if (prefix.empty() || prefix.back() != '/') prefix += '/';
  return prefix;
}

KvDcs::KvDcs(KvStore& store, std::string key_prefix, int ttl_seconds)
    : store_(store), prefix_(NormalizeKeyPrefix(std::move(key_prefix))), ttl_(ttl_seconds) {}

Result<ClusterView> KvDcs::Load() {
  auto range = store_.Range(prefix_, etcd::PrefixRangeEnd(prefix_));
  if (!range.ok()) return range.status();
  ClusterView view;
  view.revision = range->revision;
  std::optional<Lsn> old_optime;
  for (const KeyValue& kv : range->kvs) {
    if (kv.key.size() < prefix_.size()) continue;
    const std::string_view name = std::string_view(kv.key).substr(prefix_.size());
    auto parse = [&](const char* what) {
      auto j = ParseJson(kv.value);
      if (!j) LOG_WARN(kLog, "ignoring " << kv.key << ": not JSON (" << what << ")");
      return j;
    };
    if (name == kInitializeKey) {
      view.initialize = kv.value;
    } else if (name == kLeaderKey) {
      view.leader = LeaderKey{kv.value, kv.mod_revision};
    } else if (name == kConfigKey) {
      view.config = parse("config");
      if (view.config) view.config_revision = kv.mod_revision;
    } else if (name == kStatusKey) {
      if (auto j = parse("status"); j && j->is_object()) {
        if (j->contains("optime")) view.last_leader_optime = ParseOptime((*j)["optime"]);
        if (auto it = j->find("slots"); it != j->end() && it->is_object()) {
          for (const auto& [slot, lsn] : it->items()) view.leader_slots[slot] = ParseOptime(lsn);
        }
        if (auto it = j->find("retain_slots"); it != j->end() && it->is_array()) {
          for (const auto& slot : *it) {
            if (slot.is_string()) view.retain_slots.insert(slot.get<std::string>());
          }
        }
        view.status = std::move(j);
      }
    } else if (name == kOldOptimeKey) {
      old_optime = ParseOptime(json(kv.value));
    } else if (name == kSyncKey) {
      if (auto j = parse("sync"); j && j->is_object()) {
        SyncKey sync;
        if (auto it = j->find("leader"); it != j->end() && it->is_string()) sync.leader = *it;
        if (auto it = j->find("sync_standby"); it != j->end() && it->is_string()) {
          sync.sync_standby = *it;
        }
        sync.mod_revision = kv.mod_revision;
        view.sync = std::move(sync);
      }
    } else if (name == kFailoverKey) {
      view.failover = parse("failover");
      if (view.failover) view.failover_revision = kv.mod_revision;
    } else if (name == kHistoryKey) {
      view.history = parse("history");
    } else if (name.substr(0, kMembersDir.size()) == kMembersDir) {
      std::string member_name(name.substr(kMembersDir.size()));
      auto j = ParseJson(kv.value);
      if (member_name.empty() || !j || !j->is_object()) {
        LOG_WARN(kLog, "ignoring member key " << kv.key << ": not a JSON object");
        continue;
      }
      Member m = Member::FromJson(member_name, *j);
      m.mod_revision = kv.mod_revision;
      view.members[member_name] = std::move(m);
    }
  }
  if (!view.last_leader_optime.valid() && old_optime) view.last_leader_optime = *old_optime;
  return view;
}

Result<bool> KvDcs::TryInitialize(const std::string& value) {
  const std::string key = Key(kInitializeKey);
  auto r = store_.Txn({{Compare::Absent(key)}, {TxnOp::Put(key, value)}, {}});
  if (!r.ok()) return r.status();
  return r->succeeded;
}

Status KvDcs::UpdateInitialize(const std::string& expected, const std::string& value) {
  const std::string key = Key(kInitializeKey);
  auto r = store_.Txn({{Compare::ValueIs(key, expected)}, {TxnOp::Put(key, value)}, {}});
  if (!r.ok()) return r.status();
  if (!r->succeeded) return Conflict(key + " no longer holds '" + expected + "'");
  return Status::Ok();
}

Status KvDcs::CancelInitialize(const std::string& expected) {
  const std::string key = Key(kInitializeKey);
  auto r = store_.Txn({{Compare::ValueIs(key, expected)}, {TxnOp::Delete(key)}, {}});
  if (!r.ok()) return r.status();
  if (!r->succeeded) return Conflict(key + " no longer holds '" + expected + "'");
  return Status::Ok();
}

Result<int64_t> KvDcs::EnsureLease() {
  if (lease_id_ != 0) return lease_id_;
  auto grant = store_.GrantLease(ttl_);
  if (!grant.ok()) return grant.status();
  lease_id_ = grant->id;
  LOG_DEBUG(kLog, "granted lease " << lease_id_ << " (ttl " << grant->ttl << "s)");
  return lease_id_;
}

Result<bool> KvDcs::RefreshLease() {
  if (lease_id_ == 0) return false;
  auto ttl = store_.KeepAliveLease(lease_id_);
  if (!ttl.ok()) return ttl.status();
  if (*ttl <= 0) {
    LOG_WARN(kLog, "lease " << lease_id_ << " expired; its keys are gone");
    lease_id_ = 0;
    return false;
  }
  return true;
}

Result<bool> KvDcs::AcquireLeader(const std::string& name) {
  const std::string key = Key(kLeaderKey);
  for (int attempt = 0;; ++attempt) {
    auto lease = EnsureLease();
    if (!lease.ok()) return lease.status();
    auto r =
        store_.Txn({{Compare::Absent(key)}, {TxnOp::Put(key, name, *lease)}, {TxnOp::Get(key)}});
    if (!r.ok()) {
      // The lease expired between our last renewal and now: take a new one.
      if (r.status().code() == ErrorCode::kNotFound && attempt == 0) {
        lease_id_ = 0;
        continue;
      }
      return r.status();
    }
    if (r->succeeded) return true;
    // A retried request may have created the key for us already.
    if (!r->responses.empty() && !r->responses[0].kvs.empty()) {
      const KeyValue& kv = r->responses[0].kvs[0];
      return kv.value == name && kv.lease == *lease;
    }
    return false;
  }
}

Result<bool> KvDcs::RenewLeader(const std::string& name) {
  const std::string key = Key(kLeaderKey);
  if (lease_id_ != 0) {
    auto alive = RefreshLease();
    if (!alive.ok()) return alive.status();
    if (!*alive) return false;  // the leader key went with the lease
  }
  auto lease = EnsureLease();
  if (!lease.ok()) return lease.status();
  auto r = store_.Txn(
      {{Compare::ValueIs(key, name), Compare::LeaseIs(key, *lease)}, {}, {TxnOp::Get(key)}});
  if (!r.ok()) return r.status();
  if (r->succeeded) return true;
  if (r->responses.empty() || r->responses[0].kvs.empty()) return false;
  const KeyValue& kv = r->responses[0].kvs[0];
  if (kv.value != name) return false;
  // The key names us but sits on another lease: an earlier run of this member
  // took it. Move it onto our lease (what Patroni does after a restart).
  LOG_INFO(kLog, "taking over " << key << " from lease " << kv.lease << " of an earlier run");
  auto adopt = store_.Txn(
      {{Compare::ModRevisionIs(key, kv.mod_revision)}, {TxnOp::Put(key, name, *lease)}, {}});
  if (!adopt.ok()) return adopt.status();
  return adopt->succeeded;
}

Status KvDcs::ReleaseLeader(const std::string& name) {
  const std::string key = Key(kLeaderKey);
  auto r = store_.Txn({{Compare::ValueIs(key, name)}, {TxnOp::Delete(key)}, {}});
  return r.status();
}

Status KvDcs::DeleteLeaderAt(int64_t mod_revision) {
  const std::string key = Key(kLeaderKey);
  auto r = store_.Txn({{Compare::ModRevisionIs(key, mod_revision)}, {TxnOp::Delete(key)}, {}});
  if (!r.ok()) return r.status();
  if (!r->succeeded)
    return Conflict("the leader key changed since revision " + std::to_string(mod_revision));
  return Status::Ok();
}

Status KvDcs::PublishMember(const Member& member) {
  auto alive = RefreshLease();
  if (!alive.ok()) return alive.status();
  const std::string key = Key(std::string(kMembersDir) + member.name);
  const std::string value = member.ToJson().dump();
  for (int attempt = 0;; ++attempt) {
    auto lease = EnsureLease();
    if (!lease.ok()) return lease.status();
    auto r = store_.Put(key, value, *lease);
    if (r.ok()) return Status::Ok();
    if (r.status().code() != ErrorCode::kNotFound || attempt > 0) return r.status();
    lease_id_ = 0;  // expired since the refresh
  }
}

Status KvDcs::DeleteMember(const std::string& name) {
  return store_.DeleteRange(Key(std::string(kMembersDir) + name), "").status();
}

Result<bool> KvDcs::InitializeConfig(const json& config) {
  const std::string key = Key(kConfigKey);
  auto r = store_.Txn({{Compare::Absent(key)}, {TxnOp::Put(key, config.dump())}, {}});
  if (!r.ok()) return r.status();
  return r->succeeded;
}

Status KvDcs::WriteStatus(const json& status) {
  return store_.Put(Key(kStatusKey), status.dump(), 0).status();
}

Status KvDcs::WriteIfRevision(std::string_view name, std::string value, int64_t expected_revision) {
  const std::string key = Key(name);
  Compare cmp = expected_revision == 0 ? Compare::Absent(key)
                                       : Compare::ModRevisionIs(key, expected_revision);
  auto r = store_.Txn({{cmp}, {TxnOp::Put(key, std::move(value))}, {}});
  if (!r.ok()) return r.status();
  if (!r->succeeded) {
    return Conflict(key + " changed since revision " + std::to_string(expected_revision));
  }
  return Status::Ok();
}

Status KvDcs::WriteSync(const SyncKey& sync, int64_t expected_revision) {
  json j = {{"leader", sync.leader}, {"sync_standby", nullptr}};
  if (!sync.sync_standby.empty()) j["sync_standby"] = sync.sync_standby;
  return WriteIfRevision(kSyncKey, j.dump(), expected_revision);
}

Status KvDcs::WriteConfig(const json& config, int64_t expected_revision) {
  return WriteIfRevision(kConfigKey, config.dump(), expected_revision);
}

Status KvDcs::WriteFailover(const json& request, int64_t expected_revision) {
  return WriteIfRevision(kFailoverKey, request.dump(), expected_revision);
}

Status KvDcs::DeleteFailover(int64_t expected_revision) {
  const std::string key = Key(kFailoverKey);
  if (expected_revision == 0) return store_.DeleteRange(key, "").status();
  auto r = store_.Txn({{Compare::ModRevisionIs(key, expected_revision)}, {TxnOp::Delete(key)}, {}});
  if (!r.ok()) return r.status();
  if (r->succeeded) return Status::Ok();
  auto now = store_.Range(key, "");
  if (now.ok() && now->kvs.empty()) return Status::Ok();
  return Conflict(key + " changed since revision " + std::to_string(expected_revision));
}

Status KvDcs::WriteHistory(const json& history) {
  return store_.Put(Key(kHistoryKey), history.dump(), 0).status();
}

Result<bool> KvDcs::WaitForChange(int64_t after_revision, std::chrono::milliseconds timeout) {
  return store_.WaitForChange(prefix_, etcd::PrefixRangeEnd(prefix_), after_revision + 1, timeout);
}

Status KvDcs::Close() {
  if (lease_id_ == 0) return Status::Ok();
  Status st = store_.RevokeLease(lease_id_);
  if (st.code() == ErrorCode::kNotFound) st = Status::Ok();  // already expired
  if (st.ok()) lease_id_ = 0;
  return st;
}

}  // namespace pgwarden::dcs
