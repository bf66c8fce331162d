// Tests of child process control: what a child inherits, how it is reaped.
#include "common/process.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace pgwarden {
namespace {

// Regression: PostgreSQL inherited the agent's REST listening socket and its
// etcd connections, so after kill -9 of the agent its port stayed bound.
TEST(ProcessTest, ChildInheritsNoDescriptorBeyondStderrEvenWithoutCloexec) {
  int sock = ::socket(AF_INET, SOCK_STREAM, 0);  // deliberately without SOCK_CLOEXEC
  ASSERT_GE(sock, 3);
  int file = ::open("/dev/null", O_RDONLY);  // and a plain file, also without O_CLOEXEC
  ASSERT_GE(file, 3);
  const std::string check = "for fd in " + std::to_string(sock) + " " + std::to_string(file) +
                            "; do if [ -e /proc/$$/fd/$fd ]; then echo leaked $fd; fi; done; "
                            "[ -e /proc/$$/fd/2 ] && echo stderr-open";
  auto r = RunProcess({"/bin/sh", "-c", check}, {}, std::chrono::seconds(10));
  ::close(sock);
  ::close(file);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->ok()) << r->Describe();
  EXPECT_EQ(r->output, "stderr-open\n");
}

TEST(ProcessTest, SpawnedChildInheritsNoDescriptorEither) {
  int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 3);
  char tmpl[] = "/tmp/pgw-process-test-XXXXXX";
  int out = ::mkstemp(tmpl);
  ASSERT_GE(out, 0);
  ::close(out);
  ProcessOptions opts;
  opts.log_file = tmpl;
  const std::string check =
      "[ -e /proc/$$/fd/" + std::to_string(sock) + " ] && echo leaked || echo closed";
  auto pid = SpawnProcess({"/bin/sh", "-c", check}, opts);
  ::close(sock);
  ASSERT_TRUE(pid.ok()) << pid.status().message();
  auto done = WaitProcess(*pid, std::chrono::seconds(10));
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->ok());
  auto r = RunProcess({"/bin/cat", tmpl}, {}, std::chrono::seconds(10));
  ::unlink(tmpl);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "closed\n");
}

}  // namespace
}  // namespace pgwarden
