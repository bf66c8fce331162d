// Tests of the pure parts of the PostgreSQL controller.
#include "pg/controller.h"

#include <gtest/gtest.h>

namespace pgwarden::pg {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

TEST(ControllerTest, SlotsKeepAFifthOfTheFreeDiskInWholeStepsAndAtLeast256MB) {
  EXPECT_EQ(DefaultMaxSlotWalKeepSize(101 * 1024 * kMiB), "20672MB");  // in 64 MB steps
  EXPECT_EQ(DefaultMaxSlotWalKeepSize(10 * 1024 * kMiB), "2048MB");
  EXPECT_EQ(DefaultMaxSlotWalKeepSize(10 * 1024 * kMiB + 5 * kMiB), "2048MB");  // no churn
  EXPECT_EQ(DefaultMaxSlotWalKeepSize(500 * kMiB), "256MB");
  EXPECT_EQ(DefaultMaxSlotWalKeepSize(0), "256MB");
}

}  // namespace
}  // namespace pgwarden::pg
