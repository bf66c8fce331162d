// The floor of a proxy's CPU cost: a TCP relay that only moves bytes, for bench/floor.sh.
//
// Each accepted client gets its own connection to the server (no pooling, no
// parsing, no authentication of its own) and bytes are copied both ways with
// the least a proxy can do per message on Linux: one recv and one send per
// direction, one epoll_wait per batch of events, sockets registered once,
// edge-triggered. Whatever a real pooler adds (framing, pooling, auth) comes
// on top of this, so its CPU per transaction cannot go below the relay's.
//
// usage: relay_floor LISTEN_PORT SERVER_PORT [THREADS]   (127.0.0.1 both sides)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

// One side of a relayed pair; `peer` is the other side.
struct Side {
  int fd = -1;
  Side* peer = nullptr;
  std::string pending;  // bytes for this socket that did not fit yet
};

int listen_fd = -1;
uint16_t server_port = 0;
std::vector<int> epolls;
std::atomic<unsigned> next_thread{0};

void SetOptions(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void CloseBoth(Side* s) {
  // Both descriptors go (and with them their epoll registrations); the Side
  // objects are leaked on purpose: a later event of this batch may name them.
  ::close(s->fd);
  ::close(s->peer->fd);
}

void Flush(Side* s) {
  while (!s->pending.empty()) {
    ssize_t n = ::send(s->fd, s->pending.data(), s->pending.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // EAGAIN: EPOLLOUT comes; errors: the read side sees them
    s->pending.erase(0, static_cast<size_t>(n));
  }
}

void Relay(Side* from) {
  thread_local char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(from->fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      CloseBoth(from);
      return;
    }
    if (n < 0) return;
    Side* to = from->peer;
    size_t sent = 0;
    if (to->pending.empty()) {
      ssize_t m = ::send(to->fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      sent = m > 0 ? static_cast<size_t>(m) : 0;
    }
    to->pending.append(buf + sent, static_cast<size_t>(n) - sent);
    if (static_cast<size_t>(n) < sizeof buf) return;  // drained
  }
}

void Accept() {
  for (;;) {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK);
    if (c < 0) return;
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::perror("relay_floor: connect to the server");
      ::close(c);
      ::close(s);
      continue;
    }
    ::fcntl(s, F_SETFL, O_NONBLOCK);
    SetOptions(c);
    SetOptions(s);
    auto* client = new Side{c};
    auto* server = new Side{s, client};
    client->peer = server;
    int ep = epolls[next_thread++ % epolls.size()];
    for (Side* side : {client, server}) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = side;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, side->fd, &ev);
    }
  }
}

void Loop(int ep) {
  epoll_event events[256];
  for (;;) {
    int n = ::epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      auto* side = static_cast<Side*>(events[i].data.ptr);
      if (side == nullptr) {
        Accept();
        continue;
      }
      if (events[i].events & EPOLLOUT) Flush(side);
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) Relay(side);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s LISTEN_PORT SERVER_PORT [THREADS]\n", argv[0]);
    return 2;
  }
  int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  server_port = static_cast<uint16_t>(std::atoi(argv[2]));
  listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd, 1024) != 0) {
    std::perror("relay_floor: listen");
    return 1;
  }
  for (int i = 0; i < threads; ++i) epolls.push_back(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  ::epoll_ctl(epolls[0], EPOLL_CTL_ADD, listen_fd, &ev);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(Loop, epolls[static_cast<size_t>(i)]);
  Loop(epolls[0]);
}
