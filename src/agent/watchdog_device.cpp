// /dev/watchdog through open(2) and the WDIOC_* ioctls.
#include "agent/watchdog_device.h"

#include <fcntl.h>
#include <linux/watchdog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace pgwarden::agent {
namespace {

// A Linux watchdog device file. Owned by WatchdogCore; main thread only.
class LinuxWatchdogDevice final : public WatchdogDevice {
 public:
  explicit LinuxWatchdogDevice(std::string path) : path_(std::move(path)) {}
  ~LinuxWatchdogDevice() override { Close(); }

  Status Open() override {
    if (fd_ >= 0) return Status::Ok();
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) return IoError("cannot open " + path_ + ": " + std::strerror(errno));
    watchdog_info info{};
    if (ioctl(fd_, WDIOC_GETSUPPORT, &info) == 0 && !(info.options & WDIOF_MAGICCLOSE)) {
      LOG_WARN("watchdog", path_ << " (" << reinterpret_cast<const char*>(info.identity)
                                 << ") does not support the magic close: closing it may not stop "
                                    "its timer");
    }
    return Status::Ok();
  }

  bool is_open() const override { return fd_ >= 0; }

  Result<int> SetTimeout(int seconds) override {
    int t = seconds;
    if (ioctl(fd_, WDIOC_SETTIMEOUT, &t) != 0) {
      const std::string reason = std::strerror(errno);
      int current = 0;
      if (ioctl(fd_, WDIOC_GETTIMEOUT, &current) == 0 && current > 0) {
        LOG_WARN("watchdog", path_ << ": cannot set the timeout to " << seconds << " s (" << reason
                                   << "); it stays " << current << " s");
        return current;
      }
      return IoError(path_ + ": cannot set the timeout to " + std::to_string(seconds) +
                     " s: " + reason);
    }
    return t;
  }

  Status Keepalive() override {
    int dummy = 0;
    if (ioctl(fd_, WDIOC_KEEPALIVE, &dummy) == 0) return Status::Ok();
    // Every driver also takes a write as a keepalive.
    if (::write(fd_, "\0", 1) == 1) return Status::Ok();
    return IoError(path_ + ": keepalive failed: " + std::strerror(errno));
  }

  void Close() override {
    if (fd_ < 0) return;
    if (::write(fd_, "V", 1) != 1) {
      LOG_WARN("watchdog", path_ << ": writing the magic close failed: " << std::strerror(errno)
                                 << "; the machine may reboot");
    }
    ::close(fd_);
    fd_ = -1;
  }

  const std::string& path() const override { return path_; }

 private:
  const std::string path_;
  int fd_ = -1;  // open device, or -1
};

}  // namespace

WatchdogDevicePtr MakeLinuxWatchdogDevice(std::string path) {
  return std::make_unique<LinuxWatchdogDevice>(std::move(path));
}

}  // namespace pgwarden::agent
