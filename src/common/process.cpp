// fork/exec based process control, with switching to another OS user when root.
#include "common/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

namespace pgwarden {
namespace {

using Clk = std::chrono::steady_clock;

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Runs in the child after fork: only async-signal-safe calls until exec.
[[noreturn]] void ExecChild(const std::vector<std::string>& argv, const ProcessOptions& opts,
                            const std::optional<OsUser>& user, int out_fd) {
  if (opts.new_session)
    setsid();
  else
    setpgid(0, 0);
  // Default signal dispositions and an empty mask for the new program.
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT}) signal(s, SIG_DFL);
  if (opts.null_stdin) {
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
  }
  if (out_fd >= 0) {
    dup2(out_fd, 1);
    dup2(out_fd, 2);
  }
  // Nothing but stdin/stdout/stderr goes to the new program: a listening
  // socket of ours (the REST API) kept open by a postmaster would hold its
  // port after we die, and our restarted self could not listen again.
  if (close_range(3, ~0U, 0) != 0) {
    long max_fd = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max_fd > 0 && max_fd < 65536 ? max_fd : 65536); ++fd) close(fd);
  }
  if (user) {
    if (setgroups(0, nullptr) != 0 || setgid(user->gid) != 0 || setuid(user->uid) != 0) {
      const char msg[] = "pgwarden: cannot switch to the OS user\n";
      (void)!write(2, msg, sizeof msg - 1);
      _exit(126);
    }
  }
  std::string dir = !opts.cwd.empty() ? opts.cwd : (user ? "/" : "");
  if (!dir.empty() && chdir(dir.c_str()) != 0) {
    const char msg[] = "pgwarden: cannot change to the working directory\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(126);
  }
  for (const auto& e : opts.env) putenv(const_cast<char*>(e.c_str()));
  if (user) {
    setenv("HOME", user->home.c_str(), 1);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  const char msg[] = "pgwarden: exec failed: ";
  (void)!write(2, msg, sizeof msg - 1);
  (void)!write(2, args[0], strlen(args[0]));
  (void)!write(2, "\n", 1);
  _exit(127);
}

Result<std::optional<OsUser>> ResolveUser(const ProcessOptions& opts) {
  if (opts.os_user.empty()) return std::optional<OsUser>{};
  auto u = LookupOsUser(opts.os_user);
  if (!u.ok()) return u.status();
  if (u->uid == geteuid()) return std::optional<OsUser>{};
  if (geteuid() != 0) {
    return InvalidArgument("cannot run as OS user '" + opts.os_user + "': pgwarden is not root");
  }
  return std::optional<OsUser>(*u);
}

ProcessResult FromWaitStatus(int status) {
  ProcessResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  return r;
}

}  // namespace

std::string ProcessResult::Describe() const {
  std::string s;
  if (timed_out)
    s = "timed out";
  else if (term_signal != 0)
    s = "killed by signal " + std::to_string(term_signal);
  else
    s = "exited with " + std::to_string(exit_code);
  if (!output.empty()) {
    // The last few lines carry the reason.
    std::string tail = output;
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    size_t pos = tail.size();
    for (int lines = 0; lines < 6 && pos != std::string::npos && pos > 0; ++lines) {
      pos = tail.rfind('\n', pos - 1);
    }
    if (pos != std::string::npos && pos > 0) tail = tail.substr(pos + 1);
    s += ": " + tail;
  }
  return s;
}

Result<OsUser> LookupOsUser(const std::string& name) {
  struct passwd pw;
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return NotFound("no OS user named '" + name + "'");
  }
  return OsUser{pw.pw_uid, pw.pw_gid, pw.pw_dir ? pw.pw_dir : "/"};
}

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const ProcessOptions& opts,
                                 std::chrono::milliseconds timeout) {
  auto user = ResolveUser(opts);
  if (!user.ok()) return user.status();
  int fds[2] = {-1, -1};
  int log_fd = -1;
  if (opts.log_file.empty()) {
    if (pipe2(fds, O_CLOEXEC) != 0) return IoError(Errno("pipe"));
  } else {
    log_fd = open(opts.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) return IoError(Errno(("open " + opts.log_file).c_str()));
  }
  pid_t pid = fork();
  if (pid < 0) {
    if (fds[0] >= 0) close(fds[0]), close(fds[1]);
    if (log_fd >= 0) close(log_fd);
    return IoError(Errno("fork"));
  }
  if (pid == 0) ExecChild(argv, opts, *user, log_fd >= 0 ? log_fd : fds[1]);
  if (log_fd >= 0) close(log_fd);
  if (fds[1] >= 0) close(fds[1]);

  ProcessResult result;
  auto deadline = Clk::now() + timeout;
  int status = 0;
  bool reaped = false;
  char buf[4096];
  // Until the child is reaped and its output drained (or, if a grandchild
  // holds the pipe open, until the pipe goes quiet after the child exited).
  for (;;) {
    if (!reaped && waitpid(pid, &status, WNOHANG) == pid) reaped = true;
    if (reaped && fds[0] < 0) break;
    if (!result.timed_out && Clk::now() >= deadline) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      result.timed_out = true;
    }
    if (fds[0] < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    struct pollfd p {
      fds[0], POLLIN, 0
    };
    int n = poll(&p, 1, 50);
    if (n > 0) {
      ssize_t r = read(fds[0], buf, sizeof buf);
      if (r > 0) {
        if (result.output.size() < (1u << 20)) result.output.append(buf, r);
        continue;
      }
      close(fds[0]);
      fds[0] = -1;
    } else if (n == 0 && reaped) {
      close(fds[0]);
      fds[0] = -1;
    }
  }
  if (fds[0] >= 0) close(fds[0]);
  auto fin = FromWaitStatus(status);
  result.exit_code = fin.exit_code;
  result.term_signal = fin.term_signal;
  return result;
}

Result<pid_t> SpawnProcess(const std::vector<std::string>& argv, const ProcessOptions& opts) {
  auto user = ResolveUser(opts);
  if (!user.ok()) return user.status();
  int log_fd = -1;
  if (!opts.log_file.empty()) {
    log_fd = open(opts.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) return IoError(Errno(("open " + opts.log_file).c_str()));
    if (*user) (void)!fchown(log_fd, (*user)->uid, (*user)->gid);
  }
  pid_t pid = fork();
  if (pid < 0) {
    if (log_fd >= 0) close(log_fd);
    return IoError(Errno("fork"));
  }
  if (pid == 0) ExecChild(argv, opts, *user, log_fd);
  if (log_fd >= 0) close(log_fd);
  return pid;
}

std::optional<ProcessResult> WaitProcess(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = Clk::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) return FromWaitStatus(status);
    if (w < 0) {
      // Not our child (or already reaped): fall back to liveness.
      if (!ProcessAlive(pid)) return ProcessResult{};
    }
    if (Clk::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return errno == EPERM;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close_paren = line.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= line.size()) return true;
  return line[close_paren + 2] != 'Z';
}

bool StopProcess(pid_t pid, int sig, std::chrono::milliseconds grace) {
  if (pid <= 0) return true;
  if (kill(pid, sig) != 0 && errno == ESRCH) {
    WaitProcess(pid, std::chrono::milliseconds(0));
    return true;
  }
  if (WaitProcess(pid, grace)) return true;
  kill(pid, SIGKILL);
  return WaitProcess(pid, std::chrono::seconds(5)).has_value();
}

std::string SelfExecutable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "pgwarden";
  return std::string(buf, n);
}

}  // namespace pgwarden
