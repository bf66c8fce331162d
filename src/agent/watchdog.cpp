// The watchdog process (`pgwarden watchdog`), its FIFO protocol and decision, and the agent's
// client.
#include "agent/watchdog.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/process.h"

namespace pgwarden::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

constexpr const char* kLog = "watchdog";
// The device may fire this long after deadline + grace at the earliest.
constexpr Millis kDeviceSlack{2000};
// Wire deadlines above this (about 31 years of uptime) are refused: they
// would overflow steady_clock's nanoseconds and are certainly a mistake.
constexpr int64_t kMaxWireMillis = 1'000'000'000'000;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Milliseconds between two times, for log lines.
int64_t MillisBetween(TimePoint from, TimePoint to) {
  return std::chrono::duration_cast<Millis>(to - from).count();
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// `s` for a log line: bytes outside printable ASCII as \xNN.
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      const char* hex = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// A file descriptor closed by the destructor. Owned by one function.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// --- stopping PostgreSQL ------------------------------------------------------

std::string ReadLink(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// The configured spelling without trailing slashes, and the resolved one.
std::vector<std::string> DataDirNames(const std::string& data_dir) {
  std::string plain = data_dir;
  while (plain.size() > 1 && plain.back() == '/') plain.pop_back();
  std::vector<std::string> names = {plain};
  std::error_code ec;
  fs::path resolved = fs::canonical(plain, ec);
  if (!ec && resolved.string() != plain) names.push_back(resolved.string());
  return names;
}

// Waits up to `timeout` for `pid` to be gone (or a zombie).
bool WaitGone(pid_t pid, Millis timeout) {
  auto deadline = steady_clock::now() + timeout;
  for (;;) {
    if (!ProcessAlive(pid)) return true;
    if (steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(10));
  }
}

// Pids whose parent is `parent`, from /proc/*/stat.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    pid_t pid = 0;
    auto [p, err] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (err != std::errc() || p != name.data() + name.size()) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close_paren = line.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(line.substr(close_paren + 1));
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent) out.push_back(pid);
  }
  return out;
}

// --- the FIFO and the pid file -------------------------------------------------

// True when some process has the FIFO at `path` open for reading.
bool FifoHasReader(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  bool fifo = ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
  ::close(fd);
  return fifo;
}

const char* FileKind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a FIFO";
}

// Creates the control FIFO (replacing a stale one) and opens it for reading
// and writing, so it never reports end of file when writers go away.
Result<UniqueFd> OpenControlFifo(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISFIFO(st.st_mode)) {
      return InvalidArgument(path + " exists and is " + FileKind(st.st_mode) +
                             ", not a FIFO; it is left untouched");
    }
    if (FifoHasReader(path)) {
      return Conflict("another watchdog is listening on the FIFO " + path);
    }
    if (::unlink(path.c_str()) != 0) return IoError(Errno("cannot remove the stale FIFO " + path));
    LOG_INFO(kLog, "replacing the stale FIFO " << path);
  } else if (errno != ENOENT) {
    return IoError(Errno("cannot stat " + path));
  }
  if (::mkfifo(path.c_str(), 0600) != 0) return IoError(Errno("cannot create the FIFO " + path));
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) return IoError(Errno("cannot open the FIFO " + path));
  if (::fstat(fd.get(), &st) != 0 || !S_ISFIFO(st.st_mode)) {
    return Conflict(path + " was replaced while the watchdog opened it");
  }
  (void)::fchmod(fd.get(), 0600);
  return fd;
}

// True when `path` is still the FIFO open on `fd` (same inode).
bool SameFile(const std::string& path, int fd) {
  struct stat a {
  }, b{};
  return ::lstat(path.c_str(), &a) == 0 && ::fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

pid_t ReadPid(const std::string& pid_file) {
  std::ifstream in(pid_file);
  long pid = -1;
  if (!(in >> pid) || pid <= 0 || pid > INT_MAX) return -1;
  return static_cast<pid_t>(pid);
}

Status WritePidFile(const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << ::getpid() << "\n";
    out.close();
    if (!out) return IoError("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return IoError(Errno("cannot write " + path));
  }
  return Status::Ok();
}

// Splits FIFO bytes into lines. A line longer than kMaxWatchdogLine is cut to
// kMaxWatchdogLine + 1 characters (so the parser rejects it) and the rest of
// it skipped. Owned by RunWatchdog.
class LineSplitter {
 public:
  void Feed(std::string_view bytes, std::vector<std::string>* lines) {
    for (char c : bytes) {
      if (c == '\n') {
        lines->push_back(std::move(partial_));
        partial_.clear();
      } else if (partial_.size() <= kMaxWatchdogLine) {
        partial_.push_back(c);
      }
    }
  }

 private:
  std::string partial_;  // the line so far, at most kMaxWatchdogLine + 1 characters
};

// The last `n` lines of a file, for start-up error messages.
std::string TailOf(const std::string& path, int n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > n) lines.erase(lines.begin());
  }
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
  return out;
}

// True when `pid` runs `<binary> watchdog ...`; its arguments in `args`.
bool IsWatchdogProcess(pid_t pid, std::vector<std::string>* args) {
  auto id = ReadProcessIdentity(pid);
  if (!id.ok() || id->argv.size() < 2 || id->argv[1] != "watchdog") return false;
  if (args) args->assign(id->argv.begin() + 1, id->argv.end());
  return true;
}

}  // namespace

// --- options ------------------------------------------------------------------------

Status ValidateWatchdogOptions(const WatchdogOptions& opts) {
  if (opts.mode == WatchdogMode::kOff) {
    return InvalidArgument("watchdog mode off runs no watchdog process");
  }
  if (opts.fifo_path.empty()) return InvalidArgument("the watchdog needs a FIFO path");
  if (opts.data_dir.empty()) return InvalidArgument("the watchdog needs the data directory");
  if (opts.device.empty()) return InvalidArgument("the watchdog device path is empty");
  if (opts.grace < Millis(0) || opts.grace > Millis(60000)) {
    return InvalidArgument("the watchdog grace must be from 0 to 60000 ms, got " +
                           std::to_string(opts.grace.count()));
  }
  return Status::Ok();
}

std::vector<std::string> WatchdogArguments(const WatchdogOptions& opts) {
  std::vector<std::string> args = {"watchdog", "--fifo", opts.fifo_path, "--data-dir",
                                   opts.data_dir};
  if (!opts.pid_file.empty()) {
    args.push_back("--pid-file");
    args.push_back(opts.pid_file);
  }
  for (std::string a : {std::string("--mode"), std::string(config::WatchdogModeName(opts.mode)),
                        std::string("--device"), opts.device, std::string("--grace-ms"),
                        std::to_string(opts.grace.count())}) {
    args.push_back(std::move(a));
  }
  return args;
}

// --- protocol -------------------------------------------------------------------------

int64_t ToWireMillis(TimePoint t) {
  return std::chrono::duration_cast<Millis>(t.time_since_epoch()).count();
}

TimePoint FromWireMillis(int64_t ms) { return TimePoint(Millis(ms)); }

Result<WatchdogCommand> ParseWatchdogCommand(std::string_view raw) {
  if (raw.size() > kMaxWatchdogLine) {
    return InvalidArgument("a command line is longer than " + std::to_string(kMaxWatchdogLine) +
                           " characters");
  }
  std::string_view line = TrimSpaces(raw);
  if (line.empty()) return InvalidArgument("an empty command line");
  // Words separated by spaces or tabs.
  std::vector<std::string_view> words;
  size_t pos = 0;
  while (pos < line.size()) {
    size_t end = line.find_first_of(" \t", pos);
    if (end == std::string_view::npos) end = line.size();
    if (end > pos) words.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  const std::string quoted = "'" + Printable(line) + "'";
  if (words[0] == "disarm" || words[0] == "exit") {
    if (words.size() != 1)
      return InvalidArgument(quoted + ": " + std::string(words[0]) + " takes no argument");
    WatchdogCommand cmd;
    cmd.kind = words[0] == "exit" ? WatchdogCommandKind::kExit : WatchdogCommandKind::kDisarm;
    return cmd;
  }
  if (words[0] != "arm") {
    return InvalidArgument(quoted + ": unknown command (expected arm <ms>, disarm or exit)");
  }
  if (words.size() != 2) {
    return InvalidArgument(quoted + ": expected arm <deadline>, the CLOCK_MONOTONIC time in ms");
  }
  int64_t ms = 0;
  auto [ptr, ec] = std::from_chars(words[1].data(), words[1].data() + words[1].size(), ms);
  if (ec != std::errc() || ptr != words[1].data() + words[1].size() || ms <= 0 ||
      ms > kMaxWireMillis) {
    return InvalidArgument(quoted + ": the deadline must be a positive number of milliseconds " +
                           "up to " + std::to_string(kMaxWireMillis));
  }
  WatchdogCommand cmd;
  cmd.kind = WatchdogCommandKind::kArm;
  cmd.deadline = FromWireMillis(ms);
  return cmd;
}

std::string FormatWatchdogCommand(const WatchdogCommand& cmd) {
  switch (cmd.kind) {
    case WatchdogCommandKind::kArm:
      return "arm " + std::to_string(ToWireMillis(cmd.deadline)) + "\n";
    case WatchdogCommandKind::kDisarm:
      return "disarm\n";
    case WatchdogCommandKind::kExit:
      return "exit\n";
  }
  return "disarm\n";
}

// --- decision ---------------------------------------------------------------------------

WatchdogStep DecideWatchdogStep(const WatchdogState& s, TimePoint now) {
  WatchdogStep step;
  if (!s.deadline) return step;  // idle until a command comes
  if (now >= *s.deadline) {
    step.action = WatchdogAction::kFence;
    step.wait = Millis(0);
    return step;
  }
  step.action = WatchdogAction::kWait;
  TimePoint wake = *s.deadline;
  if (s.device_open && s.device_timeout > Millis(0)) {
    const TimePoint fires = s.device_kicked + s.device_timeout;
    // Kicked at half its timeout, and only while it would fire too early.
    if (fires < *s.deadline + s.device_margin) {
      const TimePoint kick_at = fires - s.device_timeout / 2;
      if (now >= kick_at) {
        step.kick_device = true;
      } else {
        wake = std::min(wake, kick_at);
      }
    }
  }
  step.wait = std::chrono::ceil<Millis>(wake - now);
  return step;
}

int DeviceTimeoutSeconds(TimePoint deadline, TimePoint now, Millis margin) {
  const auto secs = std::chrono::ceil<std::chrono::seconds>(deadline + margin - now).count();
  return static_cast<int>(std::clamp<int64_t>(secs, 1, 86400));
}

WatchdogCore::WatchdogCore(WatchdogDevicePtr device, Millis grace) : device_(std::move(device)) {
  state_.device_margin = grace + kDeviceSlack;
}

WatchdogCore::~WatchdogCore() { CloseDevice(); }

void WatchdogCore::Apply(const WatchdogCommand& cmd, TimePoint now) {
  if (cmd.kind != WatchdogCommandKind::kArm) {
    if (state_.deadline) {
      LOG_INFO(kLog, (cmd.kind == WatchdogCommandKind::kExit ? "exit" : "disarm")
                         << ": disarmed, " << MillisBetween(now, *state_.deadline)
                         << " ms before the deadline");
    }
    state_.deadline.reset();
    CloseDevice();
    return;
  }
  const bool was_armed = state_.deadline.has_value();
  state_.deadline = cmd.deadline;
  const int64_t ahead = MillisBetween(now, cmd.deadline);
  if (ahead <= 0) {
    LOG_WARN(kLog, "armed with a deadline " << -ahead << " ms in the past");
    return;  // Step() fences; the device is not kicked for a deadline gone by
  }
  if (!was_armed) {
    LOG_INFO(kLog, "armed: PostgreSQL is stopped unless re-armed within " << ahead << " ms");
  } else {
    LOG_DEBUG(kLog, "re-armed: deadline in " << ahead << " ms");
  }
  if (!device_) return;
  if (!device_->is_open()) {
    Status st = device_->Open();
    if (!st.ok()) {
      if (!device_error_logged_) {
        LOG_ERROR(kLog, st.message() << "; only the software watchdog guards this deadline");
      }
      device_error_logged_ = true;
      return;
    }
    device_error_logged_ = false;
    device_timeout_set_ = 0;
    LOG_INFO(kLog, "opened " << device_->path());
  }
  const int want = DeviceTimeoutSeconds(cmd.deadline, now, state_.device_margin);
  if (want != device_timeout_set_) {
    Result<int> applied = device_->SetTimeout(want);
    if (!applied.ok()) {
      // Its own timeout may be shorter than the deadline: better no hardware
      // watchdog than a reboot of a healthy leader.
      LOG_ERROR(kLog, applied.status().message() << "; closing it, software watchdog only");
      CloseDevice();
      return;
    }
    device_timeout_set_ = want;
    state_.device_timeout = std::chrono::seconds(*applied);
    if (*applied != want) {
      LOG_INFO(kLog, device_->path() << ": asked for a " << want << " s timeout, the driver set "
                                     << *applied << " s");
    }
  }
  Status kicked = device_->Keepalive();
  if (!kicked.ok()) LOG_WARN(kLog, kicked.message());
  state_.device_open = true;
  state_.device_kicked = now;
}

WatchdogStep WatchdogCore::Step(TimePoint now) {
  WatchdogStep step = DecideWatchdogStep(state_, now);
  if (step.kick_device && device_ && device_->is_open()) {
    Status kicked = device_->Keepalive();
    if (!kicked.ok()) LOG_WARN(kLog, kicked.message());
    state_.device_kicked = now;
    step = DecideWatchdogStep(state_, now);
  }
  return step;
}

void WatchdogCore::AfterFence(bool postgres_stopped) {
  state_.deadline.reset();
  if (postgres_stopped) {
    CloseDevice();
  } else if (state_.device_open) {
    LOG_ERROR(kLog, "PostgreSQL could not be stopped: " << device_->path()
                                                        << " stays open and unkicked, the "
                                                           "machine reboots within "
                                                        << state_.device_timeout.count() / 1000
                                                        << " s");
  }
}

void WatchdogCore::CloseDevice() {
  if (device_ && device_->is_open()) {
    device_->Close();
    LOG_INFO(kLog, "closed " << device_->path() << " (magic close: its timer stops)");
  }
  state_.device_open = false;
  state_.device_timeout = Millis(0);
  device_timeout_set_ = 0;
}

// --- stopping PostgreSQL -----------------------------------------------------------------

Result<ProcessIdentity> ReadProcessIdentity(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream cmdline(dir + "/cmdline", std::ios::binary);
  if (!cmdline) return NotFound("no process " + std::to_string(pid));
  ProcessIdentity id;
  for (std::string arg; std::getline(cmdline, arg, '\0');) id.argv.push_back(arg);
  id.exe = ReadLink(dir + "/exe");
  id.cwd = ReadLink(dir + "/cwd");
  return id;
}

bool IsPostmasterOf(const ProcessIdentity& p, const std::vector<std::string>& data_dir_names) {
  std::string program = !p.exe.empty() ? p.exe : (p.argv.empty() ? "" : p.argv[0]);
  const std::string deleted = " (deleted)";
  if (program.size() > deleted.size() &&
      program.compare(program.size() - deleted.size(), deleted.size(), deleted) == 0) {
    program.resize(program.size() - deleted.size());
  }
  const std::string base =
      program.substr(program.rfind('/') == std::string::npos ? 0 : program.rfind('/') + 1);
  if (base != "postgres" && base != "postmaster") return false;
  for (const auto& name : data_dir_names) {
    if (name.empty()) continue;
    if (p.cwd == name) return true;
    for (size_t i = 1; i < p.argv.size(); ++i) {
      const std::string& a = p.argv[i];
      if (a == "-D" + name || a == "--pgdata=" + name) return true;
      if ((a == "-D" || a == "--pgdata") && i + 1 < p.argv.size() && p.argv[i + 1] == name) {
        return true;
      }
    }
  }
  return false;
}

Status StopPostmaster(const std::string& data_dir, Millis grace) {
  const std::string pid_path = data_dir + "/postmaster.pid";
  std::ifstream in(pid_path);
  if (!in) {
    LOG_INFO(kLog, "no " << pid_path << ": PostgreSQL is not running, nothing to stop");
    return Status::Ok();
  }
  std::string first;
  std::getline(in, first);
  const std::string_view text = TrimSpaces(first);
  long pid = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || ptr != text.data() + text.size() || pid <= 1 || pid > INT_MAX) {
    LOG_WARN(kLog, "the first line of " << pid_path << " is not a pid ('" << first
                                        << "'): nothing to stop");
    return Status::Ok();
  }
  auto id = ReadProcessIdentity(static_cast<pid_t>(pid));
  if (!id.ok() || !ProcessAlive(static_cast<pid_t>(pid))) {
    LOG_INFO(kLog, "postmaster " << pid << " from " << pid_path << " is not running");
    return Status::Ok();
  }
  if (!IsPostmasterOf(*id, DataDirNames(data_dir))) {
    LOG_WARN(kLog, "pid " << pid << " from " << pid_path << " is not a postgres of " << data_dir
                          << " (exe '" << id->exe << "', cwd '" << id->cwd
                          << "'): not stopping it");
    return Status::Ok();
  }
  const auto started = steady_clock::now();
  LOG_ERROR(kLog,
            "sending SIGQUIT (immediate shutdown) to postmaster " << pid << " of " << data_dir);
  if (::kill(static_cast<pid_t>(pid), SIGQUIT) != 0 && errno != ESRCH) {
    Status st = IoError(Errno("cannot signal postmaster " + std::to_string(pid)));
    LOG_ERROR(kLog, st.message());
    return st;
  }
  if (WaitGone(static_cast<pid_t>(pid), grace)) {
    LOG_INFO(kLog, "PostgreSQL stopped: postmaster " << pid << " gone after "
                                                     << MillisBetween(started, steady_clock::now())
                                                     << " ms");
    return Status::Ok();
  }
  std::vector<pid_t> children = ChildrenOf(static_cast<pid_t>(pid));
  LOG_WARN(kLog, "postmaster " << pid << " still runs " << grace.count() << " ms after SIGQUIT: "
                               << "SIGKILL to it and its " << children.size() << " children");
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  for (pid_t c : children) ::kill(c, SIGKILL);
  if (WaitGone(static_cast<pid_t>(pid), Millis(5000))) {
    LOG_INFO(kLog, "PostgreSQL stopped: postmaster " << pid << " killed after "
                                                     << MillisBetween(started, steady_clock::now())
                                                     << " ms");
    return Status::Ok();
  }
  Status st = IoError("postmaster " + std::to_string(pid) + " survived SIGKILL");
  LOG_ERROR(kLog, st.message());
  return st;
}

// --- the process -------------------------------------------------------------------------

Status RunWatchdog(const WatchdogOptions& opts) {
  PGW_RETURN_IF_ERROR(ValidateWatchdogOptions(opts));
  // SIGTERM and SIGINT arrive through a signalfd beside the FIFO; a closed
  // terminal or reader never stops us.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  UniqueFd sigfd(signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC));
  if (sigfd.get() < 0) return IoError(Errno("signalfd"));

  // The device is probed now (opened, then closed with the magic character)
  // and opened for real on `arm`.
  WatchdogDevicePtr device = MakeLinuxWatchdogDevice(opts.device);
  Status probe = device->Open();
  if (!probe.ok()) {
    if (opts.mode == WatchdogMode::kRequired) {
      return IoError("watchdog mode is required, but " + probe.message() +
                     " (no watchdog device here: a container, or no driver loaded; mode "
                     "automatic runs the software watchdog alone)");
    }
    LOG_WARN(kLog, probe.message() << ": no hardware watchdog, the software watchdog alone "
                                      "guards PostgreSQL");
    device.reset();
  } else {
    device->Close();
    LOG_INFO(kLog, "hardware watchdog " << opts.device << " is available");
  }

  Result<UniqueFd> fifo = OpenControlFifo(opts.fifo_path);
  if (!fifo.ok()) return fifo.status();
  const int fifo_fd = fifo->get();
  auto remove_fifo = [&] {
    if (SameFile(opts.fifo_path, fifo_fd)) ::unlink(opts.fifo_path.c_str());
  };
  if (!opts.pid_file.empty()) {
    Status st = WritePidFile(opts.pid_file);
    if (!st.ok()) {
      remove_fifo();
      return st;
    }
  }
  LOG_INFO(kLog, "pid " << ::getpid() << " listening on " << opts.fifo_path << " for "
                        << opts.data_dir << " (mode " << config::WatchdogModeName(opts.mode)
                        << ", grace " << opts.grace.count() << " ms)");

  WatchdogCore core(std::move(device), opts.grace);
  LineSplitter splitter;
  bool done = false;
  while (!done) {
    WatchdogStep step = core.Step(steady_clock::now());
    if (step.action == WatchdogAction::kFence) {
      LOG_ERROR(kLog, "the deadline passed "
                          << MillisBetween(*core.state().deadline, steady_clock::now())
                          << " ms ago without a new arm: stopping PostgreSQL");
      Status st = StopPostmaster(opts.data_dir, opts.grace);
      core.AfterFence(st.ok());
      continue;
    }
    const int timeout =
        step.wait ? static_cast<int>(std::min<int64_t>(step.wait->count(), INT_MAX)) : -1;
    pollfd fds[2] = {{fifo_fd, POLLIN, 0}, {sigfd.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, timeout);
    if (n < 0) {
      if (errno != EINTR) {
        LOG_ERROR(kLog, Errno("poll"));
        std::this_thread::sleep_for(Millis(100));
      }
      continue;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info{};
      (void)!::read(sigfd.get(), &info, sizeof info);
      LOG_INFO(kLog, "received " << (info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM")
                                 << ": exiting disarmed");
      break;
    }
    if (!(fds[0].revents & POLLIN)) continue;
    // Every line written so far, before the next decision.
    std::vector<std::string> lines;
    for (int reads = 0; reads < 64; ++reads) {
      char buf[1024];
      ssize_t r = ::read(fifo_fd, buf, sizeof buf);
      if (r <= 0) break;
      splitter.Feed(std::string_view(buf, static_cast<size_t>(r)), &lines);
    }
    for (const auto& line : lines) {
      Result<WatchdogCommand> cmd = ParseWatchdogCommand(line);
      if (!cmd.ok()) {
        LOG_WARN(kLog, "ignoring a malformed command: " << cmd.status().message());
        continue;
      }
      core.Apply(*cmd, steady_clock::now());
      if (cmd->kind == WatchdogCommandKind::kExit) {
        done = true;
        break;
      }
    }
  }
  core.Apply(WatchdogCommand{WatchdogCommandKind::kDisarm, {}}, steady_clock::now());
  if (!opts.pid_file.empty() && ReadPid(opts.pid_file) == ::getpid()) {
    std::remove(opts.pid_file.c_str());
  }
  remove_fifo();
  LOG_INFO(kLog, "exiting, disarmed");
  return Status::Ok();
}

// --- the agent's side ----------------------------------------------------------------------

Status WatchdogClient::Start(const WatchdogOptions& opts) {
  opts_ = opts;
  started_ = false;
  if (opts.mode == WatchdogMode::kOff) {
    pid_ = -1;
    started_ = true;
    return Status::Ok();
  }
  PGW_RETURN_IF_ERROR(ValidateWatchdogOptions(opts));
  const std::vector<std::string> args = WatchdogArguments(opts);

  // A watchdog already running (ours from before, or one an earlier agent
  // left, named in the pid file) is reused when it runs with these arguments.
  std::vector<pid_t> candidates;
  if (pid_ > 0) candidates.push_back(pid_);
  if (!opts.pid_file.empty()) {
    pid_t from_file = ReadPid(opts.pid_file);
    if (from_file > 0 && from_file != pid_) candidates.push_back(from_file);
  }
  for (pid_t candidate : candidates) {
    std::vector<std::string> running;
    if (!ProcessAlive(candidate) || !IsWatchdogProcess(candidate, &running)) continue;
    if (running == args && FifoHasReader(opts.fifo_path)) {
      LOG_INFO(kLog, "reusing the running watchdog, pid " << candidate);
      pid_ = candidate;
      started_ = true;
      return Status::Ok();
    }
    LOG_INFO(kLog, "stopping the watchdog pid " << candidate << ": it runs with other options");
    StopProcess(candidate, SIGTERM, Millis(3000));
  }
  if (pid_ > 0) WaitProcess(pid_, Millis(0));  // reap an earlier child of ours
  pid_ = -1;

  std::vector<std::string> argv = {opts.binary.empty() ? SelfExecutable() : opts.binary};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions po;
  po.new_session = true;  // outlives us; no terminal signal reaches it
  po.log_file = opts.log_file;
  Result<pid_t> spawned = SpawnProcess(argv, po);
  if (!spawned.ok()) return spawned.status();
  const pid_t child = *spawned;
  const auto deadline = steady_clock::now() + opts.start_timeout;
  for (;;) {
    if (auto exited = WaitProcess(child, Millis(0))) {
      std::string why = opts.log_file.empty() ? std::string("its output went to our stderr")
                                              : TailOf(opts.log_file, 3);
      return IoError("the watchdog exited at start (" + exited->Describe() + "): " + why);
    }
    if (FifoHasReader(opts.fifo_path) &&
        (opts.pid_file.empty() || ReadPid(opts.pid_file) == child)) {
      break;
    }
    if (steady_clock::now() >= deadline) {
      StopProcess(child, SIGTERM, Millis(2000));
      return Timeout("the watchdog did not listen on " + opts.fifo_path + " within " +
                     std::to_string(opts.start_timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(Millis(20));
  }
  pid_ = child;
  started_ = true;
  LOG_INFO(kLog, "started the watchdog, pid " << child << " (mode "
                                              << config::WatchdogModeName(opts.mode) << ")");
  return Status::Ok();
}

Status WatchdogClient::Arm(TimePoint deadline) {
  return Send(WatchdogCommand{WatchdogCommandKind::kArm, deadline});
}

Status WatchdogClient::Disarm() { return Send(WatchdogCommand{WatchdogCommandKind::kDisarm, {}}); }

Status WatchdogClient::Stop(Millis timeout) {
  if (pid_ <= 0) return Status::Ok();
  const pid_t pid = pid_;
  Status sent = Send(WatchdogCommand{WatchdogCommandKind::kExit, {}});
  if (sent.ok() && WaitProcess(pid, timeout)) {
    pid_ = -1;
    return Status::Ok();
  }
  if (!ProcessAlive(pid)) {
    WaitProcess(pid, Millis(0));
    pid_ = -1;
    return Status::Ok();
  }
  if (!IsWatchdogProcess(pid, nullptr)) {  // the pid was recycled
    pid_ = -1;
    return Status::Ok();
  }
  LOG_WARN(kLog, "the watchdog pid " << pid << " did not exit on `exit`"
                                     << (sent.ok() ? "" : " (" + sent.message() + ")")
                                     << ": SIGTERM");
  const bool gone = StopProcess(pid, SIGTERM, Millis(2000));
  pid_ = -1;
  if (!gone) return Timeout("the watchdog pid " + std::to_string(pid) + " survived SIGKILL");
  return Timeout("the watchdog pid " + std::to_string(pid) +
                 " did not exit on `exit`; it was stopped by a signal");
}

Status WatchdogClient::Send(const WatchdogCommand& cmd) {
  if (!started_) return InvalidArgument("the watchdog client was not started");
  if (opts_.mode == WatchdogMode::kOff) return Status::Ok();
  const std::string line = FormatWatchdogCommand(cmd);
  UniqueFd fd(::open(opts_.fifo_path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENXIO || errno == ENOENT) {
      return IoError("no watchdog listens on " + opts_.fifo_path + " (it is not running)");
    }
    return IoError(Errno("cannot open " + opts_.fifo_path));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISFIFO(st.st_mode)) {
    return InvalidArgument(opts_.fifo_path + " is not a FIFO");
  }
  // A reader that goes away between open and write gives EPIPE; SIGPIPE is
  // blocked meanwhile and, if it was not pending before, consumed.
  sigset_t pipe_set, old_mask, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  const ssize_t n = ::write(fd.get(), line.data(), line.size());
  const int err = errno;
  if (n < 0 && err == EPIPE && !was_pending) {
    timespec zero{};
    sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (n == static_cast<ssize_t>(line.size())) return Status::Ok();
  if (n < 0 && err == EAGAIN) {
    return IoError("the watchdog's FIFO " + opts_.fifo_path + " is full: it does not read");
  }
  if (n < 0 && err == EPIPE) return IoError("the watchdog went away while we wrote to it");
  return IoError("writing to " + opts_.fifo_path +
                 " failed: " + (n < 0 ? std::strerror(err) : "short write"));
}

}  // namespace pgwarden::agent
