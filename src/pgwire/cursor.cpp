// MessageCursor: message framing of a protocol stream without sockets.
#include "pgwire/cursor.h"

#include <algorithm>

namespace pgwarden::pgwire {

void MessageCursor::Take() { decision_ = Decision::kTake; }
void MessageCursor::Pass() { decision_ = Decision::kPass; }
void MessageCursor::Skip() { decision_ = Decision::kSkip; }

void MessageCursor::Reset() {
  state_ = State::kBoundary;
  decision_ = Decision::kNone;
  partial_.clear();
  header_in_partial_ = false;
  buf_.clear();
  release_buf_ = false;
  remaining_ = 0;
  message_ = bytes_ = {};
}

MessageCursor::Step MessageCursor::Next(std::string_view* in) {
  message_ = bytes_ = {};
  if (release_buf_) {
    buf_.clear();
    release_buf_ = false;
  }
  for (;;) {
    switch (state_) {
      case State::kBroken:
        return Step::kError;

      case State::kBoundary: {
        std::string_view head = *in;
        if (!partial_.empty() || in->size() < 5) {
          // A type byte alone can already be judged; otherwise wait for all 5.
          size_t take = std::min(5 - partial_.size(), in->size());
          partial_.append(in->substr(0, take));
          in->remove_prefix(take);
          head = partial_;
        }
        DecodeStatus st = DecodeHeader(head, max_length_, &header_);
        if (st == DecodeStatus::kError) {
          state_ = State::kBroken;
          error_length_ = 0;
          if (head.size() >= 5) {
            const auto* u = reinterpret_cast<const unsigned char*>(head.data() + 1);
            error_length_ = (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) |
                            (uint32_t{u[2]} << 8) | uint32_t{u[3]};
          }
          return Step::kError;
        }
        if (st == DecodeStatus::kNeedMoreData) return Step::kNeedMore;
        header_in_partial_ = !partial_.empty();
        state_ = State::kDeciding;
        decision_ = Decision::kNone;
        return Step::kHeader;
      }

      case State::kDeciding: {
        const size_t wire = header_.wire_size();
        switch (decision_) {
          case Decision::kNone:
            return Step::kHeader;  // asked again without a decision: same answer
          case Decision::kTake:
            if (!header_in_partial_ && in->size() >= wire) {  // all in one piece: no copy
              message_ = in->substr(0, wire);
              in->remove_prefix(wire);
              state_ = State::kBoundary;
              return Step::kMessage;
            }
            buf_.clear();
            if (header_in_partial_) {
              buf_ = partial_;
              partial_.clear();
              header_in_partial_ = false;
            }
            state_ = State::kTaking;
            continue;
          case Decision::kPass:
            if (header_in_partial_) {
              // The header arrived in pieces: it goes out first, on its own.
              buf_ = std::move(partial_);
              partial_.clear();
              header_in_partial_ = false;
              bytes_ = buf_;
              release_buf_ = true;
              remaining_ = header_.body_size();
              state_ = remaining_ > 0 ? State::kPassing : State::kBoundary;
              return Step::kBytes;
            }
            remaining_ = wire;
            state_ = State::kPassing;
            continue;
          case Decision::kSkip:
            state_ = State::kSkipping;
            remaining_ = header_in_partial_ ? header_.body_size() : wire;
            if (header_in_partial_) {
              partial_.clear();
              header_in_partial_ = false;
            }
            continue;
        }
        return Step::kError;  // unreachable
      }

      case State::kTaking: {
        const size_t wire = header_.wire_size();
        size_t take = std::min(wire - buf_.size(), in->size());
        buf_.append(in->substr(0, take));
        in->remove_prefix(take);
        if (buf_.size() < wire) return Step::kNeedMore;
        message_ = buf_;
        release_buf_ = true;
        state_ = State::kBoundary;
        return Step::kMessage;
      }

      case State::kPassing: {
        if (remaining_ == 0) {
          state_ = State::kBoundary;
          continue;
        }
        if (in->empty()) return Step::kNeedMore;
        size_t n = std::min(remaining_, in->size());
        bytes_ = in->substr(0, n);
        in->remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kBoundary;
        return Step::kBytes;
      }

      case State::kSkipping: {
        size_t n = std::min(remaining_, in->size());
        in->remove_prefix(n);
        remaining_ -= n;
        if (remaining_ > 0) return Step::kNeedMore;
        state_ = State::kBoundary;
        continue;
      }
    }
  }
}

}  // namespace pgwarden::pgwire
