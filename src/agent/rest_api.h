// The node's REST API with Patroni's semantics: a pure function from (node snapshot, request) to a
// response.
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "agent/node_status.h"
#include "dcs/dcs.h"
#include "net/http_server.h"

namespace pgwarden::agent {

// Patroni's default for maximum_lag_on_failover, used by /readiness when the
// dynamic configuration does not set it.
inline constexpr uint64_t kDefaultMaximumLagOnFailover = 1024 * 1024;

// Answers one REST request from a snapshot of this node. No I/O, no clock:
// everything it needs is in `node`.
//
// Health checks (GET, HEAD and OPTIONS; 200 when the condition holds, else 503;
// GET bodies are this node's status in Patroni's JSON shape, OPTIONS has none):
//   /primary /master /read-write /leader /   the leader, running as primary
//   /standby-leader /standby_leader          never (no standby clusters)
//   /replica    a running replica without the noloadbalance tag
//               ?lag=<bytes|16kB|1MB...> replay lag known and not above it
//               ?replication_state=streaming  and ?tag_<key>=<value>  filters
//   /read-only  the primary, or what /replica accepts
//   /synchronous /sync, /asynchronous /async  /replica plus (not) sync standby
//   /read-only-sync   the primary or /sync;  /quorum never; /read-only-quorum the primary
//   /health     PostgreSQL is running
//   /liveness   the HA loop is not stuck (ha_loop_stale)
//   /readiness  the leader, or a streaming replica within ?lag= (default:
//               maximum_lag_on_failover; ?mode=write compares received WAL)
// Documents: /patroni (always 200, the node JSON), /cluster (ClusterToJson
// plus "scope"), /history, /config (502 when the DCS has none).
// A bad ?lag= is 400; an unknown path 404; another method on a known path 405.
net::HttpResponse HandleRestRequest(const NodeStatus& node, const net::HttpRequest& req);

// This node's status in the shape of Patroni's GET /patroni.
nlohmann::json NodeStatusToJson(const NodeStatus& node);

// The cluster in the shape of Patroni's GET /cluster, without "scope":
// {"members": [{"name", "role": "leader"|"sync_standby"|"replica", "state",
// "api_url", "host", "port", "timeline", "tags", "lag": bytes|"unknown"}]},
// members sorted by name; the leader has no "lag".
nlohmann::json ClusterToJson(const dcs::ClusterView& cluster);

// The highest WAL position the cluster knows the leader reached: `status.optime`,
// or the leader member's xlog_location when that is newer. Invalid when unknown.
Lsn LeaderPosition(const dcs::ClusterView& cluster);

}  // namespace pgwarden::agent
