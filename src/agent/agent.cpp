// The HA loop: observe local PostgreSQL and the cluster, decide, act; publish what it sees.
#include "agent/agent.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "common/log.h"
#include "common/units.h"
#include "net/http_client.h"

namespace pgwarden::agent {
namespace {

constexpr const char* kComponent = "ha";

// What in the cluster view should wake the loop at once: everything but the
// positions members publish every cycle (else members would wake each other
// in turn forever).
std::string TopologySignature(const dcs::ClusterView& v) {
  std::string s = "i=" + v.initialize.value_or("<none>") +
                  ";l=" + (v.HasLeader() ? v.leader->name : "") +
                  ";c=" + (v.config ? v.config->dump() : "") +
                  ";s=" + (v.sync ? v.sync->leader + "/" + v.sync->sync_standby : "") +
                  ";f=" + (v.failover ? v.failover->dump() : "") + ";m=";
  for (const auto& [name, m] : v.members) s += name + ":" + m.role + ":" + m.state + ",";
  if (v.status && v.status->contains("slots") && (*v.status)["slots"].is_object()) {
    s += ";slots=";
    for (const auto& [slot, lsn] : (*v.status)["slots"].items()) s += slot + ",";
  }
  return s;
}

std::set<std::string> StatusSlotNames(const dcs::ClusterView& v, const char* field) {
  std::set<std::string> out;
  if (!v.status || !v.status->contains(field)) return out;
  const auto& f = (*v.status)[field];
  if (f.is_object()) {
    for (const auto& [slot, lsn] : f.items()) out.insert(slot);
  } else if (f.is_array()) {
    for (const auto& slot : f) {
      if (slot.is_string()) out.insert(slot.get<std::string>());
    }
  }
  return out;
}

std::string SyncStandbyNamesValue(const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::string v = "FIRST 1 (";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) v += ", ";
    v += "\"";
    for (char c : names[i]) v += (c == '"') ? std::string("\"\"") : std::string(1, c);
    v += "\"";
  }
  return v + ")";
}

}  // namespace

nlohmann::json DynamicConfigJson(const config::DcsConfig& d) {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& [k, v] : d.parameters) params[k] = v;
  return {
      {"ttl", d.ttl},
      {"loop_wait", d.loop_wait},
      {"retry_timeout", d.retry_timeout},
      {"maximum_lag_on_failover", d.maximum_lag_on_failover},
      {"synchronous_mode", d.synchronous_mode},
      {"member_slots_ttl", d.member_slots_ttl},
      {"confirmed_death_checks", d.confirmed_death_checks},
      {"postgresql",
       {{"use_pg_rewind", d.use_pg_rewind}, {"use_slots", d.use_slots}, {"parameters", params}}}};
}

Agent::Agent(config::Config cfg, dcs::DcsPtr dcs, pg::PgControllerPtr pg, const Clock& clock)
    : cfg_(std::move(cfg)), dcs_(std::move(dcs)), pg_(std::move(pg)), clock_(clock) {
  ha_.name = cfg_.name;
  const auto& d = cfg_.bootstrap.dcs;
  ha_.ttl = std::chrono::seconds(d.ttl);
  ha_.loop_wait = std::chrono::seconds(d.loop_wait);
  ha_.retry_timeout = std::chrono::seconds(d.retry_timeout);
  ha_.synchronous_mode = d.synchronous_mode;
  ha_.use_slots = d.use_slots;
  ha_.member_slots_ttl = std::chrono::seconds(d.member_slots_ttl);
  ha_.maximum_lag_on_failover = d.maximum_lag_on_failover;
  ha_.confirmed_death_checks = d.confirmed_death_checks;
  ha_.use_pg_rewind = d.use_pg_rewind;
  auto tag = [&](const char* name) {
    auto it = cfg_.tags.find(name);
    return it == cfg_.tags.end() ? std::string() : it->second;
  };
  const std::string nofailover = tag("nofailover");
  ha_.nofailover =
      nofailover == "true" || nofailover == "on" || nofailover == "yes" || nofailover == "1";
  if (const std::string p = tag("failover_priority"); !p.empty()) {
    ha_.failover_priority = std::atoi(p.c_str());
    if (ha_.failover_priority <= 0) ha_.nofailover = true;  // Patroni: 0 never promotes
  }
  snapshot_.scope = cfg_.scope;
  snapshot_.name = cfg_.name;
  snapshot_.role = "uninitialized";
  snapshot_.state = "starting";
  snapshot_.tags = cfg_.tags;
}

Agent::~Agent() {
  postmaster_watch_.Watch(-1);  // its thread calls back into this object
  if (long_action_.valid()) long_action_.wait();
}

NodeStatus Agent::Snapshot() const {
  std::lock_guard lock(mu_);
  NodeStatus s = snapshot_;
  // Patroni's liveness: the HA loop has not run for longer than ttl (leader)
  // or twice that (replica), e.g. stuck on a hung PostgreSQL.
  auto limit = s.is_leader ? ha_ttl_ : 2 * ha_ttl_;
  s.ha_loop_stale = last_cycle_at_ && clock_.Now() - *last_cycle_at_ > limit + ha_loop_wait_;
  return s;
}

int Agent::Run(const std::atomic<bool>& stop) {
  LOG_INFO(kComponent, "agent " << cfg_.name << " of cluster " << cfg_.scope << " starting");
  while (!stop.load()) {
    CycleResult cycle = RunCycle();
    if (refused_) {
      LOG_ERROR(kComponent, "not starting PostgreSQL: " << refuse_reason_);
      Shutdown();
      return 1;
    }
    WaitForNextCycle(stop, cycle.revision, cycle.next_in);
  }
  Shutdown();
  return 0;
}

std::optional<TimePoint> Agent::FencingDeadline() const {
  if (!leader_renewed_at_) return std::nullopt;
  return *leader_renewed_at_ + ha_.ttl - ha_.retry_timeout;
}

void Agent::SetLeaseRenewedAt(std::optional<TimePoint> sent_at) {
  leader_renewed_at_ = sent_at;
  dcs_->SetRequestDeadline(FencingDeadline());
  KickWatchdog(sent_at);
}

TimePoint WatchdogDeadline(TimePoint renewed, Millis ttl, Millis retry_timeout,
                           Millis safety_margin) {
  return renewed + ttl - std::min(safety_margin, retry_timeout);
}

void Agent::SetWatchdog(std::unique_ptr<WatchdogClient> watchdog, WatchdogOptions options) {
  watchdog_ = std::move(watchdog);
  watchdog_options_ = std::move(options);
}

void Agent::KickWatchdog(std::optional<TimePoint> sent_at) {
  if (!watchdog_ || !watchdog_->active()) return;
  const Millis margin = std::chrono::seconds(cfg_.watchdog.safety_margin);
  auto kick = [&] {
    return sent_at ? watchdog_->Arm(WatchdogDeadline(*sent_at, ha_.ttl, ha_.retry_timeout, margin))
                   : watchdog_->Disarm();
  };
  Status st = kick();
  if (st.ok()) return;
  // It died or stopped reading: start another (it takes over the FIFO).
  LOG_WARN(kComponent, "watchdog: " << st.message() << "; restarting it");
  st = watchdog_->Start(watchdog_options_);
  if (st.ok()) st = kick();
  if (!st.ok()) LOG_ERROR(kComponent, "watchdog unusable: " << st.message());
}

void Agent::FenceIfPastDeadline() {
  auto deadline = FencingDeadline();
  if (!deadline || clock_.Now() < *deadline) return;
  SetLeaseRenewedAt(std::nullopt);
  if (!pg_->IsRunning() || (last_pg_ok_ && last_pg_.in_recovery)) return;
  LOG_ERROR(kComponent,
            "the leader lease was not renewed by its fencing deadline: stopping PostgreSQL "
            "(immediate shutdown) before the lease can expire");
  Status st = pg_->Stop(pg::StopMode::kImmediate);
  if (!st.ok()) LOG_ERROR(kComponent, "fencing PostgreSQL failed: " << st.message());
}

void Agent::OnPostmasterExit(pid_t pid) {
  LOG_WARN(kComponent, "postmaster pid " << pid << " exited");
  std::lock_guard lock(mu_);
  snapshot_.pg_running = false;
  snapshot_.state = "crashed";
}

Agent::CycleResult Agent::RunCycle() {
  FinishLongAction();
  ha::Observation obs = Observe();
  ha::Decision decision = ha::Decide(obs, ha_);
  if (decision.reason != last_reason_) {
    LOG_INFO(kComponent, decision.reason);
    last_reason_ = decision.reason;
  } else {
    LOG_DEBUG(kComponent, decision.reason);
  }
  bool changed = Execute(decision, obs);
  FenceIfPastDeadline();
  postmaster_watch_.Watch(pg_->IsRunning() ? pg_->postmaster_pid() : -1);
  if (obs.dcs_ok && !refused_) PublishMember(obs);
  UpdateSnapshot(obs, decision);
  if (obs.dcs_ok) topology_ = TopologySignature(obs.cluster);
  // After a change, look again soon: a started standby begins streaming, a
  // new setting shows in pg_stat_replication.
  CycleResult r;
  r.next_in = changed ? std::min<Millis>(ha_.loop_wait, std::chrono::seconds(1)) : ha_.loop_wait;
  if (leader_refusals_ > 0) r.next_in = std::min<Millis>(r.next_in, std::chrono::seconds(1));
  if (auto deadline = FencingDeadline()) {
    // A leader looks again no later than its fencing deadline (safety rule
    // 2), not a whole loop_wait later.
    auto until = std::chrono::duration_cast<Millis>(*deadline - clock_.Now());
    r.next_in = std::clamp<Millis>(until, Millis(100), r.next_in);
  }
  r.revision = obs.dcs_ok ? obs.cluster.revision : 0;
  r.decision = std::move(decision);
  return r;
}

void Agent::WaitForNextCycle(const std::atomic<bool>& stop, int64_t revision, Millis max_wait) {
  auto deadline = clock_.Now() + max_wait;
  // A long action finishing, or the postmaster exiting, is worth a cycle at
  // once: look for them between short waits for etcd.
  const bool watching = postmaster_watch_.pid() > 0 && !postmaster_watch_.exited();
  const auto slice = std::chrono::milliseconds(
      in_progress_ != ha::LongAction::kNone ? 200 : (watching ? 250 : 1000));
  auto positions_at = clock_.Now();
  while (!stop.load() && clock_.Now() < deadline) {
    if (watching && postmaster_watch_.exited()) return;
    if (in_progress_ != ha::LongAction::kNone && long_action_.valid() &&
        long_action_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      return;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.Now());
    auto wait = std::min<std::chrono::milliseconds>(slice, left);
    if (revision <= 0) {
      std::this_thread::sleep_for(wait);
      continue;
    }
    auto changed = dcs_->WaitForChange(revision, wait);
    if (!changed.ok()) {
      std::this_thread::sleep_for(wait);
      continue;
    }
    if (!*changed) {
      if (clock_.Now() - positions_at >= std::chrono::seconds(1)) {
        const bool streamed = last_pg_ok_ && last_pg_.wal_receiver_status == "streaming";
        RefreshPositions();
        positions_at = clock_.Now();
        // The WAL stream broke: look at the leader now, not a loop_wait later.
        if (streamed && last_pg_.in_recovery && last_pg_.wal_receiver_status != "streaming" &&
            ha_.confirmed_death_checks > 0) {
          return;
        }
      }
      continue;
    }
    auto view = dcs_->Load();
    if (!view.ok()) return;
    if (TopologySignature(*view) != topology_) return;
    revision = view->revision;
  }
}

void Agent::RefreshPositions() {
  // The REST API answers /replica?lag= from this node's own replay position:
  // keep it at most about a second old, not a loop_wait.
  if (in_progress_ != ha::LongAction::kNone || !last_pg_ok_ || !pg_->IsRunning()) return;
  auto st = pg_->Observe();
  if (!st.ok()) return;
  last_pg_ = std::move(*st);
  std::lock_guard lock(mu_);
  NodeStatus& s = snapshot_;
  s.wal_lsn = last_pg_.wal_lsn;
  s.receive_lsn = last_pg_.receive_lsn;
  s.replay_lsn = last_pg_.replay_lsn;
  s.replay_paused = last_pg_.replay_paused;
  s.last_replay_timestamp = last_pg_.last_replay_timestamp;
  if (s.in_recovery == last_pg_.in_recovery) {
    s.streaming = last_pg_.wal_receiver_status == "streaming";
    if (s.in_recovery) s.state = s.streaming ? "streaming" : "running";
  }
}

void Agent::ApplyDynamicConfig(const dcs::ClusterView& view) {
  if (!view.config || !view.config->is_object()) return;
  const auto& c = *view.config;
  auto seconds = [&](const char* key, Millis& out) {
    if (c.contains(key) && c[key].is_number_integer() && c[key].get<int64_t>() > 0) {
      out = std::chrono::seconds(c[key].get<int64_t>());
    }
  };
  seconds("ttl", ha_.ttl);
  seconds("loop_wait", ha_.loop_wait);
  seconds("retry_timeout", ha_.retry_timeout);
  seconds("member_slots_ttl", ha_.member_slots_ttl);
  if (c.contains("synchronous_mode") && c["synchronous_mode"].is_boolean()) {
    ha_.synchronous_mode = c["synchronous_mode"].get<bool>();
  }
  if (c.contains("confirmed_death_checks") && c["confirmed_death_checks"].is_number_integer() &&
      c["confirmed_death_checks"].get<int64_t>() >= 0) {
    ha_.confirmed_death_checks = static_cast<int>(c["confirmed_death_checks"].get<int64_t>());
  }
  if (c.contains("maximum_lag_on_failover") && c["maximum_lag_on_failover"].is_number_unsigned()) {
    ha_.maximum_lag_on_failover = c["maximum_lag_on_failover"].get<uint64_t>();
  }
  std::map<std::string, std::string> params;
  if (c.contains("postgresql") && c["postgresql"].is_object()) {
    const auto& p = c["postgresql"];
    if (p.contains("use_slots") && p["use_slots"].is_boolean()) {
      ha_.use_slots = p["use_slots"].get<bool>();
    }
    if (p.contains("use_pg_rewind") && p["use_pg_rewind"].is_boolean()) {
      ha_.use_pg_rewind = p["use_pg_rewind"].get<bool>();
    }
    if (p.contains("parameters") && p["parameters"].is_object()) {
      for (const auto& [k, v] : p["parameters"].items()) {
        params[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
  } else {
    params = cfg_.bootstrap.dcs.parameters;
  }
  for (const auto& [k, v] : cfg_.postgresql.parameters) params[k] = v;  // local wins
  pg_->SetParameters(std::move(params));
}

ha::Observation Agent::Observe() {
  ha::Observation obs;
  obs.in_progress = in_progress_;
  obs.leader_renewed_at = leader_renewed_at_;

  // Back from a freeze, or from requests that hung, past the fencing
  // deadline: whatever etcd would say now, the lease may have expired, so
  // this cycle fences without asking (safety rule 2).
  const auto deadline = FencingDeadline();
  Result<dcs::ClusterView> view =
      deadline && clock_.Now() >= *deadline
          ? Result<dcs::ClusterView>(DcsUnavailable(
                "not asked: the fencing deadline passed (the agent was delayed or etcd hung)"))
          : dcs_->Load();
  // The time the decision is about is after the (possibly slow) etcd answer.
  obs.now = clock_.Now();
  if (view.ok()) {
    obs.dcs_ok = true;
    obs.cluster = std::move(*view);
    if (in_progress_ == ha::LongAction::kNone) ApplyDynamicConfig(obs.cluster);
    for (const auto& [name, m] : obs.cluster.members) member_last_seen_[name] = obs.now;
    obs.leader_slots = StatusSlotNames(obs.cluster, "slots");
    obs.member_slots = StatusSlotNames(obs.cluster, "retain_slots");
    // Slots pgwarden made before a restart count as seen now: their TTL restarts.
    for (const auto& slot : obs.member_slots) {
      member_last_seen_.try_emplace(slot, obs.now);
    }
  } else {
    obs.dcs_error = view.status().message();
  }
  obs.member_last_seen = member_last_seen_;
  if (obs.dcs_ok && obs.cluster.HasLeader() && obs.cluster.leader->name == rewind_target_) {
    obs.rewind_failure = rewind_failure_;
  }

  if (in_progress_ != ha::LongAction::kNone) return obs;

  ha::LocalState& local = obs.local;
  pg::DataDirInfo dir = pg_->InspectDataDir();
  switch (dir.kind) {
    case pg::DataDirKind::kEmpty:
      local.data_dir = ha::DataDir::kEmpty;
      break;
    case pg::DataDirKind::kInitialized:
      local.data_dir = ha::DataDir::kInitialized;
      break;
    case pg::DataDirKind::kInvalid:
      local.data_dir = ha::DataDir::kInvalid;
      break;
  }
  local.data_dir_problem = dir.problem;
  local.system_identifier = dir.system_identifier;
  local.standby_signal = dir.standby_signal;
  local.pg_running = pg_->IsRunning();
  last_pg_ok_ = false;
  if (local.pg_running) {
    auto st = pg_->Observe();
    if (st.ok()) {
      last_pg_ = std::move(*st);
      last_pg_ok_ = true;
      local.pg_ready = true;
      local.in_recovery = last_pg_.in_recovery;
      local.timeline = last_pg_.timeline;
      local.wal_lsn = last_pg_.wal_lsn;
      local.receive_lsn = last_pg_.receive_lsn;
      local.replay_lsn = last_pg_.replay_lsn;
      for (const auto& s : last_pg_.slots) local.slots.insert(s.name);
      for (const auto& r : last_pg_.replication) {
        local.standbys.push_back({r.application_name, r.state == "streaming", r.sync_state});
      }
      local.sync_names = ha::ParseSyncStandbyNames(last_pg_.synchronous_standby_names);
    } else {
      if (st.status().code() == ErrorCode::kPgUnavailable) {
        LOG_DEBUG(kComponent, "PostgreSQL not ready: " << st.status().message());
      } else {
        LOG_WARN(kComponent, "observing PostgreSQL failed: " << st.status().message());
      }
    }
  }
  local.following = FollowedMember(obs.cluster);
  if (obs.dcs_ok && !obs.cluster.HasLeader() && local.pg_ready && local.in_recovery) {
    obs.peers = AskPeers(obs.cluster);
  }
  CheckLeaderDeath(obs);
  return obs;
}

PortProbe ProbePort(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
    return PortProbe::kNoAnswer;
  }
  PortProbe out = PortProbe::kNoAnswer;
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
    if (rc == 0) {
      out = PortProbe::kAccepted;
    } else if (errno == ECONNREFUSED) {
      out = PortProbe::kRefused;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        out = err == 0 ? PortProbe::kAccepted
                       : (err == ECONNREFUSED ? PortProbe::kRefused : PortProbe::kNoAnswer);
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return out;
}

void Agent::CheckLeaderDeath(ha::Observation& obs) {
  const ha::LocalState& local = obs.local;
  const bool applies = ha_.confirmed_death_checks > 0 && obs.dcs_ok && obs.cluster.HasLeader() &&
                       obs.cluster.leader->name != cfg_.name && local.pg_ready &&
                       local.in_recovery && last_pg_.wal_receiver_status != "streaming";
  const dcs::Member* m = applies ? obs.cluster.FindMember(obs.cluster.leader->name) : nullptr;
  auto pg = m ? config::HostPortOfUrl(m->conn_url) : std::nullopt;
  auto rest = m ? config::HostPortOfUrl(m->api_url) : std::nullopt;
  if (!pg || !rest) {
    leader_refusals_ = 0;
    return;
  }
  if (obs.cluster.leader->mod_revision != refusals_revision_) {
    leader_refusals_ = 0;
    refusals_revision_ = obs.cluster.leader->mod_revision;
  }
  // Only a refusal counts: a timeout may be a partition, behind which the
  // leader may still take writes.
  const auto timeout = std::chrono::milliseconds(500);
  const bool dead = ProbePort(pg->host, pg->port, timeout) == PortProbe::kRefused &&
                    ProbePort(rest->host, rest->port, timeout) == PortProbe::kRefused;
  leader_refusals_ = dead ? leader_refusals_ + 1 : 0;
  obs.leader_refusals = leader_refusals_;
  if (dead) {
    LOG_INFO(kComponent, "leader " << m->name << ": PostgreSQL and REST ports refuse ("
                                   << leader_refusals_ << "/" << ha_.confirmed_death_checks << ")");
  }
}

ha::PeerPosition ParsePeerStatus(const nlohmann::json& j) {
  ha::PeerPosition p;
  if (!j.is_object()) return p;
  p.reachable = true;
  p.pg_running = j.value("state", "") == "running";
  p.in_recovery = j.value("role", "") != "primary" && j.value("role", "") != "master";
  if (j.contains("xlog") && j["xlog"].is_object()) {
    const auto& x = j["xlog"];
    auto lsn = [&](const char* key) {
      return x.contains(key) && x[key].is_number_unsigned() ? Lsn(x[key].get<uint64_t>()) : Lsn();
    };
    p.wal_position = p.in_recovery ? std::max(lsn("received_location"), lsn("replayed_location"))
                                   : lsn("location");
  }
  return p;
}

std::map<std::string, ha::PeerPosition> Agent::AskPeers(const dcs::ClusterView& view) {
  std::map<std::string, ha::PeerPosition> out;
  net::HttpClient http;
  const auto timeout =
      std::min<std::chrono::milliseconds>(std::chrono::seconds(1), ha_.retry_timeout);
  for (const auto& [name, m] : view.members) {
    if (name == cfg_.name) continue;
    ha::PeerPosition& p = out[name];
    auto scheme = m.api_url.find("://");
    if (scheme == std::string::npos) continue;
    std::string rest = m.api_url.substr(scheme + 3);
    std::string endpoint = rest.substr(0, rest.find('/'));
    auto r = http.Get(endpoint, "/patroni", timeout);
    if (!r.ok() || r->status != 200) {
      LOG_DEBUG(kComponent,
                "member " << name << " does not answer: "
                          << (r.ok() ? "HTTP " + std::to_string(r->status) : r.status().message()));
      continue;
    }
    p = ParsePeerStatus(nlohmann::json::parse(r->body, nullptr, false));
  }
  return out;
}

std::string Agent::FollowedMember(const dcs::ClusterView& view) const {
  auto follow = pg_->CurrentFollow();
  if (!follow || follow->host.empty()) return "";
  for (const auto& [name, m] : view.members) {
    auto hp = config::HostPortOfUrl(m.conn_url);
    if (hp && hp->host == follow->host && hp->port == follow->port) return name;
  }
  return "";
}

std::optional<pg::StandbyTarget> Agent::TargetFor(const std::string& member,
                                                  const dcs::ClusterView& view) const {
  pg::StandbyTarget t;
  t.slot = ha_.use_slots ? ha::SlotNameForMember(cfg_.name) : "";
  if (member.empty()) return t;
  const dcs::Member* m = view.FindMember(member);
  if (m == nullptr) return std::nullopt;
  auto hp = config::HostPortOfUrl(m->conn_url);
  if (!hp) return std::nullopt;
  t.host = hp->host;
  t.port = hp->port;
  return t;
}

bool Agent::Execute(const ha::Decision& decision, const ha::Observation& obs) {
  bool changed = false;
  for (const auto& action : decision.actions) {
    using ha::ActionType;
    Status st = ExecuteOne(action, obs);
    if (!st.ok()) {
      LOG_WARN(kComponent, ha::ActionName(action.type)
                               << (action.target.empty() ? "" : " " + action.target)
                               << " failed: " << st.message());
      return true;  // later actions depend on this one; retry soon
    }
    switch (action.type) {
      case ActionType::kRenewLeader:
      case ActionType::kWriteStatus:
      case ActionType::kRefuse:
        break;
      default:
        changed = true;
    }
  }
  return changed;
}

Status Agent::ExecuteOne(const ha::Action& a, const ha::Observation& obs) {
  using ha::ActionType;
  switch (a.type) {
    case ActionType::kRaceInitialize: {
      if (obs.local.data_dir == ha::DataDir::kInitialized) {
        auto won = dcs_->TryInitialize(obs.local.system_identifier);
        if (!won.ok()) return won.status();
        if (*won) LOG_INFO(kComponent, "claimed the cluster with the existing data directory");
        return Status::Ok();
      }
      PGW_RETURN_IF_ERROR(pg_->CheckDataDirReachable());
      auto won = dcs_->TryInitialize("");
      if (!won.ok()) return won.status();
      if (!*won) {
        LOG_INFO(kComponent, "another member is initializing the cluster");
        return Status::Ok();
      }
      LOG_INFO(kComponent, "won the initialize race: bootstrapping a new cluster");
      StartLongAction(ha::LongAction::kBootstrap, [this] { return Bootstrap(); });
      return Status::Ok();
    }
    case ActionType::kBaseBackup: {
      auto from = TargetFor(a.target, obs.cluster);
      if (!from) return NotFound("leader " + a.target + " has no usable conn_url");
      PGW_RETURN_IF_ERROR(pg_->CheckDataDirReachable());
      auto target = *from;
      StartLongAction(ha::LongAction::kBaseBackup,
                      [this, target] { return CreateReplica(target); });
      return Status::Ok();
    }
    case ActionType::kStartPrimary:
      PGW_RETURN_IF_ERROR(pg_->WriteConfig(std::nullopt, synchronous_standby_names_));
      return pg_->Start();
    case ActionType::kStartStandby: {
      auto t = TargetFor(a.target, obs.cluster);
      if (!t) return NotFound("leader " + a.target + " has no usable conn_url");
      PGW_RETURN_IF_ERROR(pg_->WriteConfig(*t, ""));
      return pg_->Start();
    }
    case ActionType::kFollow: {
      auto t = TargetFor(a.target, obs.cluster);
      if (!t) return NotFound("leader " + a.target + " has no usable conn_url");
      PGW_RETURN_IF_ERROR(pg_->WriteConfig(*t, ""));
      return pg_->Reload();
    }
    case ActionType::kPromote:
      PGW_RETURN_IF_ERROR(pg_->Promote());
      RecordPromotion(obs);
      return pg_->WriteConfig(std::nullopt, synchronous_standby_names_);
    case ActionType::kDeleteLeader: {
      if (!obs.cluster.leader) return Status::Ok();
      Status st = dcs_->DeleteLeaderAt(obs.cluster.leader->mod_revision);
      if (st.ok())
        LOG_WARN(kComponent, "deleted the leader key of " << a.target << ", confirmed dead");
      leader_refusals_ = 0;
      return st;
    }
    case ActionType::kRewind: {
      auto from = TargetFor(a.target, obs.cluster);
      if (!from) return NotFound("leader " + a.target + " has no usable conn_url");
      auto target = *from;
      rewind_target_ = a.target;
      rewind_failure_.clear();
      StartLongAction(ha::LongAction::kRewind, [this, target] { return RewindAndFollow(target); });
      return Status::Ok();
    }
    case ActionType::kStopPostgres:
      SetLeaseRenewedAt(std::nullopt);
      return pg_->Stop(pg::StopMode::kFast);
    case ActionType::kFencePostgres:
      SetLeaseRenewedAt(std::nullopt);
      return pg_->Stop(pg::StopMode::kImmediate);
    case ActionType::kAcquireLeader: {
      if (watchdog_options_.mode == config::WatchdogMode::kRequired &&
          !(watchdog_ && watchdog_->active())) {
        return Fatal("watchdog.mode is required and no watchdog runs: not taking the leader key");
      }
      const TimePoint sent_at = clock_.Now();
      auto won = dcs_->AcquireLeader(cfg_.name);
      if (!won.ok()) return won.status();
      if (!*won) return Conflict("another member holds the leader key");
      SetLeaseRenewedAt(sent_at);
      LOG_INFO(kComponent, "acquired the leader key");
      return Status::Ok();
    }
    case ActionType::kRenewLeader: {
      // The lease runs from no earlier than the moment the request left.
      const TimePoint sent_at = clock_.Now();
      auto still = dcs_->RenewLeader(cfg_.name);
      if (!still.ok()) return still.status();
      if (!*still) {
        // Safety rule 1: no writes without the lease.
        LOG_ERROR(kComponent, "lost the leader key: fencing PostgreSQL");
        SetLeaseRenewedAt(std::nullopt);
        (void)pg_->Stop(pg::StopMode::kImmediate);
        return Conflict("leader key lost");
      }
      SetLeaseRenewedAt(sent_at);
      return Status::Ok();
    }
    case ActionType::kCreateSlot:
      return pg_->CreateSlot(a.target);
    case ActionType::kDropSlot:
      return pg_->DropSlot(a.target);
    case ActionType::kSetSyncStandbys: {
      std::string value = SyncStandbyNamesValue(a.names);
      LOG_INFO(kComponent, "synchronous_standby_names = '" << value << "'");
      PGW_RETURN_IF_ERROR(pg_->WriteConfig(std::nullopt, value));
      synchronous_standby_names_ = value;
      return pg_->Reload();
    }
    case ActionType::kWriteSync: {
      dcs::SyncKey sync{cfg_.name, a.target, 0};
      int64_t expected = obs.cluster.sync ? obs.cluster.sync->mod_revision : 0;
      LOG_INFO(kComponent, "recording synchronous standby: "
                               << (a.target.empty() ? std::string("none") : a.target));
      return dcs_->WriteSync(sync, expected);
    }
    case ActionType::kWriteStatus: {
      nlohmann::json slots = nlohmann::json::object();
      for (const auto& s : last_pg_.slots) slots[s.name] = s.restart_lsn.value();
      nlohmann::json retain = nlohmann::json::array();
      for (const auto& s : ha::WantedSlots(obs, ha_)) retain.push_back(s);
      return dcs_->WriteStatus({{"optime", obs.local.wal_lsn.value()},
                                {"leader", cfg_.name},
                                {"slots", slots},
                                {"retain_slots", retain},
                                {"pgwarden_format", dcs::kMemberFormatVersion}});
    }
    case ActionType::kRefuse:
      refused_ = true;
      refuse_reason_ = a.target;
      return Status::Ok();
  }
  return Fatal("unknown action");
}

void Agent::StartLongAction(ha::LongAction kind, std::function<Status()> body) {
  in_progress_ = kind;
  long_action_ = std::async(std::launch::async, std::move(body));
}

void Agent::FinishLongAction() {
  if (in_progress_ == ha::LongAction::kNone || !long_action_.valid()) return;
  if (long_action_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  Status st = long_action_.get();
  ha::LongAction kind = in_progress_;
  in_progress_ = ha::LongAction::kNone;
  if (kind == ha::LongAction::kBootstrap) {
    if (st.ok()) st = FinishBootstrap();
    if (!st.ok()) {
      // Give the initialize race back, with an empty data directory, so that
      // this member (or another) starts over instead of claiming half-made data.
      LOG_ERROR(kComponent, "bootstrap failed: " << st.message());
      (void)pg_->Stop(pg::StopMode::kImmediate);
      if (leader_renewed_at_) (void)dcs_->ReleaseLeader(cfg_.name);
      SetLeaseRenewedAt(std::nullopt);
      Status cleared = pg_->ClearDataDir();
      if (!cleared.ok())
        LOG_ERROR(kComponent, "cannot empty the data directory: " << cleared.message());
      (void)dcs_->CancelInitialize("");
      return;
    }
    return;
  }
  const char* what = kind == ha::LongAction::kRewind ? "rewind" : "replica creation";
  if (kind == ha::LongAction::kRewind && !st.ok()) rewind_failure_ = st.message();
  if (st.ok())
    LOG_INFO(kComponent, what << " finished");
  else
    LOG_ERROR(kComponent, what << " failed: " << st.message());
}

// Runs on the long-action thread: PostgreSQL work only (the loop thread owns the Dcs).
Status Agent::Bootstrap() {
  PGW_RETURN_IF_ERROR(pg_->Initdb());
  PGW_RETURN_IF_ERROR(pg_->Start());
  return pg_->CreateRoles();
}

// Runs on the loop thread once PostgreSQL is up: the cluster's keys.
Status Agent::FinishBootstrap() {
  pg::DataDirInfo dir = pg_->InspectDataDir();
  if (dir.kind != pg::DataDirKind::kInitialized) {
    return Fatal("the new data directory cannot be read: " + dir.problem);
  }
  const TimePoint sent_at = clock_.Now();
  auto won = dcs_->AcquireLeader(cfg_.name);
  if (!won.ok()) return won.status();
  if (!*won) return Conflict("the leader key was taken during bootstrap");
  SetLeaseRenewedAt(sent_at);
  auto cfg = dcs_->InitializeConfig(DynamicConfigJson(cfg_.bootstrap.dcs));
  if (!cfg.ok()) return cfg.status();
  PGW_RETURN_IF_ERROR(dcs_->UpdateInitialize("", dir.system_identifier));
  LOG_INFO(kComponent,
           "initialized a new cluster with system identifier " << dir.system_identifier);
  return Status::Ok();
}

// Long-action thread: PostgreSQL work only.
Status Agent::RewindAndFollow(const pg::StandbyTarget& from) {
  PGW_RETURN_IF_ERROR(pg_->Rewind(from));
  PGW_RETURN_IF_ERROR(pg_->WriteConfig(from, ""));
  return pg_->Start();
}

void Agent::RecordPromotion(const ha::Observation& obs) {
  auto st = pg_->Observe();
  const int timeline = st.ok() ? st->timeline : obs.local.timeline + 1;
  nlohmann::json history = obs.cluster.history && obs.cluster.history->is_array()
                               ? *obs.cluster.history
                               : nlohmann::json::array();
  char when[64];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S+00:00", std::gmtime(&now));
  // Patroni's shape: [old timeline, switch LSN, reason, time, new leader].
  history.push_back({timeline - 1, ha::CandidatePosition(obs.local).value(),
                     "no recovery target specified", when, cfg_.name});
  Status w = dcs_->WriteHistory(history);
  if (!w.ok())
    LOG_WARN(kComponent, "cannot record the timeline switch in history: " << w.message());
  LOG_INFO(kComponent, "promoted: timeline " << timeline - 1 << " -> " << timeline);
}

Status Agent::CreateReplica(const pg::StandbyTarget& from) {
  Status st = pg_->BaseBackup(from);
  if (!st.ok()) return st;
  st = pg_->WriteConfig(from, "");
  if (!st.ok()) return st;
  return pg_->Start();
}

void Agent::PublishMember(const ha::Observation& obs) {
  dcs::Member m;
  m.name = cfg_.name;
  m.conn_url = cfg_.ConnUrl();
  m.api_url = cfg_.ApiUrl();
  m.tags = cfg_.tags;
  m.version = PGWARDEN_VERSION;
  const auto& local = obs.local;
  if (in_progress_ == ha::LongAction::kBootstrap) {
    m.role = "uninitialized";
    m.state = "initializing new cluster";
  } else if (in_progress_ == ha::LongAction::kBaseBackup) {
    m.role = "uninitialized";
    m.state = "creating replica";
  } else if (in_progress_ == ha::LongAction::kRewind) {
    m.role = "replica";
    m.state = "rewinding";
  } else if (!local.pg_running) {
    m.role = local.data_dir == ha::DataDir::kEmpty ? "uninitialized"
                                                   : (local.standby_signal ? "replica" : "primary");
    m.state = "stopped";
  } else if (!local.pg_ready) {
    m.role = local.standby_signal ? "replica" : "primary";
    m.state = "starting";
  } else if (!local.in_recovery) {
    m.role = "primary";
    m.state = "running";
    m.timeline = local.timeline;
    m.xlog_location = local.wal_lsn;
  } else {
    m.role = "replica";
    m.state = last_pg_.wal_receiver_status == "streaming" ? "streaming" : "running";
    m.timeline = local.timeline;
    m.xlog_location = last_pg_.replay_lsn;
    m.receive_lsn = last_pg_.receive_lsn;
    m.replay_lsn = last_pg_.replay_lsn;
  }
  Status st = dcs_->PublishMember(m);
  if (!st.ok()) LOG_WARN(kComponent, "cannot publish member key: " << st.message());
}

void Agent::UpdateSnapshot(const ha::Observation& obs, const ha::Decision& decision) {
  std::lock_guard lock(mu_);
  last_cycle_at_ = obs.now;
  ha_ttl_ = ha_.ttl;
  ha_loop_wait_ = ha_.loop_wait;
  NodeStatus& s = snapshot_;
  s.dcs_reachable = obs.dcs_ok;
  if (obs.dcs_ok) s.cluster = obs.cluster;
  s.last_decision = decision.reason;
  s.pg_running = obs.local.pg_running && obs.local.pg_ready;
  s.is_leader = obs.dcs_ok && obs.cluster.HasLeader() && obs.cluster.leader->name == cfg_.name &&
                leader_renewed_at_.has_value();
  s.is_sync_standby = obs.dcs_ok && obs.cluster.sync && obs.cluster.sync->sync_standby == cfg_.name;
  if (in_progress_ != ha::LongAction::kNone) {
    s.role = "uninitialized";
    s.state = in_progress_ == ha::LongAction::kBootstrap ? "initializing new cluster"
              : in_progress_ == ha::LongAction::kRewind  ? "rewinding"
                                                         : "creating replica";
  } else if (!s.pg_running) {
    s.state = obs.local.pg_running ? "starting" : "stopped";
  } else if (last_pg_ok_) {
    s.in_recovery = last_pg_.in_recovery;
    s.role = s.in_recovery ? "replica" : "primary";
    s.streaming = last_pg_.wal_receiver_status == "streaming";
    s.state = s.in_recovery && s.streaming ? "streaming" : "running";
    s.replay_paused = last_pg_.replay_paused;
    s.timeline = last_pg_.timeline;
    s.wal_lsn = last_pg_.wal_lsn;
    s.receive_lsn = last_pg_.receive_lsn;
    s.replay_lsn = last_pg_.replay_lsn;
    s.last_replay_timestamp = last_pg_.last_replay_timestamp;
    s.postmaster_start_time = last_pg_.postmaster_start_time;
    s.server_version = last_pg_.server_version;
    s.system_identifier = last_pg_.system_identifier;
  }
  if (refused_) s.state = "refused: " + refuse_reason_;
}

void Agent::Shutdown() {
  if (long_action_.valid()) {
    LOG_INFO(kComponent, "waiting for the running bootstrap / base backup to finish");
    long_action_.wait();
  }
  bool was_leader = leader_renewed_at_.has_value();
  Status st = pg_->Stop(pg::StopMode::kFast);
  if (!st.ok()) LOG_ERROR(kComponent, "stopping PostgreSQL: " << st.message());
  if (was_leader && st.ok()) {
    // Only once PostgreSQL is down: nobody may promote while we accept writes.
    Status rel = dcs_->ReleaseLeader(cfg_.name);
    if (rel.ok())
      LOG_INFO(kComponent, "released the leader key");
    else
      LOG_WARN(kComponent, "could not release the leader key: " << rel.message());
  }
  (void)dcs_->DeleteMember(cfg_.name);
  (void)dcs_->Close();
  if (watchdog_ && st.ok()) {
    Status wd = watchdog_->Stop();
    if (!wd.ok()) LOG_WARN(kComponent, "stopping the watchdog: " << wd.message());
  }
  LOG_INFO(kComponent, "agent stopped");
}

}  // namespace pgwarden::agent
