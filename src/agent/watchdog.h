// The watchdog a frozen node agent cannot silence: FIFO protocol, decision, process and client.
//
// `pgwarden watchdog` is a small process of its own, started by the agent
// beside PostgreSQL in a session of its own. While the node leads, the agent
// writes `arm <deadline>` to the watchdog's control FIFO every HA loop; the
// deadline is an absolute CLOCK_MONOTONIC time in milliseconds (system-wide,
// so both processes agree on it, and a frozen agent cannot move it). When a
// deadline passes without a newer `arm`, the watchdog stops PostgreSQL
// itself: SIGQUIT (immediate shutdown) to the postmaster, SIGKILL after a
// grace. It does not exit when the agent dies or freezes: outliving the
// agent is its purpose. It ends on `exit` or SIGTERM, disarmed.
//
// With `mode` automatic or required it also drives the Linux watchdog device
// (/dev/watchdog): opened on `arm` with a timeout a little past the deadline
// plus the grace, kicked only while armed and before the deadline, closed
// with the magic 'V' on `disarm`, `exit` and after PostgreSQL was stopped. So
// when the watchdog process itself cannot act (frozen, killed) the machine
// reboots instead. Mode required refuses to start without the device.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/watchdog_device.h"
#include "common/clock.h"
#include "common/status.h"
#include "config/config.h"

namespace pgwarden::agent {

using config::WatchdogMode;

// How to run `pgwarden watchdog`, and how the client finds it.
struct WatchdogOptions {
  std::string fifo_path;  // control FIFO; the watchdog creates it, mode 0600
  std::string pid_file;   // where the watchdog writes its pid; empty: none (no reuse)
  std::string data_dir;   // PostgreSQL data directory whose postmaster is stopped
  WatchdogMode mode = WatchdogMode::kAutomatic;  // kOff: the client starts nothing
  std::string device = "/dev/watchdog";          // the Linux watchdog device
  std::string log_file;        // the watchdog's stdout+stderr (client); empty: inherit ours
  Millis grace{2000};          // from SIGQUIT to SIGKILL of the postmaster
  std::string binary;          // client: the pgwarden binary; empty: SelfExecutable()
  Millis start_timeout{5000};  // client: how long Start() waits for the watchdog to listen
};

// InvalidArgument naming the first bad field: fifo_path, data_dir, device
// empty, grace outside 0..60 s, or mode kOff (there is no process to run then).
Status ValidateWatchdogOptions(const WatchdogOptions& opts);

// The arguments after the binary: {"watchdog", "--fifo", ..., "--grace-ms", "2000"}.
// The client compares them with a running watchdog's command line to reuse it.
std::vector<std::string> WatchdogArguments(const WatchdogOptions& opts);

// --- protocol ------------------------------------------------------------------

// What one FIFO line asks.
enum class WatchdogCommandKind {
  kArm,     // `arm <ms>`: stop PostgreSQL unless re-armed before the deadline
  kDisarm,  // `disarm`: no deadline (the node no longer leads)
  kExit,    // `exit`: disarm and exit 0
};

// One parsed command line.
struct WatchdogCommand {
  WatchdogCommandKind kind = WatchdogCommandKind::kDisarm;
  TimePoint deadline{};  // kArm only
  friend bool operator==(const WatchdogCommand&, const WatchdogCommand&) = default;
};

// The longest line the watchdog accepts (without the newline).
inline constexpr size_t kMaxWatchdogLine = 64;

// steady_clock is CLOCK_MONOTONIC on Linux (libstdc++), so its epoch is the
// kernel's: milliseconds since it, truncated (a deadline only gets earlier).
int64_t ToWireMillis(TimePoint t);
TimePoint FromWireMillis(int64_t ms);

// Parses one line without its newline; spaces around words are ignored.
// InvalidArgument saying what is wrong: empty, unknown word, a missing, extra
// or bad deadline (not a positive integer of milliseconds, or absurdly far).
Result<WatchdogCommand> ParseWatchdogCommand(std::string_view line);
// The line for a command, with its newline: "arm 123456\n", "disarm\n", "exit\n".
std::string FormatWatchdogCommand(const WatchdogCommand& cmd);

// --- decision --------------------------------------------------------------------

// What the watchdog process knows at one moment.
struct WatchdogState {
  std::optional<TimePoint> deadline;  // armed until then; nullopt: disarmed
  bool device_open = false;           // the hardware timer runs
  TimePoint device_kicked{};          // its last keepalive
  Millis device_timeout{0};           // its timeout as the driver applied it
  // The device must not fire before deadline + this (the grace plus a
  // margin), so the software watchdog acts first and a reboot only comes
  // when it could not.
  Millis device_margin{0};
};

// What to do now.
enum class WatchdogAction {
  kIdle,   // disarmed: wait for a command
  kWait,   // armed, the deadline is ahead: wait for a command (or the deadline)
  kFence,  // armed and the deadline has passed: stop PostgreSQL now
};

// The decision for one moment.
struct WatchdogStep {
  WatchdogAction action = WatchdogAction::kIdle;
  // Keep the device alive now: it would otherwise fire before
  // deadline + device_margin. Only while armed and before the deadline.
  bool kick_device = false;
  // How long to wait for a command before deciding again; nullopt: until one comes.
  std::optional<Millis> wait;
  friend bool operator==(const WatchdogStep&, const WatchdogStep&) = default;
};

// Pure: what the watchdog does at `now`. The deadline itself counts as passed.
WatchdogStep DecideWatchdogStep(const WatchdogState& state, TimePoint now);

// Seconds for the device's timeout when armed at `now`: it fires (unkicked)
// no earlier than deadline + margin. At least 1.
int DeviceTimeoutSeconds(TimePoint deadline, TimePoint now, Millis margin);

// The armed deadline and the device. Owned by the watchdog process; its main
// thread only. Does no I/O but the device's.
class WatchdogCore {
 public:
  // `device`: null when there is none (automatic mode without /dev/watchdog).
  WatchdogCore(WatchdogDevicePtr device, Millis grace);
  ~WatchdogCore();  // closes the device with the magic character
  WatchdogCore(const WatchdogCore&) = delete;
  WatchdogCore& operator=(const WatchdogCore&) = delete;

  // arm: the new deadline replaces the old one (the device is opened, its
  // timeout set and kicked); disarm, exit: no deadline, device closed.
  void Apply(const WatchdogCommand& cmd, TimePoint now);
  // The decision at `now`, after kicking the device when that was due.
  WatchdogStep Step(TimePoint now);
  // After an attempt to stop PostgreSQL: disarmed. The device is closed when
  // PostgreSQL is gone, and left open and unkicked when it is not, so the
  // machine reboots.
  void AfterFence(bool postgres_stopped);

  const WatchdogState& state() const { return state_; }

 private:
  void CloseDevice();

  WatchdogDevicePtr device_;
  WatchdogState state_;
  int device_timeout_set_ = 0;        // seconds last asked of the driver, 0: not yet
  bool device_error_logged_ = false;  // an open failure is logged once until it works
};

// --- stopping PostgreSQL -----------------------------------------------------------

// What /proc says about a process.
struct ProcessIdentity {
  std::string exe;                // /proc/<pid>/exe target ("" when unreadable)
  std::vector<std::string> argv;  // /proc/<pid>/cmdline
  std::string cwd;                // /proc/<pid>/cwd target ("" when unreadable)
};

// Reads /proc/<pid>; NotFound when the process is gone.
Result<ProcessIdentity> ReadProcessIdentity(pid_t pid);

// Pure: true when the process is a postgres binary (exe, or argv[0] when the
// exe is unreadable, named postgres or postmaster, " (deleted)" allowed)
// serving one of `data_dir_names` (the configured and the resolved spelling):
// its working directory (the postmaster changes into its data directory) or a
// `-D DIR`, `-DDIR`, `--pgdata=DIR` or bare DIR argument. So a recycled pid
// running anything else is never taken for the postmaster.
bool IsPostmasterOf(const ProcessIdentity& process, const std::vector<std::string>& data_dir_names);

// Stops the postmaster named on the first line of <data_dir>/postmaster.pid
// when it is alive and IsPostmasterOf the data dir: SIGQUIT, then after
// `grace` SIGKILL to it and its children. Logs what it did. Ok when no
// postmaster of this data dir runs afterwards (also when none ran, or the pid
// belongs to another program, which is left alone); Io when it survived.
Status StopPostmaster(const std::string& data_dir, Millis grace);

// --- the process -------------------------------------------------------------------

// The body of `pgwarden watchdog`: checks the device (mode required: Io error
// when it cannot be opened; automatic: logs once, software only), creates the
// FIFO (a stale FIFO is replaced; a FIFO another watchdog listens on, or any
// other kind of file, is an error and left untouched), writes the pid file,
// then serves commands until `exit` or SIGTERM/SIGINT. Ok after a clean exit,
// which removes the pid file and the FIFO. REQUIRES: ValidateWatchdogOptions ok.
Status RunWatchdog(const WatchdogOptions& opts);

// --- the agent's side ----------------------------------------------------------------

// The agent's handle on its watchdog process. Owned by the agent; used from
// the HA loop thread only. Destroying it leaves the watchdog running, armed
// or not (that is the point); Stop() ends it.
class WatchdogClient {
 public:
  WatchdogClient() = default;
  WatchdogClient(const WatchdogClient&) = delete;
  WatchdogClient& operator=(const WatchdogClient&) = delete;

  // Mode off: starts nothing, and Arm/Disarm/Stop then return Ok doing nothing.
  // Otherwise reuses the watchdog named in opts.pid_file when it is alive with
  // the same arguments (one with other arguments is stopped first), or spawns
  // `<binary> watchdog ...` in a new session with its output in
  // opts.log_file, and waits up to opts.start_timeout until it listens.
  // Errors: InvalidArgument (options), Io (it exited at start, e.g. mode
  // required without a device: the message carries its last log lines),
  // Timeout. The agent should not lead when this fails in mode required.
  Status Start(const WatchdogOptions& opts);
  // `arm <deadline>`: the watchdog stops PostgreSQL unless another Arm comes
  // before `deadline` (a steady_clock time). Never blocks. Errors:
  // InvalidArgument (not started), Io (no watchdog listens: it died; the FIFO
  // is full: it does not read).
  Status Arm(TimePoint deadline);
  // `disarm`: no deadline. Errors as Arm.
  Status Disarm();
  // `exit`, then waits up to `timeout` for the watchdog to go (then SIGTERM,
  // then SIGKILL). Ok when it is gone (also when it was gone already).
  Status Stop(Millis timeout = Millis(5000));

  // The watchdog's pid; -1 before Start (and in mode off).
  pid_t pid() const { return pid_; }
  // True after a successful Start with a mode other than off.
  bool active() const { return pid_ > 0; }

 private:
  Status Send(const WatchdogCommand& cmd);

  WatchdogOptions opts_;
  pid_t pid_ = -1;        // the watchdog's pid, -1: none
  bool started_ = false;  // Start succeeded (also in mode off)
};

}  // namespace pgwarden::agent
