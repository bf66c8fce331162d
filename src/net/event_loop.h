// A lean per-thread event loop: edge-triggered epoll, jobs posted from other threads, timers.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace pgwarden::net {

// Told about the readiness of one registered descriptor. The loop calls it on
// its own thread with the epoll event bits (EPOLLIN, EPOLLOUT, EPOLLRDHUP,
// EPOLLHUP, EPOLLERR).
class IoHandler {
 public:
  virtual void OnIo(uint32_t events) = 0;

 protected:
  ~IoHandler() = default;
};

// One event loop, run by one thread. Each descriptor is registered once,
// edge-triggered for both directions: a handler reads until a short read (or
// EAGAIN) and writes until EAGAIN, and is told again only when that changes.
// That costs one epoll_wait per batch of events and no epoll_ctl per
// operation, unlike a loop that re-arms interest for every read.
//
// Thread safety: Post() and Stop() from any thread; everything else on the
// loop's thread (the one inside Run()), or before Run() starts.
class EventLoop {
 public:
  using Job = std::function<void()>;
  // Identifies a timer for Cancel(); a default-constructed one is no timer.
  struct TimerId {
    TimePoint at{};
    uint64_t seq = 0;
    bool operator<(const TimerId& o) const { return at < o.at || (at == o.at && seq < o.seq); }
    explicit operator bool() const { return seq != 0; }
  };

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Creates the epoll and wake-up descriptors. Errors: Io.
  [[nodiscard]] Status Init();

  // Registers `fd` (edge-triggered, in and out); `handler` must stay valid
  // until Remove(). Readiness that exists already is reported once.
  [[nodiscard]] Status Add(int fd, IoHandler* handler);
  // Unregisters `fd`. Events of this batch not yet delivered to `handler` are
  // dropped, so the handler may be destroyed or handed to another thread right
  // after this returns.
  void Remove(int fd, IoHandler* handler);

  // Runs `job` on the loop thread after `delay`. Returns its id.
  TimerId After(Millis delay, Job job);
  // Cancels a timer that has not run; no-op for others.
  void Cancel(TimerId& id);

  // Keeps `obj` alive until the current batch of events is done.
  void Retire(std::shared_ptr<void> obj) { retired_.push_back(std::move(obj)); }

  // Any thread: runs `job` on the loop thread soon, after the current batch.
  void Post(Job job);
  // Runs until Stop(); jobs posted before Stop() still run.
  void Run();
  // Any thread.
  void Stop();
  bool InLoopThread() const { return std::this_thread::get_id() == thread_.load(); }

 private:
  void Wake();
  void RunPosted();
  void RunTimers();

  int epfd_ = -1;
  int wakefd_ = -1;  // eventfd: Post() and Stop() wake a sleeping loop
  std::atomic<std::thread::id> thread_{};
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::vector<Job> posted_;    // guarded by mu_
  std::vector<Job> running_;   // loop thread: the jobs being run
  bool local_posted_ = false;  // loop thread: it posted jobs itself (no wake-up written)

  std::map<TimerId, Job> timers_;  // loop thread
  uint64_t next_timer_ = 1;
  std::vector<IoHandler*> removed_;             // loop thread: removed during this batch
  std::vector<std::shared_ptr<void>> retired_;  // loop thread
};

}  // namespace pgwarden::net
