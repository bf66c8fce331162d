// Pool: a server's state, the pool's lists and the database's connection count move together.
#include "proxy/pool.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <vector>

#include <gtest/gtest.h>

#include "proxy/server_conn.h"

namespace pgwarden::proxy {
namespace {

using std::chrono::seconds;

class PoolTest : public ::testing::Test {
 protected:
  PoolTest()
      : pool_("app", "alice", DatabaseConfig{}, /*pool_size=*/1, /*reserve_size=*/0,
              PoolMode::kTransaction, &db_count_, &db_mu_, /*max_db_connections=*/0) {}
  ~PoolTest() override {
    for (int fd : peers_) ::close(fd);
  }

  // A logged-in server on one end of a socket pair (the other end stays open:
  // not broken while idle).
  ServerConnPtr NewServer() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    peers_.push_back(sv[1]);
    auto s = std::make_unique<ServerConn>();
    s->fd = sv[0];
    s->id = next_id_++;
    return s;
  }
  // A waiter that keeps what it is handed.
  ServerCallback Keep(ServerConnPtr* into) {
    return [into](ServerConnPtr s, Status) { *into = std::move(s); };
  }
  Pool::ServerInfo Only() {
    auto list = pool_.servers();
    EXPECT_EQ(list.size(), 1u);
    return list.empty() ? Pool::ServerInfo{} : list[0];
  }

  int db_count_ = 0;
  std::mutex db_mu_;
  Pool pool_;
  std::vector<int> peers_;
  uint64_t next_id_ = 1;
};

TEST_F(PoolTest, ServerMovesBetweenIdleAndLentAndIsCountedUntilClosed) {
  TimePoint t0 = std::chrono::steady_clock::now();
  ServerConnPtr first;
  bool open_new = false;
  EXPECT_EQ(pool_.Acquire(0, 1, Keep(&first), t0, &open_new), nullptr);
  ASSERT_TRUE(open_new);
  EXPECT_EQ(db_count_, 1);  // counted from the attempt on
  pool_.OpenDone(NewServer(), t0, &open_new);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->state, ServerState::kActive);
  EXPECT_EQ(Only().state, ServerState::kActive);

  pool_.Release(std::move(first), t0 + seconds(1), &open_new);
  EXPECT_EQ(Only().state, ServerState::kIdle);
  EXPECT_EQ(Only().last_used, t0 + seconds(1));
  EXPECT_EQ(db_count_, 1);

  ServerConnPtr again = pool_.Acquire(0, 2, Keep(&first), t0 + seconds(2), &open_new);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(Only().state, ServerState::kActive);
  EXPECT_EQ(Only().last_used, t0 + seconds(2));

  again->broken = true;
  pool_.Release(std::move(again), t0 + seconds(3), &open_new);
  EXPECT_TRUE(pool_.servers().empty());
  EXPECT_EQ(db_count_, 0);
}

TEST_F(PoolTest, ServerHandedStraightToAWaiterIsLentSinceTheHandoff) {
  TimePoint t0 = std::chrono::steady_clock::now();
  ServerConnPtr first, second;
  bool open_new = false;
  pool_.Acquire(0, 1, Keep(&first), t0, &open_new);
  pool_.OpenDone(NewServer(), t0, &open_new);
  ASSERT_NE(first, nullptr);
  // Pool size 1: the second client waits for the first one's server.
  EXPECT_EQ(pool_.Acquire(0, 2, Keep(&second), t0 + seconds(1), &open_new), nullptr);
  EXPECT_FALSE(open_new);
  pool_.Release(std::move(first), t0 + seconds(5), &open_new);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->state, ServerState::kActive);
  EXPECT_EQ(Only().state, ServerState::kActive);
  EXPECT_EQ(Only().last_used, t0 + seconds(5));  // SHOW SERVERS' request_time
  EXPECT_EQ(db_count_, 1);
  pool_.Release(std::move(second), t0 + seconds(6), &open_new);
  EXPECT_EQ(Only().state, ServerState::kIdle);
}

}  // namespace
}  // namespace pgwarden::proxy
