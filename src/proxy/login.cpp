// ClientLogin: startup packet, hba method, md5 / SCRAM with mock authentication, parameters.
#include "proxy/login.h"

#include <openssl/rand.h>

#include <algorithm>

#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/session_params.h"

namespace pgwarden::proxy {
namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// NegotiateProtocolVersion: the newest version we speak (3.0) and the
// protocol options (_pq_.*) we do not know.
void AppendNegotiateProtocolVersion(std::string& out, const std::vector<std::string>& unknown) {
  pgwire::Writer w(out);
  size_t start = w.Begin('v');
  w.Int32(pgwire::kProtocolVersion3);
  w.Int32(static_cast<int32_t>(unknown.size()));
  for (const auto& o : unknown) w.CString(o);
  w.Finish(start);
}

}  // namespace

ClientLogin::Next ClientLogin::OnBytes(std::string_view data, std::string* out) {
  in_.append(data);
  const uint32_t max = std::min<uint32_t>(cfg_.max_packet_size, 10004);
  while (!in_.empty()) {
    if (step_ == Step::kStartup) {
      pgwire::StartupPacket p;
      size_t used = 0;
      std::string error;
      auto st = pgwire::DecodeStartupPacket(in_, max, &p, &used, &error);
      if (st == pgwire::DecodeStatus::kNeedMoreData) return Next::kMore;
      if (st == pgwire::DecodeStatus::kError) {
        // PostgreSQL only logs a bad length (a Terminate, or no PostgreSQL
        // client at all) and closes; other errors it reports.
        if (error.rfind("invalid length", 0) == 0) {
          step_ = Step::kFailed;
          return Next::kSilentClose;
        }
        bool no_user = error.find("user name") != std::string::npos;
        return Fail(no_user ? "28000" : "08P01", error, "invalid startup packet", out);
      }
      in_.erase(0, used);
      Next next = OnStartupPacket(p, out);
      if (next != Next::kMore) return next;
      continue;
    }
    if (step_ == Step::kMd5Response || step_ == Step::kSaslInitial ||
        step_ == Step::kSaslResponse) {
      pgwire::Header h;
      auto st = pgwire::DecodeHeader(in_, max, &h);
      if (st == pgwire::DecodeStatus::kNeedMoreData ||
          (st == pgwire::DecodeStatus::kReady && in_.size() < h.wire_size()))
        return Next::kMore;
      if (st == pgwire::DecodeStatus::kError || h.type != 'p')
        return Fail("08P01", "invalid authentication message", "protocol violation", out);
      std::string body = in_.substr(5, h.body_size());
      in_.erase(0, h.wire_size());
      Next next = OnAuthMessage(body, out);
      if (next != Next::kMore) return next;
      continue;
    }
    return Next::kMore;  // kLookup: the bytes wait for the credential
  }
  if (in_.empty()) in_.shrink_to_fit();
  return Next::kMore;
}

ClientLogin::Next ClientLogin::OnStartupPacket(const pgwire::StartupPacket& p, std::string* out) {
  using Kind = pgwire::StartupPacket::Kind;
  switch (p.kind) {
    case Kind::kSslRequest:
      return Next::kSslRequest;
    case Kind::kGssEncRequest:
      return Next::kGssRequest;
    case Kind::kCancel:
      cancel_pid_ = p.cancel_pid;
      cancel_key_ = p.cancel_key;
      step_ = Step::kFailed;
      return Next::kCancel;
    case Kind::kStartup:
      break;
  }
  user_ = p.Get("user").value_or("");
  database_ = p.Get("database").value_or(user_);
  if (!tls_ && cfg_.client_tls.sslmode == "require")
    return Fail("28000", "the proxy requires TLS (proxy.client_tls.sslmode: require)", "no TLS",
                out);
  if (p.Get("replication"))
    return Fail("08P01", "replication connections are not supported through the proxy",
                "replication connection", out);
  admin_ = database_ == "pgwarden";
  Next next = TakeParameters(p, out);
  if (next != Next::kMore) return next;
  method_ = proxy_.MethodFor(database_, user_, address_.ipv4, address_.is_ipv4);
  if (method_ == AuthMethod::kReject)
    return Fail("28000",
                "no hba rule allows user \"" + user_ + "\" to database \"" + database_ + "\"",
                "no hba rule", out);
  step_ = Step::kLookup;
  return Next::kLookup;
}

ClientLogin::Next ClientLogin::TakeParameters(const pgwire::StartupPacket& p, std::string* out) {
  // Options first, then the packet's own parameters, which override them
  // (PostgreSQL's process_startup_options order).
  std::vector<std::pair<std::string, std::string>> wanted;
  std::vector<std::string> unknown_protocol_options;
  if (auto options = p.Get("options")) {
    auto parsed = ParseStartupOptions(*options);
    if (!parsed.ok()) return Fail("08P01", parsed.status().message(), "bad options", out);
    wanted = std::move(*parsed);
  }
  for (const auto& [k, v] : p.parameters) {
    if (k == "user" || k == "database" || k == "options" || k == "replication") continue;
    if (k.rfind("_pq_.", 0) == 0) {
      unknown_protocol_options.push_back(k);
      continue;
    }
    wanted.emplace_back(k, v);
  }
  const int32_t minor = p.protocol & 0xffff;
  if (minor > 0 || !unknown_protocol_options.empty())
    AppendNegotiateProtocolVersion(*out, unknown_protocol_options);
  if (admin_) return Next::kMore;  // the console has no session parameters
  const ParamCatalog& catalog = proxy_.params();
  for (auto& kv : wanted) {
    const std::string& name =
        kv.first;  // (a lambda cannot capture a structured binding in clang 14)
    std::string& value = kv.second;
    bool ignored =
        std::any_of(cfg_.ignore_startup_parameters.begin(), cfg_.ignore_startup_parameters.end(),
                    [&](const std::string& i) { return EqualsIgnoreCase(i, name); });
    if (ignored) continue;
    int id = catalog.Find(name);
    if (id < 0)
      return Fail("08P01", "unsupported startup parameter: " + name,
                  "unsupported startup parameter", out,
                  "The proxy carries only the parameters it tracks from one server connection "
                  "to the next: add it to proxy.track_extra_parameters, or have the proxy drop "
                  "it with proxy.ignore_startup_parameters.");
    if (id == catalog.application_name_id()) value = CanonicalApplicationName(value);
    auto same = std::find_if(parameters_.begin(), parameters_.end(),
                             [id = id](const auto& kv) { return kv.first == id; });
    if (same != parameters_.end())
      same->second = value;
    else
      parameters_.emplace_back(id, value);
  }
  return Next::kMore;
}

ClientLogin::Next ClientLogin::OnCredential(Result<pgwire::UserCredential> cred, std::string* out) {
  if (step_ != Step::kLookup) return Next::kMore;
  if (cred.ok()) {
    credential_ = *cred;
  } else if (cred.status().code() != ErrorCode::kNotFound) {
    proxy_.LogLoginProblem("credential lookup for user \"" + user_ +
                           "\" failed: " + cred.status().message());
  }
  Next next = BeginAuth(out);
  if (next != Next::kMore) return next;
  return OnBytes({}, out);  // what the client sent meanwhile
}

ClientLogin::Next ClientLogin::BeginAuth(std::string* out) {
  if (method_ == AuthMethod::kTrust) return Succeed(out);
  using Kind = pgwire::UserCredential::Kind;
  if (method_ == AuthMethod::kMd5 && credential_ && credential_->kind != Kind::kScram) {
    RAND_bytes(md5_salt_, 4);
    pgwire::AppendAuthenticationMd5(*out, md5_salt_);
    step_ = Step::kMd5Response;
    return Next::kMore;
  }
  // SCRAM against the stored secret or one made from a plain password; for
  // an unknown user (or one with only an md5 hash) the mock secret, whose salt
  // is the same on every attempt, as PostgreSQL's mock authentication.
  std::optional<pgwire::ScramSecret> secret;
  if (credential_ && credential_->kind == Kind::kScram)
    secret = pgwire::ParseScramSecret(credential_->value);
  else if (credential_ && credential_->kind == Kind::kPlain)
    // A plain password has no salt of its own: take the one the mock secret
    // would give this name, so that it is as stable as a stored secret's.
    secret = pgwire::MakeScramSecret(credential_->value,
                                     pgwire::MockScramSecret(user_, proxy_.mock_secret()).salt);
  if (!secret) secret = pgwire::MockScramSecret(user_, proxy_.mock_secret());
  scram_server_key_ = secret->server_key;
  scram_ = std::make_unique<pgwire::ScramServer>(*secret);
  pgwire::AppendAuthenticationSasl(*out);
  step_ = Step::kSaslInitial;
  return Next::kMore;
}

ClientLogin::Next ClientLogin::OnAuthMessage(std::string_view body, std::string* out) {
  const std::string wrong = "password authentication failed for user \"" + user_ + "\"";
  switch (step_) {
    case Step::kMd5Response: {
      std::string given(body.substr(0, body.find('\0')));
      std::string stored = credential_->kind == pgwire::UserCredential::Kind::kMd5
                               ? credential_->value
                               : pgwire::Md5PasswordHash(credential_->value, user_);
      if (!pgwire::SecureEquals(given, pgwire::Md5SaltedResponse(stored, md5_salt_)))
        return Fail("28P01", wrong, "wrong password (md5)", out);
      return Succeed(out);
    }
    case Step::kSaslInitial: {  // mechanism, int32 length, client-first-message
      size_t pos = 0;
      std::string_view mech;
      int32_t len = 0;
      if (!pgwire::ReadCString(body, &pos, &mech) || !pgwire::ReadInt32(body, &pos, &len) ||
          mech != "SCRAM-SHA-256" || len < 0 || pos + static_cast<size_t>(len) > body.size())
        return Fail("08P01", "invalid SASL initial response (only SCRAM-SHA-256 is supported)",
                    "bad SASL message", out);
      auto r = scram_->HandleClientFirst(body.substr(pos, static_cast<size_t>(len)));
      if (!r.ok()) return Fail("08P01", "SCRAM: " + r.status().message(), "bad SCRAM", out);
      pgwire::AppendAuthenticationSaslContinue(*out, *r);
      step_ = Step::kSaslResponse;
      return Next::kMore;
    }
    case Step::kSaslResponse: {
      auto r = scram_->HandleClientFinal(body);
      if (!r.ok())
        return Fail("28P01", wrong, credential_ ? "wrong password (SCRAM)" : "unknown user", out);
      pgwire::AppendAuthenticationSaslFinal(*out, *r);
      return Succeed(out);
    }
    default:
      return Fail("08P01", "unexpected authentication message", "protocol violation", out);
  }
}

ClientLogin::Next ClientLogin::Succeed(std::string* out) {
  pgwire::AppendAuthenticationOk(*out);
  // As PostgreSQL, what the authenticated user may do is told only now:
  // a refusal before authentication would tell strangers who the admins are.
  if (admin_) {
    may_modify_ = proxy_.IsAdmin(user_);
    if (!may_modify_ && !proxy_.IsStatsUser(user_))
      return Fail("28000", "user \"" + user_ + "\" is not allowed to use the admin console",
                  "not an admin", out);
    scram_.reset();
    step_ = Step::kDone;
    return Next::kDone;
  }
  pool_ = proxy_.FindOrCreatePool(database_, user_);
  if (pool_ == nullptr)
    return Fail("3D000", "database \"" + database_ + "\" does not exist in the proxy configuration",
                "unknown database", out);
  // The pool learns how to log in to the server as this user.
  if (!pool_->has_credentials()) {
    const DatabaseConfig& db = pool_->db();
    ServerTarget t;
    t.host = db.host;
    t.port = db.port;
    t.database = db.dbname.empty() ? database_ : db.dbname;
    t.user = db.user.empty() ? user_ : db.user;
    if (!db.user.empty()) {
      t.password = db.password;
    } else if (credential_ && credential_->kind != pgwire::UserCredential::Kind::kScram) {
      t.password = credential_->value;  // plain, or an md5 hash the server's md5 accepts
    } else if (scram_ && !scram_->client_key().empty()) {
      t.scram_client_key = scram_->client_key();
      t.scram_server_key = scram_server_key_;
    }
    pool_->SetTarget(std::move(t));
  }
  scram_.reset();
  step_ = Step::kDone;
  return Next::kDone;
}

ClientLogin::Next ClientLogin::Fail(std::string_view sqlstate, std::string_view message,
                                    std::string_view why, std::string* out, std::string_view hint) {
  proxy_.LogFailedLogin(user_, database_, address_.host, why);
  pgwire::AppendErrorResponse(*out, "FATAL", sqlstate, message, {}, hint);
  step_ = Step::kFailed;
  scram_.reset();
  return Next::kFail;
}

}  // namespace pgwarden::proxy
