// JSON encoding and decoding for etcd's v3 gateway.
#include "dcs/etcd_codec.h"

#include <charconv>

namespace pgwarden::dcs::etcd {
namespace {

using json = nlohmann::json;

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

const char* CompareTargetName(CompareTarget t) {
  switch (t) {
    case CompareTarget::kVersion:
      return "VERSION";
    case CompareTarget::kCreateRevision:
      return "CREATE";
    case CompareTarget::kModRevision:
      return "MOD";
    case CompareTarget::kValue:
      return "VALUE";
    case CompareTarget::kLease:
      return "LEASE";
  }
  return "VERSION";
}

const char* CompareFieldName(CompareTarget t) {
  switch (t) {
    case CompareTarget::kVersion:
      return "version";
    case CompareTarget::kCreateRevision:
      return "create_revision";
    case CompareTarget::kModRevision:
      return "mod_revision";
    case CompareTarget::kValue:
      return "value";
    case CompareTarget::kLease:
      return "lease";
  }
  return "version";
}

const char* CompareOpName(CompareOp op) {
  switch (op) {
    case CompareOp::kEqual:
      return "EQUAL";
    case CompareOp::kNotEqual:
      return "NOT_EQUAL";
    case CompareOp::kGreater:
      return "GREATER";
    case CompareOp::kLess:
      return "LESS";
  }
  return "EQUAL";
}

json EncodeOp(const TxnOp& op) {
  switch (op.type) {
    case TxnOpType::kRange:
      return {{"request_range", EncodeRange(op.key, op.range_end)}};
    case TxnOpType::kPut:
      return {{"request_put", EncodePut(op.key, op.value, op.lease)}};
    case TxnOpType::kDeleteRange:
      return {{"request_delete_range", EncodeDeleteRange(op.key, op.range_end)}};
  }
  return json::object();
}

Result<std::string> GetBytes(const json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgument(std::string("etcd: '") + field + "' is not base64");
  auto decoded = Base64Decode(it->get_ref<const std::string&>());
  if (!decoded) return InvalidArgument(std::string("etcd: '") + field + "' is not base64");
  return std::move(*decoded);
}

}  // namespace

std::string Base64Encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t n = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8) | uint8_t(data[i + 2]);
    out += kBase64Alphabet[(n >> 18) & 63];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += kBase64Alphabet[(n >> 6) & 63];
    out += kBase64Alphabet[n & 63];
  }
  if (size_t rest = data.size() - i; rest > 0) {
    uint32_t n = uint8_t(data[i]) << 16;
    if (rest == 2) n |= uint8_t(data[i + 1]) << 8;
    out += kBase64Alphabet[(n >> 18) & 63];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += rest == 2 ? kBase64Alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = Base64Value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

Result<int64_t> GetInt64(const json& object, const char* field) {
  if (!object.is_object()) return int64_t{0};
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && ptr == s.data() + s.size() && !s.empty()) return v;
  }
  return InvalidArgument(std::string("etcd: '") + field + "' is not an integer: " + it->dump());
}

json EncodeRange(const std::string& key, const std::string& range_end) {
  json j = {{"key", Base64Encode(key)}};
  if (!range_end.empty()) j["range_end"] = Base64Encode(range_end);
  return j;
}

json EncodePut(const std::string& key, const std::string& value, int64_t lease) {
  json j = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) j["lease"] = std::to_string(lease);
  return j;
}

json EncodeDeleteRange(const std::string& key, const std::string& range_end) {
  return EncodeRange(key, range_end);
}

json EncodeTxn(const TxnRequest& txn) {
  json compare = json::array();
  for (const Compare& c : txn.compare) {
    json j = {{"key", Base64Encode(c.key)},
              {"target", CompareTargetName(c.target)},
              {"result", CompareOpName(c.op)}};
    if (c.target == CompareTarget::kValue) {
      j["value"] = Base64Encode(c.value);
    } else {
      j[CompareFieldName(c.target)] = std::to_string(c.number);
    }
    compare.push_back(std::move(j));
  }
  json success = json::array();
  for (const TxnOp& op : txn.success) success.push_back(EncodeOp(op));
  json failure = json::array();
  for (const TxnOp& op : txn.failure) failure.push_back(EncodeOp(op));
  return {{"compare", std::move(compare)},
          {"success", std::move(success)},
          {"failure", std::move(failure)}};
}

json EncodeLeaseGrant(int64_t ttl_seconds) { return {{"TTL", std::to_string(ttl_seconds)}}; }

json EncodeLeaseId(int64_t id) { return {{"ID", std::to_string(id)}}; }

json EncodeWatchCreate(const std::string& key, const std::string& range_end,
                       int64_t start_revision) {
  json create = EncodeRange(key, range_end);
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  return {{"create_request", std::move(create)}};
}

Result<KeyValue> DecodeKeyValue(const json& kv) {
  if (!kv.is_object()) return InvalidArgument("etcd: key-value is not an object");
  KeyValue out;
  auto key = GetBytes(kv, "key");
  if (!key.ok()) return key.status();
  out.key = std::move(*key);
  auto value = GetBytes(kv, "value");
  if (!value.ok()) return value.status();
  out.value = std::move(*value);
  for (auto [field, dest] : {std::pair{"create_revision", &out.create_revision},
                             std::pair{"mod_revision", &out.mod_revision},
                             std::pair{"version", &out.version}, std::pair{"lease", &out.lease}}) {
    auto v = GetInt64(kv, field);
    if (!v.ok()) return v.status();
    *dest = *v;
  }
  return out;
}

Result<int64_t> DecodeHeaderRevision(const json& response) {
  if (!response.is_object()) return InvalidArgument("etcd: response is not an object");
  auto it = response.find("header");
  if (it == response.end()) return int64_t{0};
  return GetInt64(*it, "revision");
}

Result<RangeResponse> DecodeRange(const json& response) {
  RangeResponse out;
  auto rev = DecodeHeaderRevision(response);
  if (!rev.ok()) return rev.status();
  out.revision = *rev;
  auto it = response.find("kvs");
  if (it != response.end() && !it->is_null()) {
    if (!it->is_array()) return InvalidArgument("etcd: 'kvs' is not an array");
    for (const json& kv : *it) {
      auto decoded = DecodeKeyValue(kv);
      if (!decoded.ok()) return decoded.status();
      out.kvs.push_back(std::move(*decoded));
    }
  }
  return out;
}

Result<TxnResponse> DecodeTxn(const json& response) {
  TxnResponse out;
  auto rev = DecodeHeaderRevision(response);
  if (!rev.ok()) return rev.status();
  out.revision = *rev;
  if (auto it = response.find("succeeded"); it != response.end() && !it->is_null()) {
    if (!it->is_boolean()) return InvalidArgument("etcd: 'succeeded' is not a boolean");
    out.succeeded = it->get<bool>();
  }
  if (auto it = response.find("responses"); it != response.end() && !it->is_null()) {
    if (!it->is_array()) return InvalidArgument("etcd: 'responses' is not an array");
    for (const json& r : *it) {
      RangeResponse one;
      one.revision = out.revision;
      if (r.is_object()) {
        if (auto range = r.find("response_range"); range != r.end()) {
          auto decoded = DecodeRange(*range);
          if (!decoded.ok()) return decoded.status();
          one = std::move(*decoded);
        }
      }
      out.responses.push_back(std::move(one));
    }
  }
  return out;
}

Result<LeaseGrant> DecodeLeaseGrant(const json& response) {
  if (!response.is_object()) return InvalidArgument("etcd: response is not an object");
  if (auto it = response.find("error");
      it != response.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
    return InvalidArgument("etcd: lease grant: " + it->get<std::string>());
  }
  LeaseGrant out;
  auto id = GetInt64(response, "ID");
  if (!id.ok()) return id.status();
  auto ttl = GetInt64(response, "TTL");
  if (!ttl.ok()) return ttl.status();
  if (*id == 0) return InvalidArgument("etcd: lease grant without an ID");
  out.id = *id;
  out.ttl = *ttl;
  return out;
}

Result<int64_t> DecodeKeepAliveTtl(const json& response) {
  if (!response.is_object()) return InvalidArgument("etcd: response is not an object");
  auto it = response.find("result");
  const json& r = it != response.end() ? *it : response;
  return GetInt64(r, "TTL");
}

Result<WatchMessage> DecodeWatchLine(std::string_view line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("etcd: watch sent a line that is not JSON: " +
                           std::string(line.substr(0, 200)));
  }
  if (auto err = j.find("error"); err != j.end() && !err->is_null()) {
    GatewayError e = DecodeGatewayError(line);
    return Status(e.grpc_code == kGrpcUnavailable ? ErrorCode::kDcsUnavailable : ErrorCode::kIo,
                  "etcd watch: " + e.message);
  }
  auto it = j.find("result");
  if (it == j.end() || !it->is_object()) return InvalidArgument("etcd: watch line without result");
  const json& r = *it;
  WatchMessage out;
  auto rev = DecodeHeaderRevision(r);
  if (!rev.ok()) return rev.status();
  out.revision = *rev;
  out.created = r.value("created", false);
  out.canceled = r.value("canceled", false);
  auto compact = GetInt64(r, "compact_revision");
  if (!compact.ok()) return compact.status();
  out.compact_revision = *compact;
  if (auto ev = r.find("events"); ev != r.end() && ev->is_array()) out.events = ev->size();
  if (auto reason = r.find("cancel_reason"); reason != r.end() && reason->is_string()) {
    out.cancel_reason = reason->get<std::string>();
  }
  return out;
}

GatewayError DecodeGatewayError(std::string_view body) {
  GatewayError out;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    out.message = std::string(body.substr(0, 512));
    return out;
  }
  const json* e = &j;
  if (auto it = j.find("error"); it != j.end() && it->is_object()) e = &*it;
  for (const char* code_field : {"code", "grpc_code"}) {
    if (auto it = e->find(code_field); it != e->end() && it->is_number_integer()) {
      out.grpc_code = it->get<int>();
    }
  }
  for (const char* msg_field : {"message", "error"}) {
    if (auto it = e->find(msg_field); it != e->end() && it->is_string() && out.message.empty()) {
      out.message = it->get<std::string>();
    }
  }
  if (out.message.empty()) out.message = std::string(body.substr(0, 512));
  return out;
}

}  // namespace pgwarden::dcs::etcd
