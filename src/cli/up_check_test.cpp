// Tests of what `up` judges: an agent's own /patroni answer, and how two proxy sections differ.
#include "cli/up_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace pgwarden::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr const char* kStreamingReplica =
    R"({"state": "running", "role": "replica", "replication_state": "streaming",
        "patroni": {"version": "0.1.0", "scope": "s", "name": "node2"}})";
constexpr const char* kPrimary =
    R"({"state": "running", "role": "primary", "patroni": {"name": "node1"}})";

struct AgentCase {
  const char* what;
  const char* name;
  bool leader;
  int http_status;
  const char* body;
  const char* reason;  // "" when ready, else a part of the reason
};

class AgentNotReadyReasonTest : public ::testing::TestWithParam<AgentCase> {};

TEST_P(AgentNotReadyReasonTest, JudgesTheAgentsOwnAnswer) {
  const AgentCase& c = GetParam();
  std::string why = AgentNotReadyReason(c.name, c.leader, c.http_status, c.body);
  if (std::string(c.reason).empty()) {
    EXPECT_EQ(why, "") << c.what;
  } else {
    EXPECT_THAT(why, HasSubstr(c.reason)) << c.what;
    EXPECT_THAT(why, HasSubstr(c.name)) << c.what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AgentNotReadyReasonTest,
    ::testing::Values(
        AgentCase{"a streaming replica", "node2", false, 200, kStreamingReplica, ""},
        AgentCase{"the leader as primary", "node1", true, 200, kPrimary, ""},
        AgentCase{"dead agent: no answer", "node2", false, 0, "", "does not answer"},
        AgentCase{"an error status", "node2", false, 500, "{}", "500"},
        AgentCase{"not JSON", "node2", false, 200, "<html>", "no JSON"},
        AgentCase{"another member's agent on the port", "node3", false, 200, kStreamingReplica,
                  "answered by member 'node2'"},
        AgentCase{"no name at all", "node2", false, 200, R"({"state": "running"})",
                  "not its agent"},
        AgentCase{"PostgreSQL stopped", "node2", false, 200,
                  R"({"state": "stopped", "role": "replica", "patroni": {"name": "node2"}})",
                  "PostgreSQL is stopped"},
        AgentCase{"a replica not streaming yet", "node2", false, 200,
                  R"({"state": "running", "role": "replica", "patroni": {"name": "node2"}})",
                  "not streaming"},
        AgentCase{"the leader key holder still a replica", "node2", true, 200, kStreamingReplica,
                  "runs as replica"},
        AgentCase{"a primary that does not lead", "node1", false, 200, kPrimary,
                  "not as a replica"}));

constexpr const char* kSection =
    "proxy:\n"
    "  listen: 127.0.0.1:6432\n"
    "  auth_file: /d/userlist.txt\n"
    "  admin_users: [postgres]\n"
    "  databases:\n"
    "    '*': {host: 127.0.0.1, port: 5401}\n";

std::string With(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST(DiffProxySectionsTest, TheSameSectionIsNoChange) {
  ProxySectionDiff d = DiffProxySections(kSection, kSection);
  EXPECT_TRUE(d.empty());
  EXPECT_FALSE(d.needs_restart);
}

TEST(DiffProxySectionsTest, FormattingAloneIsNoChange) {
  std::string block = With(kSection, "    '*': {host: 127.0.0.1, port: 5401}\n",
                           "    '*':\n      host: 127.0.0.1\n      port: 5401\n");
  EXPECT_TRUE(DiffProxySections(kSection, block).empty());
}

TEST(DiffProxySectionsTest, ANewTargetIsReloadedNotRestarted) {
  ProxySectionDiff d = DiffProxySections(kSection, With(kSection, "5401", "5402"));
  EXPECT_THAT(d.changed, ElementsAre("databases"));
  EXPECT_FALSE(d.needs_restart);
  ASSERT_EQ(d.descriptions.size(), 1u);
  EXPECT_THAT(d.descriptions[0], HasSubstr("proxy.databases:"));
  EXPECT_THAT(d.descriptions[0], HasSubstr("5401"));
  EXPECT_THAT(d.descriptions[0], HasSubstr("-> "));
  EXPECT_THAT(d.descriptions[0], HasSubstr("5402"));
}

TEST(DiffProxySectionsTest, ListenNeedsARestart) {
  ProxySectionDiff d = DiffProxySections(kSection, With(kSection, "6432", "6433"));
  EXPECT_THAT(d.changed, ElementsAre("listen"));
  EXPECT_TRUE(d.needs_restart);
}

TEST(DiffProxySectionsTest, AKeyOnlyOneSideHasCountsAndSaysNone) {
  std::string more = std::string(kSection) + "  workers: 2\n";
  ProxySectionDiff d = DiffProxySections(more, kSection);
  EXPECT_THAT(d.changed, ElementsAre("workers"));
  EXPECT_TRUE(d.needs_restart);
  EXPECT_THAT(d.descriptions[0], HasSubstr("(none)"));
  std::string pool = std::string(kSection) + "  default_pool_size: 5\n";
  d = DiffProxySections(pool, kSection);
  EXPECT_THAT(d.changed, ElementsAre("default_pool_size"));
  EXPECT_FALSE(d.needs_restart);
}

TEST(DiffProxySectionsTest, AnUnreadableOrMissingSectionNeedsARestart) {
  for (const char* running : {"", "proxy: [1, 2]\n", "proxy: {listen: [\n"}) {
    ProxySectionDiff d = DiffProxySections(running, kSection);
    EXPECT_THAT(d.changed, ElementsAre("proxy")) << running;
    EXPECT_TRUE(d.needs_restart) << running;
  }
  EXPECT_THAT(DiffProxySections(kSection, kSection).changed, IsEmpty());
}

}  // namespace
}  // namespace pgwarden::cli
