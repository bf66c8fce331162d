// Tests of the rows of `pgwarden history`.
#include "cli/history.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pgwarden::cli {
namespace {

TEST(HistoryTest, RowsFromPatronisShapeWithLsnsAsPostgresWritesThem) {
  auto history = nlohmann::json::parse(
      R"([[1, 50331744, "no recovery target specified", "2026-12-05T00:20:07+00:00", "node2"],
          [2, 83886080, "no recovery target specified"], "garbage"])");
  EXPECT_THAT(
      HistoryRows(history),
      ::testing::ElementsAre(
          std::vector<std::string>{"1", "0/3000060", "no recovery target specified",
                                   "2026-12-05T00:20:07+00:00", "node2"},
          std::vector<std::string>{"2", "0/5000000", "no recovery target specified", "", ""}));
  EXPECT_TRUE(HistoryRows(nlohmann::json::object()).empty());
}

}  // namespace
}  // namespace pgwarden::cli
