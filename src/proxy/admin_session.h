// The admin console's side of a client session: simple queries, answered by the proxy itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pgwarden::proxy {

class Proxy;

// One admin console connection after its login, without sockets: client
// bytes in, replies out. Owned by the client session; used on its thread.
class AdminSession {
 public:
  // What the session does next.
  enum class Next {
    kMore,   // wait for more client bytes (replies may be in the output)
    kClose,  // the client sent Terminate
    kFail,   // a protocol violation: the FATAL is in the output; close once it is sent
    kPause,  // a PAUSE waits for transactions: call PollPause() until it is answered
  };

  AdminSession(Proxy& proxy, bool may_modify) : proxy_(proxy), may_modify_(may_modify) {}

  Next OnBytes(std::string_view data, uint32_t max_packet, std::string* out);
  // While a PAUSE waits: true once it is answered (its reply in *out); the
  // caller then feeds OnBytes({}) for what the client sent meanwhile.
  bool PollPause(std::string* out);
  bool pausing() const { return pausing_; }

 private:
  Proxy& proxy_;
  const bool may_modify_;
  std::string in_;
  bool pausing_ = false;
  std::string pause_database_, pause_reply_;
};

}  // namespace pgwarden::proxy
