// The `proxy:` section of the cluster YAML: listeners, databases, pools, auth, limits.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace pgwarden::proxy {

using Seconds = std::chrono::milliseconds;  // durations are kept in milliseconds

// How a server connection is lent to a client.
enum class PoolMode {
  kSession,      // for the client's whole session
  kTransaction,  // for one transaction at a time (default)
};

// How a client proves who it is.
enum class AuthMethod {
  kTrust,   // no password
  kMd5,     // md5 challenge (falls back to SCRAM when only a SCRAM secret is known)
  kScram,   // SCRAM-SHA-256
  kReject,  // refused
};

// One hba-style rule: "host <db> <user> <address/mask> <method>" or "local ...".
struct HbaRule {
  bool local = false;                  // unix socket (not served yet) vs host
  std::vector<std::string> databases;  // "all" matches any
  std::vector<std::string> users;      // "all" matches any
  uint32_t addr = 0, mask = 0;         // IPv4 network (host rules)
  bool any_address = false;            // "all" / 0.0.0.0/0
  AuthMethod method = AuthMethod::kScram;
  int line = 0;  // YAML line, for messages
};

// A database clients can name, and the server it maps to.
struct DatabaseConfig {
  std::string name;  // what clients ask for ("*": any other)
  std::string host = "127.0.0.1";
  uint16_t port = 5432;
  std::string dbname;    // on the server (default: name)
  std::string user;      // force this server user (default: the client's)
  std::string password;  // for `user`
  std::optional<int> pool_size;
  std::optional<PoolMode> pool_mode;
};

// TLS settings of one side.
struct TlsConfig {
  std::string sslmode = "disable";  // disable | allow | prefer | require | verify-ca | verify-full
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
};

struct ProxyConfig {
  config::HostPort listen{"127.0.0.1", 6432};
  int workers = 0;  // 0: one per core
  // Share of one core above which a worker hands idle clients to a quieter
  // one; below it clients are packed onto few workers (see PlanBalance). 0:
  // clients are dealt round robin and stay where they are.
  double worker_busy = 0.75;
  PoolMode pool_mode = PoolMode::kTransaction;
  int default_pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  Seconds reserve_pool_timeout{5000};
  int max_client_conn = 10000;
  int max_db_connections = 0;  // 0: unlimited
  Seconds server_lifetime{3600 * 1000};
  Seconds server_idle_timeout{600 * 1000};
  Seconds query_wait_timeout{120 * 1000};
  Seconds client_login_timeout{60 * 1000};
  // A client that leaves a protocol message unfinished (while holding a
  // server connection) with no progress for this long is disconnected.
  Seconds client_message_timeout{30 * 1000};
  Seconds server_connect_timeout{15 * 1000};
  Seconds shutdown_timeout{30 * 1000};  // SIGTERM: how long transactions may finish
  // Session mode, and a transaction-mode client that kept its server: run when
  // the client leaves; a server whose reset fails is closed. Empty: the
  // server is closed instead (never handed to another client unreset).
  std::string server_reset_query = "DISCARD ALL";
  // Parameters PostgreSQL does not report that are still carried from one
  // server connection to the next (PgBouncer's track_extra_parameters); a
  // client that SETs any other unreported parameter keeps its server.
  std::vector<std::string> track_extra_parameters = {
      "search_path", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
      "extra_float_digits"};
  // Startup parameters dropped without an error (any other untracked one is refused).
  std::vector<std::string> ignore_startup_parameters;
  std::string server_check_query = "select 1";
  Seconds server_check_delay{30 * 1000};
  uint32_t max_packet_size = 256u << 20;  // bytes of one protocol message
  AuthMethod auth_type = AuthMethod::kScram;
  std::vector<HbaRule> hba;  // empty: auth_type for everyone
  std::string auth_file;     // userlist.txt
  std::string auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
  std::string auth_user;  // runs auth_query; empty: no auth_query
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  std::optional<config::HostPort> metrics_listen;  // Prometheus /metrics
  TlsConfig client_tls;
  TlsConfig server_tls;
  std::map<std::string, DatabaseConfig> databases;  // by client-side name
};

// Parses `proxy:` (nullptr: all defaults). `server` is the PostgreSQL the
// default "*" database points at when `databases` is not given (the node's
// postgresql.connect_address, or 127.0.0.1:5432). Throws config::ConfigError
// naming each bad key with its line.
ProxyConfig ParseProxyConfig(const config::Config& cluster);

const char* PoolModeName(PoolMode m);
const char* AuthMethodName(AuthMethod m);

}  // namespace pgwarden::proxy
