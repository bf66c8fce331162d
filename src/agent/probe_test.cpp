// Tests of the port probe that confirms a leader's death: only a refusal counts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "agent/agent.h"

namespace pgwarden::agent {
namespace {

TEST(ProbePortTest, ListeningPortAcceptsAndAClosedOneRefuses) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const uint16_t port = ntohs(addr.sin_port);
  EXPECT_EQ(ProbePort("127.0.0.1", port, std::chrono::milliseconds(500)), PortProbe::kAccepted);
  ::close(fd);
  EXPECT_EQ(ProbePort("127.0.0.1", port, std::chrono::milliseconds(500)), PortProbe::kRefused);
  EXPECT_EQ(ProbePort("no-such-host.invalid", port, std::chrono::milliseconds(500)),
            PortProbe::kNoAnswer);
}

}  // namespace
}  // namespace pgwarden::agent
