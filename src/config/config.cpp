// Configuration loading: Patroni-shaped YAML → Config, environment overrides, validation.
#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "common/units.h"

namespace pgwarden::config {
namespace {

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) {
    if (!out.empty()) out += '\n';
    out += line;
  }
  return out;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string JoinPath(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// Hosts that listen on every interface; nobody can connect to them by that name.
bool IsWildcardHost(const std::string& host) {
  return host == "0.0.0.0" || host == "::" || host == "*";
}

// "host:port" / "[v6]:port" → HostPort; nullopt with `*error` set when bad.
std::optional<HostPort> TryParseHostPort(std::string_view raw, std::string* error) {
  const std::string text = Trim(raw);
  if (text.empty()) {
    *error = "expected host:port, got an empty value";
    return std::nullopt;
  }
  std::string host;
  std::string port;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos) {
      *error = "missing ']' in '" + text + "' (expected [v6-address]:port)";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    const std::string rest = text.substr(close + 1);
    if (rest.empty() || rest == ":") {
      *error = "missing port in '" + text + "' (expected host:port)";
      return std::nullopt;
    }
    if (rest.front() != ':') {
      *error = "expected ':' after ']' in '" + text + "'";
      return std::nullopt;
    }
    port = rest.substr(1);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon + 1 == text.size()) {
      *error = "missing port in '" + text + "' (expected host:port)";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      *error = "an IPv6 address needs brackets, as in [::1]:5432; got '" + text + "'";
      return std::nullopt;
    }
  }
  if (host.empty()) {
    *error = "empty host in '" + text + "' (expected host:port)";
    return std::nullopt;
  }
  if (host.find_first_of(" \t/[]") != std::string::npos) {
    *error = "bad host '" + host + "' in '" + text + "'";
    return std::nullopt;
  }
  unsigned long number = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (ec != std::errc() || ptr != port.data() + port.size() || number < 1 || number > 65535) {
    *error = "port must be a number from 1 to 65535, got '" + port + "' in '" + text + "'";
    return std::nullopt;
  }
  return HostPort{host, static_cast<uint16_t>(number)};
}

// How a node looks, for "expected X, got Y" messages.
std::string Describe(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  return "nothing";
}

std::optional<bool> ParseBool(const std::string& text) {
  const std::string t = Lower(Trim(text));
  if (t == "true" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "no" || t == "off") return false;
  return std::nullopt;
}

std::optional<int> ParseInt(const std::string& raw) {
  std::string text = Trim(raw);
  if (!text.empty() && text.front() == '+') text.erase(0, 1);
  int value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

// A value that can also come from the environment, with where it came from.
struct Sourced {
  std::string text;
  std::string where;  // "cluster.yml:12", "environment PGWARDEN_NAME", or "" when unset
  std::string key;    // dotted key, e.g. "etcd3.hosts[1]"
};

// One load: parse, override, validate. Collects problems instead of stopping.
// Owned by one call of LoadConfigText; single-threaded.
class Loader {
 public:
  Loader(std::string source, ConfigUse use) : source_(std::move(source)), use_(use) {
    cfg_.source_path = source_;
  }

  void AddProblem(const std::string& where, const std::string& key, const std::string& message) {
    std::string line = where.empty() ? source_ : where;
    if (!key.empty()) line += ": " + key;
    problems_.push_back(line + ": " + message);
  }

  // Returns false when there is no usable document (syntax error, empty).
  bool ParseDocument(const std::string& text);
  void ApplyEnvironment();
  void ValidateAndDefault();

  Config Finish() {
    if (!problems_.empty()) throw ConfigError(std::move(problems_));
    return std::move(cfg_);
  }

 private:
  // (key, dotted path, location of the key, value) → false if the key is unknown.
  using KeyHandler = std::function<bool(const std::string& key, const std::string& path,
                                        const std::string& where, const YAML::Node& value)>;

  std::string At(const YAML::Node& node) const {
    const YAML::Mark mark = node.Mark();
    if (mark.line < 0) return source_;
    return source_ + ":" + std::to_string(mark.line + 1);
  }

  void Bad(const std::string& where, const std::string& path, const std::string& message) {
    bad_keys_.insert(path);
    AddProblem(where, path, message);
  }

  void WalkMap(const YAML::Node& node, const std::string& path, const std::string& where,
               const KeyHandler& handle);
  void ReadString(const YAML::Node& v, const std::string& path, const std::string& where,
                  std::string* out);
  void ReadSourced(const YAML::Node& v, const std::string& path, const std::string& where,
                   Sourced* out);
  void ReadInt(const YAML::Node& v, const std::string& path, const std::string& where, int* out);
  void ReadBool(const YAML::Node& v, const std::string& path, const std::string& where, bool* out);
  void ReadStringList(const YAML::Node& v, const std::string& path, const std::string& where,
                      std::vector<std::string>* out);
  void ReadScalarMap(const YAML::Node& v, const std::string& path, const std::string& where,
                     std::map<std::string, std::string>* out);

  void ParseRoot(const YAML::Node& root);
  void ParseEtcd(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParseEtcdHosts(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParseBootstrap(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParseDcs(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParseInitdb(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParsePostgresql(const YAML::Node& v, const std::string& path, const std::string& where);
  void ParseRole(const YAML::Node& v, const std::string& path, const std::string& where,
                 RoleAuth* out);
  void ParseWatchdog(const YAML::Node& v, const std::string& path, const std::string& where);

  void ValidateListen(const Sourced& listen, Sourced connect, HostPort* listen_out,
                      std::string* connect_out);

  const std::string source_;
  const ConfigUse use_;
  Config cfg_;
  std::vector<std::string> problems_;
  std::set<std::string> bad_keys_;  // keys whose value was rejected (defaults kept)

  // Values validated after the environment overrides: text and origin.
  Sourced scope_, name_, namespace_, log_level_, data_dir_;
  Sourced restapi_listen_, restapi_connect_, pg_listen_, pg_connect_;
  std::vector<Sourced> etcd_hosts_;
  std::string etcd_key_;                      // "etcd3" or "etcd", whichever the file used
  std::map<std::string, std::string> where_;  // dotted key → location, for later checks
  std::optional<bool> dcs_use_pg_rewind_, pg_use_pg_rewind_;
  std::vector<std::pair<std::string, std::string>> initdb_items_;  // (arg, location)
};

void Loader::WalkMap(const YAML::Node& node, const std::string& path, const std::string& where,
                     const KeyHandler& handle) {
  if (node.IsNull()) return;  // "key:" with nothing under it: an empty map
  if (!node.IsMap()) {
    Bad(where, path, "expected a map, got " + Describe(node));
    return;
  }
  std::map<std::string, std::string> seen;  // key → location of its first occurrence
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node& key_node = it->first;
    const std::string key_where = At(key_node);
    if (!key_node.IsScalar()) {
      AddProblem(key_where, path, "a key must be a plain name, got " + Describe(key_node));
      continue;
    }
    const std::string key = key_node.Scalar();
    const std::string child = JoinPath(path, key);
    if (auto [pos, inserted] = seen.emplace(key, key_where); !inserted) {
      AddProblem(key_where, child, "duplicate key (first given at " + pos->second + ")");
      continue;
    }
    if (!handle(key, child, key_where, it->second)) {
      problems_.push_back("unknown key '" + child + "' at " + key_where);
    }
  }
}

void Loader::ReadString(const YAML::Node& v, const std::string& path, const std::string& where,
                        std::string* out) {
  where_[path] = where;
  if (v.IsNull()) {
    out->clear();
  } else if (v.IsScalar()) {
    *out = v.Scalar();
  } else {
    Bad(where, path, "expected a string, got " + Describe(v));
  }
}

void Loader::ReadSourced(const YAML::Node& v, const std::string& path, const std::string& where,
                         Sourced* out) {
  out->key = path;
  ReadString(v, path, where, &out->text);
  out->where = where;
}

void Loader::ReadInt(const YAML::Node& v, const std::string& path, const std::string& where,
                     int* out) {
  where_[path] = where;
  std::optional<int> value;
  if (v.IsScalar()) value = ParseInt(v.Scalar());
  if (!value) {
    Bad(where, path, "expected an integer, got " + Describe(v));
    return;
  }
  *out = *value;
}

void Loader::ReadBool(const YAML::Node& v, const std::string& path, const std::string& where,
                      bool* out) {
  where_[path] = where;
  std::optional<bool> value;
  if (v.IsScalar()) value = ParseBool(v.Scalar());
  if (!value) {
    Bad(where, path, "expected true or false, got " + Describe(v));
    return;
  }
  *out = *value;
}

void Loader::ReadStringList(const YAML::Node& v, const std::string& path, const std::string& where,
                            std::vector<std::string>* out) {
  where_[path] = where;
  out->clear();
  if (v.IsNull()) return;
  if (!v.IsSequence()) {
    Bad(where, path, "expected a list of strings, got " + Describe(v));
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const YAML::Node item = v[i];
    if (!item.IsScalar()) {
      Bad(At(item), path + "[" + std::to_string(i) + "]",
          "expected a string, got " + Describe(item));
      continue;
    }
    out->push_back(item.Scalar());
  }
}

void Loader::ReadScalarMap(const YAML::Node& v, const std::string& path, const std::string& where,
                           std::map<std::string, std::string>* out) {
  where_[path] = where;
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& child, const std::string& key_where,
              const YAML::Node& value) {
            if (value.IsScalar()) {
              (*out)[key] = value.Scalar();  // kept as written: "on", "1GB", "5"
            } else {
              Bad(key_where, child, "expected a single value, got " + Describe(value));
            }
            return true;
          });
}

bool Loader::ParseDocument(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    const std::string where =
        e.mark.is_null() ? source_ : source_ + ":" + std::to_string(e.mark.line + 1);
    AddProblem(where, "", "YAML syntax error: " + e.msg);
    return false;
  }
  if (root.IsNull()) {
    AddProblem(source_, "", "the configuration is empty");
    return false;
  }
  if (!root.IsMap()) {
    AddProblem(At(root), "", "expected a map of settings at the top level, got " + Describe(root));
    return false;
  }
  ParseRoot(root);
  return true;
}

void Loader::ParseRoot(const YAML::Node& root) {
  WalkMap(root, "", source_,
          [&](const std::string& key, const std::string& path, const std::string& where,
              const YAML::Node& v) {
            if (key == "scope") {
              ReadSourced(v, path, where, &scope_);
            } else if (key == "namespace") {
              ReadSourced(v, path, where, &namespace_);
            } else if (key == "name") {
              ReadSourced(v, path, where, &name_);
            } else if (key == "log") {
              WalkMap(v, path, where,
                      [&](const std::string& k, const std::string& p, const std::string& w,
                          const YAML::Node& value) {
                        if (k != "level") return false;
                        ReadSourced(value, p, w, &log_level_);
                        return true;
                      });
            } else if (key == "restapi") {
              WalkMap(v, path, where,
                      [&](const std::string& k, const std::string& p, const std::string& w,
                          const YAML::Node& value) {
                        if (k == "listen") {
                          ReadSourced(value, p, w, &restapi_listen_);
                        } else if (k == "connect_address") {
                          ReadSourced(value, p, w, &restapi_connect_);
                        } else {
                          return false;
                        }
                        return true;
                      });
            } else if (key == "etcd3" || key == "etcd") {
              if (!etcd_key_.empty()) {
                AddProblem(where, path,
                           "both etcd and etcd3 are given; they mean the same, keep one");
              } else {
                etcd_key_ = key;
                ParseEtcd(v, path, where);
              }
            } else if (key == "bootstrap") {
              ParseBootstrap(v, path, where);
            } else if (key == "postgresql") {
              ParsePostgresql(v, path, where);
            } else if (key == "watchdog") {
              ParseWatchdog(v, path, where);
            } else if (key == "tags") {
              ReadScalarMap(v, path, where, &cfg_.tags);
            } else if (key == "proxy") {
              cfg_.proxy_yaml = std::make_shared<const YAML::Node>(v);  // the proxy validates it
            } else {
              return false;
            }
            return true;
          });
}

void Loader::ParseEtcd(const YAML::Node& v, const std::string& path, const std::string& where) {
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "host" || key == "hosts") {
              ParseEtcdHosts(value, p, w);
            } else if (key == "protocol") {
              ReadString(value, p, w, &cfg_.etcd.protocol);
              if (cfg_.etcd.protocol != "http" && !bad_keys_.count(p)) {
                Bad(w, p, "only 'http' is supported, got '" + cfg_.etcd.protocol + "'");
              }
            } else if (key == "username" || key == "password") {
              // Refused rather than ignored: a cluster that needs etcd auth
              // would otherwise fail later with a less clear error.
              std::string ignored;
              ReadString(value, p, w, &ignored);
              if (!ignored.empty()) Bad(w, p, "etcd authentication is not supported yet");
            } else {
              return false;
            }
            return true;
          });
}

// Appends to etcd_hosts_: a list of "host:port", or one string of them separated by commas.
void Loader::ParseEtcdHosts(const YAML::Node& v, const std::string& path,
                            const std::string& where) {
  if (v.IsScalar()) {
    const std::string& text = v.Scalar();
    size_t start = 0;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string::npos) comma = text.size();
      etcd_hosts_.push_back({text.substr(start, comma - start), where, path});
      start = comma + 1;
    }
  } else if (v.IsSequence()) {
    for (size_t i = 0; i < v.size(); ++i) {
      const YAML::Node item = v[i];
      const std::string item_path = path + "[" + std::to_string(i) + "]";
      if (!item.IsScalar()) {
        Bad(At(item), item_path, "expected host:port, got " + Describe(item));
        continue;
      }
      etcd_hosts_.push_back({item.Scalar(), At(item), item_path});
    }
  } else {
    Bad(where, path,
        "expected host:port, a list of them or a comma-separated string, got " + Describe(v));
  }
}

void Loader::ParseBootstrap(const YAML::Node& v, const std::string& path,
                            const std::string& where) {
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "dcs") {
              ParseDcs(value, p, w);
            } else if (key == "initdb") {
              ParseInitdb(value, p, w);
            } else if (key == "pg_hba") {
              ReadStringList(value, p, w, &cfg_.bootstrap.pg_hba);
            } else {
              return false;
            }
            return true;
          });
}

void Loader::ParseDcs(const YAML::Node& v, const std::string& path, const std::string& where) {
  DcsConfig& dcs = cfg_.bootstrap.dcs;
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "ttl") {
              ReadInt(value, p, w, &dcs.ttl);
            } else if (key == "loop_wait") {
              ReadInt(value, p, w, &dcs.loop_wait);
            } else if (key == "retry_timeout") {
              ReadInt(value, p, w, &dcs.retry_timeout);
            } else if (key == "maximum_lag_on_failover") {
              where_[p] = w;
              std::optional<uint64_t> bytes;
              if (value.IsScalar()) bytes = ParseByteSize(value.Scalar());
              if (bytes) {
                dcs.maximum_lag_on_failover = *bytes;
              } else {
                Bad(w, p, "expected a size in bytes (1048576 or 1MB), got " + Describe(value));
              }
            } else if (key == "synchronous_mode") {
              ReadBool(value, p, w, &dcs.synchronous_mode);
            } else if (key == "confirmed_death_checks") {
              ReadInt(value, p, w, &dcs.confirmed_death_checks);
              if (dcs.confirmed_death_checks < 0) {
                Bad(w, p,
                    "must be 0 (off) or a number of checks, got " +
                        std::to_string(dcs.confirmed_death_checks));
              }
            } else if (key == "member_slots_ttl") {
              where_[p] = w;
              std::optional<std::chrono::milliseconds> d;
              if (value.IsScalar()) d = ParseDuration(value.Scalar(), std::chrono::seconds(1));
              const auto seconds = d ? d->count() / 1000 : -1;
              if (d && seconds <= INT_MAX) {
                dcs.member_slots_ttl = static_cast<int>(seconds);
              } else {
                Bad(w, p, "expected seconds or a duration like 30min, got " + Describe(value));
              }
            } else if (key == "postgresql") {
              WalkMap(value, p, w,
                      [&](const std::string& k, const std::string& pp, const std::string& ww,
                          const YAML::Node& vv) {
                        if (k == "use_pg_rewind") {
                          bool b = false;
                          const size_t before = problems_.size();
                          ReadBool(vv, pp, ww, &b);
                          if (problems_.size() == before) dcs_use_pg_rewind_ = b;
                        } else if (k == "use_slots") {
                          ReadBool(vv, pp, ww, &dcs.use_slots);
                        } else if (k == "parameters") {
                          ReadScalarMap(vv, pp, ww, &dcs.parameters);
                        } else {
                          return false;
                        }
                        return true;
                      });
            } else {
              return false;
            }
            return true;
          });
}

// Patroni's initdb list: "data-checksums" → --data-checksums, {encoding: UTF8} → --encoding=UTF8.
void Loader::ParseInitdb(const YAML::Node& v, const std::string& path, const std::string& where) {
  where_[path] = where;
  if (v.IsNull()) return;
  if (!v.IsSequence()) {
    Bad(where, path, "expected a list of options, got " + Describe(v));
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const YAML::Node item = v[i];
    const std::string item_path = path + "[" + std::to_string(i) + "]";
    if (item.IsScalar()) {
      initdb_items_.emplace_back(item.Scalar(), At(item));
    } else if (item.IsMap()) {
      for (auto it = item.begin(); it != item.end(); ++it) {
        if (!it->first.IsScalar() || !it->second.IsScalar()) {
          Bad(At(it->first), item_path, "expected 'option: value', got a nested value");
          continue;
        }
        initdb_items_.emplace_back(it->first.Scalar() + "=" + it->second.Scalar(), At(it->first));
      }
    } else {
      Bad(At(item), item_path, "expected an option or 'option: value', got " + Describe(item));
    }
  }
}

void Loader::ParsePostgresql(const YAML::Node& v, const std::string& path,
                             const std::string& where) {
  PostgresqlConfig& pg = cfg_.postgresql;
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "listen") {
              ReadSourced(value, p, w, &pg_listen_);
            } else if (key == "connect_address") {
              ReadSourced(value, p, w, &pg_connect_);
            } else if (key == "data_dir") {
              ReadSourced(value, p, w, &data_dir_);
            } else if (key == "bin_dir") {
              ReadString(value, p, w, &pg.bin_dir);
            } else if (key == "os_user") {
              ReadString(value, p, w, &pg.os_user);
            } else if (key == "log_file") {
              ReadString(value, p, w, &pg.log_file);
            } else if (key == "authentication") {
              WalkMap(value, p, w,
                      [&](const std::string& k, const std::string& pp, const std::string& ww,
                          const YAML::Node& vv) {
                        if (k == "superuser") {
                          ParseRole(vv, pp, ww, &pg.superuser);
                        } else if (k == "replication") {
                          ParseRole(vv, pp, ww, &pg.replication);
                        } else if (k == "rewind") {
                          ParseRole(vv, pp, ww, &pg.rewind);
                        } else {
                          return false;
                        }
                        return true;
                      });
            } else if (key == "parameters") {
              ReadScalarMap(value, p, w, &pg.parameters);
            } else if (key == "pg_hba") {
              ReadStringList(value, p, w, &pg.pg_hba);
            } else if (key == "use_pg_rewind") {
              bool b = false;
              const size_t before = problems_.size();
              ReadBool(value, p, w, &b);
              if (problems_.size() == before) pg_use_pg_rewind_ = b;
            } else {
              return false;
            }
            return true;
          });
}

void Loader::ParseRole(const YAML::Node& v, const std::string& path, const std::string& where,
                       RoleAuth* out) {
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "username") {
              ReadString(value, p, w, &out->username);
            } else if (key == "password") {
              ReadString(value, p, w, &out->password);
            } else {
              return false;
            }
            return true;
          });
}

void Loader::ParseWatchdog(const YAML::Node& v, const std::string& path, const std::string& where) {
  WatchdogConfig& wd = cfg_.watchdog;
  WalkMap(v, path, where,
          [&](const std::string& key, const std::string& p, const std::string& w,
              const YAML::Node& value) {
            if (key == "mode") {
              where_[p] = w;
              std::optional<WatchdogMode> mode;
              if (value.IsScalar()) mode = ParseWatchdogMode(value.Scalar());
              if (mode) {
                wd.mode = *mode;
              } else {
                Bad(w, p, "expected off, automatic or required, got " + Describe(value));
              }
            } else if (key == "device") {
              ReadString(value, p, w, &wd.device);
              if (!bad_keys_.count(p) && (wd.device.empty() || wd.device.front() != '/')) {
                Bad(w, p, "must be an absolute path, got '" + wd.device + "'");
              }
            } else if (key == "safety_margin") {
              ReadInt(value, p, w, &wd.safety_margin);
            } else {
              return false;
            }
            return true;
          });
}

void Loader::ApplyEnvironment() {
  struct Override {
    const char* suffix;  // after PGWARDEN_ / PATRONI_
    const char* key;     // dotted key it replaces
    Sourced* sourced;    // validated later, or
    std::string* plain;  // used as is
  };
  PostgresqlConfig& pg = cfg_.postgresql;
  const Override overrides[] = {
      {"NAME", "name", &name_, nullptr},
      {"SCOPE", "scope", &scope_, nullptr},
      {"NAMESPACE", "namespace", &namespace_, nullptr},
      {"RESTAPI_LISTEN", "restapi.listen", &restapi_listen_, nullptr},
      {"RESTAPI_CONNECT_ADDRESS", "restapi.connect_address", &restapi_connect_, nullptr},
      {"POSTGRESQL_LISTEN", "postgresql.listen", &pg_listen_, nullptr},
      {"POSTGRESQL_CONNECT_ADDRESS", "postgresql.connect_address", &pg_connect_, nullptr},
      {"POSTGRESQL_DATA_DIR", "postgresql.data_dir", &data_dir_, nullptr},
      {"SUPERUSER_USERNAME", "postgresql.authentication.superuser.username", nullptr,
       &pg.superuser.username},
      {"SUPERUSER_PASSWORD", "postgresql.authentication.superuser.password", nullptr,
       &pg.superuser.password},
      {"REPLICATION_USERNAME", "postgresql.authentication.replication.username", nullptr,
       &pg.replication.username},
      {"REPLICATION_PASSWORD", "postgresql.authentication.replication.password", nullptr,
       &pg.replication.password},
      {"LOG_LEVEL", "log.level", &log_level_, nullptr},
      {"ETCD3_HOSTS", "etcd3.hosts", nullptr, nullptr},
  };
  for (const Override& o : overrides) {
    // PGWARDEN_ wins over PATRONI_; an empty variable counts as unset.
    std::string var;
    const char* value = nullptr;
    for (const char* prefix : {"PGWARDEN_", "PATRONI_"}) {
      var = std::string(prefix) + o.suffix;
      value = std::getenv(var.c_str());
      if (value != nullptr && *value != '\0') break;
      value = nullptr;
    }
    if (value == nullptr) continue;
    const std::string where = "environment " + var;
    where_[o.key] = where;
    if (o.sourced != nullptr) {
      *o.sourced = {value, where, o.key};
    } else if (o.plain != nullptr) {
      *o.plain = value;
    } else {
      // ETCD3_HOSTS: "h1:2379,h2:2379", also Patroni's "'h1:2379','h2:2379'" form.
      etcd_hosts_.clear();
      std::string text = Trim(value);
      if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
        text = text.substr(1, text.size() - 2);
      }
      size_t start = 0;
      while (start <= text.size()) {
        size_t comma = text.find(',', start);
        if (comma == std::string::npos) comma = text.size();
        std::string item = Trim(text.substr(start, comma - start));
        if (item.size() >= 2 && (item.front() == '\'' || item.front() == '"') &&
            item.back() == item.front()) {
          item = item.substr(1, item.size() - 2);
        }
        etcd_hosts_.push_back({item, where, o.key});
        start = comma + 1;
      }
    }
  }
}

// Parses listen and connect_address; connect_address defaults to listen unless that is a
// wildcard address, which nobody can connect to.
void Loader::ValidateListen(const Sourced& listen, Sourced connect, HostPort* listen_out,
                            std::string* connect_out) {
  const std::string prefix = listen.key.substr(0, listen.key.rfind('.') + 1);  // "restapi."
  const std::string listen_key = prefix + "listen";
  const std::string connect_key = prefix + "connect_address";
  std::optional<HostPort> parsed_listen;
  if (!Trim(listen.text).empty()) {
    std::string error;
    parsed_listen = TryParseHostPort(listen.text, &error);
    if (parsed_listen) {
      *listen_out = *parsed_listen;
    } else {
      AddProblem(listen.where, listen_key, error);
    }
  } else if (use_ == ConfigUse::kNode && !bad_keys_.count(listen_key)) {
    AddProblem(listen.where.empty() ? source_ : listen.where, listen_key, "is required");
  }

  if (!Trim(connect.text).empty()) {
    std::string error;
    std::optional<HostPort> parsed = TryParseHostPort(connect.text, &error);
    if (!parsed) {
      AddProblem(connect.where, connect_key, error);
    } else if (IsWildcardHost(parsed->host)) {
      AddProblem(connect.where, connect_key,
                 "'" + parsed->host + "' is not an address others can connect to");
    } else {
      *connect_out = parsed->ToString();
    }
  } else if (parsed_listen) {
    if (!IsWildcardHost(parsed_listen->host)) {
      *connect_out = parsed_listen->ToString();
    } else if (use_ == ConfigUse::kNode) {
      problems_.push_back(listen.where + ": " + connect_key + " is required when listen is " +
                          parsed_listen->host + " (other members cannot connect to that)");
    }
  }
}

void Loader::ValidateAndDefault() {
  const bool node = use_ == ConfigUse::kNode;
  auto where_or_file = [&](const Sourced& s) { return s.where.empty() ? source_ : s.where; };

  // scope: part of every etcd key.
  cfg_.scope = Trim(scope_.text);
  if (cfg_.scope.empty()) {
    if (!bad_keys_.count("scope")) AddProblem(where_or_file(scope_), "scope", "is required");
  } else if (cfg_.scope.find_first_of("/ \t") != std::string::npos) {
    AddProblem(scope_.where, "scope",
               "must not contain '/' or spaces, got '" + cfg_.scope + "' (it is an etcd key part)");
  }

  // namespace: "/service/" form.
  if (!namespace_.where.empty()) {
    std::string ns = Trim(namespace_.text);
    if (ns.empty() || ns.find_first_not_of('/') == std::string::npos) {
      AddProblem(namespace_.where, "namespace", "must not be empty");
    } else {
      if (ns.front() != '/') ns.insert(ns.begin(), '/');
      if (ns.back() != '/') ns.push_back('/');
      cfg_.namespace_ = ns;
    }
  }

  // name: also the replication slot / application_name of this member.
  cfg_.name = Trim(name_.text);
  if (cfg_.name.empty()) {
    if (node && !bad_keys_.count("name")) AddProblem(where_or_file(name_), "name", "is required");
  } else if (cfg_.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_.-") != std::string::npos) {
    AddProblem(name_.where, "name",
               "may only contain letters, digits, '_', '.' and '-' (it names the replication "
               "slot), got '" +
                   cfg_.name + "'");
  }

  // log.level: Patroni writes INFO / WARNING / DEBUG / ERROR / CRITICAL.
  if (!log_level_.where.empty()) {
    std::string level = Lower(Trim(log_level_.text));
    if (level == "warning") level = "warn";
    if (level == "critical" || level == "fatal") level = "error";
    if (level == "debug" || level == "info" || level == "warn" || level == "error") {
      cfg_.log_level = level;
    } else {
      AddProblem(log_level_.where, "log.level",
                 "expected debug, info, warn or error, got '" + log_level_.text + "'");
    }
  }

  restapi_listen_.key = "restapi.listen";
  pg_listen_.key = "postgresql.listen";
  ValidateListen(restapi_listen_, restapi_connect_, &cfg_.restapi.listen,
                 &cfg_.restapi.connect_address);
  ValidateListen(pg_listen_, pg_connect_, &cfg_.postgresql.listen,
                 &cfg_.postgresql.connect_address);

  // etcd endpoints.
  const std::string etcd_key = (etcd_key_.empty() ? "etcd3" : etcd_key_) + ".hosts";
  cfg_.etcd.hosts.clear();
  for (const Sourced& h : etcd_hosts_) {
    std::string error;
    if (auto hp = TryParseHostPort(h.text, &error)) {
      cfg_.etcd.hosts.push_back(*hp);
    } else {
      AddProblem(h.where, h.key, error);
    }
  }
  if (etcd_hosts_.empty() && !bad_keys_.count(etcd_key) && use_ != ConfigUse::kProxy) {
    AddProblem(source_, etcd_key, "is required (the etcd endpoints, e.g. 127.0.0.1:2379)");
  }

  // data_dir and what hangs off it.
  PostgresqlConfig& pg = cfg_.postgresql;
  pg.data_dir = Trim(data_dir_.text);
  while (pg.data_dir.size() > 1 && pg.data_dir.back() == '/') pg.data_dir.pop_back();
  if (pg.data_dir.empty()) {
    if (node && !bad_keys_.count("postgresql.data_dir")) {
      AddProblem(where_or_file(data_dir_), "postgresql.data_dir", "is required");
    }
  } else if (pg.data_dir.front() != '/') {
    AddProblem(data_dir_.where, "postgresql.data_dir",
               "must be an absolute path, got '" + pg.data_dir + "'");
  }
  if (pg.log_file.empty() && !pg.data_dir.empty()) pg.log_file = pg.data_dir + ".log";
  if (node) {
    if (pg.superuser.username.empty()) {
      AddProblem(where_["postgresql.authentication.superuser.username"],
                 "postgresql.authentication.superuser.username", "must not be empty");
    }
    if (pg.replication.username.empty()) {
      AddProblem(where_["postgresql.authentication.replication.username"],
                 "postgresql.authentication.replication.username", "must not be empty");
    }
  }
  // Role names go into pg_hba.conf (a rule a line) and every value into
  // postgresql.conf or conninfo, where no quoting can carry a NUL byte.
  for (const auto& [role, auth] : {std::pair<const char*, RoleAuth*>{"superuser", &pg.superuser},
                                   {"replication", &pg.replication},
                                   {"rewind", &pg.rewind}}) {
    const std::string base = std::string("postgresql.authentication.") + role + ".";
    if (auth->username.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
      AddProblem(where_[base + "username"], base + "username",
                 "must not contain a NUL byte or a line break");
    }
    if (auth->password.find('\0') != std::string::npos) {
      AddProblem(where_[base + "password"], base + "password", "must not contain a NUL byte");
    }
  }
  if (pg.pg_hba.empty()) pg.pg_hba = cfg_.bootstrap.pg_hba;

  // Timing: the leader lease must outlive one HA loop plus two retried operations.
  DcsConfig& dcs = cfg_.bootstrap.dcs;
  const std::string dcs_path = "bootstrap.dcs.";
  bool timing_ok = true;
  for (const auto& [key, value] :
       {std::pair{"loop_wait", dcs.loop_wait}, std::pair{"retry_timeout", dcs.retry_timeout}}) {
    const std::string path = dcs_path + key;
    if (bad_keys_.count(path)) {
      timing_ok = false;
    } else if (value < 1) {
      AddProblem(where_[path], path, "must be at least 1 second, got " + std::to_string(value));
      timing_ok = false;
    }
  }
  if (bad_keys_.count(dcs_path + "ttl")) timing_ok = false;
  if (timing_ok && dcs.ttl < dcs.loop_wait + 2 * dcs.retry_timeout) {
    std::string where = where_[dcs_path + "ttl"];
    if (where.empty()) where = where_[dcs_path + "loop_wait"];
    if (where.empty()) where = where_[dcs_path + "retry_timeout"];
    AddProblem(where, dcs_path + "ttl",
               "ttl (" + std::to_string(dcs.ttl) + ") must be at least loop_wait + 2 * " +
                   "retry_timeout (" + std::to_string(dcs.loop_wait) + " + 2 * " +
                   std::to_string(dcs.retry_timeout) + " = " +
                   std::to_string(dcs.loop_wait + 2 * dcs.retry_timeout) +
                   "), or the leader lease can expire while a healthy leader is still retrying");
  }

  // watchdog.safety_margin: Patroni's -1 means half the ttl. The agent arms
  // the watchdog for max(ttl - safety_margin, ttl - retry_timeout) after a
  // renewal: never before its own fencing deadline, which the timing check
  // above keeps a loop_wait and a retry away.
  WatchdogConfig& wd = cfg_.watchdog;
  const std::string margin_key = "watchdog.safety_margin";
  if (!bad_keys_.count(margin_key)) {
    if (wd.safety_margin == -1) {
      if (timing_ok) wd.safety_margin = dcs.ttl / 2;
    } else if (wd.safety_margin < 0) {
      AddProblem(where_[margin_key], margin_key,
                 "must be -1 (half the ttl) or at least 0 seconds, got " +
                     std::to_string(wd.safety_margin));
    }
  }

  // use_pg_rewind may be written under bootstrap.dcs.postgresql or postgresql (Patroni allows
  // both).
  if (dcs_use_pg_rewind_ && pg_use_pg_rewind_ && *dcs_use_pg_rewind_ != *pg_use_pg_rewind_) {
    AddProblem(where_["postgresql.use_pg_rewind"], "postgresql.use_pg_rewind",
               "contradicts bootstrap.dcs.postgresql.use_pg_rewind (at " +
                   where_["bootstrap.dcs.postgresql.use_pg_rewind"] + ")");
  } else if (dcs_use_pg_rewind_) {
    dcs.use_pg_rewind = *dcs_use_pg_rewind_;
  } else if (pg_use_pg_rewind_) {
    dcs.use_pg_rewind = *pg_use_pg_rewind_;
  }

  // initdb: data checksums on unless no-data-checksums is given.
  bool checksums = false;
  std::string no_checksums_where;
  std::vector<std::string>& args = cfg_.bootstrap.initdb_args;
  args.clear();
  for (const auto& [item, item_where] : initdb_items_) {
    if (item == "no-data-checksums") {
      no_checksums_where = item_where;
      continue;
    }
    if (item == "data-checksums") checksums = true;
    args.push_back("--" + item);
  }
  if (!no_checksums_where.empty()) {
    if (checksums) {
      AddProblem(no_checksums_where, "bootstrap.initdb",
                 "both data-checksums and no-data-checksums are given; keep one");
    }
  } else if (!checksums) {
    args.push_back("--data-checksums");
  }
}

}  // namespace

std::optional<WatchdogMode> ParseWatchdogMode(const std::string& text) {
  const std::string t = Lower(Trim(text));
  if (t == "off" || t == "disable" || t == "disabled" || t == "false" || t == "no") {
    return WatchdogMode::kOff;
  }
  if (t == "automatic" || t == "auto") return WatchdogMode::kAutomatic;
  if (t == "required" || t == "require") return WatchdogMode::kRequired;
  return std::nullopt;
}

const char* WatchdogModeName(WatchdogMode mode) {
  switch (mode) {
    case WatchdogMode::kOff:
      return "off";
    case WatchdogMode::kAutomatic:
      return "automatic";
    case WatchdogMode::kRequired:
      return "required";
  }
  return "?";
}

std::string HostPort::ToString() const {
  const std::string port_text = std::to_string(port);
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port_text;
  return host + ":" + port_text;
}

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(JoinLines(problems)), problems_(std::move(problems)) {}

std::string Config::KeyPrefix() const { return namespace_ + scope + "/"; }

std::string Config::ConnUrl() const {
  return "postgres://" + postgresql.connect_address + "/postgres";
}

std::string Config::ApiUrl() const { return "http://" + restapi.connect_address + "/patroni"; }

HostPort ParseHostPort(const std::string& text, const std::string& what) {
  std::string error;
  std::optional<HostPort> hp = TryParseHostPort(text, &error);
  if (!hp) throw ConfigError({what + ": " + error});
  return *hp;
}

Config LoadConfigText(const std::string& yaml, const std::string& source_name, ConfigUse use) {
  Loader loader(source_name, use);
  // Without a document, "x is required" for every key would only bury the real error.
  if (loader.ParseDocument(yaml)) {
    loader.ApplyEnvironment();
    loader.ValidateAndDefault();
  }
  return loader.Finish();
}

Config LoadConfigFile(const std::string& path, ConfigUse use) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ConfigError({"cannot read " + path + ": " + std::strerror(errno)});
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ConfigError({path + " is not a regular file (a configuration is a YAML file)"});
  }
  const auto too_big = [&] {
    ::close(fd);
    return ConfigError({path + " is larger than " + std::to_string(kMaxConfigFileBytes / 1024) +
                        " KiB: not a pgwarden configuration"});
  };
  if (st.st_size > static_cast<off_t>(kMaxConfigFileBytes)) throw too_big();
  std::string text;
  char buf[8192];
  for (;;) {
    if (text.size() > kMaxConfigFileBytes) throw too_big();  // it grew while we read it
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw ConfigError({"cannot read " + path + ": " + std::strerror(err)});
    }
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return LoadConfigText(text, path, use);
}

std::optional<HostPort> HostPortOfUrl(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return std::nullopt;
  std::string rest = url.substr(scheme + 3);
  if (auto at = rest.find('@'); at != std::string::npos) rest = rest.substr(at + 1);
  if (auto slash = rest.find('/'); slash != std::string::npos) rest = rest.substr(0, slash);
  try {
    return ParseHostPort(rest, url);
  } catch (const ConfigError&) {
    return std::nullopt;
  }
}

}  // namespace pgwarden::config
