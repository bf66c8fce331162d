// PostgreSQL protocol v3 framing: message boundaries in a byte stream, builders for our messages.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgwarden::pgwire {

// Protocol constants.
inline constexpr int32_t kProtocolVersion3 = 196608;     // 3.0
inline constexpr int32_t kSslRequestCode = 80877103;     // SSLRequest
inline constexpr int32_t kGssEncRequestCode = 80877104;  // GSSENCRequest
inline constexpr int32_t kCancelRequestCode = 80877102;  // CancelRequest

// Result of looking at the front of a buffer.
enum class DecodeStatus {
  kNeedMoreData,  // not even a complete header yet
  kReady,         // a complete header was read (see Header)
  kError,         // malformed: invalid length or type
};

// The 5-byte header of a typed message: type byte + int32 length (which
// counts itself but not the type byte).
struct Header {
  char type = 0;
  uint32_t length = 0;  // as sent (>= 4)
  // Whole message size on the wire: 1 + length.
  size_t wire_size() const { return 1 + static_cast<size_t>(length); }
  size_t body_size() const { return static_cast<size_t>(length) - 4; }
};

// Reads a typed message header at the front of `buf`. kError when length < 4
// or > max_length (the message-size limit), or `type` is not a printable
// ASCII letter/digit/punctuation byte.
DecodeStatus DecodeHeader(std::string_view buf, uint32_t max_length, Header* out);

// A startup-phase packet (untyped: int32 length + int32 code + payload).
struct StartupPacket {
  enum class Kind {
    kStartup,        // protocol 3.0 startup with parameters
    kSslRequest,     // SSLRequest
    kGssEncRequest,  // GSSENCRequest
    kCancel,         // CancelRequest with pid and key
  };
  Kind kind = Kind::kStartup;
  int32_t protocol = 0;
  std::vector<std::pair<std::string, std::string>> parameters;  // in order (user, database, ...)
  int32_t cancel_pid = 0;
  int32_t cancel_key = 0;
  // The value of a parameter, or nullopt.
  std::optional<std::string> Get(std::string_view name) const;
};

// Decodes a startup packet at the front of `buf`; on kReady sets *consumed to
// its size. kError with *error set for: length < 8 or > max_length, an
// unsupported protocol version (major != 3), a startup packet without a
// terminating NUL, an odd number of strings, a missing "user".
DecodeStatus DecodeStartupPacket(std::string_view buf, uint32_t max_length, StartupPacket* out,
                                 size_t* consumed, std::string* error);

// Reads a NUL-terminated string at `*pos` of `body`; advances *pos past the NUL.
// false when no NUL is found.
bool ReadCString(std::string_view body, size_t* pos, std::string_view* out);
// Reads big-endian integers; false when the body is too short.
bool ReadInt16(std::string_view body, size_t* pos, int16_t* out);
bool ReadInt32(std::string_view body, size_t* pos, int32_t* out);

// Appends messages to an output buffer (the builders never allocate beyond
// growing `out`).
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  // Starts a typed message; returns its start offset for Finish().
  size_t Begin(char type);
  void Int16(int16_t v);
  void Int32(int32_t v);
  void CString(std::string_view s);
  void Bytes(std::string_view s);
  // Patches the length of the message begun at `start`.
  void Finish(size_t start);

 private:
  std::string& out_;
};

// Severity + SQLSTATE + message (+ optional detail/hint) as an ErrorResponse 'E'.
void AppendErrorResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                         std::string_view message, std::string_view detail = {},
                         std::string_view hint = {});
void AppendNoticeResponse(std::string& out, std::string_view sqlstate, std::string_view message);
void AppendAuthenticationOk(std::string& out);
void AppendAuthenticationCleartext(std::string& out);
void AppendAuthenticationMd5(std::string& out, const uint8_t salt[4]);
// AuthenticationSASL listing "SCRAM-SHA-256".
void AppendAuthenticationSasl(std::string& out);
void AppendAuthenticationSaslContinue(std::string& out, std::string_view data);
void AppendAuthenticationSaslFinal(std::string& out, std::string_view data);
void AppendParameterStatus(std::string& out, std::string_view name, std::string_view value);
void AppendBackendKeyData(std::string& out, int32_t pid, int32_t key);
// status: 'I' idle, 'T' in transaction, 'E' failed transaction.
void AppendReadyForQuery(std::string& out, char status);
void AppendParseComplete(std::string& out);
void AppendCloseComplete(std::string& out);
void AppendCommandComplete(std::string& out, std::string_view tag);
void AppendEmptyQueryResponse(std::string& out);
// RowDescription with text columns (type oid 25) named `columns`.
void AppendRowDescription(std::string& out, const std::vector<std::string>& columns);
// DataRow; nullopt values are NULL.
void AppendDataRow(std::string& out, const std::vector<std::optional<std::string>>& values);

// Frontend messages a proxy originates towards a server.
void AppendStartupMessage(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& parameters);
void AppendCancelRequest(std::string& out, int32_t pid, int32_t key);
void AppendQuery(std::string& out, std::string_view sql);
void AppendTerminate(std::string& out);
void AppendPasswordMessage(std::string& out, std::string_view password);  // 'p' + cstring
void AppendSaslInitialResponse(std::string& out, std::string_view mechanism, std::string_view data);
void AppendSaslResponse(std::string& out, std::string_view data);
// Parse 'P' (name, query, parameter type oids) and Close 'C' of a statement.
void AppendParse(std::string& out, std::string_view name, std::string_view query,
                 const std::vector<int32_t>& param_types);
void AppendCloseStatement(std::string& out, std::string_view name);
void AppendSync(std::string& out);

// Fields of an ErrorResponse/NoticeResponse body: code → value ('S', 'C', 'M', ...).
std::map<char, std::string> ParseErrorFields(std::string_view body);

}  // namespace pgwarden::pgwire
