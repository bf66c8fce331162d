// Startup and authentication of one client: the startup packet, the method, the md5 / SCRAM
// exchange, and the session parameters it asked for.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "pgwire/auth.h"
#include "pgwire/message.h"
#include "pgwire/userlist.h"
#include "proxy/proxy_config.h"

namespace pgwarden::proxy {

class Pool;
class Proxy;

// Where the client connects from (for hba rules and the failed-login log).
struct ClientAddress {
  std::string host;  // numeric
  int port = 0;
  bool is_ipv4 = false;
  uint32_t ipv4 = 0;  // network byte order
};

// The login of one client, without sockets: bytes in, protocol messages out,
// and what the session must do next. Owned by the client session until the
// login ends; used on its thread only.
class ClientLogin {
 public:
  // What the session does next.
  enum class Next {
    kMore,         // wait for more bytes from the client
    kSslRequest,   // an SSLRequest: answer 'S' and start TLS, or 'N'
    kGssRequest,   // a GSSENCRequest: answer 'N' (never supported)
    kCancel,       // a CancelRequest (cancel_pid / cancel_key): forward it, close silently
    kLookup,       // look up the user's credential, then call OnCredential()
    kDone,         // authenticated: AuthenticationOk is in the output
    kFail,         // refused: the FATAL is in the output; close once it is sent
    kSilentClose,  // close without a word (Terminate or an invalid packet before startup)
  };

  // `cfg`: the configuration when the client connected, kept for its login.
  ClientLogin(Proxy& proxy, std::shared_ptr<const ProxyConfig> cfg, ClientAddress address, bool tls)
      : proxy_(proxy),
        cfg_holder_(std::move(cfg)),
        cfg_(*cfg_holder_),
        address_(std::move(address)),
        tls_(tls) {}

  // The client's bytes (decrypted), buffered until a packet is whole.
  Next OnBytes(std::string_view data, std::string* out);
  // The credential lookup finished (NotFound: no such user).
  Next OnCredential(Result<pgwire::UserCredential> cred, std::string* out);
  // TLS was started after an SSLRequest.
  void SetTls() { tls_ = true; }

  const std::string& user() const { return user_; }
  const std::string& database() const { return database_; }
  // The admin console's virtual database; may_modify: an admin, not a stats user.
  bool admin() const { return admin_; }
  bool may_modify() const { return may_modify_; }
  // The pool (after kDone, for a normal database).
  Pool* pool() const { return pool_; }
  // The tracked parameters the client asked for at startup (id, value), from
  // its parameters and its `options`.
  const std::vector<std::pair<int, std::string>>& parameters() const { return parameters_; }
  int32_t cancel_pid() const { return cancel_pid_; }
  int32_t cancel_key() const { return cancel_key_; }
  // Bytes that came after the packet the login finished with.
  std::string TakeRest() { return std::move(in_); }

 private:
  // Where the exchange is.
  enum class Step {
    kStartup,       // waiting for the startup packet (or an SSL/GSS/cancel request)
    kLookup,        // waiting for the user's credential
    kMd5Response,   // md5 challenge sent
    kSaslInitial,   // AuthenticationSASL sent, waiting for SASLInitialResponse
    kSaslResponse,  // server-first-message sent, waiting for the client-final-message
    kDone,          // authenticated
    kFailed,        // refused
  };

  Next OnStartupPacket(const pgwire::StartupPacket& p, std::string* out);
  Next TakeParameters(const pgwire::StartupPacket& p, std::string* out);
  Next BeginAuth(std::string* out);
  Next OnAuthMessage(std::string_view body, std::string* out);
  Next Succeed(std::string* out);
  // Logs the failed login (rate-limited) and appends the FATAL.
  Next Fail(std::string_view sqlstate, std::string_view message, std::string_view why,
            std::string* out, std::string_view hint = {});

  Proxy& proxy_;
  std::shared_ptr<const ProxyConfig> cfg_holder_;
  const ProxyConfig& cfg_;
  ClientAddress address_;
  bool tls_ = false;
  Step step_ = Step::kStartup;
  std::string in_;
  std::string user_, database_;
  bool admin_ = false, may_modify_ = false;
  Pool* pool_ = nullptr;
  std::vector<std::pair<int, std::string>> parameters_;
  AuthMethod method_ = AuthMethod::kScram;
  std::optional<pgwire::UserCredential> credential_;
  std::unique_ptr<pgwire::ScramServer> scram_;
  std::string scram_server_key_;
  uint8_t md5_salt_[4] = {0, 0, 0, 0};
  int32_t cancel_pid_ = 0, cancel_key_ = 0;
};

}  // namespace pgwarden::proxy
