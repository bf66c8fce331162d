// Tests of the proxy section's parsing: the balancing and server-check keys, and their errors.
#include "proxy/proxy_config.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/config.h"

namespace pgwarden::proxy {
namespace {

using ::testing::HasSubstr;

constexpr char kScope[] = "scope: demo\n";

ProxyConfig Parse(const std::string& proxy_section) {
  return ParseProxyConfig(config::LoadConfigText(std::string(kScope) + "proxy:\n" + proxy_section,
                                                 "proxy.yml", config::ConfigUse::kProxy));
}

// Every problem the parser reports, joined; "" when the section is valid.
std::string ErrorOf(const std::string& proxy_section) {
  try {
    Parse(proxy_section);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ProxyConfigTest, WorkerBusyDefaultsToThreeQuartersOfACoreAndTakesAShare) {
  EXPECT_DOUBLE_EQ(Parse("  listen: 127.0.0.1:6432\n").worker_busy, 0.75);
  EXPECT_DOUBLE_EQ(Parse("  worker_busy: 0.5\n").worker_busy, 0.5);
  EXPECT_DOUBLE_EQ(Parse("  worker_busy: 0\n").worker_busy, 0.0);  // round robin
  EXPECT_DOUBLE_EQ(Parse("  worker_busy: 1\n").worker_busy, 1.0);
}

TEST(ProxyConfigTest, WorkerBusyOutsideZeroToOneIsNamedWithItsLine) {
  for (const char* bad : {"1.5", "-0.1", "busy", "0.5x", "nan"}) {
    EXPECT_THAT(
        ErrorOf(std::string("  worker_busy: ") + bad + "\n"),
        HasSubstr("proxy.yml:3: proxy.worker_busy: expected a share of one core from 0 to 1"))
        << bad;
  }
}

TEST(ProxyConfigTest, ServerCheckSettings) {
  ProxyConfig c = Parse("  server_check_query: SELECT 2\n  server_check_delay: 0\n");
  EXPECT_EQ(c.server_check_query, "SELECT 2");
  EXPECT_EQ(c.server_check_delay.count(), 0);
  EXPECT_THAT(ErrorOf("  server_check_delay: soon\n"),
              HasSubstr("proxy.server_check_delay: expected a duration"));
}

}  // namespace
}  // namespace pgwarden::proxy
