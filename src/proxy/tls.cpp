// OpenSSL contexts and memory-BIO sessions.
#include "proxy/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace pgwarden::proxy {
namespace {

std::string OpenSslError(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256];
  if (e == 0) return what;
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return std::string(what) + ": " + buf;
}

}  // namespace

TlsContext::~TlsContext() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

Result<std::shared_ptr<TlsContext>> TlsContext::ForClients(const TlsConfig& cfg) {
  if (cfg.cert_file.empty() || cfg.key_file.empty()) {
    return InvalidArgument("proxy.client_tls needs cert_file and key_file for sslmode " +
                           cfg.sslmode);
  }
  auto t = std::shared_ptr<TlsContext>(new TlsContext());
  t->ctx_ = SSL_CTX_new(TLS_server_method());
  if (t->ctx_ == nullptr) return Fatal(OpenSslError("SSL_CTX_new"));
  SSL_CTX_set_min_proto_version(t->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(t->ctx_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(t->ctx_, cfg.cert_file.c_str()) != 1) {
    return InvalidArgument(OpenSslError(("proxy.client_tls.cert_file " + cfg.cert_file).c_str()));
  }
  if (SSL_CTX_use_PrivateKey_file(t->ctx_, cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return InvalidArgument(OpenSslError(("proxy.client_tls.key_file " + cfg.key_file).c_str()));
  }
  if (SSL_CTX_check_private_key(t->ctx_) != 1) {
    return InvalidArgument("proxy.client_tls: the key does not match the certificate");
  }
  return t;
}

Result<std::shared_ptr<TlsContext>> TlsContext::ForServers(const TlsConfig& cfg) {
  auto t = std::shared_ptr<TlsContext>(new TlsContext());
  t->ctx_ = SSL_CTX_new(TLS_client_method());
  if (t->ctx_ == nullptr) return Fatal(OpenSslError("SSL_CTX_new"));
  SSL_CTX_set_min_proto_version(t->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(t->ctx_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  bool verify = cfg.sslmode == "verify-ca" || cfg.sslmode == "verify-full";
  if (verify) {
    if (cfg.ca_file.empty()) {
      return InvalidArgument("proxy.server_tls.sslmode " + cfg.sslmode + " needs ca_file");
    }
    if (SSL_CTX_load_verify_locations(t->ctx_, cfg.ca_file.c_str(), nullptr) != 1) {
      return InvalidArgument(OpenSslError(("proxy.server_tls.ca_file " + cfg.ca_file).c_str()));
    }
    SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_NONE, nullptr);
  }
  t->verify_host_ = cfg.sslmode == "verify-full";
  if (!cfg.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(t->ctx_, cfg.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(t->ctx_, cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
    return InvalidArgument(OpenSslError("proxy.server_tls client certificate"));
  }
  return t;
}

TlsStream::TlsStream(const TlsContext& ctx, bool server, const std::string& host) {
  ssl_ = SSL_new(ctx.ctx());
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    if (!host.empty()) {
      SSL_set_tlsext_host_name(ssl_, host.c_str());
      if (ctx.verify_host()) SSL_set1_host(ssl_, host.c_str());
    }
  }
}

TlsStream::~TlsStream() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees the BIOs too
}

void TlsStream::Pump(std::string* raw_out) {
  char buf[16384];
  for (;;) {
    int n = BIO_read(out_, buf, sizeof buf);
    if (n <= 0) break;
    raw_out->append(buf, static_cast<size_t>(n));
  }
}

Status TlsStream::Start(std::string* raw_out) {
  std::string none;
  return Advance(&none, raw_out);
}

Status TlsStream::Advance(std::string* plain, std::string* raw_out) {
  if (!handshake_done_) {
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      handshake_done_ = true;
    } else {
      int e = SSL_get_error(ssl_, r);
      Pump(raw_out);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::Ok();
      return InvalidArgument(OpenSslError("TLS handshake failed"));
    }
  }
  char buf[16384];
  for (;;) {
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n > 0) {
      plain->append(buf, static_cast<size_t>(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      closed_ = true;
      break;
    }
    Pump(raw_out);
    return InvalidArgument(OpenSslError("TLS error"));
  }
  if (!pending_plain_.empty()) {
    std::string p = std::move(pending_plain_);
    pending_plain_.clear();
    PGW_RETURN_IF_ERROR(Encrypt(p, raw_out));
  }
  Pump(raw_out);
  return Status::Ok();
}

Status TlsStream::Feed(std::string_view raw, std::string* plain, std::string* raw_out) {
  if (!raw.empty() && BIO_write(in_, raw.data(), static_cast<int>(raw.size())) <= 0) {
    return Fatal("BIO_write failed");
  }
  return Advance(plain, raw_out);
}

Status TlsStream::Encrypt(std::string_view plain, std::string* raw_out) {
  if (!handshake_done_) {
    pending_plain_.append(plain);
    return Status::Ok();
  }
  size_t off = 0;
  while (off < plain.size()) {
    int n = SSL_write(ssl_, plain.data() + off, static_cast<int>(plain.size() - off));
    if (n <= 0) return InvalidArgument(OpenSslError("TLS write failed"));
    off += static_cast<size_t>(n);
  }
  Pump(raw_out);
  return Status::Ok();
}

}  // namespace pgwarden::proxy
