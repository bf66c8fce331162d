// The node agent: runs the observe → decide → act loop for one PostgreSQL server.
#pragma once

#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "agent/node_status.h"
#include "agent/postmaster_watch.h"
#include "agent/watchdog.h"
#include "common/clock.h"
#include "config/config.h"
#include "dcs/dcs.h"
#include "ha/decide.h"
#include "pg/controller.h"

namespace pgwarden::agent {

// Owns the Dcs and the PgController. Run() executes on the calling thread
// (the HA loop thread); Snapshot() may be called from any thread.
class Agent {
 public:
  Agent(config::Config cfg, dcs::DcsPtr dcs, pg::PgControllerPtr pg, const Clock& clock);
  ~Agent();

  // Runs HA cycles until `stop` becomes true, then shuts PostgreSQL down and
  // gives up the leader key. Returns the process exit code (1 when the data
  // directory was refused).
  int Run(const std::atomic<bool>& stop);

  // Gives the agent its watchdog, started by the caller with `options` (the
  // agent starts it again with them if it dies), armed while this node
  // leads. In mode required this node never takes the leader key without a
  // running watchdog. Without a call (simulations) there is none. Call
  // before Run().
  void SetWatchdog(std::unique_ptr<WatchdogClient> watchdog, WatchdogOptions options);

  // A copy of the node's latest status, for the REST API.
  NodeStatus Snapshot() const;

  // What one HA cycle did.
  struct CycleResult {
    ha::Decision decision;
    Millis next_in{0};     // when the next cycle is due
    int64_t revision = 0;  // store revision it saw (0: etcd unreachable)
  };
  // One observe → decide → act cycle. Run() calls it in a loop; simulations
  // call it directly with a manual clock.
  CycleResult RunCycle();
  // Stops PostgreSQL and gives up the keys, as at the end of Run().
  void Shutdown();
  bool refused() const { return refused_; }

 private:
  struct LongActionResult {
    ha::LongAction kind = ha::LongAction::kNone;
    Status status;
  };

  ha::Observation Observe();
  // Returns true when an action changed the local server (start, stop,
  // promote, follow, ...): the next cycle then comes sooner than loop_wait.
  bool Execute(const ha::Decision& decision, const ha::Observation& obs);
  Status ExecuteOne(const ha::Action& action, const ha::Observation& obs);
  void PublishMember(const ha::Observation& obs);
  void UpdateSnapshot(const ha::Observation& obs, const ha::Decision& decision);
  void ApplyDynamicConfig(const dcs::ClusterView& view);
  // Between cycles: this node's WAL positions for the REST API.
  void RefreshPositions();
  void FinishLongAction();
  void StartLongAction(ha::LongAction kind, std::function<Status()> body);
  Status Bootstrap();
  Status FinishBootstrap();
  Status CreateReplica(const pg::StandbyTarget& from);
  Status RewindAndFollow(const pg::StandbyTarget& from);
  // With the WAL stream down: do the leader's PostgreSQL and REST ports both
  // refuse connections? Counts Observation::leader_refusals.
  void CheckLeaderDeath(ha::Observation& obs);
  // During an election: what every other member's REST API says.
  std::map<std::string, ha::PeerPosition> AskPeers(const dcs::ClusterView& view);
  // Appends the timeline switch of our promotion to `history`.
  void RecordPromotion(const ha::Observation& obs);
  std::optional<pg::StandbyTarget> TargetFor(const std::string& member,
                                             const dcs::ClusterView& view) const;
  std::string FollowedMember(const dcs::ClusterView& view) const;
  // Waits for a change worth a new cycle, or loop_wait, or stop.
  void WaitForNextCycle(const std::atomic<bool>& stop, int64_t revision, Millis max_wait);

  // The moment a leader must have stopped PostgreSQL unless it renewed its
  // lease since (safety rule 2): the last renewal + ttl - retry_timeout.
  std::optional<TimePoint> FencingDeadline() const;
  // Records a renewal (the time the request was sent, which the lease cannot
  // predate) or the loss of the lease, and bounds every etcd request by the
  // new fencing deadline.
  void SetLeaseRenewedAt(std::optional<TimePoint> sent_at);
  // Stops PostgreSQL (immediate) when the fencing deadline has passed: etcd
  // may still be hanging on the requests of this cycle, the lease may not.
  void FenceIfPastDeadline();
  // Arms the watchdog for the lease renewed at `sent_at`, or disarms it.
  void KickWatchdog(std::optional<TimePoint> sent_at);
  // Watch thread: the postmaster is gone; the REST API says so at once.
  void OnPostmasterExit(pid_t pid);

  config::Config cfg_;
  ha::HaConfig ha_;
  dcs::DcsPtr dcs_;
  pg::PgControllerPtr pg_;
  const Clock& clock_;

  // HA loop thread state.
  std::optional<TimePoint> leader_renewed_at_;
  std::map<std::string, TimePoint> member_last_seen_;
  std::string synchronous_standby_names_;
  bool refused_ = false;
  std::string refuse_reason_;
  std::string last_reason_;
  std::string topology_;  // signature of the last view that ran a cycle
  ha::LongAction in_progress_ = ha::LongAction::kNone;
  int leader_refusals_ = 0;        // see Observation::leader_refusals
  int64_t refusals_revision_ = 0;  // of the leader key they are about
  std::string rewind_target_;      // leader of the running / last rewind
  std::string rewind_failure_;     // why the last rewind against rewind_target_ failed
  std::future<Status> long_action_;
  pg::PgState last_pg_;  // last successful PostgreSQL observation
  bool last_pg_ok_ = false;
  PostmasterWatch postmaster_watch_{[this](pid_t pid) { OnPostmasterExit(pid); }};
  std::unique_ptr<WatchdogClient> watchdog_;  // nullptr: none
  WatchdogOptions watchdog_options_;

  mutable std::mutex mu_;
  NodeStatus snapshot_;                     // guarded by mu_
  std::optional<TimePoint> last_cycle_at_;  // guarded by mu_
  Millis ha_ttl_{30000};                    // guarded by mu_
  Millis ha_loop_wait_{10000};              // guarded by mu_
};

// When the watchdog stops PostgreSQL after a renewal sent at `renewed`:
// safety_margin before the lease expires, but never before the agent's own
// fencing deadline (ttl - retry_timeout), which it meets first when it can.
TimePoint WatchdogDeadline(TimePoint renewed, Millis ttl, Millis retry_timeout,
                           Millis safety_margin);

// What a TCP connect to host:port within `timeout` met.
enum class PortProbe {
  kAccepted,  // something listens
  kRefused,   // RST: nothing listens (the host is up)
  kNoAnswer,  // timeout, unreachable, unresolvable: proves nothing
};
PortProbe ProbePort(const std::string& host, uint16_t port, std::chrono::milliseconds timeout);

// A member's GET /patroni answer as a failover candidate's position.
ha::PeerPosition ParsePeerStatus(const nlohmann::json& j);

// The cluster's `config` key contents built from bootstrap.dcs.
nlohmann::json DynamicConfigJson(const config::DcsConfig& dcs);

}  // namespace pgwarden::agent
