// Unit tests for Decide(): tables of {observation, expected actions, expected reason} and
// property checks of the safety rules over grids of observations.
#include "ha/decide.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <ostream>
#include <sstream>

namespace pgwarden::ha {

// gtest prints actions as "type(target)[names]" in failure messages.
void PrintTo(const Action& a, std::ostream* os) {
  *os << ActionName(a.type);
  if (!a.target.empty()) *os << "(" << a.target << ")";
  if (a.type == ActionType::kSetSyncStandbys) {
    *os << "[";
    for (size_t i = 0; i < a.names.size(); ++i) *os << (i ? "," : "") << a.names[i];
    *os << "]";
  }
}

namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::HasSubstr;

const TimePoint kNow{hours(10)};
const std::string kMe = "node1";
const std::string kSysid = "7300000000000000001";
const std::string kOtherSysid = "7399999999999999999";

// --- Building observations -------------------------------------------------

// A fluent builder. The default is the most common case: etcd answers, the cluster is
// initialized with our system identifier, our data directory is initialized, this member
// is registered, nobody holds the leader key and PostgreSQL is stopped.
class Obs {
 public:
  Obs() {
    obs_.now = kNow;
    obs_.dcs_ok = true;
    obs_.cluster.revision = 42;
    obs_.cluster.initialize = kSysid;
    obs_.local.data_dir = DataDir::kInitialized;
    obs_.local.system_identifier = kSysid;
    Member(kMe);
  }

  Obs& Member(const std::string& name, std::map<std::string, std::string> tags = {}) {
    dcs::Member m;
    m.name = name;
    m.tags = std::move(tags);
    obs_.cluster.members[name] = m;
    obs_.member_last_seen[name] = kNow;
    return *this;
  }
  Obs& Leader(const std::string& name) {
    obs_.cluster.leader = dcs::LeaderKey{name, 7};
    return *this;
  }
  Obs& ILead() {
    Leader(kMe);
    obs_.leader_renewed_at = kNow - seconds(5);
    return *this;
  }
  Obs& NoInitialize() {
    obs_.cluster.initialize.reset();
    return *this;
  }
  Obs& Initialize(const std::string& sysid) {
    obs_.cluster.initialize = sysid;
    return *this;
  }
  Obs& EmptyData() {
    obs_.local.data_dir = DataDir::kEmpty;
    obs_.local.system_identifier.clear();
    return *this;
  }
  Obs& Sysid(const std::string& sysid) {
    obs_.local.system_identifier = sysid;
    return *this;
  }
  Obs& InvalidData(const std::string& problem) {
    obs_.local.data_dir = DataDir::kInvalid;
    obs_.local.data_dir_problem = problem;
    return *this;
  }
  Obs& StandbySignal() {
    obs_.local.standby_signal = true;
    return *this;
  }
  Obs& Primary() {
    obs_.local.pg_running = true;
    obs_.local.pg_ready = true;
    obs_.local.in_recovery = false;
    obs_.local.standby_signal = false;
    return *this;
  }
  Obs& Replica(const std::string& following) {
    obs_.local.pg_running = true;
    obs_.local.pg_ready = true;
    obs_.local.in_recovery = true;
    obs_.local.standby_signal = true;
    obs_.local.following = following;
    return *this;
  }
  Obs& NotReady() {
    obs_.local.pg_running = true;
    obs_.local.pg_ready = false;
    return *this;
  }
  Obs& DcsDown(const std::string& error = "connection refused") {
    obs_.dcs_ok = false;
    obs_.dcs_error = error;
    return *this;
  }
  Obs& RenewedAt(TimePoint t) {
    obs_.leader_renewed_at = t;
    return *this;
  }
  Obs& InProgress(LongAction a) {
    obs_.in_progress = a;
    return *this;
  }
  Obs& LeaderSlots(std::set<std::string> slots) {
    obs_.leader_slots = std::move(slots);
    return *this;
  }
  Obs& LocalSlots(std::set<std::string> slots) {
    obs_.local.slots = std::move(slots);
    return *this;
  }
  Obs& MemberSlots(std::set<std::string> slots) {
    obs_.member_slots = std::move(slots);
    return *this;
  }
  // A member no longer in the cluster view, last seen `ago`.
  Obs& Departed(const std::string& name, Millis ago) {
    obs_.cluster.members.erase(name);
    obs_.member_last_seen[name] = kNow - ago;
    return *this;
  }
  Obs& Standby(const std::string& name, bool streaming, const std::string& sync_state) {
    obs_.local.standbys.push_back(StandbyInfo{name, streaming, sync_state});
    return *this;
  }
  Obs& SyncNames(std::vector<std::string> names) {
    obs_.local.sync_names = std::move(names);
    return *this;
  }
  Obs& SyncKey(const std::string& leader, const std::string& standby) {
    obs_.cluster.sync = dcs::SyncKey{leader, standby, 9};
    return *this;
  }
  // Another member's REST answer during an election.
  Obs& Peer(const std::string& name, uint64_t lsn, bool in_recovery = true) {
    obs_.peers[name] = PeerPosition{true, in_recovery, true, Lsn(lsn)};
    return *this;
  }
  Obs& At(uint64_t receive_lsn) {
    obs_.local.receive_lsn = Lsn(receive_lsn);
    obs_.local.replay_lsn = Lsn(receive_lsn);
    return *this;
  }
  Obs& Optime(uint64_t lsn) {
    obs_.cluster.last_leader_optime = Lsn(lsn);
    return *this;
  }
  Obs& With(const std::function<void(Observation&)>& f) {
    f(obs_);
    return *this;
  }

  operator Observation() const { return obs_; }  // NOLINT: implicit for the tables

 private:
  Observation obs_;
};

HaConfig Config() {
  HaConfig c;
  c.name = kMe;
  c.ttl = seconds(30);
  c.retry_timeout = seconds(10);
  c.member_slots_ttl = minutes(30);
  return c;
}
HaConfig SyncConfig() {
  HaConfig c = Config();
  c.synchronous_mode = true;
  return c;
}
HaConfig NoSlotsConfig() {
  HaConfig c = Config();
  c.use_slots = false;
  return c;
}
HaConfig RewindConfig() {
  HaConfig c = Config();
  c.use_pg_rewind = true;
  return c;
}
HaConfig NoFailoverConfig() {
  HaConfig c = Config();
  c.nofailover = true;
  return c;
}
HaConfig NamedConfig(const std::string& name) {
  HaConfig c = Config();
  c.name = name;
  return c;
}

// --- Expected actions --------------------------------------------------------

Action A(ActionType type, std::string target = {}) { return Action{type, std::move(target), {}}; }
Action SetSync(std::vector<std::string> names) {
  return Action{ActionType::kSetSyncStandbys, {}, std::move(names)};
}
const Action kRenew = A(ActionType::kRenewLeader);
const Action kStatus = A(ActionType::kWriteStatus);
const Action kStop = A(ActionType::kStopPostgres);
const Action kFence = A(ActionType::kFencePostgres);
const Action kAcquire = A(ActionType::kAcquireLeader);
const Action kStartPrimary = A(ActionType::kStartPrimary);
const Action kPromote = A(ActionType::kPromote);
const Action kRace = A(ActionType::kRaceInitialize);

// --- The table ---------------------------------------------------------------

struct Case {
  std::string name;
  Observation obs;
  std::vector<Action> actions;
  std::vector<std::string> reason_has;  // substrings of the reason, all required
  HaConfig cfg = Config();
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

std::vector<Case> LongActionAndDataDirCases() {
  return {
      {"BootstrapInProgressDoesNothing",
       Obs().NoInitialize().EmptyData().InProgress(LongAction::kBootstrap),
       {},
       {"bootstrap in progress"}},
      {"BaseBackupInProgressDoesNothing",
       Obs().EmptyData().Member("node2").Leader("node2").InProgress(LongAction::kBaseBackup),
       {},
       {"creating a replica from leader node2"}},
      {"BaseBackupInProgressEvenWithoutEtcd",
       Obs().EmptyData().InProgress(LongAction::kBaseBackup).DcsDown(),
       {},
       {"creating a replica"}},
      {"InvalidDataDirIsRefused",
       Obs().InvalidData("PG_VERSION is 14, expected 15").Leader("node2").Member("node2"),
       {A(ActionType::kRefuse, "PG_VERSION is 14, expected 15")},
       {"refusing", "PG_VERSION is 14, expected 15"}},
      {"InvalidDataDirIsRefusedEvenWithoutEtcd",
       Obs().InvalidData("not a data directory").DcsDown(),
       {A(ActionType::kRefuse, "not a data directory")},
       {"not a data directory"}},
  };
}

std::vector<Case> EtcdUnreachableCases() {
  // Default Config(): ttl 30 s, retry_timeout 10 s: the deadline is renewed_at + 20 s.
  HaConfig short_lease = Config();
  short_lease.ttl = seconds(10);
  short_lease.retry_timeout = seconds(4);
  return {
      {"EtcdDownReplicaKeepsRole",
       Obs().Member("node2").Leader("node2").Replica("node2").DcsDown("connection refused"),
       {},
       {"etcd", "connection refused", "keeping the current role"}},
      {"EtcdDownStoppedNodeWaits", Obs().DcsDown("timeout"), {}, {"etcd", "timeout"}},
      {"EtcdDownLeaderBeforeDeadlineKeepsRunning",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(12)).DcsDown(),
       {},
       {"etcd unreachable", "still the leader for 8 s"}},
      {"EtcdDownLeaderOneMsBeforeDeadlineKeepsRunning",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(20) + milliseconds(1)).DcsDown(),
       {},
       {"still the leader"}},
      {"EtcdDownLeaderAtDeadlineFencesItself",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(20)).DcsDown("no endpoint"),
       {kFence},
       {"demoting", "etcd unreachable", "no endpoint"}},
      {"EtcdDownLeaderAfterDeadlineFencesItself",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(29)).DcsDown(),
       {kFence},
       {"demoting"}},
      {"EtcdDownDeadlineFollowsTtlAndRetryTimeout",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(6)).DcsDown(),
       {kFence},
       {"lease is about to expire"},
       short_lease},
      {"EtcdDownDeadlineFollowsTtlAndRetryTimeoutBefore",
       Obs().ILead().Primary().RenewedAt(kNow - seconds(5)).DcsDown(),
       {},
       {"still the leader"},
       short_lease},
  };
}

// The text of kRefuse when our data directory has kOtherSysid and the cluster kSysid.
std::string SysidMismatchWhy() {
  return "the data directory's database system identifier " + kOtherSysid +
         " differs from the cluster's " + kSysid +
         ": it belongs to another cluster. Remove or move the data directory to let this "
         "member rebuild from the leader, or point it at another scope";
}

std::vector<Case> InitializeCases() {
  return {
      {"NoInitializeKeyEmptyDataRaces",
       Obs().NoInitialize().EmptyData(),
       {kRace},
       {"racing to initialize"}},
      {"NoInitializeKeyExistingDataRacesWithItsSysid",
       Obs().NoInitialize(),
       {kRace},
       {"existing data", kSysid}},
      {"InitializeRunningElsewhereEmptyDataWaits",
       Obs().Initialize("").EmptyData().Member("node2"),
       {},
       {"waiting for the cluster's bootstrap"}},
      {"SysidMismatchIsRefused",
       Obs().Sysid(kOtherSysid).Member("node2").Leader("node2"),
       {A(ActionType::kRefuse, SysidMismatchWhy())},
       {"refusing", "differs", kSysid, kOtherSysid}},
      {"SysidMismatchIsRefusedWhileRunning",
       Obs().Sysid(kOtherSysid).Member("node2").Leader("node2").Primary(),
       {A(ActionType::kRefuse, SysidMismatchWhy())},
       {"differs"}},
  };
}

std::vector<Case> EmptyDataCases() {
  return {
      {"EmptyDataWaitsForLeaderSlot",
       Obs().EmptyData().Member("node2").Leader("node2").LeaderSlots({"node3"}),
       {},
       {"waiting for leader node2 to create replication slot node1"}},
      {"EmptyDataBaseBackupOnceSlotExists",
       Obs().EmptyData().Member("node2").Leader("node2").LeaderSlots({"node1", "node3"}),
       {A(ActionType::kBaseBackup, "node2")},
       {"creating a replica from leader node2"}},
      {"EmptyDataWaitsForSlotNamedAfterMember",
       Obs().EmptyData().Member("Node-3").Member("node2").Leader("node2").LeaderSlots({"Node-3"}),
       {},
       {"replication slot node_3"},
       NamedConfig("Node-3")},
      {"EmptyDataBaseBackupWithSlotNamedAfterMember",
       Obs().EmptyData().Member("Node-3").Member("node2").Leader("node2").LeaderSlots({"node_3"}),
       {A(ActionType::kBaseBackup, "node2")},
       {"leader node2"},
       NamedConfig("Node-3")},
      {"EmptyDataWithoutSlotsDoesNotWait",
       Obs().EmptyData().Member("node2").Leader("node2"),
       {A(ActionType::kBaseBackup, "node2")},
       {"creating a replica from leader node2"},
       NoSlotsConfig()},
      {"EmptyDataNoLeaderWaits",
       Obs().EmptyData().Member("node2").LeaderSlots({"node1"}),
       {},
       {"waiting for a leader"}},
      {"EmptyDataLeaderKeyIsOursWaits",
       Obs().EmptyData().ILead().LeaderSlots({"node1"}),
       {},
       {"data directory is empty"}},
  };
}

std::vector<Case> StoppedCases() {
  return {
      {"StoppedLeaderKeyOursStartsPrimary",
       Obs().ILead().StandbySignal(),
       {kRenew, kStartPrimary},
       {"starting as primary", "holds the leader key"}},
      {"StoppedOtherLeaderStartsStandby",
       Obs().Member("node2").Leader("node2").StandbySignal(),
       {A(ActionType::kStartStandby, "node2")},
       {"standby of leader node2"}},
      {"StoppedOldPrimaryWithOtherLeaderStaysStoppedWithoutRewind",
       Obs().Member("node2").Leader("node2"),
       {},
       {"staying stopped", "may have diverged", "use_pg_rewind is off"}},
      {"StoppedOldPrimaryWithOtherLeaderRewindsFirst",
       Obs().Member("node2").Leader("node2"),
       {A(ActionType::kRewind, "node2")},
       {"rejoining leader node2", "pg_rewind"},
       RewindConfig()},
      {"StoppedOldPrimaryWhoseRewindFailedStaysStopped",
       Obs().Member("node2").Leader("node2").With(
           [](Observation& o) { o.rewind_failure = "pg_rewind failed: exited with 1"; }),
       {},
       {"staying stopped", "pg_rewind against leader node2 failed", "exited with 1"},
       RewindConfig()},
      {"ConfirmedDeadLeaderKeyIsDeleted",
       Obs().Member("node2").Leader("node2").Replica("node2").With(
           [](Observation& o) { o.leader_refusals = 3; }),
       {A(ActionType::kDeleteLeader, "node2")},
       {"leader node2 confirmed dead", "refused 3 checks"}},
      {"TwoRefusalsAreNotYetDeath",
       Obs().Member("node2").Leader("node2").Replica("node2").With(
           [](Observation& o) { o.leader_refusals = 2; }),
       {},
       {"following leader node2"}},
      {"ConfirmedDeathOffWaitsForTheLease",
       Obs().Member("node2").Leader("node2").Replica("node2").With(
           [](Observation& o) { o.leader_refusals = 50; }),
       {},
       {"following leader node2"},
       [] {
         HaConfig c = Config();
         c.confirmed_death_checks = 0;
         return c;
       }()},
      {"StoppedStandbyWithOtherLeaderStartsStandby",
       Obs().Member("node2").Leader("node2").StandbySignal(),
       {A(ActionType::kStartStandby, "node2")},
       {"standby of leader node2"}},
      {"RewindInProgressWaits",
       Obs().Member("node2").Leader("node2").InProgress(LongAction::kRewind),
       {},
       {"rewinding", "node2"}},
      {"StoppedNoLeaderFormerPrimaryAcquiresThenStarts",
       Obs().Member("node2"),
       {kAcquire, kStartPrimary},
       {"no leader", "taking the leader key"}},
      {"StoppedNoLeaderStandbySignalStartsStandby",
       Obs().Member("node2").StandbySignal(),
       {A(ActionType::kStartStandby, "")},
       {"no leader", "standby"}},
      {"RunningNotReadyWaits",
       Obs().ILead().NotReady(),
       {},
       {"waiting for PostgreSQL to accept connections"}},
      {"RunningNotReadyOtherLeaderWaits",
       Obs().Member("node2").Leader("node2").NotReady(),
       {},
       {"accept connections"}},
  };
}

std::vector<Case> RunningCases() {
  return {
      {"LeaderSteadyStateRenewsAndWritesStatus",
       Obs().ILead().Primary(),
       {kRenew, kStatus},
       {"no action", "node1, the leader with the lease"}},
      {"LeaderInRecoveryPromotes", Obs().ILead().Replica(""), {kRenew, kPromote}, {"promoting"}},
      {"NoLeaderRunningPrimaryAcquires",
       Obs().Member("node2").Primary(),
       {kAcquire},
       {"no leader", "acquiring"}},
      {"NoLeaderMostAdvancedReplicaPromotes",
       Obs().Member("node2").Member("node3").Replica("node2").At(0x3000).Optime(0x3000).Peer(
           "node3", 0x2000),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"no leader", "promoting", "most advanced"}},
      {"NoLeaderReplicaBehindAnotherWaits",
       Obs().Member("node2").Member("node3").Replica("node2").At(0x2000).Peer("node3", 0x3000),
       {},
       {"no leader", "node3 is the better candidate", "waiting"}},
      {"NoLeaderTieGoesToTheSmallerName",
       Obs().Member("node0").Replica("node0").At(0x3000).Peer("node0", 0x3000),
       {},
       {"node0 is the better candidate"}},
      {"NoLeaderTieAgainstALargerNamePromotes",
       Obs().Member("node9").Replica("node9").At(0x3000).Peer("node9", 0x3000),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"promoting"}},
      {"NoLeaderSilentPeerIsNoVeto",
       Obs().Member("node0").Replica("node0").At(0x3000),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"promoting"}},
      {"NoLeaderNofailoverPeerIsNoCandidate",
       Obs()
           .Member("node3")
           .Replica("node3")
           .At(0x2000)
           .Peer("node3", 0x9000)
           .With([](Observation& o) { o.cluster.members["node3"].tags["nofailover"] = "true"; }),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"promoting"}},
      {"NoLeaderTooFarBehindIsNoCandidate",
       Obs().Member("node2").Replica("node2").At(0x1000).Optime(0x1000 + 1048577),
       {},
       {"not a candidate", "1048577 bytes behind", "maximum_lag_on_failover"}},
      {"NoLeaderJustWithinMaximumLagPromotes",
       Obs().Member("node2").Replica("node2").At(0x1000).Optime(0x1000 + 1048576),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"promoting"}},
      {"NoLeaderNofailoverWaits",
       Obs().Member("node2").Replica("node2").At(0x3000),
       {},
       {"no leader", "nofailover"},
       NoFailoverConfig()},
      {"NoLeaderRunningPrimaryPeerWillTakeTheKey",
       Obs().Member("node2").Replica("node2").At(0x3000).Peer("node2", 0x3000, false),
       {},
       {"node2, which runs as primary"}},
      {"NoLeaderSyncModeOnlyTheSyncStandbyPromotes",
       Obs().Member("node2").Member("node3").Replica("node2").At(0x9000).SyncKey("node2", "node3"),
       {},
       {"only the synchronous standby node3 may be promoted"},
       SyncConfig()},
      {"NoLeaderSyncModeTheSyncStandbyPromotesEvenIfBehind",
       Obs()
           .Member("node2")
           .Member("node3")
           .Replica("node2")
           .At(0x1000)
           .SyncKey("node2", kMe)
           .Peer("node3", 0x9000),
       {A(ActionType::kAcquireLeader), A(ActionType::kPromote)},
       {"promoting"},
       SyncConfig()},
      {"NoLeaderFormerLeaderBackWaitsForIt",
       Obs()
           .Member("node2")
           .Replica("node2")
           .At(0x3000)
           .Peer("node2", 0x3000)
           .With([](Observation& o) {
             o.cluster.status = nlohmann::json{{"leader", "node2"}};
             o.cluster.members["node2"].role = "primary";
             o.peers["node2"].pg_running = false;
           }),
       {},
       {"waiting for former leader node2"}},
      {"OtherLeaderRunningPrimaryStops",
       Obs().Member("node2").Leader("node2").Primary(),
       {kStop},
       {"demoting", "node2 holds the leader key"}},
      {"OtherLeaderReplicaFollowingAnotherFollows",
       Obs().Member("node2").Member("node3").Leader("node2").Replica("node3"),
       {A(ActionType::kFollow, "node2")},
       {"following new leader node2 instead of node3"}},
      {"OtherLeaderReplicaFollowingNobodyFollows",
       Obs().Member("node2").Leader("node2").Replica(""),
       {A(ActionType::kFollow, "node2")},
       {"following new leader node2"}},
      {"OtherLeaderReplicaFollowingLeaderDoesNothing",
       Obs().Member("node2").Leader("node2").Replica("node2"),
       {},
       {"no action", "secondary", "following leader node2"}},
  };
}

std::vector<Case> SlotCases() {
  const Millis ttl = Config().member_slots_ttl;
  return {
      {"LeaderCreatesMissingSlotsButNotItsOwn",
       Obs().ILead().Primary().Member("Node-2").Member("node3").LocalSlots({"node3"}),
       {kRenew, A(ActionType::kCreateSlot, "node_2"), kStatus},
       {"leader with the lease"}},
      {"LeaderCreatesSlotForEveryNewMember",
       Obs().ILead().Primary().Member("node2").Member("node3"),
       {kRenew, A(ActionType::kCreateSlot, "node2"), A(ActionType::kCreateSlot, "node3"), kStatus},
       {"leader with the lease"}},
      {"LeaderWithoutSlotsCreatesNone",
       Obs().ILead().Primary().Member("node2").Member("node3"),
       {kRenew, kStatus},
       {"leader with the lease"},
       NoSlotsConfig()},
      {"LeaderDropsSlotOfMemberGoneLongerThanTtl",
       Obs()
           .ILead()
           .Primary()
           .Member("node2")
           .Member("node4")
           .Departed("node4", ttl + minutes(1))
           .LocalSlots({"node2", "node4"})
           .MemberSlots({"node2", "node4"}),
       {kRenew, A(ActionType::kDropSlot, "node4"), kStatus},
       {"dropping slot node4", "1800 s"}},
      {"LeaderKeepsSlotOfMemberSeenRecently",
       Obs()
           .ILead()
           .Primary()
           .Member("node4")
           .Departed("node4", ttl - minutes(1))
           .LocalSlots({"node4"})
           .MemberSlots({"node4"}),
       {kRenew, kStatus},
       {"leader with the lease"}},
      {"LeaderKeepsSlotOfPresentMemberLastSeenLongAgo",
       // Present in the view: wanted whatever member_last_seen says.
       Obs()
           .ILead()
           .Primary()
           .Member("node4")
           .With([&](Observation& o) { o.member_last_seen["node4"] = kNow - 2 * ttl; })
           .LocalSlots({"node4"})
           .MemberSlots({"node4"}),
       {kRenew, kStatus},
       {"leader with the lease"}},
      {"LeaderNeverDropsSlotItDidNotCreate",
       Obs()
           .ILead()
           .Primary()
           .Member("node4")
           .Departed("node4", ttl * 3)
           .LocalSlots({"node4", "barman"}),
       {kRenew, kStatus},
       {"leader with the lease"}},
      {"LeaderDropsDepartedMemberSlotByItsSlotName",
       Obs()
           .ILead()
           .Primary()
           .Member("Node-5")
           .Departed("Node-5", ttl + seconds(1))
           .LocalSlots({"node_5", "keep_me"})
           .MemberSlots({"node_5"}),
       {kRenew, A(ActionType::kDropSlot, "node_5"), kStatus},
       {"dropping slot node_5"}},
      {"LeaderWithoutSlotsDropsNothing",
       Obs()
           .ILead()
           .Primary()
           .Member("node4")
           .Departed("node4", ttl * 3)
           .LocalSlots({"node4"})
           .MemberSlots({"node4"}),
       {kRenew, kStatus},
       {"leader with the lease"},
       NoSlotsConfig()},
  };
}

// Leader steady state in synchronous mode: node1 leads, node2 and node3 are members.
Obs SyncLeader() {
  return Obs().ILead().Primary().Member("node2").Member("node3").LocalSlots({"node2", "node3"});
}

std::vector<Case> SyncCases() {
  return {
      {"SyncWidensSettingBeforeNamingAStandby",
       SyncLeader().Standby("node2", true, "async").Standby("node3", true, "async"),
       {kRenew, SetSync({"node2", "node3"}), kStatus},
       {"synchronous_standby_names over 2 standby(s)"},
       SyncConfig()},
      {"SyncRecordsTheStandbyPostgresReportsSync",
       SyncLeader()
           .SyncNames({"node2", "node3"})
           .Standby("node2", true, "sync")
           .Standby("node3", true, "potential"),
       {kRenew, A(ActionType::kWriteSync, "node2"), kStatus},
       {"synchronous standby is now node2"},
       SyncConfig()},
      {"SyncNarrowsKeyBeforeDroppingGoneStandby",
       SyncLeader()
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node3", true, "potential"),
       {kRenew, A(ActionType::kWriteSync, ""), SetSync({"node3"}), kStatus},
       {"synchronous standby node2 is gone"},
       SyncConfig()},
      {"SyncNarrowsKeyBeforeDroppingStandbyThatStoppedStreaming",
       SyncLeader()
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node2", false, "async")
           .Standby("node3", true, "potential"),
       {kRenew, A(ActionType::kWriteSync, ""), SetSync({"node3"}), kStatus},
       {"node2 is gone"},
       SyncConfig()},
      {"SyncMovesKeyToNewSyncStandbyBeforeDroppingOld",
       SyncLeader()
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node2", false, "async")
           .Standby("node3", true, "sync"),
       {kRenew, A(ActionType::kWriteSync, "node3"), SetSync({"node3"}), kStatus},
       {"synchronous standby is now node3"},
       SyncConfig()},
      {"SyncSteadyStateDoesNothing",
       SyncLeader()
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node2", true, "sync")
           .Standby("node3", true, "potential"),
       {kRenew, kStatus},
       {"leader with the lease"},
       SyncConfig()},
      {"SyncAddsNewStandbyAfterTheRecordedOne",
       SyncLeader()
           .SyncKey(kMe, "node3")
           .SyncNames({"node3"})
           .Standby("node2", true, "async")
           .Standby("node3", true, "sync"),
       {kRenew, SetSync({"node3", "node2"}), kStatus},
       {"over 2 standby(s)"},
       SyncConfig()},
      {"SyncExcludesNosyncMember",
       SyncLeader()
           .Member("node3", {{"nosync", "true"}})
           .Standby("node2", true, "async")
           .Standby("node3", true, "async"),
       {kRenew, SetSync({"node2"}), kStatus},
       {"over 1 standby(s)"},
       SyncConfig()},
      {"SyncExcludesStandbyThatIsNoMember",
       SyncLeader().Standby("pg_receivewal", true, "async").Standby("node2", true, "async"),
       {kRenew, SetSync({"node2"}), kStatus},
       {"over 1 standby(s)"},
       SyncConfig()},
      {"SyncDropsStandbyTaggedNosyncAfterNarrowingKey",
       SyncLeader()
           .Member("node2", {{"nosync", "on"}})
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node2", true, "sync")
           .Standby("node3", true, "potential"),
       {kRenew, A(ActionType::kWriteSync, ""), SetSync({"node3"}), kStatus},
       {"node2 is gone"},
       SyncConfig()},
      {"SyncNoHealthyStandbyClearsSetting",
       SyncLeader().SyncNames({"node2"}).Standby("node2", false, "async"),
       {kRenew, SetSync({}), kStatus},
       {"no healthy standby for synchronous replication"},
       SyncConfig()},
      {"SyncIgnoresKeyOfAnotherLeader",
       SyncLeader()
           .SyncKey("node9", "node2")
           .SyncNames({"node2"})
           .Standby("node2", true, "potential"),
       {kRenew, kStatus},
       {"leader with the lease"},
       SyncConfig()},
      {"SyncOffClearsSettingAndKey",
       SyncLeader()
           .SyncKey(kMe, "node2")
           .SyncNames({"node2", "node3"})
           .Standby("node2", true, "sync")
           .Standby("node3", true, "potential"),
       {kRenew, A(ActionType::kWriteSync, ""), SetSync({}), kStatus},
       {"synchronous mode off"}},
      {"SyncOffClearsSettingWithoutKey",
       SyncLeader().SyncNames({"node2"}).Standby("node2", true, "sync"),
       {kRenew, SetSync({}), kStatus},
       {"synchronous mode off"}},
      {"SyncOffClearsKeyWithEmptySetting",
       SyncLeader().SyncKey(kMe, "node2").Standby("node2", true, "async"),
       {kRenew, A(ActionType::kWriteSync, ""), kStatus},
       {"leader with the lease"}},
      {"SyncOffSteadyStateDoesNothing",
       SyncLeader().SyncKey(kMe, "").Standby("node2", true, "async"),
       {kRenew, kStatus},
       {"leader with the lease"}},
  };
}

class DecideTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(DecideTableTest, ActionsAndReason) {
  const Case& c = GetParam();
  Decision d = Decide(c.obs, c.cfg);
  EXPECT_THAT(d.actions, ::testing::ElementsAreArray(c.actions));
  for (const auto& part : c.reason_has) EXPECT_THAT(d.reason, HasSubstr(part));
  EXPECT_FALSE(d.reason.empty());
  EXPECT_EQ(d.reason.find('\n'), std::string::npos) << "the reason is one line";
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(LongActionAndDataDir, DecideTableTest,
                         ::testing::ValuesIn(LongActionAndDataDirCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(EtcdUnreachable, DecideTableTest,
                         ::testing::ValuesIn(EtcdUnreachableCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Initialize, DecideTableTest, ::testing::ValuesIn(InitializeCases()),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(EmptyData, DecideTableTest, ::testing::ValuesIn(EmptyDataCases()),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(Stopped, DecideTableTest, ::testing::ValuesIn(StoppedCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Running, DecideTableTest, ::testing::ValuesIn(RunningCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Slots, DecideTableTest, ::testing::ValuesIn(SlotCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Sync, DecideTableTest, ::testing::ValuesIn(SyncCases()), CaseName);

// --- Helpers ---------------------------------------------------------------------

TEST(ParseSyncStandbyNamesTest, FirstWithQuotedNames) {
  EXPECT_THAT(ParseSyncStandbyNames(R"(FIRST 1 (a, "b c", d))"),
              ::testing::ElementsAre("a", "b c", "d"));
}

TEST(ParseSyncStandbyNamesTest, AnyQuorum) {
  EXPECT_THAT(ParseSyncStandbyNames("ANY 2 (x,y)"), ::testing::ElementsAre("x", "y"));
}

TEST(ParseSyncStandbyNamesTest, PlainList) {
  EXPECT_THAT(ParseSyncStandbyNames("a, b"), ::testing::ElementsAre("a", "b"));
  EXPECT_THAT(ParseSyncStandbyNames("node1"), ::testing::ElementsAre("node1"));
  EXPECT_THAT(ParseSyncStandbyNames("2 (n1, n2)"), ::testing::ElementsAre("n1", "n2"));
}

TEST(ParseSyncStandbyNamesTest, EmptyAndStar) {
  EXPECT_THAT(ParseSyncStandbyNames(""), ::testing::IsEmpty());
  EXPECT_THAT(ParseSyncStandbyNames(R"("")"), ::testing::IsEmpty());
  EXPECT_THAT(ParseSyncStandbyNames("*"), ::testing::IsEmpty());
  EXPECT_THAT(ParseSyncStandbyNames("FIRST 1 (*)"), ::testing::IsEmpty());
}

TEST(ParseSyncStandbyNamesTest, QuotedCommaAndEscapedQuote) {
  EXPECT_THAT(ParseSyncStandbyNames(R"(FIRST 1 ("a,b", "say ""hi""", c))"),
              ::testing::ElementsAre("a,b", R"(say "hi")", "c"));
}

TEST(SlotNameForMemberTest, LowerCaseAndUnderscores) {
  EXPECT_EQ(SlotNameForMember("Node-2"), "node_2");
  EXPECT_EQ(SlotNameForMember("pg.db-01"), "pg_db_01");
  EXPECT_EQ(SlotNameForMember("abc_123"), "abc_123");
  EXPECT_EQ(SlotNameForMember(std::string(80, 'x')), std::string(63, 'x'));
}

TEST(WantedSlotsTest, PresentMembersAndRecentlySeenButNeverSelf) {
  const Millis ttl = Config().member_slots_ttl;
  Observation obs = Obs()
                        .Member("Node-2")
                        .Member("node3")
                        .Departed("node3", ttl - seconds(1))  // recent: kept
                        .Departed("node4", ttl + seconds(1))  // gone too long
                        .With([&](Observation& o) {
                          o.member_last_seen[kMe] = kNow - hours(5);
                          o.member_last_seen["Node.5"] = kNow - minutes(1);
                        });
  EXPECT_THAT(WantedSlots(obs, Config()),
              ::testing::UnorderedElementsAre("node_2", "node3", "node_5"));
}

TEST(WantedSlotsTest, OnlySelf) { EXPECT_THAT(WantedSlots(Obs(), Config()), ::testing::IsEmpty()); }

TEST(ActionNameTest, EveryTypeHasADistinctName) {
  std::set<std::string> names;
  for (int t = 0; t <= static_cast<int>(ActionType::kRefuse); ++t) {
    std::string n = ActionName(static_cast<ActionType>(t));
    EXPECT_NE(n, "?");
    names.insert(n);
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(ActionType::kRefuse) + 1);
}

// --- Properties over grids ---------------------------------------------------

bool Has(const Decision& d, ActionType t) {
  return std::any_of(d.actions.begin(), d.actions.end(),
                     [&](const Action& a) { return a.type == t; });
}

std::string Describe(const Decision& d) {
  std::ostringstream os;
  for (const auto& a : d.actions) {
    PrintTo(a, &os);
    os << " ";
  }
  return os.str() + "| " + d.reason;
}

// Safety rule 1: writes only with the leader key. Over leader × PostgreSQL state × etcd ×
// standby.signal × lease age: never both starts, and kStartPrimary / kPromote only when
// the fresh leader key names us or kAcquireLeader comes before them.
TEST(DecidePropertyTest, WritesOnlyWithTheLeaderKey) {
  enum class Pg { kPrimary, kReplica, kStopped, kNotReady };
  int checked = 0;
  for (const char* leader : {"", "node1", "node2"}) {
    for (Pg pg : {Pg::kPrimary, Pg::kReplica, Pg::kStopped, Pg::kNotReady}) {
      for (bool dcs_ok : {true, false}) {
        for (bool signal : {false, true}) {
          for (Millis renewed_ago : {Millis(-1), Millis(seconds(1)), Millis(seconds(25))}) {
            for (const char* following : {"", "node1", "node2", "node3"}) {
              Obs b;
              b.Member("node2").Member("node3");
              if (*leader) b.Leader(leader);
              if (renewed_ago >= Millis(0)) b.RenewedAt(kNow - renewed_ago);
              switch (pg) {
                case Pg::kPrimary:
                  b.Primary();
                  break;
                case Pg::kReplica:
                  b.Replica(following);
                  break;
                case Pg::kStopped:
                  break;
                case Pg::kNotReady:
                  b.NotReady();
                  break;
              }
              if (signal) b.StandbySignal();
              if (!dcs_ok) b.DcsDown();
              for (const HaConfig& cfg : {Config(), SyncConfig(), NoSlotsConfig()}) {
                Observation obs = b;
                Decision d = Decide(obs, cfg);
                SCOPED_TRACE(::testing::Message()
                             << "leader=" << leader << " pg=" << static_cast<int>(pg)
                             << " dcs_ok=" << dcs_ok << " signal=" << signal
                             << " renewed_ago_ms=" << renewed_ago.count()
                             << " following=" << following << " -> " << Describe(d));
                ++checked;
                EXPECT_FALSE(Has(d, ActionType::kStartPrimary) &&
                             Has(d, ActionType::kStartStandby));
                EXPECT_FALSE(d.reason.empty());
                bool leader_is_us = dcs_ok && std::string(leader) == cfg.name;
                bool acquired = false;
                for (const Action& a : d.actions) {
                  if (a.type == ActionType::kAcquireLeader) {
                    EXPECT_TRUE(dcs_ok);
                    EXPECT_FALSE(*leader) << "acquire only when nobody holds the key";
                    acquired = true;
                  }
                  if (a.type == ActionType::kStartPrimary || a.type == ActionType::kPromote) {
                    EXPECT_TRUE(leader_is_us || acquired);
                  }
                  if (a.type == ActionType::kFollow || a.type == ActionType::kStartStandby) {
                    EXPECT_NE(a.target, cfg.name) << "never follow ourselves";
                  }
                }
                // A writable primary facing another member's leader key stops.
                if (dcs_ok && std::string(leader) == "node2" && pg == Pg::kPrimary) {
                  EXPECT_THAT(d.actions, ::testing::ElementsAre(kStop));
                }
                // Without etcd the only possible action is self-fencing.
                if (!dcs_ok) {
                  for (const Action& a : d.actions) EXPECT_EQ(a.type, ActionType::kFencePostgres);
                }
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

// Safety rule 5 over a grid of synchronous-replication states: applying the actions in
// order, `sync` only ever names a standby that PostgreSQL reports synchronous and that is
// in synchronous_standby_names at that moment, and no new setting drops the standby `sync`
// names.
TEST(DecidePropertyTest, SyncKeyNeverNamesANonSynchronousStandby) {
  struct StandbyState {
    bool present;
    bool streaming;
    const char* sync_state;
  };
  const std::vector<StandbyState> states = {{false, false, ""},
                                            {true, false, "async"},
                                            {true, true, "async"},
                                            {true, true, "potential"},
                                            {true, true, "sync"}};
  const std::vector<std::vector<std::string>> name_lists = {
      {}, {"node2"}, {"node3"}, {"node2", "node3"}, {"node3", "node2"}};
  const std::vector<std::optional<std::string>> recorded = {std::nullopt, "", "node2", "node3"};
  int checked = 0;
  for (const auto& s2 : states) {
    for (const auto& s3 : states) {
      for (const auto& names : name_lists) {
        for (const auto& rec : recorded) {
          for (bool nosync3 : {false, true}) {
            Obs b = SyncLeader();
            if (nosync3) b.Member("node3", {{"nosync", "true"}});
            if (s2.present) b.Standby("node2", s2.streaming, s2.sync_state);
            if (s3.present) b.Standby("node3", s3.streaming, s3.sync_state);
            b.SyncNames(names);
            if (rec) b.SyncKey(kMe, *rec);
            Observation obs = b;
            Decision d = Decide(obs, SyncConfig());
            SCOPED_TRACE(::testing::Message()
                         << "node2=" << s2.present << s2.streaming << s2.sync_state
                         << " node3=" << s3.present << s3.streaming << s3.sync_state
                         << " names=" << ::testing::PrintToString(names)
                         << " recorded=" << rec.value_or("<none>") << " nosync3=" << nosync3
                         << " -> " << Describe(d));
            ++checked;
            auto reported_sync = [&](const std::string& n) {
              for (const auto& s : obs.local.standbys) {
                if (s.application_name == n && s.streaming && s.sync_state == "sync") return true;
              }
              return false;
            };
            std::string sync = rec.value_or("");
            std::vector<std::string> setting = names;
            int sync_writes = 0;
            int setting_writes = 0;
            for (const Action& a : d.actions) {
              if (a.type == ActionType::kWriteSync) {
                ++sync_writes;
                sync = a.target;
                if (!sync.empty()) {
                  EXPECT_TRUE(reported_sync(sync));
                  EXPECT_NE(std::find(setting.begin(), setting.end(), sync), setting.end());
                }
              }
              if (a.type == ActionType::kSetSyncStandbys) {
                ++setting_writes;
                setting = a.names;
                if (!sync.empty()) {
                  EXPECT_NE(std::find(setting.begin(), setting.end(), sync), setting.end())
                      << "the setting dropped the standby `sync` names";
                }
                if (nosync3) {
                  EXPECT_EQ(std::find(setting.begin(), setting.end(), "node3"), setting.end());
                }
              }
            }
            EXPECT_LE(sync_writes, 1);
            EXPECT_LE(setting_writes, 1);
            EXPECT_EQ(d.actions.front(), kRenew);
            EXPECT_EQ(d.actions.back(), kStatus);
            // Nothing to change: the reason says so.
            if (setting_writes == 0 && sync_writes == 0) {
              EXPECT_THAT(d.reason, HasSubstr("leader with the lease"));
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 5 * 5 * 5 * 4 * 2);
}

// --- Regressions ------------------------------------------------------------------

// Broke: with `initialize` = "" (another member's initdb still running) and an
// initialized local data directory but no leader key, decide() took the leader key and
// started a primary next to the bootstrap. It must wait for the bootstrap to finish.
TEST(DecideRegressionTest, InitializedDataDirWaitsWhileAnotherMembersBootstrapRuns) {
  struct Variant {
    const char* name;
    Observation obs;
  };
  const std::vector<Variant> variants = {
      {"stopped, was primary", Obs().Initialize("").Member("node2")},
      {"stopped, standby.signal", Obs().Initialize("").Member("node2").StandbySignal()},
      {"stopped, foreign data", Obs().Initialize("").Member("node2").Sysid(kOtherSysid)},
      {"stopped, renewed before", Obs().Initialize("").Member("node2").RenewedAt(kNow)},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    Decision d = Decide(v.obs, Config());
    EXPECT_THAT(d.actions, ::testing::IsEmpty()) << d.reason;
    EXPECT_THAT(d.reason, HasSubstr("waiting for the cluster's bootstrap to finish"));
    for (const Action& a : d.actions) {
      EXPECT_NE(a.type, ActionType::kAcquireLeader);
      EXPECT_NE(a.type, ActionType::kStartPrimary);
    }
  }
}

// Broke: etcd unreachable and PostgreSQL running as primary (not in recovery) while this
// member holds no lease (leader_renewed_at == nullopt, e.g. after a restart of the agent):
// decide() kept it running and taking writes without a lease. Safety rule 1: stop it.
TEST(DecideRegressionTest, EtcdDownPrimaryWithoutLeaseIsStopped) {
  for (const HaConfig& cfg : {Config(), SyncConfig(), NoSlotsConfig()}) {
    for (const char* leader : {"", "node1", "node2"}) {
      SCOPED_TRACE(std::string("leader key before the outage: ") + leader);
      Obs b;
      b.Member("node2").Primary().DcsDown("etcd: connection refused");
      if (*leader) b.Leader(leader);
      Observation obs = b;
      ASSERT_FALSE(obs.leader_renewed_at.has_value());
      Decision d = Decide(obs, cfg);
      EXPECT_THAT(d.actions, ::testing::ElementsAre(kFence));
      EXPECT_THAT(d.reason, HasSubstr("holds no leader lease"));
      EXPECT_THAT(d.reason, HasSubstr("etcd: connection refused"));
    }
  }
  // A standby in the same situation keeps its role.
  Decision standby = Decide(Obs().Replica("node2").DcsDown(), Config());
  EXPECT_THAT(standby.actions, ::testing::IsEmpty());
  EXPECT_THAT(standby.reason, HasSubstr("keeping the current role"));
}

}  // namespace
}  // namespace pgwarden::ha
