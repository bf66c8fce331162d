// etcd v3 gateway client: endpoint failover, error mapping, unary calls and watch streams.
#include "dcs/etcd_client.h"

#include <cassert>

#include "common/log.h"

namespace pgwarden::dcs {
namespace {

using json = nlohmann::json;
using Clk = std::chrono::steady_clock;

// True when another member may answer where this one did not.
bool ShouldTryNextEndpoint(int http_status, const etcd::GatewayError& e, bool json_body) {
  if (!json_body) return true;  // not an etcd gateway answer (proxy page, wrong port, ...)
  return e.grpc_code == etcd::kGrpcUnavailable || e.grpc_code == etcd::kGrpcDeadlineExceeded ||
         http_status == 502 || http_status == 503 || http_status == 504;
}

Status MapGatewayError(const std::string& what, const etcd::GatewayError& e) {
  std::string msg = what + ": " + e.message;
  switch (e.grpc_code) {
    case etcd::kGrpcNotFound:
      return NotFound(std::move(msg));
    case etcd::kGrpcInvalidArgument:
    case etcd::kGrpcOutOfRange:
      return InvalidArgument(std::move(msg));
    case 9:   // FailedPrecondition
    case 10:  // Aborted
      return Conflict(std::move(msg));
    default:
      return IoError(std::move(msg));
  }
}

}  // namespace

EtcdClient::EtcdClient(std::vector<std::string> endpoints,
                       std::chrono::milliseconds request_timeout)
    : endpoints_(std::move(endpoints)), request_timeout_(request_timeout) {
  assert(!endpoints_.empty());
}

void EtcdClient::SetDeadline(std::optional<TimePoint> deadline) {
  deadline_ = deadline ? deadline->time_since_epoch().count() : kNoDeadline;
}

Result<json> EtcdClient::Call(const std::string& path, const json& body) {
  const std::string payload = body.dump();
  std::lock_guard<std::mutex> lock(mu_);
  std::string errors;
  const size_t first = current_.load();
  const int64_t deadline_ticks = deadline_.load();
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const size_t idx = (first + i) % endpoints_.size();
    const std::string& ep = endpoints_[idx];
    auto timeout = request_timeout_;
    if (deadline_ticks != kNoDeadline) {
      const TimePoint deadline{TimePoint::duration(deadline_ticks)};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now());
      if (left <= std::chrono::milliseconds(0)) {
        if (!errors.empty()) errors += "; ";
        errors += "no time left before the fencing deadline";
        break;
      }
      timeout = std::min(timeout, left);
    }
    auto res = http_.Post(ep, path, payload, timeout);
    std::string error;
    if (!res.ok()) {
      error = res.status().message();
    } else if (res->status == 200) {
      json j = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
      if (!j.is_discarded()) {
        if (idx != first) LOG_INFO("etcd", "now using etcd endpoint " << ep);
        current_ = idx;
        return j;
      }
      error = "answer is not JSON: " + res->body.substr(0, 200);
    } else {
      json j = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
      etcd::GatewayError e = etcd::DecodeGatewayError(res->body);
      if (!ShouldTryNextEndpoint(res->status, e, j.is_object())) {
        current_ = idx;
        return MapGatewayError("etcd " + ep + path, e);
      }
      error = "HTTP " + std::to_string(res->status) + ": " + e.message;
    }
    LOG_DEBUG("etcd", "etcd " << ep << path << ": " << error);
    if (!errors.empty()) errors += "; ";
    // Transport errors already name the endpoint ("connecting to <ep>: ...").
    errors += error.find(ep) == std::string::npos ? ep + ": " + error : error;
  }
  // Start with the next endpoint next time.
  current_ = (first + 1) % endpoints_.size();
  return DcsUnavailable("no etcd endpoint answered " + path + " (" + errors + ")");
}

Result<RangeResponse> EtcdClient::Range(const std::string& key, const std::string& range_end) {
  auto j = Call("/v3/kv/range", etcd::EncodeRange(key, range_end));
  if (!j.ok()) return j.status();
  return etcd::DecodeRange(*j);
}

Result<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  auto j = Call("/v3/kv/put", etcd::EncodePut(key, value, lease));
  if (!j.ok()) return j.status();
  return etcd::DecodeHeaderRevision(*j);
}

Result<int64_t> EtcdClient::DeleteRange(const std::string& key, const std::string& range_end) {
  auto j = Call("/v3/kv/deleterange", etcd::EncodeDeleteRange(key, range_end));
  if (!j.ok()) return j.status();
  return etcd::GetInt64(*j, "deleted");
}

Result<TxnResponse> EtcdClient::Txn(const TxnRequest& txn) {
  auto j = Call("/v3/kv/txn", etcd::EncodeTxn(txn));
  if (!j.ok()) return j.status();
  return etcd::DecodeTxn(*j);
}

Result<LeaseGrant> EtcdClient::GrantLease(int64_t ttl_seconds) {
  auto j = Call("/v3/lease/grant", etcd::EncodeLeaseGrant(ttl_seconds));
  if (!j.ok()) return j.status();
  return etcd::DecodeLeaseGrant(*j);
}

Result<int64_t> EtcdClient::KeepAliveLease(int64_t id) {
  // A bidirectional stream in gRPC; the gateway sends our one request,
  // answers with one {"result": ...} line and ends the response.
  auto j = Call("/v3/lease/keepalive", etcd::EncodeLeaseId(id));
  if (!j.ok()) return j.status();
  if (auto err = j->find("error"); err != j->end() && !err->is_null()) {
    etcd::GatewayError e = etcd::DecodeGatewayError(j->dump());
    if (e.grpc_code == etcd::kGrpcNotFound) return int64_t{0};
    return MapGatewayError("etcd lease keepalive", e);
  }
  return etcd::DecodeKeepAliveTtl(*j);
}

Status EtcdClient::RevokeLease(int64_t id) {
  auto j = Call("/v3/lease/revoke", etcd::EncodeLeaseId(id));
  return j.status();
}

Result<bool> EtcdClient::Watch(const std::string& key, const std::string& range_end,
                               int64_t start_revision, std::chrono::milliseconds timeout,
                               const std::function<bool(const etcd::WatchMessage&)>& on_message) {
  net::HttpClientRequest request;
  request.method = "POST";
  request.target = "/v3/watch";
  request.body = etcd::EncodeWatchCreate(key, range_end, start_revision).dump();
  const Clk::time_point deadline = Clk::now() + timeout;
  // Own connection for each watch: it may run while unary calls do.
  net::HttpClient http;
  std::string errors;
  const size_t first = current_.load();
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const size_t idx = (first + i) % endpoints_.size();
    const std::string& ep = endpoints_[idx];
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now());
    if (left.count() <= 0) {
      if (errors.empty()) return false;
      break;
    }
    Status line_error;
    bool any_line = false;
    auto end = http.Stream(ep, request, left, [&](std::string_view line) {
      any_line = true;
      auto msg = etcd::DecodeWatchLine(line);
      if (!msg.ok()) {
        line_error = msg.status();
        return false;
      }
      return on_message(*msg);
    });
    Status st;
    bool try_next;  // this member did not answer; another may
    if (!end.ok()) {
      st = end.status();  // connection failure or an HTTP error status
      try_next = true;
    } else if (!line_error.ok()) {
      st = line_error;
      try_next = line_error.code() == ErrorCode::kDcsUnavailable;
    } else if (*end == net::StreamEnd::kStopped) {
      current_ = idx;
      return true;
    } else if (*end == net::StreamEnd::kTimedOut) {
      current_ = idx;
      return false;
    } else {
      st = IoError("etcd " + ep + " /v3/watch: the stream ended early");
      try_next = !any_line;
    }
    if (!try_next) {
      current_ = idx;
      return st;
    }
    if (!errors.empty()) errors += "; ";
    errors += st.message().find(ep) == std::string::npos ? ep + ": " + st.message() : st.message();
  }
  current_ = (first + 1) % endpoints_.size();
  return DcsUnavailable("no etcd endpoint answered /v3/watch (" + errors + ")");
}

Result<bool> EtcdClient::WaitForChange(const std::string& key, const std::string& range_end,
                                       int64_t start_revision, std::chrono::milliseconds timeout) {
  Status cancel_error;
  auto r = Watch(key, range_end, start_revision, timeout, [&](const etcd::WatchMessage& m) {
    if (m.events > 0 || m.compact_revision > 0) return false;
    if (m.canceled) {
      cancel_error = IoError("etcd cancelled the watch: " + m.cancel_reason);
      return false;
    }
    return true;  // "created" or a progress notification
  });
  if (!r.ok()) return r.status();
  if (!cancel_error.ok()) return cancel_error;
  return *r;
}

void EtcdClient::CloseConnections() {
  std::lock_guard<std::mutex> lock(mu_);
  http_.CloseConnections();
}

}  // namespace pgwarden::dcs
