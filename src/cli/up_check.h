// What `up` judges before it calls a local cluster healthy or touches a running proxy: pure.
#pragma once

#include <string>
#include <vector>

namespace pgwarden::cli {

// Why member `name` is not yet what a healthy cluster needs of it, judged from
// its agent's own answer to GET /patroni (not from its member key, which
// outlives a dead agent until its lease expires); "" when it is. `leader`:
// the member holds the leader key and must run as primary; any other member
// must be a streaming replica. `http_status` 0 means no answer.
std::string AgentNotReadyReason(const std::string& name, bool leader, int http_status,
                                const std::string& body);

// How the `proxy:` section `up` wants differs from the one a running proxy
// read from cluster.yml. Both are YAML texts that start with "proxy:".
struct ProxySectionDiff {
  // Keys under proxy: whose values differ, sorted; "proxy" alone when a
  // section is not a YAML mapping under proxy:.
  std::vector<std::string> changed;
  // One line per changed key: "proxy.<key>: <old> -> <new>" (flow YAML).
  std::vector<std::string> descriptions;
  // True when a changed key is one a running proxy cannot take on SIGHUP
  // (listen, workers, metrics_listen, client_tls, server_tls,
  // track_extra_parameters, or an unreadable section); false when a reload
  // applies every change while keeping its clients (databases, auth, pools).
  bool needs_restart = false;
  bool empty() const { return changed.empty(); }
};

ProxySectionDiff DiffProxySections(const std::string& running, const std::string& wanted);

}  // namespace pgwarden::cli
