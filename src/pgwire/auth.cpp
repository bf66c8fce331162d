// SCRAM-SHA-256 (RFC 5802 / RFC 7677, as PostgreSQL speaks it) and md5 password authentication.
#include "pgwire/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <cstdlib>

namespace pgwarden::pgwire {
namespace {

constexpr size_t kScramKeyLength = 32;   // SHA-256 output
constexpr size_t kScramNonceBytes = 18;  // raw nonce bytes, as PostgreSQL
constexpr size_t kScramSaltBytes = 16;   // as PostgreSQL's SCRAM_DEFAULT_SALT_LEN
constexpr char kScramPrefix[] = "SCRAM-SHA-256$";
constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string HexEncode(const unsigned char* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0x0f]);
  }
  return out;
}

std::string Md5Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr) != 1) {
    // Only when md5 is disabled (FIPS): no hash will ever match.
    return {};
  }
  return HexEncode(digest, len);
}

std::string Sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(digest), len);
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

// Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256.
std::string SaltedPassword(std::string_view password, std::string_view salt, int iterations) {
  std::string out(kScramKeyLength, '\0');
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(),
                    static_cast<int>(out.size()), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string XorBytes(std::string_view a, std::string_view b) {
  std::string out(a.size(), '\0');
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

// Random bytes from OpenSSL's CSPRNG. A CSPRNG that cannot produce bytes
// leaves no safe way to authenticate anyone: stop the process.
std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();
  }
  return out;
}

// SASLprep of the password. PostgreSQL leaves pure ASCII untouched, which is
// what we do. Non-ASCII passwords are used as their raw UTF-8 bytes: this is
// what PostgreSQL does when SASLprep fails (invalid UTF-8, prohibited
// characters), but differs from it for non-ASCII passwords that NFKC or the
// RFC 4013 mappings would change (e.g. a no-break space, full-width letters).
// Secrets made by PostgreSQL for such passwords will not match a plain
// password given to us.
std::string_view NormalizePassword(std::string_view password) { return password; }

// Parses a positive decimal int that fills `text` entirely.
std::optional<int> ParsePositiveInt(std::string_view text) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

// Reads "<name>=<value>" at *pos of a comma-separated SCRAM message, advancing
// past the following comma. false when the attribute is not `name`.
bool ReadAttribute(std::string_view msg, size_t* pos, char name, std::string_view* value) {
  if (*pos + 2 > msg.size() || msg[*pos] != name || msg[*pos + 1] != '=') return false;
  size_t begin = *pos + 2;
  size_t comma = msg.find(',', begin);
  if (comma == std::string_view::npos) {
    *value = msg.substr(begin);
    *pos = msg.size();
  } else {
    *value = msg.substr(begin, comma - begin);
    *pos = comma + 1;
  }
  return true;
}

// A nonce is printable ASCII except ',' (RFC 5802 "printable").
bool IsValidNonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

}  // namespace

std::string Md5PasswordHash(std::string_view password, std::string_view user) {
  std::string input;
  input.reserve(password.size() + user.size());
  input.append(password);
  input.append(user);
  return "md5" + Md5Hex(input);
}

std::string Md5SaltedResponse(std::string_view stored_md5, const uint8_t salt[4]) {
  std::string_view hex = stored_md5;
  if (hex.substr(0, 3) == "md5") hex.remove_prefix(3);
  std::string input(hex);
  input.append(reinterpret_cast<const char*>(salt), 4);
  return "md5" + Md5Hex(input);
}

std::optional<ScramSecret> ParseScramSecret(std::string_view text) {
  constexpr std::string_view prefix = kScramPrefix;
  if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
  text.remove_prefix(prefix.size());
  // <iterations>:<salt>$<StoredKey>:<ServerKey>
  size_t dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  std::string_view params = text.substr(0, dollar);
  std::string_view keys = text.substr(dollar + 1);
  size_t c1 = params.find(':');
  size_t c2 = keys.find(':');
  if (c1 == std::string_view::npos || c2 == std::string_view::npos) return std::nullopt;
  auto iterations = ParsePositiveInt(params.substr(0, c1));
  auto salt = Base64Decode(params.substr(c1 + 1));
  auto stored_key = Base64Decode(keys.substr(0, c2));
  auto server_key = Base64Decode(keys.substr(c2 + 1));
  if (!iterations || !salt || salt->empty() || !stored_key ||
      stored_key->size() != kScramKeyLength || !server_key ||
      server_key->size() != kScramKeyLength) {
    return std::nullopt;
  }
  ScramSecret s;
  s.iterations = *iterations;
  s.salt = std::move(*salt);
  s.stored_key = std::move(*stored_key);
  s.server_key = std::move(*server_key);
  return s;
}

ScramSecret MakeScramSecret(std::string_view password, std::string salt, int iterations) {
  if (salt.empty()) salt = RandomBytes(kScramSaltBytes);
  std::string salted = SaltedPassword(NormalizePassword(password), salt, iterations);
  ScramSecret s;
  s.iterations = iterations;
  s.salt = std::move(salt);
  s.stored_key = Sha256(HmacSha256(salted, "Client Key"));
  s.server_key = HmacSha256(salted, "Server Key");
  return s;
}

ScramSecret MockScramSecret(std::string_view user, std::string_view process_secret) {
  std::string mac = HmacSha256(process_secret, std::string("salt:").append(user));
  ScramSecret s;
  s.iterations = 4096;
  s.salt = mac.substr(0, 16);
  s.stored_key = HmacSha256(process_secret, std::string("stored:").append(user));
  s.server_key = HmacSha256(process_secret, std::string("server:").append(user));
  return s;
}

std::string FormatScramSecret(const ScramSecret& s) {
  return kScramPrefix + std::to_string(s.iterations) + ":" + Base64Encode(s.salt) + "$" +
         Base64Encode(s.stored_key) + ":" + Base64Encode(s.server_key);
}

ScramServer::ScramServer(ScramSecret secret) : secret_(std::move(secret)) {}

void ScramServer::SetNonceForTesting(std::string server_nonce) {
  test_server_nonce_ = std::move(server_nonce);
}

Result<std::string> ScramServer::HandleClientFirst(std::string_view client_first) {
  if (state_ != State::kExpectClientFirst) {
    state_ = State::kFailed;
    return InvalidArgument("SCRAM: unexpected client-first-message");
  }
  state_ = State::kFailed;  // until this step succeeds
  // gs2-header: cbind-flag "," [authzid] ","
  if (client_first.empty()) return InvalidArgument("SCRAM: empty client-first-message");
  switch (client_first[0]) {
    case 'n':  // client does not support channel binding
    case 'y':  // client supports it but thinks we do not: right, we do not
      break;
    case 'p':
      return InvalidArgument(
          "SCRAM: client requires channel binding, which is not supported by this server");
    default:
      return InvalidArgument(
          "SCRAM: malformed client-first-message (unexpected channel binding "
          "flag)");
  }
  if (client_first.size() < 2 || client_first[1] != ',') {
    return InvalidArgument("SCRAM: malformed client-first-message (comma expected)");
  }
  if (client_first.size() > 2 && client_first[2] == 'a') {
    return InvalidArgument("SCRAM: client uses an authorization identity, which is not supported");
  }
  if (client_first.size() < 3 || client_first[2] != ',') {
    return InvalidArgument("SCRAM: malformed client-first-message (comma expected)");
  }
  gs2_header_ = std::string(client_first.substr(0, 3));
  std::string_view bare = client_first.substr(3);
  size_t pos = 0;
  if (bare.substr(0, 2) == "m=") {
    return InvalidArgument("SCRAM: client requires an unsupported SCRAM extension");
  }
  std::string_view user;  // ignored, as PostgreSQL: the startup packet names the user
  if (!ReadAttribute(bare, &pos, 'n', &user)) {
    return InvalidArgument("SCRAM: malformed client-first-message (user name expected)");
  }
  std::string_view client_nonce;
  if (!ReadAttribute(bare, &pos, 'r', &client_nonce) || !IsValidNonce(client_nonce)) {
    return InvalidArgument("SCRAM: malformed client-first-message (nonce expected)");
  }
  // Any further attributes are optional extensions and ignored.

  std::string server_nonce =
      test_server_nonce_.empty() ? Base64Encode(RandomBytes(kScramNonceBytes)) : test_server_nonce_;
  client_first_bare_ = std::string(bare);
  nonce_ = std::string(client_nonce) + server_nonce;
  server_first_ = "r=" + nonce_ + ",s=" + Base64Encode(secret_.salt) +
                  ",i=" + std::to_string(secret_.iterations);
  state_ = State::kExpectClientFinal;
  return server_first_;
}

Result<std::string> ScramServer::HandleClientFinal(std::string_view client_final) {
  if (state_ != State::kExpectClientFinal) {
    state_ = State::kFailed;
    return InvalidArgument("SCRAM: unexpected client-final-message");
  }
  state_ = State::kFailed;  // until this step succeeds
  size_t pos = 0;
  std::string_view binding;
  if (!ReadAttribute(client_final, &pos, 'c', &binding)) {
    return InvalidArgument("SCRAM: malformed client-final-message (channel binding expected)");
  }
  auto decoded_binding = Base64Decode(binding);
  if (!decoded_binding || *decoded_binding != gs2_header_) {
    return InvalidArgument("SCRAM: channel binding data does not match the client-first-message");
  }
  std::string_view nonce;
  if (!ReadAttribute(client_final, &pos, 'r', &nonce)) {
    return InvalidArgument("SCRAM: malformed client-final-message (nonce expected)");
  }
  if (nonce != nonce_) return InvalidArgument("SCRAM: nonce mismatch");
  // Extensions until the proof, which must be the last attribute.
  std::string_view proof_b64;
  size_t proof_at = std::string_view::npos;
  while (pos < client_final.size()) {
    size_t attr_at = pos;
    std::string_view value;
    if (ReadAttribute(client_final, &pos, 'p', &value)) {
      if (pos != client_final.size() || client_final.back() == ',') {
        return InvalidArgument("SCRAM: malformed client-final-message (garbage after proof)");
      }
      proof_b64 = value;
      proof_at = attr_at;
      break;
    }
    size_t comma = client_final.find(',', pos);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  if (proof_at == std::string_view::npos || proof_at == 0) {
    return InvalidArgument("SCRAM: malformed client-final-message (proof expected)");
  }
  auto proof = Base64Decode(proof_b64);
  if (!proof || proof->size() != kScramKeyLength) {
    return InvalidArgument("SCRAM: malformed client proof");
  }
  std::string_view without_proof = client_final.substr(0, proof_at - 1);  // drop the comma
  std::string auth_message;
  auth_message.reserve(client_first_bare_.size() + server_first_.size() + without_proof.size() + 2);
  auth_message.append(client_first_bare_).append(",").append(server_first_).append(",");
  auth_message.append(without_proof);

  std::string client_key = XorBytes(*proof, HmacSha256(secret_.stored_key, auth_message));
  std::string stored_key = Sha256(client_key);
  if (!SecureEquals(stored_key, secret_.stored_key)) {
    return InvalidArgument("SCRAM: password authentication failed (wrong proof)");
  }
  client_key_ = std::move(client_key);
  state_ = State::kDone;
  return "v=" + Base64Encode(HmacSha256(secret_.server_key, auth_message));
}

ScramClient ScramClient::WithPassword(std::string password) {
  ScramClient c;
  c.password_ = std::move(password);
  return c;
}

ScramClient ScramClient::WithClientKey(std::string client_key, std::string server_key) {
  ScramClient c;
  c.client_key_ = std::move(client_key);
  c.server_key_ = std::move(server_key);
  c.use_client_key_ = true;
  return c;
}

void ScramClient::SetNonceForTesting(std::string nonce, std::string user) {
  client_nonce_ = std::move(nonce);
  test_user_ = std::move(user);
}

std::string ScramClient::ClientFirst() {
  if (client_nonce_.empty()) client_nonce_ = Base64Encode(RandomBytes(kScramNonceBytes));
  // The user name is left empty, as libpq does: the server takes the one from
  // the startup packet.
  client_first_bare_ = "n=" + test_user_ + ",r=" + client_nonce_;
  return "n,," + client_first_bare_;
}

Result<std::string> ScramClient::HandleServerFirst(std::string_view server_first) {
  if (client_first_bare_.empty()) {
    return InvalidArgument("SCRAM: server-first-message before client-first-message");
  }
  if (!auth_message_.empty()) return InvalidArgument("SCRAM: unexpected server-first-message");
  size_t pos = 0;
  std::string_view nonce, salt_b64, iterations_text;
  if (!ReadAttribute(server_first, &pos, 'r', &nonce) ||
      !ReadAttribute(server_first, &pos, 's', &salt_b64) ||
      !ReadAttribute(server_first, &pos, 'i', &iterations_text)) {
    return InvalidArgument("SCRAM: malformed server-first-message");
  }
  // Further attributes are extensions and ignored.
  if (nonce.size() <= client_nonce_.size() ||
      nonce.substr(0, client_nonce_.size()) != client_nonce_ || !IsValidNonce(nonce)) {
    return InvalidArgument("SCRAM: server nonce does not extend the client nonce");
  }
  auto salt = Base64Decode(salt_b64);
  if (!salt || salt->empty())
    return InvalidArgument("SCRAM: malformed salt in server-first-message");
  auto iterations = ParsePositiveInt(iterations_text);
  if (!iterations) {
    return InvalidArgument("SCRAM: malformed iteration count in server-first-message");
  }

  std::string client_key;
  if (use_client_key_) {
    client_key = client_key_;
    salted_server_key_ = server_key_;
  } else {
    std::string salted = SaltedPassword(NormalizePassword(password_), *salt, *iterations);
    client_key = HmacSha256(salted, "Client Key");
    salted_server_key_ = HmacSha256(salted, "Server Key");
  }
  std::string without_proof = "c=" + Base64Encode("n,,") + ",r=" + std::string(nonce);
  auth_message_ = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  std::string proof = XorBytes(client_key, HmacSha256(Sha256(client_key), auth_message_));
  return without_proof + ",p=" + Base64Encode(proof);
}

Status ScramClient::HandleServerFinal(std::string_view server_final) {
  if (auth_message_.empty()) return InvalidArgument("SCRAM: unexpected server-final-message");
  size_t pos = 0;
  std::string_view value;
  if (ReadAttribute(server_final, &pos, 'e', &value)) {
    return InvalidArgument("SCRAM: server reported an error: " + std::string(value));
  }
  if (!ReadAttribute(server_final, &pos, 'v', &value)) {
    return InvalidArgument("SCRAM: malformed server-final-message");
  }
  auto signature = Base64Decode(value);
  if (!signature || !SecureEquals(*signature, HmacSha256(salted_server_key_, auth_message_))) {
    return InvalidArgument("SCRAM: invalid server signature");
  }
  return Status::Ok();
}

std::string Base64Encode(std::string_view raw) {
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(raw[k])); };
  for (; i + 3 <= raw.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back(kBase64Alphabet[v & 63]);
  }
  size_t rest = raw.size() - i;
  if (rest == 1) {
    uint32_t v = byte(i) << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.append("==");
  } else if (rest == 2) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    int pad = 0;
    if (last && text[i + 3] == '=') pad = text[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      int d = 0;
      if (k >= 4 - pad) {
        d = 0;  // padding
      } else {
        d = value(text[i + k]);
        if (d < 0) return std::nullopt;
      }
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

bool SecureEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace pgwarden::pgwire
