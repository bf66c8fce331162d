// The on-disk layout of a local cluster made by `pgwarden up`, shared by up, down, status and dsn.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "dcs/etcd_dcs.h"

namespace pgwarden::cli {

// D/cluster.yml           the cluster's configuration (client view: scope, etcd, auth)
// D/etcd/, D/etcd.pid, D/etcd.log   the one-member etcd `up` runs (absent with --etcd)
// D/<node>/node.yml       each agent's configuration
// D/<node>/data           its PostgreSQL data directory
// D/<node>/agent.pid, agent.log, postgresql.log
struct LocalCluster {
  std::string dir;  // absolute
  std::string ClusterFile() const { return dir + "/cluster.yml"; }
  std::string EtcdDir() const { return dir + "/etcd"; }
  std::string EtcdPidFile() const { return dir + "/etcd.pid"; }
  std::string EtcdLog() const { return dir + "/etcd.log"; }
  std::string NodeDir(const std::string& node) const { return dir + "/" + node; }
  std::string NodeFile(const std::string& node) const { return NodeDir(node) + "/node.yml"; }
  std::string AgentPidFile(const std::string& node) const { return NodeDir(node) + "/agent.pid"; }
  std::string AgentLog(const std::string& node) const { return NodeDir(node) + "/agent.log"; }
  std::string ProxyPidFile() const { return dir + "/proxy.pid"; }
  std::string ProxyLog() const { return dir + "/proxy.log"; }
  // Node names found in dir (those with a node.yml), sorted.
  std::vector<std::string> Nodes() const;
  // True when `up` runs etcd for this cluster.
  bool ManagesEtcd() const;
  // The agent of `node`: the PID in its pid file when that process is alive
  // and is `pgwarden node -c .../<node>/node.yml` (not a reused PID).
  std::optional<pid_t> LiveAgent(const std::string& node) const;
  // The proxy: the PID in D/proxy.pid when that process is alive and is
  // `pgwarden proxy -c .../cluster.yml`.
  std::optional<pid_t> LiveProxy() const;
};

// Absolute form of a --dir argument.
std::string AbsoluteDir(const std::string& dir);

// The PID in a pid file, when the file exists and that process is alive and
// its command line contains `expect` (guards against a reused PID).
std::optional<pid_t> LivePid(const std::string& pid_file, const std::string& expect);
// The same, with every one of `expect_all` somewhere in the command line.
std::optional<pid_t> LivePid(const std::string& pid_file,
                             const std::vector<std::string>& expect_all);

// Loads the configuration a client command uses: -c FILE when given, else
// <dir>/cluster.yml. Throws config::ConfigError.
config::Config LoadClientConfig(const std::optional<std::string>& config_file,
                                const std::string& dir);

// A read-only etcd client for the cluster of `cfg` (its lease is never granted).
std::unique_ptr<dcs::EtcdDcs> MakeClientDcs(const config::Config& cfg,
                                            std::chrono::milliseconds request_timeout);

}  // namespace pgwarden::cli
