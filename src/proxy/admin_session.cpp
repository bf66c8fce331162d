// AdminSession: framing of the console's simple queries and the PAUSE wait.
#include "proxy/admin_session.h"

#include "pgwire/message.h"
#include "proxy/admin.h"
#include "proxy/proxy.h"

namespace pgwarden::proxy {

AdminSession::Next AdminSession::OnBytes(std::string_view data, uint32_t max_packet,
                                         std::string* out) {
  in_.append(data);
  while (!pausing_) {
    pgwire::Header h;
    auto st = pgwire::DecodeHeader(in_, max_packet, &h);
    if (st == pgwire::DecodeStatus::kNeedMoreData ||
        (st == pgwire::DecodeStatus::kReady && in_.size() < h.wire_size()))
      break;
    if (st == pgwire::DecodeStatus::kError) {
      pgwire::AppendErrorResponse(*out, "FATAL", "08P01", "invalid message");
      return Next::kFail;
    }
    std::string body = in_.substr(5, h.body_size());
    in_.erase(0, h.wire_size());
    if (h.type == 'X') return Next::kClose;
    if (h.type != 'Q') {
      pgwire::AppendErrorResponse(*out, "ERROR", "0A000",
                                  "the admin console supports the simple query protocol only");
      pgwire::AppendReadyForQuery(*out, 'I');
      continue;
    }
    AdminResult r =
        RunAdminCommand(proxy_, std::string_view(body).substr(0, body.find('\0')), may_modify_);
    if (r.wait_for_pause) {
      pausing_ = true;
      pause_database_ = std::move(r.pause_database);
      pause_reply_ = std::move(r.wire);
      if (!PollPause(out)) return Next::kPause;
      continue;
    }
    out->append(r.wire);
    pgwire::AppendReadyForQuery(*out, 'I');
  }
  if (in_.empty()) in_.shrink_to_fit();
  return pausing_ ? Next::kPause : Next::kMore;
}

bool AdminSession::PollPause(std::string* out) {
  if (!pausing_) return true;
  if (!proxy_.PauseDone(pause_database_)) return false;
  pausing_ = false;
  out->append(pause_reply_);
  pgwire::AppendReadyForQuery(*out, 'I');
  pause_reply_.clear();
  return true;
}

}  // namespace pgwarden::proxy
