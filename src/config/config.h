// The cluster configuration: Patroni's YAML shape, loaded and validated.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace YAML {
class Node;
}  // namespace YAML

namespace pgwarden::config {

// A "host:port" pair ("[::1]:5432" for IPv6).
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // "host:port", brackets around IPv6
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

// One or more configuration problems; what() lists them, one per line, each
// naming the file, the key and (when known) its line.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// `restapi:`
struct RestApiConfig {
  HostPort listen;              // where the REST API listens
  std::string connect_address;  // host:port others use to reach it (default: listen)
};

// `etcd3:` (also accepted under `etcd:`)
struct EtcdConfig {
  std::vector<HostPort> hosts;    // `hosts` (list or comma-separated) or `host`
  std::string protocol = "http";  // only http is supported for now (no TLS, no auth yet)
};

// `bootstrap.dcs:` — the dynamic configuration, stored in etcd's `config` key.
struct DcsConfig {
  int ttl = 30;                                // leader lease, seconds
  int loop_wait = 10;                          // seconds between HA cycles
  int retry_timeout = 10;                      // seconds an etcd or PostgreSQL operation may retry
  uint64_t maximum_lag_on_failover = 1048576;  // bytes
  bool synchronous_mode = false;               // keep one synchronous standby
  bool use_pg_rewind = false;                  // `postgresql.use_pg_rewind`
  bool use_slots = true;        // `postgresql.use_slots`: one physical slot per member
  int member_slots_ttl = 1800;  // seconds a departed member's slot is kept
  // Checks (a second apart) in which both the leader's PostgreSQL and REST
  // ports must refuse connections before a standby deletes its key without
  // waiting out the ttl; 0: never (wait for the lease). See docs/failover.md.
  int confirmed_death_checks = 3;
  std::map<std::string, std::string> parameters;  // `postgresql.parameters`
};

// `postgresql.authentication.<role>:`
struct RoleAuth {
  std::string username;
  std::string password;
};

// `postgresql:`
struct PostgresqlConfig {
  HostPort listen;              // listen_addresses / port
  std::string connect_address;  // host:port others use (default: listen)
  std::string data_dir;         // required
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  std::string os_user = "postgres";  // OS user PostgreSQL runs as when pgwarden is root
  std::string log_file;              // PostgreSQL's stderr; default: <data_dir>.log
  RoleAuth superuser{"postgres", ""};
  RoleAuth replication{"replicator", ""};
  RoleAuth rewind;  // optional pg_rewind role; empty username: use the superuser
  std::map<std::string, std::string> parameters;  // local postgresql.conf settings
  std::vector<std::string> pg_hba;  // extra pg_hba.conf lines (added before the defaults)
};

// `watchdog.mode`: how the node agent guards a leading PostgreSQL against a
// frozen agent (Patroni's modes).
enum class WatchdogMode {
  kOff,        // no watchdog: a frozen leader agent cannot fence itself
  kAutomatic,  // the software watchdog process, plus /dev/watchdog when it can be opened
  kRequired,   // the software watchdog and /dev/watchdog; without the device the node must not lead
};

// Patroni's spellings, in any case: "off" (also disable, disabled, false, no),
// "automatic" (also auto), "required" (also require); nullopt for anything else.
std::optional<WatchdogMode> ParseWatchdogMode(const std::string& text);
// "off" | "automatic" | "required"
const char* WatchdogModeName(WatchdogMode mode);

// `watchdog:`
struct WatchdogConfig {
  WatchdogMode mode = WatchdogMode::kAutomatic;
  std::string device = "/dev/watchdog";  // the Linux watchdog device
  // Seconds between the watchdog's deadline and the leader lease's expiry:
  // PostgreSQL is stopped this long before another member may take over.
  // Patroni's -1 (half the ttl) is resolved here, so this is >= 0.
  int safety_margin = 5;
};

// `bootstrap:`
struct BootstrapConfig {
  DcsConfig dcs;
  // initdb options, as Patroni writes them: "encoding: UTF8" → --encoding=UTF8,
  // "data-checksums" → --data-checksums. Checksums are on unless
  // `no-data-checksums` is given.
  std::vector<std::string> initdb_args;
  // `bootstrap.pg_hba` (older Patroni place); also copied into
  // postgresql.pg_hba when that is empty.
  std::vector<std::string> pg_hba;
};

// The whole file.
struct Config {
  std::string source_path;  // the file it was loaded from
  std::string scope;        // cluster name
  std::string namespace_ = "/service/";
  std::string name;  // this member's name
  RestApiConfig restapi;
  EtcdConfig etcd;
  BootstrapConfig bootstrap;
  PostgresqlConfig postgresql;
  WatchdogConfig watchdog;
  std::map<std::string, std::string> tags;  // nofailover, noloadbalance, nosync, ...
  std::string log_level = "info";           // `log.level`, normalised: debug | info | warn | error
  // The raw `proxy:` section (nullptr when absent); its nodes keep their
  // Mark() line numbers so the proxy can report errors against the file.
  std::shared_ptr<const YAML::Node> proxy_yaml;

  // The etcd key prefix of this cluster: "/service/<scope>/".
  std::string KeyPrefix() const;
  // "postgres://host:port/postgres" of this member (connect_address).
  std::string ConnUrl() const;
  // "http://host:port/patroni" of this member's REST API.
  std::string ApiUrl() const;
};

// What the loader checks. A full node config needs name and data_dir; a CLI
// command that only reads the cluster (status, dsn) needs scope and etcd.
enum class ConfigUse {
  kNode,    // pgwarden node: everything
  kClient,  // status / dsn / down: scope and etcd3 suffice
  kProxy,   // pgwarden proxy: scope and the proxy section (etcd3 optional)
};

// The largest configuration file LoadConfigFile reads. Real ones are a few
// KiB; without a limit a mistaken path (a dump, /dev/zero) eats the memory.
inline constexpr size_t kMaxConfigFileBytes = 1024 * 1024;

// Loads and validates a YAML file, then applies PGWARDEN_* / PATRONI_*
// environment overrides. Throws ConfigError listing every problem found; a
// path that is not a regular file, or one over kMaxConfigFileBytes, is refused.
Config LoadConfigFile(const std::string& path, ConfigUse use = ConfigUse::kNode);
// Same, from text (`source_name` is used in messages).
Config LoadConfigText(const std::string& yaml, const std::string& source_name,
                      ConfigUse use = ConfigUse::kNode);

// Host and port of a "postgres://[user@]host:port/..." URL; nullopt when it has none.
std::optional<HostPort> HostPortOfUrl(const std::string& url);

// Parses "host:port" / "[v6]:port"; throws ConfigError naming `what` when bad.
HostPort ParseHostPort(const std::string& text, const std::string& what);

}  // namespace pgwarden::config
