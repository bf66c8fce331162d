// `pgwarden up --foreground`: stays attached while the cluster runs, and Ctrl-C stops all of it.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include "itest_util.h"

namespace pgwarden::itest {
namespace {

TEST(ForegroundTest, CtrlCStopsTheWholeCluster) {
  TempDir tmp("pgw-itest-foreground");
  std::string dir = tmp.path() + "/cluster";
  LocalClusterGuard guard(dir);  // safety net: down + kill by PID if the test fails
  ChildProcess up;
  std::string log = tmp.path() + "/up.log";
  Status st = up.Start({PgwardenBinary(), "up", "--nodes", "2", "--dir", dir, "--foreground"}, log);
  ASSERT_TRUE(st.ok()) << st.ToString();
  // Healthy and attached: the message comes after the connection strings.
  ASSERT_TRUE(WaitFor(
      [&] { return ReadFile(log).find("running in the foreground") != std::string::npos; }, 120s))
      << ReadFile(log);
  EXPECT_TRUE(up.running()) << "`up --foreground` returned while the cluster runs";
  std::vector<pid_t> pids;
  for (const auto& n : guard.Nodes()) {
    std::ifstream in(dir + "/" + n + "/agent.pid");
    pid_t p = 0;
    in >> p;
    ASSERT_GT(p, 0) << n;
    pids.push_back(p);
  }
  auto result = up.Stop(SIGINT, 150s);
  ASSERT_TRUE(result.has_value()) << "`up --foreground` did not stop after SIGINT";
  EXPECT_EQ(result->exit_code, 0) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("cluster stopped"), std::string::npos) << ReadFile(log);
  for (pid_t p : pids) EXPECT_FALSE(ProcessAlive(p)) << "agent " << p << " still runs";
  // Nothing left listening: a plain `down` finds nothing to stop.
  EXPECT_EQ(guard.Pgwarden("status").exit_code, 1) << "etcd still answers after Ctrl-C";
}

}  // namespace
}  // namespace pgwarden::itest
