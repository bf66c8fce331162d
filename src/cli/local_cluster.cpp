// Paths and process files of a local cluster.
#include "cli/local_cluster.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/process.h"

namespace pgwarden::cli {
namespace fs = std::filesystem;

std::vector<std::string> LocalCluster::Nodes() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec) && fs::exists(e.path() / "node.yml", ec)) {
      out.push_back(e.path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool LocalCluster::ManagesEtcd() const {
  std::error_code ec;
  return fs::exists(EtcdDir(), ec);
}

std::string AbsoluteDir(const std::string& dir) {
  std::error_code ec;
  auto p = fs::absolute(dir, ec);
  return (ec ? fs::path(dir) : p).lexically_normal().string();
}

std::optional<pid_t> LivePid(const std::string& pid_file,
                             const std::vector<std::string>& expect_all) {
  std::ifstream in(pid_file);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0 || !ProcessAlive(pid)) return std::nullopt;
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
  std::string all((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
  for (const auto& expect : expect_all) {
    if (all.find(expect) == std::string::npos) return std::nullopt;
  }
  return pid;
}

std::optional<pid_t> LivePid(const std::string& pid_file, const std::string& expect) {
  return LivePid(pid_file, std::vector<std::string>{expect});
}

// The arguments are NUL-separated in /proc/<pid>/cmdline; the file's path is
// matched by its tail so that D reached through a symlink still matches.
std::optional<pid_t> LocalCluster::LiveAgent(const std::string& node) const {
  return LivePid(
      AgentPidFile(node),
      std::vector<std::string>{"pgwarden", std::string("\0node\0", 6), "/" + node + "/node.yml"});
}

std::optional<pid_t> LocalCluster::LiveProxy() const {
  return LivePid(ProxyPidFile(),
                 std::vector<std::string>{"pgwarden", std::string("\0proxy\0", 7), "/cluster.yml"});
}

config::Config LoadClientConfig(const std::optional<std::string>& config_file,
                                const std::string& dir) {
  std::string path = config_file ? *config_file : LocalCluster{AbsoluteDir(dir)}.ClusterFile();
  if (!config_file && access(path.c_str(), F_OK) != 0) {
    throw config::ConfigError({"no cluster in " + AbsoluteDir(dir) + " (" + path +
                               " is missing): start one with `pgwarden up --dir " + dir +
                               "`, or name a configuration with -c FILE"});
  }
  return config::LoadConfigFile(path, config::ConfigUse::kClient);
}

std::unique_ptr<dcs::EtcdDcs> MakeClientDcs(const config::Config& cfg,
                                            std::chrono::milliseconds request_timeout) {
  std::vector<std::string> endpoints;
  for (const auto& h : cfg.etcd.hosts) endpoints.push_back(h.ToString());
  return std::make_unique<dcs::EtcdDcs>(endpoints, cfg.KeyPrefix(), cfg.bootstrap.dcs.ttl,
                                        request_timeout);
}

}  // namespace pgwarden::cli
