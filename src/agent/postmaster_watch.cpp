// PostmasterWatch: a thread in poll() on the postmaster's pidfd.
#include "agent/postmaster_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace pgwarden::agent {

PostmasterWatch::~PostmasterWatch() { StopThread(); }

void PostmasterWatch::StopThread() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

void PostmasterWatch::Watch(pid_t pid) {
  if (pid == pid_ && (pid <= 0 || thread_.joinable() || exited_)) return;
  StopThread();
  pid_ = pid;
  exited_ = false;
  if (pid <= 0) return;
  // A pidfd also works for a postmaster we adopted (not our child); it turns
  // readable when the process exits, without reaping it.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    if (errno == ESRCH) {
      exited_ = true;
      on_exit_(pid);
    } else {
      LOG_WARN("ha", "cannot watch postmaster pid " << pid
                                                    << " (pidfd_open: " << std::strerror(errno)
                                                    << "); its exit is seen at the next check");
    }
    return;
  }
  ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);  // pidfd_open sets it already on Linux >= 5.10
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this, pid, pidfd, wake = wake_fd_] {
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {wake, POLLIN, 0}};
    for (;;) {
      int n = ::poll(fds, 2, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        exited_ = true;
        on_exit_(pid);
      }
      break;
    }
    ::close(pidfd);
  });
}

}  // namespace pgwarden::agent
