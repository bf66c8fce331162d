// etcd v3 client over the JSON gateway (/v3/kv/..., /v3/lease/..., /v3/watch) with endpoint
// failover.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "dcs/etcd_codec.h"
#include "dcs/kv_store.h"
#include "net/http_client.h"

namespace pgwarden::dcs {

// Speaks to one etcd cluster through any of its members. A request goes to
// the endpoint that answered last; on a connection error, a timeout or an
// "unavailable" answer it moves on to the next, and when none answers it
// returns DcsUnavailable naming every endpoint tried and its error. Each
// endpoint gets `request_timeout`, so a call takes at most
// endpoints × request_timeout (connection refusals fail at once).
//
// Thread-safe: unary calls are serialised on one kept-alive connection per
// endpoint; Watch() / WaitForChange() use their own connections and may run
// on another thread at the same time.
class EtcdClient final : public KvStore {
 public:
  // endpoints: "host:port" (an "http://" prefix is accepted). REQUIRES: not empty.
  EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds request_timeout);

  Result<RangeResponse> Range(const std::string& key, const std::string& range_end) override;
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease) override;
  Result<int64_t> DeleteRange(const std::string& key, const std::string& range_end) override;
  Result<TxnResponse> Txn(const TxnRequest& txn) override;
  Result<LeaseGrant> GrantLease(int64_t ttl_seconds) override;
  Result<int64_t> KeepAliveLease(int64_t id) override;
  Status RevokeLease(int64_t id) override;
  void SetDeadline(std::optional<TimePoint> deadline) override;
  Result<bool> WaitForChange(const std::string& key, const std::string& range_end,
                             int64_t start_revision, std::chrono::milliseconds timeout) override;

  // Watches [key, range_end) from start_revision (0: from now), handing each
  // message of the stream (the "created" one included) to `on_message`
  // until it returns false (result true) or `timeout` passes (result false).
  Result<bool> Watch(const std::string& key, const std::string& range_end, int64_t start_revision,
                     std::chrono::milliseconds timeout,
                     const std::function<bool(const etcd::WatchMessage&)>& on_message);

  // Sends one gateway request: POST `path` with a JSON body; the JSON answer.
  Result<nlohmann::json> Call(const std::string& path, const nlohmann::json& body);

  // The endpoint the next request tries first.
  std::string current_endpoint() const { return endpoints_[current_.load()]; }
  const std::vector<std::string>& endpoints() const { return endpoints_; }

  // Drops kept-alive connections (e.g. before a fork, or at shutdown).
  void CloseConnections();

 private:
  const std::vector<std::string> endpoints_;
  const std::chrono::milliseconds request_timeout_;
  std::atomic<size_t> current_{0};
  // SetDeadline's, as steady_clock ticks since its epoch; kNoDeadline: none.
  static constexpr int64_t kNoDeadline = INT64_MAX;
  std::atomic<int64_t> deadline_{
      kNoDeadline};  // index into endpoints_ of the last endpoint that answered

  std::mutex mu_;
  net::HttpClient http_;  // GUARDED_BY(mu_)
};

}  // namespace pgwarden::dcs
