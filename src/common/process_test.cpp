// Tests of process spawning: what a child inherits from us.
#include "common/process.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace pgwarden {
namespace {

// Regression: a postmaster started by the agent inherited the agent's REST
// listening socket; after the agent was killed the port stayed taken and the
// restarted agent exited with "Address already in use".
TEST(ProcessTest, ChildDoesNotInheritOurListeningSocket) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);  // no SOCK_CLOEXEC, as Asio's acceptor
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  constexpr int kHigh = 100;
  ASSERT_EQ(dup2(fd, kHigh), kHigh);
  auto r = RunProcess({"/bin/sh", "-c",
                       "for f in " + std::to_string(fd) + " " + std::to_string(kHigh) +
                           "; do test -e /proc/self/fd/$f && echo \"leaked $f\"; done; echo done"},
                      {}, std::chrono::seconds(10));
  close(kHigh);
  close(fd);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->output, "done\n");
}

}  // namespace
}  // namespace pgwarden
