// Tests of the watchdog without processes: command lines, the decision, the core with a fake
// device.
#include "agent/watchdog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/process.h"

namespace pgwarden::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

TimePoint At(int64_t ms) { return FromWireMillis(ms); }

// --- command lines ---------------------------------------------------------------

TEST(ParseWatchdogCommandTest, AcceptsTheThreeCommands) {
  struct Case {
    const char* line;
    WatchdogCommand want;
  };
  const Case cases[] = {
      {"arm 123456", {WatchdogCommandKind::kArm, At(123456)}},
      {"  arm\t42  ", {WatchdogCommandKind::kArm, At(42)}},
      {"arm   7\r", {WatchdogCommandKind::kArm, At(7)}},
      {"arm 1000000000000", {WatchdogCommandKind::kArm, At(1000000000000)}},
      {"disarm", {WatchdogCommandKind::kDisarm, {}}},
      {" disarm ", {WatchdogCommandKind::kDisarm, {}}},
      {"exit", {WatchdogCommandKind::kExit, {}}},
  };
  for (const auto& c : cases) {
    Result<WatchdogCommand> got = ParseWatchdogCommand(c.line);
    ASSERT_TRUE(got.ok()) << c.line << ": " << got.status().ToString();
    EXPECT_EQ(*got, c.want) << c.line;
  }
}

TEST(ParseWatchdogCommandTest, MalformedLinesAreErrorsThatSayWhy) {
  struct Case {
    std::string line;
    const char* says;
  };
  const Case cases[] = {
      {"", "empty"},
      {"   \t", "empty"},
      {"arm", "expected arm <deadline>"},
      {"arm 1 2", "expected arm <deadline>"},
      {"arm x", "positive number of milliseconds"},
      {"arm 12x", "positive number of milliseconds"},
      {"arm 1e5", "positive number of milliseconds"},
      {"arm -5", "positive number of milliseconds"},
      {"arm 0", "positive number of milliseconds"},
      {"arm +5", "positive number of milliseconds"},
      {"arm 1000000000001", "positive number of milliseconds"},
      {"arm 99999999999999999999999", "positive number of milliseconds"},
      {"disarm now", "takes no argument"},
      {"exit 0", "takes no argument"},
      {"ARM 5", "unknown command"},
      {"kick", "unknown command"},
      {std::string(kMaxWatchdogLine + 1, 'a'), "longer than 64"},
      {std::string("arm \0 5", 7), "'arm \\x00 5': expected arm <deadline>"},
      {"arm \x01", "'arm \\x01': the deadline must be"},
  };
  for (const auto& c : cases) {
    Result<WatchdogCommand> got = ParseWatchdogCommand(c.line);
    ASSERT_FALSE(got.ok()) << "'" << c.line << "' parsed";
    EXPECT_EQ(got.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr(c.says)) << "'" << c.line << "'";
  }
}

TEST(ParseWatchdogCommandTest, FormatParsesBack) {
  for (const WatchdogCommand& cmd : {WatchdogCommand{WatchdogCommandKind::kArm, At(987654321)},
                                     WatchdogCommand{WatchdogCommandKind::kDisarm, {}},
                                     WatchdogCommand{WatchdogCommandKind::kExit, {}}}) {
    std::string line = FormatWatchdogCommand(cmd);
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_LE(line.size() - 1, kMaxWatchdogLine);
    line.pop_back();
    Result<WatchdogCommand> back = ParseWatchdogCommand(line);
    ASSERT_TRUE(back.ok()) << line;
    EXPECT_EQ(*back, cmd);
  }
  EXPECT_EQ(FormatWatchdogCommand({WatchdogCommandKind::kArm, At(42)}), "arm 42\n");
}

// The wire time is CLOCK_MONOTONIC in ms: what another process reads there.
TEST(WireMillisTest, SteadyClockIsClockMonotonic) {
  timespec ts{};
  ASSERT_EQ(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
  const int64_t before = ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  const int64_t wire = ToWireMillis(std::chrono::steady_clock::now());
  ASSERT_EQ(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
  const int64_t after = ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  EXPECT_LE(before, wire);
  EXPECT_LE(wire, after);
  EXPECT_EQ(ToWireMillis(FromWireMillis(123456789)), 123456789);
  // Truncated: a deadline never moves later on the wire.
  EXPECT_EQ(ToWireMillis(At(5) + std::chrono::microseconds(999)), 5);
}

// --- the decision -------------------------------------------------------------------

WatchdogState Armed(int64_t deadline_ms) {
  WatchdogState s;
  s.deadline = At(deadline_ms);
  return s;
}

TEST(DecideWatchdogStepTest, SoftwareOnly) {
  struct Case {
    const char* name;
    WatchdogState state;
    int64_t now_ms;
    WatchdogStep want;
  };
  const Case cases[] = {
      {"disarmed waits for a command", {}, 1000, {WatchdogAction::kIdle, false, std::nullopt}},
      {"armed waits until the deadline", Armed(2500), 1000, {WatchdogAction::kWait, false, 1500ms}},
      {"one ms before", Armed(2500), 2499, {WatchdogAction::kWait, false, 1ms}},
      {"the deadline itself has passed", Armed(2500), 2500, {WatchdogAction::kFence, false, 0ms}},
      {"long after", Armed(2500), 90000, {WatchdogAction::kFence, false, 0ms}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(DecideWatchdogStep(c.state, At(c.now_ms)), c.want) << c.name;
  }
  // A wait is rounded up, never a busy loop before the deadline.
  EXPECT_EQ(DecideWatchdogStep(Armed(2500), At(2499) + std::chrono::microseconds(500)).wait, 1ms);
}

TEST(DecideWatchdogStepTest, DeviceIsKickedOnlyBeforeTheDeadlineAndOnlyWhenItWouldFireEarly) {
  // Device timeout 10 s (the driver's maximum), kicked at 0; deadline at 25 s,
  // margin 4 s: it would fire at 10 s, before 29 s, so it is kicked at 5 s.
  WatchdogState s = Armed(25000);
  s.device_open = true;
  s.device_kicked = At(0);
  s.device_timeout = 10000ms;
  s.device_margin = 4000ms;
  EXPECT_EQ(DecideWatchdogStep(s, At(1000)), (WatchdogStep{WatchdogAction::kWait, false, 4000ms}));
  EXPECT_EQ(DecideWatchdogStep(s, At(5000)), (WatchdogStep{WatchdogAction::kWait, true, 20000ms}));
  // Kicked at 24 s it fires at 34 s, past 29 s: no more kicks.
  s.device_kicked = At(24000);
  EXPECT_EQ(DecideWatchdogStep(s, At(24500)), (WatchdogStep{WatchdogAction::kWait, false, 500ms}));
  // After the deadline: fence, never a kick, even when it would fire early.
  s.device_kicked = At(20000);
  EXPECT_EQ(DecideWatchdogStep(s, At(25000)), (WatchdogStep{WatchdogAction::kFence, false, 0ms}));
  // A timeout covering deadline + margin: the arm's kick was enough.
  s.device_kicked = At(0);
  s.device_timeout = 30000ms;
  EXPECT_EQ(DecideWatchdogStep(s, At(20000)), (WatchdogStep{WatchdogAction::kWait, false, 5000ms}));
  // Disarmed: nothing, whatever the device.
  s.deadline.reset();
  EXPECT_EQ(DecideWatchdogStep(s, At(20000)), (WatchdogStep{}));
}

TEST(DeviceTimeoutSecondsTest, FiresNoEarlierThanDeadlinePlusMargin) {
  EXPECT_EQ(DeviceTimeoutSeconds(At(25000), At(0), 4000ms), 29);
  EXPECT_EQ(DeviceTimeoutSeconds(At(25001), At(0), 4000ms), 30);  // rounded up
  EXPECT_EQ(DeviceTimeoutSeconds(At(1000), At(5000), 0ms), 1);    // at least 1
}

// --- the core with a fake device ---------------------------------------------------------

// What the fake device was asked, in order.
struct DeviceLog {
  std::vector<std::string> calls;
  bool fail_open = false;
  bool fail_set_timeout = false;
  int max_timeout = 3600;  // the driver clamps to this
};

// A WatchdogDevice that records calls. Owned by the WatchdogCore under test.
class FakeDevice final : public WatchdogDevice {
 public:
  explicit FakeDevice(DeviceLog* log) : log_(log) {}
  Status Open() override {
    log_->calls.push_back("open");
    if (log_->fail_open) return IoError("cannot open /dev/fake: No such file or directory");
    open_ = true;
    return Status::Ok();
  }
  bool is_open() const override { return open_; }
  Result<int> SetTimeout(int seconds) override {
    log_->calls.push_back("timeout " + std::to_string(seconds));
    if (log_->fail_set_timeout) return IoError("/dev/fake: cannot set the timeout");
    return std::min(seconds, log_->max_timeout);
  }
  Status Keepalive() override {
    log_->calls.push_back("kick");
    return Status::Ok();
  }
  void Close() override {
    if (!open_) return;
    log_->calls.push_back("magic close");
    open_ = false;
  }
  const std::string& path() const override { return path_; }

 private:
  DeviceLog* log_;
  bool open_ = false;
  std::string path_ = "/dev/fake";
};

WatchdogCommand Arm(int64_t ms) { return {WatchdogCommandKind::kArm, At(ms)}; }
const WatchdogCommand kDisarm{WatchdogCommandKind::kDisarm, {}};
const WatchdogCommand kExit{WatchdogCommandKind::kExit, {}};

TEST(WatchdogCoreTest, ArmOpensSetsTimeoutAndKicksDisarmClosesWithTheMagic) {
  DeviceLog log;
  WatchdogCore core(std::make_unique<FakeDevice>(&log), 2000ms);  // margin 2 s + 2 s
  core.Apply(Arm(25000), At(0));
  EXPECT_THAT(log.calls, ElementsAre("open", "timeout 29", "kick"));
  EXPECT_EQ(core.Step(At(1000)).action, WatchdogAction::kWait);
  // Re-armed ten seconds later for the same lead: the timeout is kept.
  core.Apply(Arm(35000), At(10000));
  EXPECT_THAT(log.calls, ElementsAre("open", "timeout 29", "kick", "kick"));
  core.Apply(kDisarm, At(12000));
  EXPECT_THAT(log.calls.back(), "magic close");
  EXPECT_EQ(core.Step(At(40000)).action, WatchdogAction::kIdle);
  // Armed again: opened again.
  core.Apply(Arm(60000), At(50000));
  core.Apply(kExit, At(51000));
  EXPECT_THAT(log.calls, ElementsAre("open", "timeout 29", "kick", "kick", "magic close", "open",
                                     "timeout 14", "kick", "magic close"));
}

TEST(WatchdogCoreTest, ClampedDeviceTimeoutIsKickedUntilTheDeadlineOnly) {
  DeviceLog log;
  log.max_timeout = 10;
  WatchdogCore core(std::make_unique<FakeDevice>(&log), 2000ms);
  core.Apply(Arm(25000), At(0));
  int kicks_before_deadline = 0;
  for (int64_t t = 0; t < 25000; t += 100) {
    const size_t before = log.calls.size();
    WatchdogStep step = core.Step(At(t));
    ASSERT_EQ(step.action, WatchdogAction::kWait) << t;
    kicks_before_deadline += static_cast<int>(log.calls.size() - before);
  }
  EXPECT_EQ(kicks_before_deadline, 4);  // at 5, 10, 15, 20 s: it fires at 30 s at the earliest
  const size_t calls = log.calls.size();
  EXPECT_EQ(core.Step(At(25000)).action, WatchdogAction::kFence);
  EXPECT_EQ(core.Step(At(26000)).action, WatchdogAction::kFence);
  EXPECT_EQ(log.calls.size(), calls) << "kicked after the deadline";
}

TEST(WatchdogCoreTest, AfterFenceClosesTheDeviceOnlyWhenPostgresIsGone) {
  {
    DeviceLog log;
    WatchdogCore core(std::make_unique<FakeDevice>(&log), 2000ms);
    core.Apply(Arm(1000), At(0));
    ASSERT_EQ(core.Step(At(1000)).action, WatchdogAction::kFence);
    core.AfterFence(true);
    EXPECT_EQ(log.calls.back(), "magic close");
    EXPECT_EQ(core.Step(At(2000)).action, WatchdogAction::kIdle);
  }
  {
    DeviceLog log;
    auto core = std::make_unique<WatchdogCore>(std::make_unique<FakeDevice>(&log), 2000ms);
    core->Apply(Arm(1000), At(0));
    ASSERT_EQ(core->Step(At(1000)).action, WatchdogAction::kFence);
    core->AfterFence(false);
    EXPECT_THAT(log.calls, ElementsAre("open", "timeout 5", "kick"));  // left to fire
    EXPECT_EQ(core->Step(At(2000)).action, WatchdogAction::kIdle);
    EXPECT_THAT(log.calls, ElementsAre("open", "timeout 5", "kick"));
  }
}

TEST(WatchdogCoreTest, ArmWithAPastDeadlineFencesWithoutKicking) {
  DeviceLog log;
  WatchdogCore core(std::make_unique<FakeDevice>(&log), 2000ms);
  core.Apply(Arm(500), At(1000));
  EXPECT_TRUE(log.calls.empty());
  EXPECT_EQ(core.Step(At(1000)).action, WatchdogAction::kFence);
}

TEST(WatchdogCoreTest, NewestArmWinsEvenWhenEarlier) {
  WatchdogCore core(nullptr, 2000ms);
  core.Apply(Arm(30000), At(0));
  core.Apply(Arm(5000), At(100));
  EXPECT_EQ(core.Step(At(5000)).action, WatchdogAction::kFence);
}

TEST(WatchdogCoreTest, WithoutADeviceTheSoftwareWatchdogStillFences) {
  WatchdogCore none(nullptr, 2000ms);
  none.Apply(Arm(1000), At(0));
  EXPECT_EQ(none.Step(At(999)).action, WatchdogAction::kWait);
  EXPECT_EQ(none.Step(At(1000)).action, WatchdogAction::kFence);

  DeviceLog log;
  log.fail_open = true;
  WatchdogCore failing(std::make_unique<FakeDevice>(&log), 2000ms);
  failing.Apply(Arm(1000), At(0));
  failing.Apply(Arm(2000), At(500));
  EXPECT_THAT(log.calls, ElementsAre("open", "open"));  // tried on each arm, logged once
  EXPECT_FALSE(failing.state().device_open);
  EXPECT_EQ(failing.Step(At(2000)).action, WatchdogAction::kFence);
}

TEST(WatchdogCoreTest, DeviceWhoseTimeoutCannotBeSetIsClosed) {
  DeviceLog log;
  log.fail_set_timeout = true;
  WatchdogCore core(std::make_unique<FakeDevice>(&log), 2000ms);
  core.Apply(Arm(25000), At(0));
  EXPECT_THAT(log.calls, ElementsAre("open", "timeout 29", "magic close"));
  EXPECT_FALSE(core.state().device_open);
  EXPECT_EQ(core.Step(At(25000)).action, WatchdogAction::kFence);
}

// --- identifying the postmaster ------------------------------------------------------------

TEST(IsPostmasterOfTest, OnlyAPostgresOfThisDataDir) {
  const std::vector<std::string> names = {"/data/pg", "/srv/real/pg"};
  struct Case {
    const char* name;
    ProcessIdentity p;
    bool want;
  };
  const Case cases[] = {
      {"postgres with its cwd in the data dir",
       {"/usr/lib/postgresql/15/bin/postgres", {"/usr/lib/postgresql/15/bin/postgres"}, "/data/pg"},
       true},
      {"resolved data dir", {"/usr/bin/postgres", {"postgres"}, "/srv/real/pg"}, true},
      {"-D DIR", {"/usr/bin/postgres", {"postgres", "-D", "/data/pg"}, ""}, true},
      {"-DDIR", {"/usr/bin/postgres", {"postgres", "-D/data/pg"}, ""}, true},
      {"--pgdata=DIR", {"/usr/bin/postgres", {"postgres", "--pgdata=/data/pg"}, ""}, true},
      {"binary replaced by an upgrade",
       {"/usr/lib/postgresql/15/bin/postgres (deleted)", {"postgres"}, "/data/pg"},
       true},
      {"postmaster name", {"/usr/bin/postmaster", {"postmaster"}, "/data/pg"}, true},
      {"exe unreadable: argv[0]", {"", {"/usr/bin/postgres", "-D", "/data/pg"}, ""}, true},
      {"another cluster's postgres",
       {"/usr/bin/postgres", {"postgres", "-D", "/data/other"}, "/data/other"},
       false},
      {"a prefix of the data dir is not it", {"/usr/bin/postgres", {"postgres"}, "/data"}, false},
      {"a recycled pid: sleep in the data dir",
       {"/usr/bin/sleep", {"sleep", "30"}, "/data/pg"},
       false},
      {"a shell naming the data dir",
       {"/usr/bin/dash", {"sh", "-c", "x", "-D", "/data/pg"}, "/data/pg"},
       false},
      {"exe readable wins over argv[0]", {"/usr/bin/python3", {"postgres"}, "/data/pg"}, false},
      {"postgres-ish name", {"/usr/bin/postgres_fdw", {"postgres_fdw"}, "/data/pg"}, false},
      {"nothing readable", {"", {}, ""}, false},
  };
  for (const auto& c : cases) EXPECT_EQ(IsPostmasterOf(c.p, names), c.want) << c.name;
}

TEST(ReadProcessIdentityTest, ReadsOurselves) {
  auto id = ReadProcessIdentity(getpid());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->exe, SelfExecutable());
  EXPECT_EQ(id->cwd, std::filesystem::current_path().string());
  ASSERT_FALSE(id->argv.empty());
  EXPECT_EQ(ReadProcessIdentity(0x3ffffff0).status().code(), ErrorCode::kNotFound);
}

TEST(StopPostmasterTest, NothingToStopIsOkAndOtherProgramsAreLeftAlone) {
  char tmpl[] = "/tmp/pgw-watchdog-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  EXPECT_TRUE(StopPostmaster(dir, 100ms).ok());  // no postmaster.pid
  std::ofstream(dir + "/postmaster.pid") << "not-a-pid\n";
  EXPECT_TRUE(StopPostmaster(dir, 100ms).ok());
  // Our own pid, and we are no postgres: we survive.
  std::ofstream(dir + "/postmaster.pid") << getpid() << "\n" << dir << "\n";
  EXPECT_TRUE(StopPostmaster(dir, 100ms).ok());
  std::filesystem::remove_all(dir);
}

// --- options and the client -------------------------------------------------------------------

TEST(WatchdogOptionsTest, ArgumentsAndValidation) {
  WatchdogOptions o;
  o.fifo_path = "/run/pgw/wd.fifo";
  o.data_dir = "/data/pg";
  EXPECT_TRUE(ValidateWatchdogOptions(o).ok());
  EXPECT_THAT(WatchdogArguments(o), ElementsAre("watchdog", "--fifo", "/run/pgw/wd.fifo",
                                                "--data-dir", "/data/pg", "--mode", "automatic",
                                                "--device", "/dev/watchdog", "--grace-ms", "2000"));
  o.pid_file = "/run/pgw/wd.pid";
  o.mode = WatchdogMode::kRequired;
  o.device = "/dev/watchdog1";
  o.grace = 500ms;
  EXPECT_THAT(WatchdogArguments(o),
              ElementsAre("watchdog", "--fifo", "/run/pgw/wd.fifo", "--data-dir", "/data/pg",
                          "--pid-file", "/run/pgw/wd.pid", "--mode", "required", "--device",
                          "/dev/watchdog1", "--grace-ms", "500"));

  struct Bad {
    void (*change)(WatchdogOptions*);
    const char* says;
  };
  const Bad bad[] = {
      {[](WatchdogOptions* w) { w->fifo_path.clear(); }, "FIFO path"},
      {[](WatchdogOptions* w) { w->data_dir.clear(); }, "data directory"},
      {[](WatchdogOptions* w) { w->device.clear(); }, "device"},
      {[](WatchdogOptions* w) { w->grace = -1ms; }, "grace"},
      {[](WatchdogOptions* w) { w->grace = 60001ms; }, "grace"},
      {[](WatchdogOptions* w) { w->mode = WatchdogMode::kOff; }, "off"},
  };
  for (const auto& b : bad) {
    WatchdogOptions w = o;
    b.change(&w);
    Status st = ValidateWatchdogOptions(w);
    EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument) << b.says;
    EXPECT_THAT(st.message(), HasSubstr(b.says));
  }
}

TEST(WatchdogClientTest, NotStartedIsAnErrorNotAHang) {
  WatchdogClient client;
  EXPECT_EQ(client.Arm(std::chrono::steady_clock::now()).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(client.Disarm().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(client.Stop().ok());
  EXPECT_FALSE(client.active());
}

TEST(WatchdogClientTest, ModeOffStartsNothing) {
  WatchdogClient client;
  WatchdogOptions o;
  o.mode = WatchdogMode::kOff;  // the other fields do not matter then
  ASSERT_TRUE(client.Start(o).ok());
  EXPECT_FALSE(client.active());
  EXPECT_EQ(client.pid(), -1);
  EXPECT_TRUE(client.Arm(std::chrono::steady_clock::now() + 1s).ok());
  EXPECT_TRUE(client.Disarm().ok());
  EXPECT_TRUE(client.Stop().ok());
}

TEST(WatchdogClientTest, StartReportsAWatchdogThatExitsAtOnce) {
  char tmpl[] = "/tmp/pgw-watchdog-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string fifo = dir + "/wd.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  WatchdogOptions o;
  o.fifo_path = fifo;
  o.data_dir = dir;
  o.binary = "/bin/false";  // exits at once: Start reports it
  o.start_timeout = 2000ms;
  WatchdogClient client;
  Status st = client.Start(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("exited at start"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pgwarden::agent
