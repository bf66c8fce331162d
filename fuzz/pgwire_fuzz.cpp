// libFuzzer target for src/pgwire: framing, startup packets, error fields, SCRAM, secrets,
// auth_file.
//
// The first input byte picks a sub-target (byte % kTargetCount), the second
// is a parameter (a message-size limit, a chunking seed, flags), the rest is
// the payload. An invariant that does not hold aborts with its text, so
// libFuzzer saves the input. Build and run with fuzz/run.sh.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgwire/auth.h"
#include "pgwire/message.h"
#include "pgwire/userlist.h"

// Aborts with the failed condition, so that libFuzzer reports the input.
#define PGW_FUZZ_CHECK(cond)                                                                   \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "pgwire_fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                   #cond);                                                                     \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

namespace pgwarden::pgwire {
namespace {

// Sub-targets, chosen by the first input byte.
enum Target : uint8_t {
  kStream = 0,       // typed messages walked like a proxy, one-shot and in chunks
  kStartup = 1,      // DecodeStartupPacket
  kErrorFields = 2,  // ParseErrorFields on raw bytes and on built messages
  kScram = 3,        // ScramServer client-first then client-final
  kSecret = 4,       // ParseScramSecret / FormatScramSecret, ClassifyCredential
  kUserList = 5,     // ParseUserList and re-parsing what it returned
  kReaders = 6,      // ReadCString / ReadInt16 / ReadInt32 at any position
  kBase64 = 7,       // Base64Decode / Base64Encode, SecureEquals
  kTargetCount = 8,  // number of sub-targets
};

// Message-size limits the parameter byte picks from: edge cases and the
// "small max length" a proxy would use to refuse huge messages.
constexpr uint32_t kMaxLengths[] = {0, 3, 4, 5, 7, 8, 15, 16, 17, 64, 255, 1024, 4096, 0xffffffffu};

uint32_t PickMaxLength(uint8_t param) {
  return kMaxLengths[param % (sizeof(kMaxLengths) / sizeof(kMaxLengths[0]))];
}

uint32_t LoadBe32(std::string_view s, size_t at) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (static_cast<uint32_t>(u[0]) << 24) | (static_cast<uint32_t>(u[1]) << 16) |
         (static_cast<uint32_t>(u[2]) << 8) | static_cast<uint32_t>(u[3]);
}

// `part` lies inside `whole` (a view into it, not a copy).
bool IsInside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

// ---- Readers -------------------------------------------------------------

// Reads a C string and checks what ReadCString promises.
bool CheckedCString(std::string_view body, size_t* pos, std::string_view* out) {
  size_t before = *pos;
  bool ok = ReadCString(body, pos, out);
  if (!ok) {
    PGW_FUZZ_CHECK(*pos == before);
    PGW_FUZZ_CHECK(before > body.size() || body.find('\0', before) == std::string_view::npos);
    return false;
  }
  PGW_FUZZ_CHECK(before <= body.size());
  PGW_FUZZ_CHECK(*pos > before && *pos <= body.size());
  PGW_FUZZ_CHECK(body[*pos - 1] == '\0');
  PGW_FUZZ_CHECK(IsInside(*out, body));
  PGW_FUZZ_CHECK(out->data() == body.data() + before);
  PGW_FUZZ_CHECK(out->size() == *pos - before - 1);
  PGW_FUZZ_CHECK(out->find('\0') == std::string_view::npos);
  return true;
}

bool CheckedInt16(std::string_view body, size_t* pos, int16_t* out) {
  size_t before = *pos;
  bool expected = before <= body.size() && body.size() - before >= 2;
  bool ok = ReadInt16(body, pos, out);
  PGW_FUZZ_CHECK(ok == expected);
  PGW_FUZZ_CHECK(*pos == (ok ? before + 2 : before));
  if (ok) {
    auto hi = static_cast<unsigned char>(body[before]);
    auto lo = static_cast<unsigned char>(body[before + 1]);
    PGW_FUZZ_CHECK(static_cast<uint16_t>(*out) == ((hi << 8) | lo));
  }
  return ok;
}

bool CheckedInt32(std::string_view body, size_t* pos, int32_t* out) {
  size_t before = *pos;
  bool expected = before <= body.size() && body.size() - before >= 4;
  bool ok = ReadInt32(body, pos, out);
  PGW_FUZZ_CHECK(ok == expected);
  PGW_FUZZ_CHECK(*pos == (ok ? before + 4 : before));
  if (ok) PGW_FUZZ_CHECK(static_cast<uint32_t>(*out) == LoadBe32(body, before));
  return ok;
}

// Skips `n` raw bytes (a Bind parameter value); false when the body is short.
bool SkipBytes(std::string_view body, size_t* pos, int32_t n) {
  if (n < 0) return true;  // NULL
  if (body.size() - *pos < static_cast<size_t>(n)) return false;
  *pos += static_cast<size_t>(n);
  return true;
}

void FuzzReaders(uint8_t param, std::string_view payload) {
  // From an arbitrary start (possibly past the end) ...
  for (size_t start :
       {static_cast<size_t>(param), payload.size(), payload.size() + 1, static_cast<size_t>(-1)}) {
    size_t pos = start;
    std::string_view s;
    int16_t i16 = 0;
    int32_t i32 = 0;
    (void)CheckedCString(payload, &pos, &s);
    pos = start;
    (void)CheckedInt16(payload, &pos, &i16);
    pos = start;
    (void)CheckedInt32(payload, &pos, &i32);
  }
  // ... and a walk where each byte picks the next read.
  size_t pos = 0;
  size_t op = param;
  while (pos < payload.size()) {
    std::string_view s;
    int16_t i16 = 0;
    int32_t i32 = 0;
    bool ok = false;
    switch (op++ % 3) {
      case 0:
        ok = CheckedCString(payload, &pos, &s);
        break;
      case 1:
        ok = CheckedInt16(payload, &pos, &i16);
        break;
      default:
        ok = CheckedInt32(payload, &pos, &i32);
        break;
    }
    if (!ok) break;
  }
}

// ---- Error fields ----------------------------------------------------------

// What ParseErrorFields returned is made of the body's own bytes.
void CheckErrorFields(std::string_view body, const std::map<char, std::string>& fields) {
  size_t total = 0;
  for (const auto& [code, value] : fields) {
    PGW_FUZZ_CHECK(code != '\0');
    PGW_FUZZ_CHECK(value.find('\0') == std::string::npos);
    PGW_FUZZ_CHECK(body.find(value) != std::string_view::npos);
    total += 2 + value.size();  // code byte + value + NUL
  }
  PGW_FUZZ_CHECK(total <= body.size());  // a value without its NUL is dropped
}

// Splits `s` at NUL bytes into at most `n` parts (the last keeps the rest,
// cut at its own NUL by the builders).
std::vector<std::string_view> SplitAtNul(std::string_view s, size_t n) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < n) {
    size_t nul = s.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(s.substr(0, nul));
    s.remove_prefix(nul + 1);
  }
  parts.push_back(s);
  while (parts.size() < n) parts.emplace_back();
  return parts;
}

std::string_view UpToNul(std::string_view s) { return s.substr(0, s.find('\0')); }

void FuzzErrorFields(uint8_t param, std::string_view payload) {
  // Raw bytes as a body.
  auto fields = ParseErrorFields(payload);
  CheckErrorFields(payload, fields);

  // A built ErrorResponse / NoticeResponse must frame and parse back.
  auto parts = SplitAtNul(payload, 5);
  std::string out;
  if (param & 1) {
    AppendNoticeResponse(out, parts[0], parts[1]);
  } else {
    AppendErrorResponse(out, parts[0], parts[1], parts[2], parts[3], parts[4]);
  }
  Header h;
  PGW_FUZZ_CHECK(DecodeHeader(out, 0xffffffffu, &h) == DecodeStatus::kReady);
  PGW_FUZZ_CHECK(h.wire_size() == out.size());
  PGW_FUZZ_CHECK(h.type == ((param & 1) ? 'N' : 'E'));
  std::string_view body = std::string_view(out).substr(5);
  PGW_FUZZ_CHECK(!body.empty() && body.back() == '\0');
  auto parsed = ParseErrorFields(body);
  CheckErrorFields(body, parsed);
  std::map<char, std::string> expected;
  if (param & 1) {
    expected = {{'S', "NOTICE"},
                {'V', "NOTICE"},
                {'C', std::string(parts[0])},
                {'M', std::string(parts[1])}};
  } else {
    expected = {{'S', std::string(parts[0])},
                {'V', std::string(parts[0])},
                {'C', std::string(parts[1])},
                {'M', std::string(parts[2])}};
    if (!parts[3].empty()) expected['D'] = std::string(parts[3]);
    // The last part may hold NULs: the builder cuts the string there.
    if (!parts[4].empty()) expected['H'] = std::string(UpToNul(parts[4]));
  }
  PGW_FUZZ_CHECK(parsed == expected);
}

// ---- Message stream ------------------------------------------------------

// The header decoder's documented contract, spelled out on its own.
DecodeStatus ExpectedHeaderStatus(std::string_view buf, uint32_t max_length) {
  if (buf.empty()) return DecodeStatus::kNeedMoreData;
  auto type = static_cast<unsigned char>(buf[0]);
  if (type < 0x21 || type > 0x7e) return DecodeStatus::kError;
  if (buf.size() < 5) return DecodeStatus::kNeedMoreData;
  uint32_t length = LoadBe32(buf, 1);
  if (length < 4 || length > max_length) return DecodeStatus::kError;
  return DecodeStatus::kReady;
}

// Checks a kReady header read at the front of `rest`.
void CheckHeader(std::string_view rest, uint32_t max_length, const Header& h) {
  PGW_FUZZ_CHECK(rest.size() >= 5);
  PGW_FUZZ_CHECK(h.type == rest[0]);
  PGW_FUZZ_CHECK(h.length == LoadBe32(rest, 1));  // what was claimed
  PGW_FUZZ_CHECK(h.length >= 4);
  PGW_FUZZ_CHECK(h.length <= max_length);
  PGW_FUZZ_CHECK(h.wire_size() >= 5);
  PGW_FUZZ_CHECK(h.wire_size() == 1 + static_cast<size_t>(h.length));
  PGW_FUZZ_CHECK(h.body_size() + 5 == h.wire_size());
  // The header alone decides: shorter prefixes wait, the 5-byte prefix agrees.
  for (size_t k = 0; k < 5; ++k) {
    Header partial;
    PGW_FUZZ_CHECK(DecodeHeader(rest.substr(0, k), max_length, &partial) ==
                   DecodeStatus::kNeedMoreData);
  }
  Header again;
  PGW_FUZZ_CHECK(DecodeHeader(rest.substr(0, 5), max_length, &again) == DecodeStatus::kReady);
  PGW_FUZZ_CHECK(again.type == h.type && again.length == h.length);
}

// Reads a body the way the proxy's message handlers would, for the types it
// looks into; every read stays inside the body.
void ReadBody(char type, std::string_view body) {
  size_t pos = 0;
  std::string_view s1, s2;
  int16_t n = 0;
  int32_t v = 0;
  switch (type) {
    case 'Q':  // Query: one string
      (void)CheckedCString(body, &pos, &s1);
      break;
    case 'P':  // Parse: name, query, parameter type oids
      if (!CheckedCString(body, &pos, &s1) || !CheckedCString(body, &pos, &s2) ||
          !CheckedInt16(body, &pos, &n)) {
        break;
      }
      for (int i = 0; i < n && CheckedInt32(body, &pos, &v); ++i) {
      }
      break;
    case 'B': {  // Bind: portal, statement, formats, values, result formats
      if (!CheckedCString(body, &pos, &s1) || !CheckedCString(body, &pos, &s2) ||
          !CheckedInt16(body, &pos, &n)) {
        break;
      }
      int16_t f = 0;
      bool ok = true;
      for (int i = 0; ok && i < n; ++i) ok = CheckedInt16(body, &pos, &f);
      if (!ok || !CheckedInt16(body, &pos, &n)) break;
      for (int i = 0; ok && i < n; ++i) {
        ok = CheckedInt32(body, &pos, &v) && SkipBytes(body, &pos, v);
        PGW_FUZZ_CHECK(pos <= body.size());
      }
      if (!ok || !CheckedInt16(body, &pos, &n)) break;
      for (int i = 0; ok && i < n; ++i) ok = CheckedInt16(body, &pos, &f);
      break;
    }
    case 'E':  // Execute (frontend) / ErrorResponse (backend)
    case 'N':  // NoticeResponse
      CheckErrorFields(body, ParseErrorFields(body));
      if (CheckedCString(body, &pos, &s1)) (void)CheckedInt32(body, &pos, &v);
      break;
    case 'C':  // Close (frontend: kind + name) / CommandComplete (backend: tag)
    case 'D':  // Describe (frontend: kind + name) / DataRow (backend)
      while (pos < body.size() && CheckedCString(body, &pos, &s1)) {
      }
      break;
    default:
      break;
  }
}

// Where a one-shot walk of a buffer stopped, and the messages before.
struct Walk {
  std::vector<std::pair<size_t, size_t>> messages;  // offset, wire size
  size_t end = 0;                                   // offset of the first unconsumed byte
  bool error = false;                               // stopped on kError (else: needs more)
};

Walk WalkStream(std::string_view buf, uint32_t max_length) {
  Walk walk;
  size_t pos = 0;
  while (true) {
    std::string_view rest = buf.substr(pos);
    Header h;
    DecodeStatus status = DecodeHeader(rest, max_length, &h);
    PGW_FUZZ_CHECK(status == ExpectedHeaderStatus(rest, max_length));
    if (status == DecodeStatus::kNeedMoreData) PGW_FUZZ_CHECK(rest.size() < 5);
    if (status != DecodeStatus::kReady || rest.size() < 1 + static_cast<size_t>(h.length)) {
      walk.end = pos;
      walk.error = status == DecodeStatus::kError;
      return walk;
    }
    CheckHeader(rest, max_length, h);
    std::string_view message = rest.substr(0, h.wire_size());
    std::string_view body = message.substr(5);
    PGW_FUZZ_CHECK(body.size() == h.body_size());
    // Re-framing the body with the Writer gives back the same bytes.
    std::string rebuilt;
    Writer w(rebuilt);
    size_t start = w.Begin(h.type);
    w.Bytes(body);
    w.Finish(start);
    PGW_FUZZ_CHECK(rebuilt == message);
    ReadBody(h.type, body);
    walk.messages.emplace_back(pos, h.wire_size());
    size_t next = pos + h.wire_size();
    PGW_FUZZ_CHECK(next > pos + 4 && next <= buf.size());
    pos = next;
  }
}

// Feeds `buf` in small chunks to a pending buffer, forwarding each complete
// message as a proxy does; the messages and the stop must match `expected`.
void FeedInChunks(std::string_view buf, uint32_t max_length, uint8_t seed, const Walk& expected) {
  std::string pending;
  size_t fed = 0;
  size_t consumed = 0;  // offset in `buf` of pending[0]
  size_t index = 0;
  uint32_t rng = 0x9e3779b9u ^ seed;
  while (fed < buf.size()) {
    rng = rng * 1103515245u + 12345u;
    size_t chunk = 1 + ((rng >> 16) % ((seed & 0x80) ? 64 : 7));
    chunk = std::min(chunk, buf.size() - fed);
    pending.append(buf.substr(fed, chunk));
    fed += chunk;
    while (true) {
      Header h;
      DecodeStatus status = DecodeHeader(pending, max_length, &h);
      if (status == DecodeStatus::kError) {
        PGW_FUZZ_CHECK(expected.error && expected.end == consumed);
        PGW_FUZZ_CHECK(index == expected.messages.size());
        return;
      }
      if (status == DecodeStatus::kNeedMoreData || pending.size() < h.wire_size()) break;
      PGW_FUZZ_CHECK(index < expected.messages.size());
      PGW_FUZZ_CHECK(expected.messages[index].first == consumed);
      PGW_FUZZ_CHECK(expected.messages[index].second == h.wire_size());
      ++index;
      consumed += h.wire_size();
      pending.erase(0, h.wire_size());
    }
  }
  PGW_FUZZ_CHECK(!expected.error);
  PGW_FUZZ_CHECK(index == expected.messages.size() && consumed == expected.end);
}

void FuzzStream(uint8_t param, std::string_view payload) {
  uint32_t max_length = PickMaxLength(param);
  Walk walk = WalkStream(payload, max_length);
  FeedInChunks(payload, max_length, param, walk);
}

// ---- Startup packets -------------------------------------------------------

void FuzzStartup(uint8_t param, std::string_view buf) {
  uint32_t max_length = PickMaxLength(param);
  StartupPacket packet;
  packet.cancel_pid = 12345;  // sentinel: untouched unless kReady
  size_t consumed = 777;      // sentinel
  std::string error;
  DecodeStatus status = DecodeStartupPacket(buf, max_length, &packet, &consumed, &error);
  if (status == DecodeStatus::kError) {
    PGW_FUZZ_CHECK(!error.empty());
    PGW_FUZZ_CHECK(consumed == 777 && packet.cancel_pid == 12345);
    return;
  }
  if (status == DecodeStatus::kNeedMoreData) {
    PGW_FUZZ_CHECK(buf.size() < 8 || buf.size() < LoadBe32(buf, 0));
    PGW_FUZZ_CHECK(consumed == 777 && packet.cancel_pid == 12345);
    return;
  }
  PGW_FUZZ_CHECK(status == DecodeStatus::kReady);
  PGW_FUZZ_CHECK(consumed >= 8 && consumed <= buf.size() && consumed <= max_length);
  PGW_FUZZ_CHECK(consumed == LoadBe32(buf, 0));
  auto code = static_cast<int32_t>(LoadBe32(buf, 4));
  PGW_FUZZ_CHECK(packet.protocol == code);
  std::string_view packet_bytes = buf.substr(0, consumed);
  switch (packet.kind) {
    case StartupPacket::Kind::kSslRequest:
      PGW_FUZZ_CHECK(code == kSslRequestCode && consumed == 8);
      break;
    case StartupPacket::Kind::kGssEncRequest:
      PGW_FUZZ_CHECK(code == kGssEncRequestCode && consumed == 8);
      break;
    case StartupPacket::Kind::kCancel: {
      PGW_FUZZ_CHECK(code == kCancelRequestCode && consumed == 16);
      std::string rebuilt;
      AppendCancelRequest(rebuilt, packet.cancel_pid, packet.cancel_key);
      PGW_FUZZ_CHECK(rebuilt == packet_bytes);
      break;
    }
    case StartupPacket::Kind::kStartup: {
      PGW_FUZZ_CHECK((static_cast<uint32_t>(code) >> 16) == 3);
      auto user = packet.Get("user");
      PGW_FUZZ_CHECK(user.has_value() && !user->empty());
      for (const auto& [name, value] : packet.parameters) {
        PGW_FUZZ_CHECK(!name.empty());
        PGW_FUZZ_CHECK(name.find('\0') == std::string::npos);
        PGW_FUZZ_CHECK(value.find('\0') == std::string::npos);
      }
      // The builder gives back the same bytes (but for the minor version).
      std::string rebuilt;
      AppendStartupMessage(rebuilt, packet.parameters);
      PGW_FUZZ_CHECK(rebuilt.size() == packet_bytes.size());
      PGW_FUZZ_CHECK(rebuilt.substr(0, 4) == packet_bytes.substr(0, 4));
      PGW_FUZZ_CHECK(rebuilt.substr(8) == packet_bytes.substr(8));
      break;
    }
  }
  // Every shorter prefix waits for more; the packet alone decodes the same.
  for (size_t k = 0; k < consumed; ++k) {
    StartupPacket partial;
    size_t partial_consumed = 0;
    std::string partial_error;
    PGW_FUZZ_CHECK(DecodeStartupPacket(buf.substr(0, k), max_length, &partial, &partial_consumed,
                                       &partial_error) == DecodeStatus::kNeedMoreData);
  }
  StartupPacket alone;
  size_t alone_consumed = 0;
  PGW_FUZZ_CHECK(DecodeStartupPacket(packet_bytes, max_length, &alone, &alone_consumed, &error) ==
                 DecodeStatus::kReady);
  PGW_FUZZ_CHECK(alone_consumed == consumed && alone.kind == packet.kind &&
                 alone.parameters == packet.parameters && alone.cancel_key == packet.cancel_key);
}

// ---- SCRAM -----------------------------------------------------------------

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

std::string Sha(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(digest), len);
}

std::string Xor(std::string_view a, std::string_view b) {
  std::string out(a);
  for (size_t i = 0; i < out.size() && i < b.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

// The fixed credential every exchange runs against, derived here with
// OpenSSL directly (not through the code under test). fuzz/corpus holds a
// complete valid exchange for it (see fuzz/make_corpus.py).
constexpr char kPassword[] = "fuzz-password";
constexpr char kSalt[] = "pgwarden-fuzzing";  // 16 bytes
constexpr int kIterations = 4096;
constexpr char kServerNonce[] = "FuzzServerNonce0123456789";

struct Credential {
  ScramSecret secret;
  std::string client_key;
};

const Credential& FixedCredential() {
  static const Credential credential = [] {
    std::string salted(32, '\0');
    std::string_view salt = kSalt;
    PKCS5_PBKDF2_HMAC(kPassword, static_cast<int>(sizeof(kPassword) - 1),
                      reinterpret_cast<const unsigned char*>(salt.data()),
                      static_cast<int>(salt.size()), kIterations, EVP_sha256(), 32,
                      reinterpret_cast<unsigned char*>(salted.data()));
    Credential c;
    c.client_key = Hmac(salted, "Client Key");
    c.secret.iterations = kIterations;
    c.secret.salt = std::string(salt);
    c.secret.stored_key = Sha(c.client_key);
    c.secret.server_key = Hmac(salted, "Server Key");
    // The library's own derivation must agree.
    ScramSecret made = MakeScramSecret(kPassword, std::string(salt), kIterations);
    PGW_FUZZ_CHECK(made.stored_key == c.secret.stored_key);
    PGW_FUZZ_CHECK(made.server_key == c.secret.server_key);
    return c;
  }();
  return credential;
}

// The proof a client knowing the password sends for `auth_message`.
std::string CorrectProof(std::string_view auth_message) {
  const Credential& c = FixedCredential();
  return Xor(c.client_key, Hmac(c.secret.stored_key, auth_message));
}

// After a successful client-final: the server signature, the client key, and
// no further step accepted.
void CheckSuccess(ScramServer& server, const std::string& server_final,
                  std::string_view auth_message) {
  const Credential& c = FixedCredential();
  PGW_FUZZ_CHECK(server_final == "v=" + Base64Encode(Hmac(c.secret.server_key, auth_message)));
  PGW_FUZZ_CHECK(server.client_key() == c.client_key);
  PGW_FUZZ_CHECK(!server.HandleClientFinal("c=biws").ok());
  PGW_FUZZ_CHECK(!server.HandleClientFirst("n,,n=,r=x").ok());
}

// payload: client-first NUL client-final. Flags (param): bit 0 appends the
// correct proof (computed here) to the fuzzed client-final.
void FuzzScram(uint8_t param, std::string_view payload) {
  const Credential& c = FixedCredential();
  size_t nul = payload.find('\0');
  std::string_view client_first = payload.substr(0, nul);
  std::string_view client_final =
      nul == std::string_view::npos ? std::string_view() : payload.substr(nul + 1);

  ScramServer server(c.secret);
  server.SetNonceForTesting(kServerNonce);
  auto first = server.HandleClientFirst(client_first);
  if (!first.ok()) {
    PGW_FUZZ_CHECK(first.status().code() == ErrorCode::kInvalidArgument);
    // A failed exchange accepts nothing more, not even a well-formed final.
    PGW_FUZZ_CHECK(!server.HandleClientFinal(client_final).ok());
    PGW_FUZZ_CHECK(!server.HandleClientFinal("c=biws,r=x,p=" + Base64Encode(c.client_key)).ok());
    return;
  }
  // server-first: "r=" <client nonce><server nonce> ",s=" <salt> ",i=" <iterations>.
  PGW_FUZZ_CHECK(client_first.size() >= 3);
  const std::string& server_first = *first;
  std::string suffix = std::string(kServerNonce) + ",s=" + Base64Encode(c.secret.salt) +
                       ",i=" + std::to_string(kIterations);
  PGW_FUZZ_CHECK(server_first.size() > 2 + suffix.size());
  PGW_FUZZ_CHECK(server_first.compare(0, 2, "r=") == 0);
  PGW_FUZZ_CHECK(server_first.compare(server_first.size() - suffix.size(), suffix.size(), suffix) ==
                 0);
  std::string client_nonce = server_first.substr(2, server_first.size() - 2 - suffix.size());
  PGW_FUZZ_CHECK(client_first.find(",r=" + client_nonce) != std::string_view::npos);
  for (char ch : client_nonce) PGW_FUZZ_CHECK(ch > 0x20 && ch < 0x7f && ch != ',');
  std::string nonce = client_nonce + kServerNonce;
  std::string_view bare = client_first.substr(3);
  std::string auth_prefix = std::string(bare) + "," + server_first + ",";

  // A second exchange with the same client-first and the canonical final
  // made with the password must succeed.
  {
    ScramServer twin(c.secret);
    twin.SetNonceForTesting(kServerNonce);
    auto twin_first = twin.HandleClientFirst(client_first);
    PGW_FUZZ_CHECK(twin_first.ok() && *twin_first == server_first);
    std::string without_proof = "c=" + Base64Encode(client_first.substr(0, 3)) + ",r=" + nonce;
    std::string proof = CorrectProof(auth_prefix + without_proof);
    if (param & 2) {  // one flipped bit must fail instead
      proof[param % proof.size()] ^= static_cast<char>(1 << (param % 8));
      PGW_FUZZ_CHECK(!twin.HandleClientFinal(without_proof + ",p=" + Base64Encode(proof)).ok());
    } else {
      auto fin = twin.HandleClientFinal(without_proof + ",p=" + Base64Encode(proof));
      PGW_FUZZ_CHECK(fin.ok());
      CheckSuccess(twin, *fin, auth_prefix + without_proof);
    }
  }

  std::string final_message(client_final);
  if (param & 1) {
    final_message += ",p=" + Base64Encode(CorrectProof(auth_prefix + std::string(client_final)));
  }
  auto fin = server.HandleClientFinal(final_message);
  if (!fin.ok()) {
    PGW_FUZZ_CHECK(fin.status().code() == ErrorCode::kInvalidArgument);
    PGW_FUZZ_CHECK(!server.HandleClientFinal(final_message).ok());
    return;
  }
  // Success: the message is "<without proof>,p=<proof>" with the right
  // channel binding and nonce, and the proof is the password's.
  size_t p = final_message.rfind(",p=");
  PGW_FUZZ_CHECK(p != std::string::npos);
  std::string without_proof = final_message.substr(0, p);
  PGW_FUZZ_CHECK(without_proof.compare(0, 2, "c=") == 0);
  PGW_FUZZ_CHECK(without_proof.find(",r=" + nonce) != std::string::npos);
  auto proof = Base64Decode(std::string_view(final_message).substr(p + 3));
  PGW_FUZZ_CHECK(proof.has_value());
  PGW_FUZZ_CHECK(*proof == CorrectProof(auth_prefix + without_proof));
  CheckSuccess(server, *fin, auth_prefix + without_proof);
}

// ---- Secrets, base64, auth_file ---------------------------------------------

bool SameSecret(const ScramSecret& a, const ScramSecret& b) {
  return a.iterations == b.iterations && a.salt == b.salt && a.stored_key == b.stored_key &&
         a.server_key == b.server_key;
}

void FuzzSecret(std::string_view text) {
  auto secret = ParseScramSecret(text);
  UserCredential classified = ClassifyCredential(std::string(text));
  PGW_FUZZ_CHECK(classified.value == text);
  if (!secret) {
    PGW_FUZZ_CHECK(classified.kind != UserCredential::Kind::kScram);
    return;
  }
  PGW_FUZZ_CHECK(classified.kind == UserCredential::Kind::kScram);
  PGW_FUZZ_CHECK(text.substr(0, 14) == "SCRAM-SHA-256$");
  PGW_FUZZ_CHECK(secret->iterations > 0);
  PGW_FUZZ_CHECK(!secret->salt.empty());
  PGW_FUZZ_CHECK(secret->stored_key.size() == 32 && secret->server_key.size() == 32);
  std::string formatted = FormatScramSecret(*secret);
  auto again = ParseScramSecret(formatted);
  PGW_FUZZ_CHECK(again.has_value() && SameSecret(*again, *secret));
  PGW_FUZZ_CHECK(FormatScramSecret(*again) == formatted);
}

void FuzzBase64(uint8_t param, std::string_view payload) {
  std::string encoded = Base64Encode(payload);
  PGW_FUZZ_CHECK(encoded.size() == (payload.size() + 2) / 3 * 4);
  auto decoded = Base64Decode(encoded);
  PGW_FUZZ_CHECK(decoded.has_value() && *decoded == payload);

  auto raw = Base64Decode(payload);
  if (raw) {
    PGW_FUZZ_CHECK(payload.size() % 4 == 0);
    PGW_FUZZ_CHECK(raw->size() <= payload.size() / 4 * 3);
    std::string canonical = Base64Encode(*raw);
    PGW_FUZZ_CHECK(canonical.size() == payload.size());
    PGW_FUZZ_CHECK(Base64Decode(canonical) == raw);
  }

  size_t cut = payload.empty() ? 0 : param % (payload.size() + 1);
  std::string_view a = payload.substr(0, cut), b = payload.substr(cut);
  PGW_FUZZ_CHECK(SecureEquals(a, b) == (a == b));
  PGW_FUZZ_CHECK(SecureEquals(a, a));
}

// A value written back in the file's quoting.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    out.push_back(ch);
    if (ch == '"') out.push_back('"');
  }
  out.push_back('"');
  return out;
}

void FuzzUserList(std::string_view payload) {
  std::string text(payload);
  auto users = ParseUserList(text, "fuzz");
  if (!users.ok()) {
    PGW_FUZZ_CHECK(users.status().code() == ErrorCode::kInvalidArgument);
    PGW_FUZZ_CHECK(users.status().message().compare(0, 5, "fuzz:") == 0);
    return;
  }
  std::string rewritten;
  for (const auto& [user, credential] : *users) {
    PGW_FUZZ_CHECK(!user.empty());
    PGW_FUZZ_CHECK(user.find_first_of(std::string_view("\n\0", 2)) == std::string::npos);
    PGW_FUZZ_CHECK(credential.value.find_first_of(std::string_view("\n\0", 2)) ==
                   std::string::npos);
    UserCredential again = ClassifyCredential(credential.value);
    PGW_FUZZ_CHECK(again.kind == credential.kind);
    if (credential.kind == UserCredential::Kind::kScram) {
      PGW_FUZZ_CHECK(ParseScramSecret(credential.value).has_value());
    }
    if (credential.kind == UserCredential::Kind::kMd5) {
      PGW_FUZZ_CHECK(credential.value.size() == 35);
    }
    rewritten += Quote(user) + " " + Quote(credential.value) + "\n";
  }
  // Writing the entries back and reading them again gives the same entries.
  auto reparsed = ParseUserList(rewritten, "rewritten");
  PGW_FUZZ_CHECK(reparsed.ok());
  PGW_FUZZ_CHECK(reparsed->size() == users->size());
  for (const auto& [user, credential] : *users) {
    auto it = reparsed->find(user);
    PGW_FUZZ_CHECK(it != reparsed->end());
    PGW_FUZZ_CHECK(it->second.kind == credential.kind && it->second.value == credential.value);
  }
}

}  // namespace
}  // namespace pgwarden::pgwire

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pgwarden::pgwire;
  if (size < 2) return 0;
  uint8_t param = data[1];
  std::string_view payload(reinterpret_cast<const char*>(data) + 2, size - 2);
  switch (data[0] % kTargetCount) {
    case kStream:
      FuzzStream(param, payload);
      break;
    case kStartup:
      FuzzStartup(param, payload);
      break;
    case kErrorFields:
      FuzzErrorFields(param, payload);
      break;
    case kScram:
      FuzzScram(param, payload);
      break;
    case kSecret:
      FuzzSecret(payload);
      break;
    case kUserList:
      FuzzUserList(payload);
      break;
    case kReaders:
      FuzzReaders(param, payload);
      break;
    case kBase64:
      FuzzBase64(param, payload);
      break;
    default:
      break;
  }
  return 0;
}
