// Unit tests for Lsn parsing, formatting and arithmetic.
#include "common/lsn.h"

#include <gtest/gtest.h>

namespace pgwarden {
namespace {

TEST(LsnTest, ParsesPostgresTextForm) {
  auto lsn = Lsn::Parse("16/B374D848");
  ASSERT_TRUE(lsn.has_value());
  EXPECT_EQ(lsn->value(), (uint64_t{0x16} << 32) | 0xB374D848u);
  EXPECT_EQ(lsn->ToString(), "16/B374D848");
}

TEST(LsnTest, ParsesLowerCaseAndZero) {
  EXPECT_EQ(Lsn::Parse("0/3000148")->value(), 0x3000148u);
  EXPECT_EQ(Lsn::Parse("a/ff")->ToString(), "A/FF");
  EXPECT_FALSE(Lsn::Parse("0/0")->valid());
}

TEST(LsnTest, RejectsMalformedText) {
  for (const char* bad :
       {"", "/", "1/", "/1", "123", "G/1", "1/2/3", "123456789/0", " 1/2", "1/-2"}) {
    EXPECT_FALSE(Lsn::Parse(bad).has_value()) << bad;
  }
}

TEST(LsnTest, BytesAfterIsDistanceAndNeverNegative) {
  Lsn a = *Lsn::Parse("0/3000000");
  Lsn b = *Lsn::Parse("1/0");
  EXPECT_EQ(b.BytesAfter(a), 0x100000000ull - 0x3000000ull);
  EXPECT_EQ(a.BytesAfter(b), 0u);
  EXPECT_LT(a, b);
}

}  // namespace
}  // namespace pgwarden
