// Parsing and validation of the `proxy:` section.
#include "proxy/proxy_config.h"

#include <algorithm>
#include <cctype>

#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <functional>
#include <sstream>

#include "common/units.h"

namespace pgwarden::proxy {
namespace {

class Parser {
 public:
  explicit Parser(const config::Config& c) : cluster_(c), file_(c.source_path) {}

  ProxyConfig Parse() {
    if (cluster_.proxy_yaml && !cluster_.proxy_yaml->IsNull()) {
      const YAML::Node& root = *cluster_.proxy_yaml;
      if (!root.IsMap()) {
        Bad(root, "proxy", "expected a map");
      } else {
        ParseRoot(root);
      }
    }
    if (out_.databases.empty()) {
      DatabaseConfig d;
      d.name = "*";
      const auto& pg = cluster_.postgresql;
      std::string addr = pg.connect_address;
      if (!addr.empty()) {
        try {
          auto hp = config::ParseHostPort(addr, "postgresql.connect_address");
          d.host = hp.host;
          d.port = hp.port;
        } catch (const config::ConfigError&) {
        }
      } else if (pg.listen.port != 0) {
        d.host =
            pg.listen.host == "0.0.0.0" || pg.listen.host.empty() ? "127.0.0.1" : pg.listen.host;
        d.port = pg.listen.port;
      }
      out_.databases["*"] = d;
    }
    if (out_.min_pool_size > out_.default_pool_size) {
      problems_.push_back(file_ + ": proxy.min_pool_size (" + std::to_string(out_.min_pool_size) +
                          ") exceeds proxy.default_pool_size (" +
                          std::to_string(out_.default_pool_size) + ")");
    }
    if (!problems_.empty()) throw config::ConfigError(problems_);
    return out_;
  }

 private:
  std::string Where(const YAML::Node& n) const {
    return file_ + ":" + std::to_string(n.Mark().line + 1);
  }
  void Bad(const YAML::Node& n, const std::string& key, const std::string& msg) {
    problems_.push_back(Where(n) + ": " + key + ": " + msg);
  }

  bool Scalar(const YAML::Node& n, const std::string& key, std::string* out) {
    if (!n.IsScalar()) {
      Bad(n, key, "expected a value");
      return false;
    }
    *out = n.Scalar();
    return true;
  }
  void Int(const YAML::Node& n, const std::string& key, int lo, int hi, int* out) {
    std::string s;
    if (!Scalar(n, key, &s)) return;
    try {
      size_t pos = 0;
      long v = std::stol(s, &pos);
      if (pos != s.size() || v < lo || v > hi) throw std::out_of_range("");
      *out = static_cast<int>(v);
    } catch (const std::exception&) {
      Bad(n, key,
          "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
              ", got '" + s + "'");
    }
  }
  void Duration(const YAML::Node& n, const std::string& key, Seconds* out) {
    std::string s;
    if (!Scalar(n, key, &s)) return;
    auto d = ParseDuration(s);
    if (!d) {
      Bad(n, key, "expected a duration (e.g. 30, 30s, 500ms, 5min), got '" + s + "'");
      return;
    }
    *out = *d;
  }
  void HostPort(const YAML::Node& n, const std::string& key, config::HostPort* out) {
    std::string s;
    if (!Scalar(n, key, &s)) return;
    try {
      *out = config::ParseHostPort(s, key);
    } catch (const config::ConfigError& e) {
      Bad(n, key, e.problems().empty() ? "bad host:port" : e.problems().front());
    }
  }
  std::vector<std::string> List(const YAML::Node& n, const std::string& key) {
    std::vector<std::string> out;
    if (n.IsSequence()) {
      for (const auto& item : n) {
        std::string s;
        if (Scalar(item, key, &s)) out.push_back(s);
      }
    } else if (n.IsScalar()) {
      std::stringstream ss(n.Scalar());
      std::string item;
      while (std::getline(ss, item, ',')) {
        auto b = item.find_first_not_of(" \t");
        auto e = item.find_last_not_of(" \t");
        if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
      }
    } else {
      Bad(n, key, "expected a list");
    }
    return out;
  }
  std::optional<AuthMethod> Method(const std::string& s) {
    if (s == "trust") return AuthMethod::kTrust;
    if (s == "md5") return AuthMethod::kMd5;
    if (s == "scram-sha-256") return AuthMethod::kScram;
    if (s == "reject") return AuthMethod::kReject;
    return std::nullopt;
  }
  std::optional<PoolMode> Mode(const std::string& s) {
    if (s == "session") return PoolMode::kSession;
    if (s == "transaction") return PoolMode::kTransaction;
    return std::nullopt;
  }

  void ParseTls(const YAML::Node& n, const std::string& key, TlsConfig* out) {
    if (!n.IsMap()) return Bad(n, key, "expected a map");
    for (const auto& kv : n) {
      std::string k = kv.first.Scalar(), p = key + "." + k, v;
      if (!Scalar(kv.second, p, &v)) continue;
      if (k == "sslmode") {
        static const char* kModes[] = {"disable", "allow",     "prefer",
                                       "require", "verify-ca", "verify-full"};
        bool ok = false;
        for (const char* m : kModes) ok = ok || v == m;
        if (!ok) Bad(kv.second, p, "expected disable|allow|prefer|require|verify-ca|verify-full");
        out->sslmode = v;
      } else if (k == "cert_file") {
        out->cert_file = v;
      } else if (k == "key_file") {
        out->key_file = v;
      } else if (k == "ca_file") {
        out->ca_file = v;
      } else {
        problems_.push_back("unknown key '" + p + "' at " + Where(kv.first));
      }
    }
  }

  void ParseHba(const YAML::Node& n) {
    for (const auto& line : List(n, "proxy.hba")) {
      std::stringstream ss(line);
      std::vector<std::string> f;
      for (std::string w; ss >> w;) f.push_back(w);
      HbaRule r;
      r.line = n.Mark().line + 1;
      size_t need = (!f.empty() && f[0] == "local") ? 4 : 5;
      if (f.size() != need || (f[0] != "host" && f[0] != "local")) {
        Bad(n, "proxy.hba",
            "expected 'host DB USER ADDRESS METHOD' or 'local DB USER METHOD', got '" + line + "'");
        continue;
      }
      r.local = f[0] == "local";
      auto split = [](const std::string& s) {
        std::vector<std::string> v;
        std::stringstream ss2(s);
        for (std::string x; std::getline(ss2, x, ',');) v.push_back(x);
        return v;
      };
      r.databases = split(f[1]);
      r.users = split(f[2]);
      if (!r.local) {
        std::string a = f[3];
        if (a == "all" || a == "0.0.0.0/0") {
          r.any_address = true;
        } else {
          auto slash = a.find('/');
          std::string ip = a.substr(0, slash);
          int bits = slash == std::string::npos ? 32 : std::atoi(a.c_str() + slash + 1);
          in_addr addr{};
          if (inet_pton(AF_INET, ip.c_str(), &addr) != 1 || bits < 0 || bits > 32) {
            Bad(n, "proxy.hba", "bad IPv4 address/mask '" + a + "' in '" + line + "'");
            continue;
          }
          r.mask = bits == 0 ? 0 : htonl(~uint32_t{0} << (32 - bits));
          r.addr = addr.s_addr & r.mask;
        }
      }
      auto m = Method(f.back());
      if (!m) {
        Bad(n, "proxy.hba",
            "unknown method '" + f.back() + "' (trust, md5, scram-sha-256, reject)");
        continue;
      }
      r.method = *m;
      out_.hba.push_back(r);
    }
  }

  void ParseDatabase(const std::string& name, const YAML::Node& n) {
    DatabaseConfig d;
    d.name = name;
    std::string key = "proxy.databases." + name;
    if (n.IsScalar()) {
      // PgBouncer's form: "host=... port=... dbname=... user=... password=... pool_size=..."
      std::stringstream ss(n.Scalar());
      for (std::string w; ss >> w;) {
        auto eq = w.find('=');
        if (eq == std::string::npos) {
          Bad(n, key, "expected key=value, got '" + w + "'");
          continue;
        }
        YAML::Node v(w.substr(eq + 1));
        ApplyDatabaseKey(w.substr(0, eq), v, n, key, &d);
      }
    } else if (n.IsMap()) {
      for (const auto& kv : n) ApplyDatabaseKey(kv.first.Scalar(), kv.second, kv.first, key, &d);
    } else {
      return Bad(n, key, "expected a map or a 'host=... port=...' string");
    }
    if (d.dbname.empty()) d.dbname = name == "*" ? "" : name;
    out_.databases[name] = d;
  }

  void ApplyDatabaseKey(const std::string& k, const YAML::Node& v, const YAML::Node& at,
                        const std::string& key, DatabaseConfig* d) {
    std::string p = key + "." + k, s;
    if (k == "host") {
      if (Scalar(v, p, &s)) d->host = s;
    } else if (k == "port") {
      int port = 0;
      Int(v, p, 1, 65535, &port);
      d->port = static_cast<uint16_t>(port);
    } else if (k == "dbname") {
      if (Scalar(v, p, &s)) d->dbname = s;
    } else if (k == "user") {
      if (Scalar(v, p, &s)) d->user = s;
    } else if (k == "password") {
      if (Scalar(v, p, &s)) d->password = s;
    } else if (k == "pool_size") {
      int size = 0;
      Int(v, p, 1, 100000, &size);
      d->pool_size = size;
    } else if (k == "pool_mode") {
      if (Scalar(v, p, &s)) {
        if (auto m = Mode(s))
          d->pool_mode = m;
        else
          Bad(at, p, "expected session or transaction, got '" + s + "'");
      }
    } else {
      problems_.push_back("unknown key '" + p + "' at " + Where(at));
    }
  }

  void ParseRoot(const YAML::Node& root) {
    for (const auto& kv : root) {
      const std::string k = kv.first.Scalar();
      const std::string p = "proxy." + k;
      const YAML::Node& v = kv.second;
      std::string s;
      if (k == "listen")
        HostPort(v, p, &out_.listen);
      else if (k == "workers")
        Int(v, p, 0, 256, &out_.workers);
      else if (k == "worker_busy") {
        if (Scalar(v, p, &s)) {
          try {
            size_t pos = 0;
            double d = std::stod(s, &pos);
            if (pos != s.size() || !(d >= 0 && d <= 1)) throw std::out_of_range("");
            out_.worker_busy = d;
          } catch (const std::exception&) {
            Bad(v, p, "expected a share of one core from 0 to 1 (0: round robin), got '" + s + "'");
          }
        }
      } else if (k == "pool_mode") {
        if (Scalar(v, p, &s)) {
          if (auto m = Mode(s))
            out_.pool_mode = *m;
          else
            Bad(v, p, "expected session or transaction, got '" + s + "'");
        }
      } else if (k == "default_pool_size")
        Int(v, p, 1, 100000, &out_.default_pool_size);
      else if (k == "min_pool_size")
        Int(v, p, 0, 100000, &out_.min_pool_size);
      else if (k == "reserve_pool_size")
        Int(v, p, 0, 100000, &out_.reserve_pool_size);
      else if (k == "reserve_pool_timeout")
        Duration(v, p, &out_.reserve_pool_timeout);
      else if (k == "max_client_conn")
        Int(v, p, 1, 1000000, &out_.max_client_conn);
      else if (k == "max_db_connections")
        Int(v, p, 0, 100000, &out_.max_db_connections);
      else if (k == "server_lifetime")
        Duration(v, p, &out_.server_lifetime);
      else if (k == "server_idle_timeout")
        Duration(v, p, &out_.server_idle_timeout);
      else if (k == "query_wait_timeout")
        Duration(v, p, &out_.query_wait_timeout);
      else if (k == "client_login_timeout")
        Duration(v, p, &out_.client_login_timeout);
      else if (k == "client_message_timeout")
        Duration(v, p, &out_.client_message_timeout);
      else if (k == "server_connect_timeout")
        Duration(v, p, &out_.server_connect_timeout);
      else if (k == "shutdown_timeout")
        Duration(v, p, &out_.shutdown_timeout);
      else if (k == "server_reset_query")
        Scalar(v, p, &out_.server_reset_query);
      else if (k == "server_check_query")
        Scalar(v, p, &out_.server_check_query);
      else if (k == "server_check_delay")
        Duration(v, p, &out_.server_check_delay);
      else if (k == "max_packet_size") {
        if (Scalar(v, p, &s)) {
          auto b = ParseByteSize(s);
          if (!b || *b < 1024 || *b > 0x7fffffffull) {
            Bad(v, p, "expected a size from 1kB to 2GB, got '" + s + "'");
          } else {
            out_.max_packet_size = static_cast<uint32_t>(*b);
          }
        }
      } else if (k == "auth_type") {
        if (Scalar(v, p, &s)) {
          auto m = Method(s);
          if (!m)
            Bad(v, p, "expected trust, md5 or scram-sha-256, got '" + s + "'");
          else
            out_.auth_type = *m;
        }
      } else if (k == "hba")
        ParseHba(v);
      else if (k == "auth_file")
        Scalar(v, p, &out_.auth_file);
      else if (k == "auth_query")
        Scalar(v, p, &out_.auth_query);
      else if (k == "auth_user")
        Scalar(v, p, &out_.auth_user);
      else if (k == "track_extra_parameters" || k == "ignore_startup_parameters") {
        std::vector<std::string> names = List(v, p);
        for (const auto& n : names) {
          bool ok = !n.empty() && std::all_of(n.begin(), n.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
          });
          if (!ok) Bad(v, p, "expected parameter names, got '" + n + "'");
        }
        if (k == "track_extra_parameters" && names.size() > 50)
          Bad(v, p, "at most 50 parameters can be tracked, got " + std::to_string(names.size()));
        (k == "track_extra_parameters" ? out_.track_extra_parameters
                                       : out_.ignore_startup_parameters) = std::move(names);
      } else if (k == "admin_users")
        out_.admin_users = List(v, p);
      else if (k == "stats_users")
        out_.stats_users = List(v, p);
      else if (k == "metrics_listen") {
        config::HostPort hp;
        HostPort(v, p, &hp);
        out_.metrics_listen = hp;
      } else if (k == "client_tls")
        ParseTls(v, p, &out_.client_tls);
      else if (k == "server_tls")
        ParseTls(v, p, &out_.server_tls);
      else if (k == "databases") {
        if (!v.IsMap()) {
          Bad(v, p, "expected a map of database name to server");
          continue;
        }
        for (const auto& db : v) ParseDatabase(db.first.Scalar(), db.second);
      } else {
        problems_.push_back("unknown key '" + p + "' at " + Where(kv.first));
      }
    }
  }

  const config::Config& cluster_;
  std::string file_;
  ProxyConfig out_;
  std::vector<std::string> problems_;
};

}  // namespace

ProxyConfig ParseProxyConfig(const config::Config& cluster) { return Parser(cluster).Parse(); }

const char* PoolModeName(PoolMode m) { return m == PoolMode::kSession ? "session" : "transaction"; }

const char* AuthMethodName(AuthMethod m) {
  switch (m) {
    case AuthMethod::kTrust:
      return "trust";
    case AuthMethod::kMd5:
      return "md5";
    case AuthMethod::kScram:
      return "scram-sha-256";
    case AuthMethod::kReject:
      return "reject";
  }
  return "?";
}

}  // namespace pgwarden::proxy
