// PostgreSQL protocol v3 framing: header and startup-packet decoding, message builders.
#include "pgwire/message.h"

#include <cstring>

namespace pgwarden::pgwire {
namespace {

uint32_t LoadBigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (static_cast<uint32_t>(u[0]) << 24) | (static_cast<uint32_t>(u[1]) << 16) |
         (static_cast<uint32_t>(u[2]) << 8) | static_cast<uint32_t>(u[3]);
}

void StoreBigEndian32(char* p, uint32_t v) {
  p[0] = static_cast<char>((v >> 24) & 0xff);
  p[1] = static_cast<char>((v >> 16) & 0xff);
  p[2] = static_cast<char>((v >> 8) & 0xff);
  p[3] = static_cast<char>(v & 0xff);
}

// Size of the SSLRequest / GSSENCRequest packets and of a CancelRequest.
constexpr uint32_t kRequestPacketSize = 8;
constexpr uint32_t kCancelPacketSize = 16;

// Untyped messages (StartupMessage, CancelRequest): the length comes first.
size_t BeginUntyped(std::string& out) {
  size_t start = out.size();
  out.append(4, '\0');
  return start;
}

void FinishUntyped(std::string& out, size_t start) {
  StoreBigEndian32(&out[start], static_cast<uint32_t>(out.size() - start));
}

// Parses the key/value strings of a 3.x startup packet body (after the
// protocol code). false with *error on a malformed layout.
bool ParseStartupParameters(std::string_view body, StartupPacket* out, std::string* error) {
  size_t pos = 0;
  while (true) {
    std::string_view name;
    if (!ReadCString(body, &pos, &name)) {
      *error = "invalid startup packet layout: expected terminator as last byte";
      return false;
    }
    if (name.empty()) break;  // the terminating NUL
    std::string_view value;
    if (!ReadCString(body, &pos, &value)) {
      *error = "invalid startup packet layout: missing value for parameter \"" + std::string(name) +
               "\"";
      return false;
    }
    out->parameters.emplace_back(std::string(name), std::string(value));
  }
  if (pos != body.size()) {
    *error = "invalid startup packet layout: expected terminator as last byte";
    return false;
  }
  return true;
}

}  // namespace

DecodeStatus DecodeHeader(std::string_view buf, uint32_t max_length, Header* out) {
  if (buf.empty()) return DecodeStatus::kNeedMoreData;
  auto type = static_cast<unsigned char>(buf[0]);
  if (type < 0x21 || type > 0x7e) return DecodeStatus::kError;
  if (buf.size() < 5) return DecodeStatus::kNeedMoreData;
  uint32_t length = LoadBigEndian32(buf.data() + 1);
  if (length < 4 || length > max_length) return DecodeStatus::kError;
  out->type = static_cast<char>(type);
  out->length = length;
  return DecodeStatus::kReady;
}

std::optional<std::string> StartupPacket::Get(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return value;
  }
  return std::nullopt;
}

DecodeStatus DecodeStartupPacket(std::string_view buf, uint32_t max_length, StartupPacket* out,
                                 size_t* consumed, std::string* error) {
  if (buf.size() < 4) return DecodeStatus::kNeedMoreData;
  uint32_t length = LoadBigEndian32(buf.data());
  if (length < kRequestPacketSize || length > max_length) {
    *error = "invalid length of startup packet: " + std::to_string(length);
    return DecodeStatus::kError;
  }
  if (buf.size() < 8) return DecodeStatus::kNeedMoreData;
  // The code can be checked before the whole packet arrived, so that a bogus
  // protocol is refused without waiting for (up to max_length) more bytes.
  auto code = static_cast<int32_t>(LoadBigEndian32(buf.data() + 4));
  StartupPacket packet;
  packet.protocol = code;
  bool is_request = code == kSslRequestCode || code == kGssEncRequestCode;
  if (is_request && length != kRequestPacketSize) {
    *error = "invalid length of SSL or GSS encryption request: " + std::to_string(length);
    return DecodeStatus::kError;
  }
  if (code == kCancelRequestCode && length != kCancelPacketSize) {
    *error = "invalid length of cancel request: " + std::to_string(length);
    return DecodeStatus::kError;
  }
  uint32_t major = static_cast<uint32_t>(code) >> 16;
  uint32_t minor = static_cast<uint32_t>(code) & 0xffff;
  if (!is_request && code != kCancelRequestCode && major != 3) {
    *error = "unsupported frontend protocol " + std::to_string(major) + "." +
             std::to_string(minor) + ": server supports 3.0 to 3.0";
    return DecodeStatus::kError;
  }
  if (buf.size() < length) return DecodeStatus::kNeedMoreData;

  std::string_view body = buf.substr(8, length - 8);
  if (code == kSslRequestCode) {
    packet.kind = StartupPacket::Kind::kSslRequest;
  } else if (code == kGssEncRequestCode) {
    packet.kind = StartupPacket::Kind::kGssEncRequest;
  } else if (code == kCancelRequestCode) {
    packet.kind = StartupPacket::Kind::kCancel;
    size_t pos = 0;
    // Cannot fail: the length was checked to be exactly 16 above.
    (void)ReadInt32(body, &pos, &packet.cancel_pid);
    (void)ReadInt32(body, &pos, &packet.cancel_key);
  } else {
    // 3.x: a minor version above 0 is accepted as 3.0 (PostgreSQL would send
    // NegotiateProtocolVersion; clients fall back to 3.0 features anyway
    // when they see none of the newer messages).
    packet.kind = StartupPacket::Kind::kStartup;
    if (!ParseStartupParameters(body, &packet, error)) return DecodeStatus::kError;
    auto user = packet.Get("user");
    if (!user.has_value() || user->empty()) {
      *error = "no PostgreSQL user name specified in startup packet";
      return DecodeStatus::kError;
    }
  }
  *out = std::move(packet);
  *consumed = length;
  return DecodeStatus::kReady;
}

bool ReadCString(std::string_view body, size_t* pos, std::string_view* out) {
  if (*pos > body.size()) return false;
  size_t nul = body.find('\0', *pos);
  if (nul == std::string_view::npos) return false;
  *out = body.substr(*pos, nul - *pos);
  *pos = nul + 1;
  return true;
}

bool ReadInt16(std::string_view body, size_t* pos, int16_t* out) {
  if (*pos > body.size() || body.size() - *pos < 2) return false;
  const auto* u = reinterpret_cast<const unsigned char*>(body.data() + *pos);
  *out = static_cast<int16_t>((static_cast<uint16_t>(u[0]) << 8) | u[1]);
  *pos += 2;
  return true;
}

bool ReadInt32(std::string_view body, size_t* pos, int32_t* out) {
  if (*pos > body.size() || body.size() - *pos < 4) return false;
  *out = static_cast<int32_t>(LoadBigEndian32(body.data() + *pos));
  *pos += 4;
  return true;
}

size_t Writer::Begin(char type) {
  size_t start = out_.size();
  out_.push_back(type);
  out_.append(4, '\0');
  return start;
}

void Writer::Int16(int16_t v) {
  auto u = static_cast<uint16_t>(v);
  out_.push_back(static_cast<char>((u >> 8) & 0xff));
  out_.push_back(static_cast<char>(u & 0xff));
}

void Writer::Int32(int32_t v) {
  char b[4];
  StoreBigEndian32(b, static_cast<uint32_t>(v));
  out_.append(b, 4);
}

void Writer::CString(std::string_view s) {
  // The protocol cannot carry a NUL inside a string: cut there rather than
  // emit a message whose framing the peer would misread.
  size_t nul = s.find('\0');
  if (nul != std::string_view::npos) s = s.substr(0, nul);
  out_.append(s);
  out_.push_back('\0');
}

void Writer::Bytes(std::string_view s) { out_.append(s); }

void Writer::Finish(size_t start) {
  StoreBigEndian32(&out_[start + 1], static_cast<uint32_t>(out_.size() - start - 1));
}

namespace {

// ErrorResponse and NoticeResponse share their body layout.
void AppendErrorOrNotice(std::string& out, char type, std::string_view severity,
                         std::string_view sqlstate, std::string_view message,
                         std::string_view detail, std::string_view hint) {
  Writer w(out);
  size_t start = w.Begin(type);
  w.Bytes("S");
  w.CString(severity);
  w.Bytes("V");
  w.CString(severity);
  w.Bytes("C");
  w.CString(sqlstate);
  w.Bytes("M");
  w.CString(message);
  if (!detail.empty()) {
    w.Bytes("D");
    w.CString(detail);
  }
  if (!hint.empty()) {
    w.Bytes("H");
    w.CString(hint);
  }
  w.Bytes(std::string_view("\0", 1));
  w.Finish(start);
}

// Authentication request 'R' with its int32 code and a raw payload.
void AppendAuthentication(std::string& out, int32_t code, std::string_view payload) {
  Writer w(out);
  size_t start = w.Begin('R');
  w.Int32(code);
  w.Bytes(payload);
  w.Finish(start);
}

// A typed message without a body.
void AppendEmpty(std::string& out, char type) {
  Writer w(out);
  w.Finish(w.Begin(type));
}

// A typed message whose body is one C string.
void AppendOneCString(std::string& out, char type, std::string_view s) {
  Writer w(out);
  size_t start = w.Begin(type);
  w.CString(s);
  w.Finish(start);
}

}  // namespace

void AppendErrorResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                         std::string_view message, std::string_view detail, std::string_view hint) {
  AppendErrorOrNotice(out, 'E', severity, sqlstate, message, detail, hint);
}

void AppendNoticeResponse(std::string& out, std::string_view sqlstate, std::string_view message) {
  AppendErrorOrNotice(out, 'N', "NOTICE", sqlstate, message, {}, {});
}

void AppendAuthenticationOk(std::string& out) { AppendAuthentication(out, 0, {}); }

void AppendAuthenticationCleartext(std::string& out) { AppendAuthentication(out, 3, {}); }

void AppendAuthenticationMd5(std::string& out, const uint8_t salt[4]) {
  AppendAuthentication(out, 5, std::string_view(reinterpret_cast<const char*>(salt), 4));
}

void AppendAuthenticationSasl(std::string& out) {
  // Mechanism list: each name NUL-terminated, then an empty name.
  static constexpr char kMechanisms[] = "SCRAM-SHA-256\0";  // + the implicit NUL
  AppendAuthentication(out, 10, std::string_view(kMechanisms, sizeof(kMechanisms)));
}

void AppendAuthenticationSaslContinue(std::string& out, std::string_view data) {
  AppendAuthentication(out, 11, data);
}

void AppendAuthenticationSaslFinal(std::string& out, std::string_view data) {
  AppendAuthentication(out, 12, data);
}

void AppendParameterStatus(std::string& out, std::string_view name, std::string_view value) {
  Writer w(out);
  size_t start = w.Begin('S');
  w.CString(name);
  w.CString(value);
  w.Finish(start);
}

void AppendBackendKeyData(std::string& out, int32_t pid, int32_t key) {
  Writer w(out);
  size_t start = w.Begin('K');
  w.Int32(pid);
  w.Int32(key);
  w.Finish(start);
}

void AppendReadyForQuery(std::string& out, char status) {
  Writer w(out);
  size_t start = w.Begin('Z');
  w.Bytes(std::string_view(&status, 1));
  w.Finish(start);
}

void AppendParseComplete(std::string& out) { AppendEmpty(out, '1'); }

void AppendCloseComplete(std::string& out) { AppendEmpty(out, '3'); }

void AppendCommandComplete(std::string& out, std::string_view tag) {
  AppendOneCString(out, 'C', tag);
}

void AppendEmptyQueryResponse(std::string& out) { AppendEmpty(out, 'I'); }

void AppendRowDescription(std::string& out, const std::vector<std::string>& columns) {
  constexpr int32_t kTextOid = 25;
  Writer w(out);
  size_t start = w.Begin('T');
  w.Int16(static_cast<int16_t>(columns.size()));
  for (const auto& name : columns) {
    w.CString(name);
    w.Int32(0);         // table oid
    w.Int16(0);         // column attribute number
    w.Int32(kTextOid);  // type oid
    w.Int16(-1);        // typlen (varlena)
    w.Int32(-1);        // typmod
    w.Int16(0);         // format: text
  }
  w.Finish(start);
}

void AppendDataRow(std::string& out, const std::vector<std::optional<std::string>>& values) {
  Writer w(out);
  size_t start = w.Begin('D');
  w.Int16(static_cast<int16_t>(values.size()));
  for (const auto& v : values) {
    if (!v.has_value()) {
      w.Int32(-1);
      continue;
    }
    w.Int32(static_cast<int32_t>(v->size()));
    w.Bytes(*v);
  }
  w.Finish(start);
}

void AppendStartupMessage(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& parameters) {
  size_t start = BeginUntyped(out);
  Writer w(out);
  w.Int32(kProtocolVersion3);
  for (const auto& [name, value] : parameters) {
    w.CString(name);
    w.CString(value);
  }
  w.Bytes(std::string_view("\0", 1));
  FinishUntyped(out, start);
}

void AppendCancelRequest(std::string& out, int32_t pid, int32_t key) {
  size_t start = BeginUntyped(out);
  Writer w(out);
  w.Int32(kCancelRequestCode);
  w.Int32(pid);
  w.Int32(key);
  FinishUntyped(out, start);
}

void AppendQuery(std::string& out, std::string_view sql) { AppendOneCString(out, 'Q', sql); }

void AppendTerminate(std::string& out) { AppendEmpty(out, 'X'); }

void AppendPasswordMessage(std::string& out, std::string_view password) {
  AppendOneCString(out, 'p', password);
}

void AppendSaslInitialResponse(std::string& out, std::string_view mechanism,
                               std::string_view data) {
  Writer w(out);
  size_t start = w.Begin('p');
  w.CString(mechanism);
  w.Int32(static_cast<int32_t>(data.size()));
  w.Bytes(data);
  w.Finish(start);
}

void AppendSaslResponse(std::string& out, std::string_view data) {
  Writer w(out);
  size_t start = w.Begin('p');
  w.Bytes(data);
  w.Finish(start);
}

void AppendParse(std::string& out, std::string_view name, std::string_view query,
                 const std::vector<int32_t>& param_types) {
  Writer w(out);
  size_t start = w.Begin('P');
  w.CString(name);
  w.CString(query);
  w.Int16(static_cast<int16_t>(param_types.size()));
  for (int32_t oid : param_types) w.Int32(oid);
  w.Finish(start);
}

void AppendCloseStatement(std::string& out, std::string_view name) {
  Writer w(out);
  size_t start = w.Begin('C');
  w.Bytes("S");
  w.CString(name);
  w.Finish(start);
}

void AppendSync(std::string& out) { AppendEmpty(out, 'S'); }

std::map<char, std::string> ParseErrorFields(std::string_view body) {
  std::map<char, std::string> fields;
  size_t pos = 0;
  while (pos < body.size()) {
    char code = body[pos++];
    if (code == '\0') break;
    std::string_view value;
    if (!ReadCString(body, &pos, &value)) break;  // truncated: keep what we have
    fields[code] = std::string(value);
  }
  return fields;
}

}  // namespace pgwarden::pgwire
