// Authentication for PostgreSQL's protocol: SCRAM-SHA-256 (server and client side) and md5.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::pgwire {

// md5 as PostgreSQL stores it: "md5" + hex(md5(password + user)).
std::string Md5PasswordHash(std::string_view password, std::string_view user);
// The response to AuthenticationMD5Password: "md5" + hex(md5(hex_part(stored) + salt)),
// where `stored` is Md5PasswordHash(...) (with its "md5" prefix).
std::string Md5SaltedResponse(std::string_view stored_md5, const uint8_t salt[4]);

// A parsed SCRAM secret "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
struct ScramSecret {
  int iterations = 0;
  std::string salt;        // raw bytes
  std::string stored_key;  // raw 32 bytes
  std::string server_key;  // raw 32 bytes
};
std::optional<ScramSecret> ParseScramSecret(std::string_view text);
// Builds a secret from a plain password (salt random when empty), as PostgreSQL would.
ScramSecret MakeScramSecret(std::string_view password, std::string salt = {},
                            int iterations = 4096);
std::string FormatScramSecret(const ScramSecret& s);
// The secret PostgreSQL's mock authentication uses for a user who does not
// exist (or has no SCRAM secret): the same salt for the same name every time,
// so that salts do not tell real users from unknown ones. Here the salt is
// HMAC-SHA-256(process_secret, user) cut to 16 bytes, 4096 iterations, and
// keys derived the same way, which no client proof can match. No PBKDF2 runs.
ScramSecret MockScramSecret(std::string_view user, std::string_view process_secret);

// Server side of SCRAM-SHA-256 (RFC 5802/7677, no channel binding): the proxy
// authenticating a client against a secret. One instance per exchange, owned
// by the session doing it; not thread-safe (one thread at a time).
class ScramServer {
 public:
  explicit ScramServer(ScramSecret secret);
  // client-first-message → server-first-message. InvalidArgument when malformed
  // or when channel binding is required ("p=").
  Result<std::string> HandleClientFirst(std::string_view client_first);
  // client-final-message → server-final-message ("v=..."). InvalidArgument on a
  // malformed message, a nonce mismatch or a wrong proof.
  Result<std::string> HandleClientFinal(std::string_view client_final);
  // After a successful exchange: the ClientKey the client proved it knows, which
  // lets the proxy log in to a server holding the same secret (pass-through).
  const std::string& client_key() const { return client_key_; }

  // Test hook: use `server_nonce` instead of 18 random bytes (base64) as the
  // server's part of the nonce, for known-answer tests (RFC 7677).
  void SetNonceForTesting(std::string server_nonce);

 private:
  // Where the exchange stands; a failed step ends it for good.
  enum class State {
    kExpectClientFirst,  // nothing received yet
    kExpectClientFinal,  // server-first-message sent
    kDone,               // proof verified, server-final-message sent
    kFailed,             // a step failed or came out of order
  };
  State state_ = State::kExpectClientFirst;
  std::string test_server_nonce_;
  std::string gs2_header_;  // "n,," or "y,,", must come back in c=
  ScramSecret secret_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;  // client nonce + server nonce
  std::string client_key_;
};

// Client side of SCRAM-SHA-256: the proxy logging in to a PostgreSQL server,
// with either a plain password or a ClientKey (+ the secret's StoredKey is not
// needed: the server sends salt and iterations; with a ClientKey the salt and
// iterations must match the secret it came from). One instance per exchange,
// owned by the server connection doing it; not thread-safe.
class ScramClient {
 public:
  // Passwords are used as PostgreSQL's SASLprep would for ASCII (unchanged);
  // non-ASCII passwords are used as their raw UTF-8 bytes (what PostgreSQL does
  // when SASLprep fails, but not what it does for a valid UTF-8 password that
  // NFKC/RFC 4013 mapping changes). The same holds for MakeScramSecret.
  static ScramClient WithPassword(std::string password);
  static ScramClient WithClientKey(std::string client_key, std::string server_key);
  // The client-first-message ("n,,n=,r=<nonce>").
  std::string ClientFirst();
  // server-first-message → client-final-message. With a password this runs
  // PBKDF2 with the server's iteration count (milliseconds at 4096) on the
  // calling thread; with a ClientKey it is a few HMACs.
  Result<std::string> HandleServerFirst(std::string_view server_first);
  // Verifies the server-final-message (server signature).
  Status HandleServerFinal(std::string_view server_final);

  // Test hook: use `nonce` instead of 18 random bytes (base64) as the client
  // nonce, and send `user` in "n=" (normally empty, as libpq), for
  // known-answer tests (RFC 7677). Call before ClientFirst().
  void SetNonceForTesting(std::string nonce, std::string user = {});

 private:
  bool use_client_key_ = false;  // WithClientKey: no password, no PBKDF2
  std::string test_user_;
  std::string password_;
  std::string client_key_;
  std::string server_key_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string auth_message_;
  std::string salted_server_key_;
};

// Base64 helpers (standard alphabet, with padding).
std::string Base64Encode(std::string_view raw);
std::optional<std::string> Base64Decode(std::string_view text);

// Constant-time comparison.
bool SecureEquals(std::string_view a, std::string_view b);

}  // namespace pgwarden::pgwire
