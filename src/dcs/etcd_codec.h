// JSON of etcd's v3 gateway: base64 keys, int64 as strings, request bodies and response parsing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "dcs/kv_store.h"

namespace pgwarden::dcs::etcd {

// Standard base64 with padding (what protobuf's JSON mapping uses for bytes).
std::string Base64Encode(std::string_view data);
// Accepts padded or unpadded standard base64 (and the URL-safe alphabet);
// nullopt on any other character.
std::optional<std::string> Base64Decode(std::string_view text);

// The range_end that makes [prefix, range_end) every key starting with
// `prefix`: the prefix with its last byte incremented, after dropping
// trailing 0xff bytes. An empty or all-0xff prefix gives "\0" (etcd: every
// key from `key` on).
std::string PrefixRangeEnd(std::string_view prefix);

// An int64 field that the gateway writes as a JSON string ("42") but may also
// be a number; 0 when absent. InvalidArgument when it is something else.
Result<int64_t> GetInt64(const nlohmann::json& object, const char* field);

// Request bodies.
nlohmann::json EncodeRange(const std::string& key, const std::string& range_end);
nlohmann::json EncodePut(const std::string& key, const std::string& value, int64_t lease);
nlohmann::json EncodeDeleteRange(const std::string& key, const std::string& range_end);
nlohmann::json EncodeTxn(const TxnRequest& txn);
nlohmann::json EncodeLeaseGrant(int64_t ttl_seconds);
nlohmann::json EncodeLeaseId(int64_t id);  // keepalive and revoke
// A watch create request; start_revision 0 means "from now".
nlohmann::json EncodeWatchCreate(const std::string& key, const std::string& range_end,
                                 int64_t start_revision);

// Response bodies. All return InvalidArgument on a malformed body.
Result<KeyValue> DecodeKeyValue(const nlohmann::json& kv);
// The revision in `header` (0 when absent).
Result<int64_t> DecodeHeaderRevision(const nlohmann::json& response);
Result<RangeResponse> DecodeRange(const nlohmann::json& response);
Result<TxnResponse> DecodeTxn(const nlohmann::json& response);
Result<LeaseGrant> DecodeLeaseGrant(const nlohmann::json& response);
// TTL from a keepalive answer, wrapped in {"result": ...} or not; 0 when the
// lease is gone.
Result<int64_t> DecodeKeepAliveTtl(const nlohmann::json& response);

// One line of a watch stream.
struct WatchMessage {
  int64_t revision = 0;          // header revision
  bool created = false;          // the watch was set up
  bool canceled = false;         // the server ended the watch
  int64_t compact_revision = 0;  // >0: start_revision was compacted away
  size_t events = 0;             // number of key events in this message
  std::string cancel_reason;
};
// Parses {"result": {...}}; an {"error": ...} line becomes a Status.
Result<WatchMessage> DecodeWatchLine(std::string_view line);

// The gRPC status the gateway reports in an error body.
struct GatewayError {
  int grpc_code = 2;  // 2: Unknown (the body had none)
  std::string message;
};
// Parses {"error": "...", "code": 5, "message": "..."} (and the nested
// {"error": {"grpc_code": .., "message": ..}} form of streams); falls back
// to the raw body as message.
GatewayError DecodeGatewayError(std::string_view body);

// gRPC codes the client branches on.
inline constexpr int kGrpcInvalidArgument = 3;   // bad request
inline constexpr int kGrpcDeadlineExceeded = 4;  // server-side timeout
inline constexpr int kGrpcNotFound = 5;          // e.g. "requested lease not found"
inline constexpr int kGrpcOutOfRange = 11;       // e.g. compacted revision
inline constexpr int kGrpcUnavailable = 14;      // e.g. "no leader": try another member

}  // namespace pgwarden::dcs::etcd
