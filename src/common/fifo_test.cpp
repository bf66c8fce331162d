// Tests of Fifo against std::deque as the reference, and its memory behaviour.
#include "common/fifo.h"

#include <deque>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace pgwarden {
namespace {

TEST(FifoTest, BehavesLikeADequeUnderRandomPushesAndPops) {
  std::mt19937 rng(7);
  Fifo<std::string> f;
  std::deque<std::string> ref;
  for (int i = 0; i < 200000; ++i) {
    int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      std::string v = std::to_string(i);
      f.push_back(v);
      ref.push_back(v);
    } else if (op < 9) {
      if (!ref.empty()) {
        ASSERT_EQ(f.front(), ref.front()) << i;
        f.pop_front();
        ref.pop_front();
      }
    } else if (rng() % 1000 == 0) {
      f.clear();
      ref.clear();
    }
    ASSERT_EQ(f.size(), ref.size()) << i;
    ASSERT_EQ(f.empty(), ref.empty()) << i;
    if (!ref.empty()) {
      ASSERT_EQ(f.front(), ref.front()) << i;
      ASSERT_EQ(f.back(), ref.back()) << i;
    }
  }
}

TEST(FifoTest, EmplaceBackReturnsTheNewElement) {
  Fifo<std::string> f;
  f.emplace_back(3, 'x') += "y";
  EXPECT_EQ(f.front(), "xxxy");
  EXPECT_EQ(f.size(), 1u);
}

TEST(FifoTest, IsAVectorAndAnIndexAndAClearedQueueBehavesAsNew) {
  // A new Fifo is an empty vector (no heap memory) and an index; a cleared
  // queue has no stale elements.
  EXPECT_LE(sizeof(Fifo<int>), sizeof(std::vector<int>) + sizeof(size_t));
  Fifo<int> f;
  for (int i = 0; i < 100; ++i) f.push_back(i);
  for (int i = 0; i < 60; ++i) f.pop_front();
  EXPECT_EQ(f.front(), 60);
  f.clear();
  EXPECT_TRUE(f.empty());
  f.push_back(7);
  EXPECT_EQ(f.front(), 7);
  EXPECT_EQ(f.back(), 7);
}

}  // namespace
}  // namespace pgwarden
