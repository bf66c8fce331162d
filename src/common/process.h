// Child processes: run to completion with captured output, or spawn and supervise.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pgwarden {

// How to start a child process.
struct ProcessOptions {
  // Run as this OS user (needs root); empty: as ourselves.
  std::string os_user;
  // Working directory; empty: unchanged, or "/" when os_user is set.
  std::string cwd;
  // Extra environment, "NAME=value"; the rest is inherited.
  std::vector<std::string> env;
  // Append stdout+stderr to this file; empty: inherit ours (Spawn) / capture (Run).
  std::string log_file;
  // Start in a new session, so the child outlives us and no terminal signal reaches it.
  bool new_session = false;
  // Close the child's stdin.
  bool null_stdin = true;
};

// What a finished child left.
struct ProcessResult {
  int exit_code = -1;   // exit status, or -1 when killed by a signal
  int term_signal = 0;  // the signal that ended it, or 0
  std::string output;   // stdout+stderr when captured
  bool timed_out = false;
  bool ok() const { return exit_code == 0; }
  // "exited with 1: <last lines of output>"
  std::string Describe() const;
};

// Runs argv[0] (a path) to completion, capturing stdout+stderr, killing it
// (SIGKILL to its process group) after `timeout`. Errors: fork/exec failure.
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const ProcessOptions& opts,
                                 std::chrono::milliseconds timeout);

// Starts argv[0] (a path) and returns its pid. Like RunProcess, the child
// inherits no file descriptor of ours but stdin, stdout and stderr. The caller owns the child and
// must reap it (WaitProcess) unless new_session detached it for good.
Result<pid_t> SpawnProcess(const std::vector<std::string>& argv, const ProcessOptions& opts);

// Waits up to `timeout` for a child of ours; nullopt when it is still running.
std::optional<ProcessResult> WaitProcess(pid_t pid, std::chrono::milliseconds timeout);

// True when `pid` exists (signal 0 reaches it) and is not a zombie.
bool ProcessAlive(pid_t pid);

// Sends `sig`, then waits up to `grace` for the process (child or not) to go,
// then SIGKILL. Returns true when it is gone.
bool StopProcess(pid_t pid, int sig, std::chrono::milliseconds grace);

// Looks up an OS user: uid and gid. NotFound when there is no such user.
struct OsUser {
  uid_t uid;
  gid_t gid;
  std::string home;
};
Result<OsUser> LookupOsUser(const std::string& name);

// Absolute path of the running executable (/proc/self/exe).
std::string SelfExecutable();

}  // namespace pgwarden
