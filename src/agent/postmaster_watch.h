// PostmasterWatch: learns of the postmaster's exit the moment it happens (a pidfd), not a loop
// later.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

namespace pgwarden::agent {

// Owned by the agent. Watch() and the destructor are called from the HA loop
// thread; `on_exit` runs on the watch's own thread, once per watched pid, and
// must only take short locks. exited() may be read from any thread.
class PostmasterWatch {
 public:
  explicit PostmasterWatch(std::function<void(pid_t)> on_exit) : on_exit_(std::move(on_exit)) {}
  ~PostmasterWatch();
  PostmasterWatch(const PostmasterWatch&) = delete;
  PostmasterWatch& operator=(const PostmasterWatch&) = delete;

  // Watches `pid` (<= 0: nothing) from now on; a call with the pid already
  // watched changes nothing. A pid that is already gone counts as exited.
  void Watch(pid_t pid);
  // The watched postmaster has exited since Watch().
  bool exited() const { return exited_.load(); }
  pid_t pid() const { return pid_; }

 private:
  void StopThread();

  std::function<void(pid_t)> on_exit_;
  pid_t pid_ = -1;  // HA loop thread
  std::thread thread_;
  int wake_fd_ = -1;  // eventfd that ends the thread's poll
  std::atomic<bool> exited_{false};
};

}  // namespace pgwarden::agent
