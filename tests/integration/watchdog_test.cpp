// `pgwarden watchdog` against a real PostgreSQL 15: it stops the postmaster when not re-armed in
// time.
//
// This machine (a container) has no /dev/watchdog, and a test must never open
// a real one (that would arm the host's reboot timer), so every test points
// --device at a path that does not exist: mode automatic then runs the
// software watchdog alone, mode required refuses to start.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "agent/watchdog.h"
#include "itest_util.h"

namespace pgwarden::itest {
namespace {

namespace fs = std::filesystem;
using agent::WatchdogClient;
using agent::WatchdogMode;
using agent::WatchdogOptions;
using ::testing::HasSubstr;
using ::testing::Not;
using Clk = std::chrono::steady_clock;

constexpr const char* kPgBin = "/usr/lib/postgresql/15/bin";

bool FifoListening(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  close(fd);
  return true;
}

// Writes raw bytes to the FIFO as some other writer would.
bool WriteToFifo(const std::string& path, const std::string& bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  close(fd);
  return ok;
}

double MsBetween(Clk::time_point a, Clk::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Stops a WatchdogClient's watchdog when the test ends, also when it fails.
struct ClientGuard {
  WatchdogClient* client;
  ~ClientGuard() {
    pid_t pid = client->pid();
    (void)client->Stop(3s);
    if (pid > 0 && ProcessAlive(pid)) kill(pid, SIGKILL);
  }
};

// Stops, by the pid in a pid file, a watchdog that is not our child.
struct PidFileGuard {
  std::string pid_file;
  ~PidFileGuard() {
    pid_t pid = ReadPidFile(pid_file);
    if (pid <= 0 || !ProcessAlive(pid)) return;
    if (ReadFile("/proc/" + std::to_string(pid) + "/cmdline").find("watchdog") ==
        std::string::npos) {
      return;  // not ours any more
    }
    kill(pid, SIGTERM);
    if (!WaitFor([pid] { return !ProcessAlive(pid); }, 5s, 20ms)) kill(pid, SIGKILL);
  }
};

// One data directory (initdb once) for the suite; each test starts its own
// postmaster on it, as the OS user postgres when we are root.
class WatchdogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (access((std::string(kPgBin) + "/initdb").c_str(), X_OK) != 0) return;
    suite_dir_ = new TempDir("pgw-itest-watchdog");
    data_dir_ = new std::string(suite_dir_->Sub("data"));
    ProcessOptions as_pg;
    fs::create_directory(*data_dir_);
    if (RunningAsRoot()) {
      auto pg_user = LookupOsUser("postgres");
      if (!pg_user.ok()) {
        *initdb_error_ = pg_user.status().ToString();
        return;
      }
      if (chown(data_dir_->c_str(), pg_user->uid, pg_user->gid) != 0) {
        *initdb_error_ = "chown failed";
        return;
      }
      as_pg.os_user = "postgres";
    }
    chmod(data_dir_->c_str(), 0700);
    ProcessResult r = RunCombined(
        {std::string(kPgBin) + "/initdb", "-D", *data_dir_, "-U", "postgres", "--no-sync"}, 120s,
        as_pg);
    if (!r.ok()) *initdb_error_ = r.Describe();
  }
  static void TearDownTestSuite() {
    delete data_dir_;
    data_dir_ = nullptr;
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  void SetUp() override {
    if (suite_dir_ == nullptr) GTEST_SKIP() << "PostgreSQL 15 is not installed";
    ASSERT_TRUE(initdb_error_->empty()) << *initdb_error_;
    tmp_ = std::make_unique<TempDir>("pgw-itest-wd");
  }

  const std::string& data_dir() const { return *data_dir_; }

  // Starts postgres on the suite's data directory (Unix socket only) and
  // waits until postmaster.pid says it is ready.
  void StartPostgres(ChildProcess* pg) {
    ProcessOptions o;
    if (RunningAsRoot()) o.os_user = "postgres";
    Status st = pg->Start({std::string(kPgBin) + "/postgres", "-D", data_dir(), "-c",
                           "listen_addresses=", "-k", data_dir(), "-p", std::to_string(FreePort())},
                          tmp_->Sub("postgresql.log"), o);
    ASSERT_TRUE(st.ok()) << st.ToString();
    bool ready = WaitFor(
        [&] {
          if (!ProcessAlive(pg->pid())) return true;
          std::string pid_file = ReadFile(data_dir() + "/postmaster.pid");
          return pid_file.rfind(std::to_string(pg->pid()) + "\n", 0) == 0 &&
                 pid_file.find("ready") != std::string::npos;
        },
        60s, 50ms);
    ASSERT_TRUE(ready && ProcessAlive(pg->pid())) << "PostgreSQL did not start:\n"
                                                  << ReadFile(tmp_->Sub("postgresql.log"));
  }

  WatchdogOptions Options() const {
    WatchdogOptions o;
    o.fifo_path = tmp_->Sub("watchdog.fifo");
    o.pid_file = tmp_->Sub("watchdog.pid");
    o.data_dir = data_dir();
    o.mode = WatchdogMode::kAutomatic;
    o.device = tmp_->Sub("no-such-watchdog-device");
    o.log_file = tmp_->Sub("watchdog.log");
    o.binary = PgwardenBinary();
    o.grace = 2000ms;
    return o;
  }
  std::string WatchdogLog() const { return ReadFile(tmp_->Sub("watchdog.log")); }

  // Waits up to `timeout` for `pid` to go; when it went, the time it was seen gone.
  static std::optional<Clk::time_point> WaitGone(pid_t pid, std::chrono::milliseconds timeout) {
    std::optional<Clk::time_point> gone;
    WaitFor(
        [&] {
          if (ProcessAlive(pid)) return false;
          gone = Clk::now();
          return true;
        },
        timeout, 10ms);
    return gone;
  }

  static TempDir* suite_dir_;
  static std::string* data_dir_;
  static std::string* initdb_error_;
  std::unique_ptr<TempDir> tmp_;
};

TempDir* WatchdogTest::suite_dir_ = nullptr;
std::string* WatchdogTest::data_dir_ = nullptr;
std::string* WatchdogTest::initdb_error_ = new std::string();

// (a) Re-armed in time, PostgreSQL runs; once the arms stop, it is stopped
// right after the last deadline, not before.
TEST_F(WatchdogTest, KeptArmedPostgresRunsAndIsStoppedSoonAfterTheLastDeadline) {
  ChildProcess pg;
  ASSERT_NO_FATAL_FAILURE(StartPostgres(&pg));
  WatchdogClient wd;
  ClientGuard guard{&wd};
  Status st = wd.Start(Options());
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << WatchdogLog();
  ASSERT_TRUE(ProcessAlive(wd.pid()));

  Clk::time_point last_deadline;
  const auto kick_until = Clk::now() + 3s;
  for (int i = 0; i < 20 && Clk::now() < kick_until; ++i) {
    last_deadline = Clk::now() + 1500ms;
    st = wd.Arm(last_deadline);
    ASSERT_TRUE(st.ok()) << st.ToString();
    std::this_thread::sleep_for(300ms);
    ASSERT_TRUE(ProcessAlive(pg.pid())) << "stopped while kept armed:\n" << WatchdogLog();
  }
  // No more arms: as if the agent froze.
  auto gone = WaitGone(pg.pid(), 1500ms + 5s);
  ASSERT_TRUE(gone.has_value()) << "PostgreSQL still runs:\n" << WatchdogLog();
  const double after_deadline = MsBetween(last_deadline, *gone);
  std::printf("[watchdog] PostgreSQL gone %.0f ms after the deadline\n", after_deadline);
  EXPECT_GE(after_deadline, 0.0) << "stopped before the deadline";
  EXPECT_LE(after_deadline, 1500.0) << WatchdogLog();
  // The watchdog polls for the postmaster's exit too; its line may come a little later.
  EXPECT_TRUE(WaitFor([&] { return WatchdogLog().find("PostgreSQL stopped") != std::string::npos; },
                      3s, 20ms));
  const std::string log = WatchdogLog();
  EXPECT_THAT(log, HasSubstr("no hardware watchdog, the software watchdog alone"));
  EXPECT_THAT(log,
              HasSubstr("SIGQUIT (immediate shutdown) to postmaster " + std::to_string(pg.pid())));
  EXPECT_THAT(log, HasSubstr("PostgreSQL stopped"));
  // It stays, disarmed, and stops cleanly on `exit`, taking its files along.
  EXPECT_TRUE(ProcessAlive(wd.pid()));
  st = wd.Stop(5s);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(fs::exists(Options().pid_file));
  EXPECT_FALSE(fs::exists(Options().fifo_path));
}

// (b) The agent side freezes (SIGSTOP) and then dies (SIGKILL) after arming:
// the watchdog it started, now an orphan, still enforces the deadline.
TEST_F(WatchdogTest, FrozenThenKilledAgentCannotSilenceIt) {
  ChildProcess pg;
  ASSERT_NO_FATAL_FAILURE(StartPostgres(&pg));
  WatchdogOptions o = Options();
  PidFileGuard watchdog_guard{o.pid_file};
  const auto deadline = Clk::now() + 3s;
  // A stand-in agent: starts the watchdog, arms it once, then idles.
  const std::string script =
      "\"$1\" watchdog --fifo \"$2\" --data-dir \"$3\" --pid-file \"$4\" --device \"$5\" "
      ">>\"$6\" 2>&1 &\n"
      "i=0; while [ ! -s \"$4\" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n"
      "echo \"arm $7\" > \"$2\"\n"
      "exec sleep 30\n";
  ChildProcess agent;
  ASSERT_TRUE(
      agent
          .Start({"/bin/sh", "-c", script, "sh", PgwardenBinary(), o.fifo_path, o.data_dir,
                  o.pid_file, o.device, o.log_file, std::to_string(agent::ToWireMillis(deadline))},
                 tmp_->Sub("agent.log"))
          .ok());
  ASSERT_TRUE(
      WaitFor([&] { return WatchdogLog().find("armed:") != std::string::npos; }, 2500ms, 20ms))
      << "the stand-in agent did not arm:\n"
      << WatchdogLog() << ReadFile(tmp_->Sub("agent.log"));
  const pid_t watchdog_pid = ReadPidFile(o.pid_file);
  ASSERT_GT(watchdog_pid, 0);
  ASSERT_EQ(kill(agent.pid(), SIGSTOP), 0);
  std::this_thread::sleep_for(200ms);
  agent.Stop(SIGKILL, 5s);
  ASSERT_FALSE(agent.running());
  ASSERT_TRUE(ProcessAlive(pg.pid())) << "stopped before the deadline:\n" << WatchdogLog();

  auto gone = WaitGone(pg.pid(), 3s + 5s);
  ASSERT_TRUE(gone.has_value()) << "PostgreSQL still runs:\n" << WatchdogLog();
  const double after_deadline = MsBetween(deadline, *gone);
  std::printf("[watchdog] PostgreSQL gone %.0f ms after the deadline\n", after_deadline);
  EXPECT_GE(after_deadline, 0.0);
  EXPECT_LE(after_deadline, 1500.0) << WatchdogLog();
  EXPECT_TRUE(ProcessAlive(watchdog_pid)) << "the watchdog should stay, disarmed";
}

// (c) `disarm` before the deadline: nothing is stopped. Garbage on the FIFO is
// logged and ignored.
TEST_F(WatchdogTest, DisarmedInTimeNothingIsStoppedAndGarbageIsIgnored) {
  ChildProcess pg;
  ASSERT_NO_FATAL_FAILURE(StartPostgres(&pg));
  WatchdogClient wd;
  ClientGuard guard{&wd};
  Status st = wd.Start(Options());
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(WriteToFifo(Options().fifo_path,
                          "bogus\narm soon\n" + std::string(300, 'x') + "\n\narm 5 6\n"));
  const auto deadline = Clk::now() + 1000ms;
  ASSERT_TRUE(wd.Arm(deadline).ok());
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(wd.Disarm().ok());
  std::this_thread::sleep_for(deadline + 2500ms - Clk::now());  // past deadline + grace
  EXPECT_TRUE(ProcessAlive(pg.pid())) << WatchdogLog();
  const std::string log = WatchdogLog();
  EXPECT_THAT(log, HasSubstr("ignoring a malformed command: 'bogus': unknown command"));
  EXPECT_THAT(log, HasSubstr("ignoring a malformed command: a command line is longer than 64"));
  EXPECT_THAT(log, HasSubstr("ignoring a malformed command: an empty command line"));
  EXPECT_THAT(log, HasSubstr("disarm: disarmed"));
  EXPECT_THAT(log, Not(HasSubstr("SIGQUIT")));
  EXPECT_TRUE(wd.Stop().ok());
}

// (d) Mode required without the device: exit 1 with a clear message, and the
// client reports it, so the agent can refuse to lead.
TEST_F(WatchdogTest, RequiredWithoutADeviceRefusesToStart) {
  WatchdogOptions o = Options();
  o.mode = WatchdogMode::kRequired;
  CommandResult r = RunPgwarden({"watchdog", "--fifo", o.fifo_path, "--data-dir", o.data_dir,
                                 "--mode", "required", "--device", o.device},
                                10s);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("watchdog mode is required, but cannot open " + o.device +
                               ": No such file or directory"));
  EXPECT_FALSE(fs::exists(o.fifo_path)) << "it should not listen";

  WatchdogClient wd;
  ClientGuard guard{&wd};
  Status st = wd.Start(o);
  EXPECT_EQ(st.code(), ErrorCode::kIo) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("exited at start (exited with 1)"));
  EXPECT_THAT(st.message(), HasSubstr("watchdog mode is required, but cannot open " + o.device));
  EXPECT_FALSE(wd.active());

  // The default device, when this machine has none (a container): the same.
  if (access("/dev/watchdog", F_OK) == 0) return;  // never open a real one in a test
  r = RunPgwarden(
      {"watchdog", "--fifo", o.fifo_path, "--data-dir", o.data_dir, "--mode", "required"}, 10s);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("cannot open /dev/watchdog"));
}

// (e) Something other than a FIFO at the FIFO path is refused and left alone;
// a stale FIFO is replaced; a FIFO another watchdog listens on is not.
TEST_F(WatchdogTest, FifoPathIsNeverTakenFromSomethingElse) {
  WatchdogOptions o = Options();
  ASSERT_TRUE(WriteFile(o.fifo_path, "precious\n"));
  std::vector<std::string> args = {"watchdog", "--fifo",   o.fifo_path, "--data-dir",
                                   o.data_dir, "--device", o.device};
  CommandResult r = RunPgwarden(args, 10s);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr(o.fifo_path + " exists and is a regular file, not a FIFO; it is "
                                             "left untouched"));
  EXPECT_EQ(ReadFile(o.fifo_path), "precious\n");
  ASSERT_TRUE(fs::remove(o.fifo_path));

  ASSERT_EQ(mkfifo(o.fifo_path.c_str(), 0644), 0);  // stale: nobody reads it
  WatchdogClient wd;
  ClientGuard guard{&wd};
  Status st = wd.Start(o);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << WatchdogLog();
  EXPECT_THAT(WatchdogLog(), HasSubstr("replacing the stale FIFO"));
  struct stat sb {};
  ASSERT_EQ(stat(o.fifo_path.c_str(), &sb), 0);
  EXPECT_TRUE(S_ISFIFO(sb.st_mode));
  EXPECT_EQ(sb.st_mode & 0777, 0600u);

  r = RunPgwarden(args, 10s);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("another watchdog is listening on the FIFO " + o.fifo_path));
  EXPECT_TRUE(FifoListening(o.fifo_path)) << "the first watchdog lost its FIFO";
}

// (f) A pid in postmaster.pid that is no postgres (here a `sleep` sitting in
// the data directory) is not killed.
TEST_F(WatchdogTest, PidThatIsNotAPostgresIsLeftAlone) {
  const std::string fake_data = tmp_->Sub("fake-data");
  ASSERT_TRUE(fs::create_directory(fake_data));
  ChildProcess sleeper;
  ProcessOptions in_data;
  in_data.cwd = fake_data;
  ASSERT_TRUE(sleeper.Start({"/bin/sleep", "30"}, tmp_->Sub("sleep.log"), in_data).ok());
  ASSERT_TRUE(WriteFile(fake_data + "/postmaster.pid",
                        std::to_string(sleeper.pid()) + "\n" + fake_data + "\n"));
  WatchdogOptions o = Options();
  o.data_dir = fake_data;
  o.grace = 500ms;
  WatchdogClient wd;
  ClientGuard guard{&wd};
  Status st = wd.Start(o);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const auto deadline = Clk::now() + 500ms;
  ASSERT_TRUE(wd.Arm(deadline).ok());
  EXPECT_TRUE(
      WaitFor([&] { return WatchdogLog().find("not stopping it") != std::string::npos; }, 5s, 20ms))
      << WatchdogLog();
  std::this_thread::sleep_for(deadline + 1500ms - Clk::now());
  EXPECT_TRUE(ProcessAlive(sleeper.pid())) << WatchdogLog();
  EXPECT_THAT(WatchdogLog(), HasSubstr("pid " + std::to_string(sleeper.pid()) + " from " +
                                       fake_data + "/postmaster.pid is not a postgres of"));
  EXPECT_THAT(WatchdogLog(), Not(HasSubstr("SIGQUIT")));
  sleeper.Stop(SIGTERM, 5s);
}

// A restarted agent finds the running watchdog through the pid file and
// reuses it (still armed) instead of starting a second one.
TEST_F(WatchdogTest, RestartedAgentReusesTheRunningWatchdog) {
  ChildProcess pg;
  ASSERT_NO_FATAL_FAILURE(StartPostgres(&pg));
  WatchdogOptions o = Options();
  WatchdogClient first;
  ClientGuard first_guard{&first};
  ASSERT_TRUE(first.Start(o).ok());
  const auto deadline = Clk::now() + 1500ms;
  ASSERT_TRUE(first.Arm(deadline).ok());

  WatchdogClient second;  // the agent after a restart
  ClientGuard second_guard{&second};
  Status st = second.Start(o);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(second.pid(), first.pid());
  // The old deadline still holds.
  auto gone = WaitGone(pg.pid(), 1500ms + 5s);
  ASSERT_TRUE(gone.has_value()) << WatchdogLog();
  EXPECT_GE(MsBetween(deadline, *gone), 0.0);
  EXPECT_TRUE(second.Stop().ok());
  EXPECT_FALSE(ProcessAlive(first.pid()));
  EXPECT_FALSE(fs::exists(o.pid_file));
}

// SIGTERM ends the watchdog disarmed: the deadline is not enforced after it.
TEST_F(WatchdogTest, SigtermExitsDisarmed) {
  ChildProcess pg;
  ASSERT_NO_FATAL_FAILURE(StartPostgres(&pg));
  WatchdogOptions o = Options();
  ChildProcess wd;
  ASSERT_TRUE(wd.Start({PgwardenBinary(), "watchdog", "--fifo", o.fifo_path, "--data-dir",
                        o.data_dir, "--device", o.device},
                       o.log_file)
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return FifoListening(o.fifo_path); }, 5s, 20ms)) << WatchdogLog();
  const auto deadline = Clk::now() + 1000ms;
  ASSERT_TRUE(
      WriteToFifo(o.fifo_path, "arm " + std::to_string(agent::ToWireMillis(deadline)) + "\n"));
  ASSERT_TRUE(WaitFor([&] { return WatchdogLog().find("armed:") != std::string::npos; }, 2s, 20ms));
  auto result = wd.Stop(SIGTERM, 5s);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->exit_code, 0) << result->Describe() << "\n" << WatchdogLog();
  std::this_thread::sleep_for(deadline + 1500ms - Clk::now());
  EXPECT_TRUE(ProcessAlive(pg.pid()));
  EXPECT_THAT(WatchdogLog(), HasSubstr("received SIGTERM: exiting disarmed"));
  EXPECT_FALSE(fs::exists(o.fifo_path));
}

// Usage errors exit 2 naming the problem.
TEST(WatchdogCliTest, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  };
  const Case cases[] = {
      {{"watchdog"}, "needs --fifo PATH"},
      {{"watchdog", "--fifo", "/tmp/x"}, "needs --data-dir DIR"},
      {{"watchdog", "--fifo", "/tmp/x", "--data-dir", "/tmp/d", "--mode", "off"},
       "--mode off runs no watchdog"},
      {{"watchdog", "--fifo", "/tmp/x", "--data-dir", "/tmp/d", "--mode", "sometimes"},
       "--mode must be automatic or required, got 'sometimes'"},
      {{"watchdog", "--fifo", "/tmp/x", "--data-dir", "/tmp/d", "--grace-ms", "-1"},
       "--grace-ms must be an integer from 0 to 60000"},
      {{"watchdog", "--fifo", "/tmp/x", "--data-dir", "/tmp/d", "--bogus"},
       "unknown option --bogus"},
  };
  for (const auto& c : cases) {
    CommandResult r = RunPgwarden(c.args, 10s);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_THAT(r.err, HasSubstr(c.says)) << r.Describe();
  }
  CommandResult help = RunPgwarden({"watchdog", "--help"}, 10s);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("usage: pgwarden watchdog --fifo PATH --data-dir DIR"));
  CommandResult top = RunPgwarden({"--help"}, 10s);
  EXPECT_THAT(top.out, HasSubstr("watchdog"));
}

}  // namespace
}  // namespace pgwarden::itest
