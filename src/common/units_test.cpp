// Unit tests for size and duration parsing.
#include "common/units.h"

#include <gtest/gtest.h>

namespace pgwarden {
namespace {

TEST(UnitsTest, ByteSizes) {
  EXPECT_EQ(ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(ParseByteSize("1MB"), 1048576u);
  EXPECT_EQ(ParseByteSize("16kB"), 16384u);
  EXPECT_EQ(ParseByteSize("1 GB"), 1ull << 30);
  EXPECT_EQ(ParseByteSize("0"), 0u);
  EXPECT_FALSE(ParseByteSize("").has_value());
  EXPECT_FALSE(ParseByteSize("MB").has_value());
  EXPECT_FALSE(ParseByteSize("1XB").has_value());
  EXPECT_FALSE(ParseByteSize("-1").has_value());
  EXPECT_FALSE(ParseByteSize("99999999999999999TB").has_value());
}

TEST(UnitsTest, Durations) {
  using std::chrono::milliseconds;
  EXPECT_EQ(ParseDuration("30"), milliseconds(30000));
  EXPECT_EQ(ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(ParseDuration("5min"), milliseconds(300000));
  EXPECT_EQ(ParseDuration("2h"), milliseconds(7200000));
  EXPECT_EQ(ParseDuration("7", milliseconds(1)), milliseconds(7));
  EXPECT_FALSE(ParseDuration("5 fortnights").has_value());
  EXPECT_FALSE(ParseDuration("s").has_value());
}

TEST(UnitsTest, FormatBytes) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(16ull << 20), "16.0 MiB");
}

}  // namespace
}  // namespace pgwarden
