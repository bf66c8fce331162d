// Tests of EventLoop: posted jobs, timers, edge-triggered readiness, and Remove() within a batch.
#include "net/event_loop.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace pgwarden::net {
namespace {

using namespace std::chrono_literals;

// Runs a loop on its own thread for the test's lifetime.
class LoopThread {
 public:
  LoopThread() {
    EXPECT_TRUE(loop.Init().ok());
    thread_ = std::thread([this] { loop.Run(); });
  }
  ~LoopThread() {
    loop.Stop();
    thread_.join();
  }
  // Runs `f` on the loop thread and waits for it.
  template <typename F>
  void Sync(F f) {
    std::promise<void> done;
    loop.Post([&] {
      f();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
  }
  EventLoop loop;

 private:
  std::thread thread_;
};

TEST(EventLoopTest, PostedJobsRunInOrderOnTheLoopThread) {
  LoopThread t;
  std::vector<int> seen;
  std::atomic<bool> on_loop{true};
  for (int i = 0; i < 100; ++i) {
    t.loop.Post([&, i] {
      seen.push_back(i);
      if (!t.loop.InLoopThread()) on_loop = false;
    });
  }
  t.Sync([] {});
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);
  EXPECT_TRUE(on_loop.load());
  EXPECT_FALSE(t.loop.InLoopThread());
}

// A job posted by the loop's own thread needs no wake-up: the loop runs it
// without sleeping first (a chain of such posts must not stall).
TEST(EventLoopTest, JobsPostedOnTheLoopThreadRunWithoutAWakeUp) {
  LoopThread t;
  std::promise<int> done;
  std::function<void(int)> step = [&](int n) {
    if (n == 1000) {
      done.set_value(n);
      return;
    }
    t.loop.Post([&, n] { step(n + 1); });
  };
  t.loop.Post([&] { step(0); });
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "a job posted on the loop thread stalled";
  EXPECT_EQ(f.get(), 1000);
}

TEST(EventLoopTest, TimersFireInDeadlineOrderAndCancelledOnesDoNot) {
  LoopThread t;
  std::vector<std::string> fired;
  std::promise<void> last;
  EventLoop::TimerId cancelled;
  auto start = std::chrono::steady_clock::now();
  t.Sync([&] {
    t.loop.After(60ms, [&] {
      fired.push_back("60");
      last.set_value();
    });
    t.loop.After(20ms, [&] { fired.push_back("20"); });
    cancelled = t.loop.After(40ms, [&] { fired.push_back("40"); });
    t.loop.Cancel(cancelled);
  });
  ASSERT_EQ(last.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 60ms);
  t.Sync([] {});
  EXPECT_EQ(fired, (std::vector<std::string>{"20", "60"}));
  EXPECT_FALSE(static_cast<bool>(cancelled));
}

// Counts events and reads what is there, as a real handler would.
class Reader : public IoHandler {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  void OnIo(uint32_t events) override {
    ++events_;
    if (events & EPOLLIN) {
      char buf[64];
      ssize_t n;
      while ((n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        data_.append(buf, static_cast<size_t>(n));
    }
  }
  std::atomic<int> events_{0};
  std::string data_;

 private:
  int fd_;
};

TEST(EventLoopTest, ReportsReadinessOfRegisteredSockets) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  LoopThread t;
  Reader r(sv[0]);
  t.Sync([&] { ASSERT_TRUE(t.loop.Add(sv[0], &r).ok()); });
  ASSERT_EQ(::send(sv[1], "hello", 5, 0), 5);
  for (int i = 0; i < 500; ++i) {
    std::string got;
    t.Sync([&] { got = r.data_; });
    if (got == "hello") break;
    std::this_thread::sleep_for(1ms);
  }
  t.Sync([&] { EXPECT_EQ(r.data_, "hello"); });
  // Unregistered: no more events.
  t.Sync([&] { t.loop.Remove(sv[0], &r); });
  int before = r.events_.load();
  ASSERT_EQ(::send(sv[1], "more", 4, 0), 4);
  std::this_thread::sleep_for(50ms);
  t.Sync([] {});
  EXPECT_EQ(r.events_.load(), before);
  ::close(sv[0]);
  ::close(sv[1]);
}

// Two handlers ready in the same batch; the first unregisters the second,
// which then must not be called (it may be gone).
class Remover : public IoHandler {
 public:
  Remover(EventLoop& loop, int fd) : loop_(loop), fd_(fd) {}
  void Removes(int fd, IoHandler* other) {
    other_fd_ = fd;
    other_ = other;
  }
  void OnIo(uint32_t) override {
    char buf[16];
    while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    if (other_ != nullptr) loop_.Remove(other_fd_, other_);
    ++calls;
  }
  int calls = 0;

 private:
  EventLoop& loop_;
  int fd_, other_fd_ = -1;
  IoHandler* other_ = nullptr;
};

TEST(EventLoopTest, RemoveDropsEventsAlreadyFetchedInTheBatch) {
  int a[2], b[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
  LoopThread t;
  Remover ra(t.loop, a[0]);
  Remover rb_removes_a(t.loop, b[0]);
  ra.Removes(b[0], &rb_removes_a);
  rb_removes_a.Removes(a[0], &ra);
  // Whichever of the two comes first in the batch removes the other; make
  // both ready while the loop is busy so they land in one batch.
  std::atomic<int> a_calls{0}, b_calls{0};
  t.Sync([&] {
    ASSERT_TRUE(t.loop.Add(a[0], &ra).ok());
    ASSERT_TRUE(t.loop.Add(b[0], &rb_removes_a).ok());
    ASSERT_EQ(::send(a[1], "x", 1, 0), 1);
    ASSERT_EQ(::send(b[1], "y", 1, 0), 1);
  });
  std::this_thread::sleep_for(50ms);
  t.Sync([&] {
    a_calls = ra.calls;
    b_calls = rb_removes_a.calls;
  });
  EXPECT_EQ(a_calls + b_calls, 1) << "only the first of the batch runs";
  for (int fd : {a[0], a[1], b[0], b[1]}) ::close(fd);
}

}  // namespace
}  // namespace pgwarden::net
