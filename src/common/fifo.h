// Fifo: a first-in first-out queue that allocates nothing until the first push.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace pgwarden {

// A queue over a vector with a moving head, for the short queues a
// connection keeps (expected protocol responses): unlike libstdc++'s
// std::deque, an empty, never-used Fifo holds no heap memory, so thousands of
// idle connections cost nothing for it. Pushes are amortised O(1); pops are
// O(1) and the consumed front is reclaimed once it is more than half of the
// storage. Not thread-safe.
template <typename T>
class Fifo {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }
  // The i-th element from the front. REQUIRES: i < size().
  const T& operator[](size_t i) const { return items_[head_ + i]; }
  T& back() { return items_.back(); }
  const T& back() const { return items_.back(); }

  void push_back(T value) { items_.push_back(std::move(value)); }
  template <typename... Args>
  T& emplace_back(Args&&... args) {
    return items_.emplace_back(std::forward<Args>(args)...);
  }
  // REQUIRES: !empty().
  void pop_front() {
    ++head_;
    if (head_ == items_.size()) {
      items_.clear();  // keeps the capacity for the next burst
      head_ = 0;
    } else if (head_ >= 16 && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  // Empties the queue (keeping its capacity: a connection reuses it).
  void clear() {
    items_.clear();
    head_ = 0;
  }

 private:
  std::vector<T> items_;
  size_t head_ = 0;  // index of the front in items_
};

}  // namespace pgwarden
