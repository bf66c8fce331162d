// TLS for the proxy's connections: OpenSSL over memory BIOs, so the event loop keeps doing the
// socket I/O.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "proxy/proxy_config.h"

struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace pgwarden::proxy {

// An SSL_CTX for one side (clients: server role; servers: client role).
// Immutable after creation; shared by every connection of that side.
class TlsContext {
 public:
  ~TlsContext();
  // Server role, for clients: cert_file and key_file are required.
  static Result<std::shared_ptr<TlsContext>> ForClients(const TlsConfig& cfg);
  // Client role, for servers: verify-ca / verify-full check against ca_file.
  static Result<std::shared_ptr<TlsContext>> ForServers(const TlsConfig& cfg);
  ssl_ctx_st* ctx() const { return ctx_; }
  bool verify_host() const { return verify_host_; }

 private:
  ssl_ctx_st* ctx_ = nullptr;
  bool verify_host_ = false;
};

// One TLS session. Raw bytes from the socket go in with Feed(); plaintext
// comes out, and whatever the protocol must send back (handshake, alerts,
// encrypted data) is appended to `raw_out` for the caller to send. Owned by
// one connection; used by one thread at a time.
class TlsStream {
 public:
  // `server`: we accept (a client connected to us); else we connect to
  // `host` (used for SNI and, with verify-full, the name check).
  TlsStream(const TlsContext& ctx, bool server, const std::string& host = {});
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Starts a client-role handshake (appends the ClientHello to raw_out).
  Status Start(std::string* raw_out);
  // Decrypts what `raw` completes; appends plaintext and bytes to send.
  // InvalidArgument on a TLS protocol error (message from OpenSSL); a
  // close_notify from the peer sets closed().
  Status Feed(std::string_view raw, std::string* plain, std::string* raw_out);
  // Encrypts `plain` (after the handshake) into raw_out.
  Status Encrypt(std::string_view plain, std::string* raw_out);
  bool handshake_done() const { return handshake_done_; }
  bool closed() const { return closed_; }

 private:
  // Moves what OpenSSL wrote for the network into raw_out.
  void Pump(std::string* raw_out);
  Status Advance(std::string* plain, std::string* raw_out);

  ssl_st* ssl_ = nullptr;
  bio_st* in_ = nullptr;   // raw bytes from the network (owned by ssl_)
  bio_st* out_ = nullptr;  // raw bytes for the network (owned by ssl_)
  bool handshake_done_ = false;
  bool closed_ = false;
  std::string pending_plain_;  // written before the handshake finished
};

}  // namespace pgwarden::proxy
