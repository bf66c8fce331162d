// `pgwarden watchdog`: the process that stops PostgreSQL when the node agent stops re-arming it.
#include <iostream>

#include "agent/watchdog.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kWatchdogHelp =
    R"(usage: pgwarden watchdog --fifo PATH --data-dir DIR [options]

Stops PostgreSQL when the node agent freezes or dies while it leads. The
agent (pgwarden node) starts it beside PostgreSQL, in a session of its own,
and writes one line to the control FIFO every HA loop:
  arm <deadline>   stop PostgreSQL unless re-armed before <deadline>, an
                   absolute CLOCK_MONOTONIC time in milliseconds
  disarm           no deadline (the node no longer leads)
  exit             disarm and exit 0
A malformed line is logged and ignored. When the deadline passes, the
postmaster named in DIR/postmaster.pid, once checked to be a postgres of DIR,
gets SIGQUIT (immediate shutdown) and SIGKILL after the grace; then the
watchdog stays running, disarmed. It does not exit when the agent dies: it is
there to outlive a dead or frozen agent.

options:
  --fifo PATH        the control FIFO to create (mode 0600); a stale FIFO is
                     replaced, any other file there is refused and left alone
  --data-dir DIR     the PostgreSQL data directory
  --pid-file FILE    write our pid here (removed at a clean exit), so a
                     restarted agent finds and reuses this watchdog
  --mode MODE        automatic (default): also drive the watchdog device when
                     it can be opened, else the software watchdog alone;
                     required: exit 1 when the device cannot be opened.
                     (off is refused: with watchdog.mode off the agent starts
                     no watchdog at all.)
  --device PATH      the Linux watchdog device (default /dev/watchdog): opened
                     on arm with a timeout just past deadline + grace, kicked
                     only before the deadline, closed with the magic 'V' on
                     disarm, exit and once PostgreSQL is stopped
  --grace-ms MS      from SIGQUIT to SIGKILL (default 2000, at most 60000)
  --log-level LEVEL  debug | info | warn | error (default info)
  -h, --help         this help

Exit codes: 0 after `exit`, SIGTERM or SIGINT (disarmed), 1 when it cannot
start (device missing in mode required, FIFO path taken), 2 usage errors.
)";

}  // namespace

int WatchdogCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first,
            {"fifo", "data-dir", "pid-file", "mode", "device", "grace-ms", "log-level"}, {"help"},
            {{"h", "help"}});
  if (args.Flag("help")) {
    std::cout << kWatchdogHelp;
    return kExitOk;
  }
  if (!args.positional().empty()) {
    throw UsageError{"unexpected argument '" + args.positional().front() + "'"};
  }
  agent::WatchdogOptions opts;
  auto fifo = args.Get("fifo");
  auto data_dir = args.Get("data-dir");
  if (!fifo || fifo->empty()) throw UsageError{"needs --fifo PATH (see pgwarden watchdog --help)"};
  if (!data_dir || data_dir->empty()) {
    throw UsageError{"needs --data-dir DIR (see pgwarden watchdog --help)"};
  }
  opts.fifo_path = *fifo;
  opts.data_dir = *data_dir;
  opts.pid_file = args.GetOr("pid-file", "");
  if (auto mode_text = args.Get("mode")) {
    auto mode = config::ParseWatchdogMode(*mode_text);
    if (!mode) {
      throw UsageError{"--mode must be automatic or required, got '" + *mode_text + "'"};
    }
    if (*mode == config::WatchdogMode::kOff) {
      throw UsageError{"--mode off runs no watchdog: with watchdog.mode off the agent starts none"};
    }
    opts.mode = *mode;
  }
  opts.device = args.GetOr("device", opts.device);
  if (opts.device.empty()) throw UsageError{"--device must not be empty"};
  opts.grace = Millis(args.GetInt("grace-ms", static_cast<int>(opts.grace.count()), 0, 60000));
  LogLevel level = LogLevel::kInfo;
  if (auto text = args.Get("log-level"); text && !ParseLogLevel(*text, &level)) {
    throw UsageError{"--log-level must be debug, info, warn or error, got '" + *text + "'"};
  }
  SetLogLevel(level);

  Status st = agent::RunWatchdog(opts);
  if (!st.ok()) {
    LOG_ERROR("watchdog", st.message());
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace pgwarden::cli
