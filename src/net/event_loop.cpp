// The per-thread event loop: epoll (edge-triggered), an eventfd for posted jobs, a timer map.
#include "net/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace pgwarden::net {
namespace {
// epoll data of the wake-up descriptor (no handler has this address).
IoHandler* const kWakeMarker = nullptr;
constexpr int kBatch = 256;
}  // namespace

EventLoop::EventLoop() = default;

EventLoop::~EventLoop() {
  if (epfd_ >= 0) ::close(epfd_);
  if (wakefd_ >= 0) ::close(wakefd_);
}

Status EventLoop::Init() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return IoError(std::string("epoll_create1: ") + std::strerror(errno));
  wakefd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd_ < 0) return IoError(std::string("eventfd: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: read until drained
  ev.data.ptr = kWakeMarker;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) != 0)
    return IoError(std::string("epoll_ctl(eventfd): ") + std::strerror(errno));
  return Status::Ok();
}

Status EventLoop::Add(int fd, IoHandler* handler) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = handler;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0)
    return IoError(std::string("epoll_ctl(ADD): ") + std::strerror(errno));
  // A handler removed earlier in this batch and added again (the same server
  // connection coming back) gets its new events.
  removed_.erase(std::remove(removed_.begin(), removed_.end(), handler), removed_.end());
  return Status::Ok();
}

void EventLoop::Remove(int fd, IoHandler* handler) {
  epoll_event ev{};
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev);
  removed_.push_back(handler);
}

EventLoop::TimerId EventLoop::After(Millis delay, Job job) {
  TimerId id{std::chrono::steady_clock::now() + delay, next_timer_++};
  timers_.emplace(id, std::move(job));
  return id;
}

void EventLoop::Cancel(TimerId& id) {
  if (id) timers_.erase(id);
  id = TimerId{};
}

void EventLoop::Post(Job job) {
  bool was_empty = false;
  {
    std::lock_guard lock(mu_);
    was_empty = posted_.empty();
    posted_.push_back(std::move(job));
  }
  if (InLoopThread()) {
    // The loop is awake (it is running this): it runs the job after the
    // current batch without sleeping first, so no eventfd write is needed.
    local_posted_ = true;
    return;
  }
  // One wake-up per batch of posts: the loop takes the whole list at once.
  // (When the list was not empty, either a wake-up is pending or the loop
  // thread queued a job itself and will not sleep before running the list.)
  if (was_empty) Wake();
}

void EventLoop::Stop() {
  stop_.store(true);
  Wake();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  ssize_t n = ::write(wakefd_, &one, sizeof one);
  (void)n;  // a full counter (EAGAIN) is already a pending wake-up
}

void EventLoop::RunPosted() {
  {
    std::lock_guard lock(mu_);
    if (posted_.empty()) return;
    running_.swap(posted_);
  }
  for (auto& job : running_) job();
  running_.clear();
}

void EventLoop::RunTimers() {
  if (timers_.empty()) return;
  TimePoint now = std::chrono::steady_clock::now();
  // Only timers due now: a job that adds a timer with no delay runs next turn.
  while (!timers_.empty() && timers_.begin()->first.at <= now) {
    Job job = std::move(timers_.begin()->second);
    timers_.erase(timers_.begin());
    job();
  }
}

void EventLoop::Run() {
  thread_.store(std::this_thread::get_id());
  epoll_event events[kBatch];
  while (!stop_.load(std::memory_order_relaxed)) {
    int timeout = -1;
    if (local_posted_) {
      timeout = 0;  // jobs this thread posted are waiting
      local_posted_ = false;
    } else if (!timers_.empty()) {
      auto wait = timers_.begin()->first.at - std::chrono::steady_clock::now();
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
      timeout = static_cast<int>(std::clamp<int64_t>(ms, 0, 60'000));
    }
    int n = ::epoll_wait(epfd_, events, kBatch, timeout);
    for (int i = 0; i < n; ++i) {
      auto* h = static_cast<IoHandler*>(events[i].data.ptr);
      if (h == kWakeMarker) {
        uint64_t v;
        while (::read(wakefd_, &v, sizeof v) > 0) {
        }
        continue;
      }
      if (!removed_.empty() && std::find(removed_.begin(), removed_.end(), h) != removed_.end())
        continue;  // unregistered earlier in this batch
      h->OnIo(events[i].events);
    }
    removed_.clear();
    RunPosted();
    RunTimers();
    removed_.clear();
    retired_.clear();
  }
  RunPosted();
  retired_.clear();
}

}  // namespace pgwarden::net
