// A socket-free walk over a protocol byte stream, one message at a time, used by both directions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pgwire/message.h"

namespace pgwarden::pgwire {

// Frames typed messages (type byte + int32 length) in a stream that arrives
// in arbitrary pieces. For every message the caller sees its header first and
// says what to do with it: take it whole (it is assembled, without a copy when
// it lies in one piece of input), pass it on in pieces as they arrive (bodies
// are never buffered), or skip it. PgBouncer's sbuf asks the protocol code the
// same question.
//
// Owned by one session; not thread-safe. Views returned by message() and
// bytes() are valid until the next call of Next().
class MessageCursor {
 public:
  // What Next() found at the front of the input.
  enum class Step {
    kNeedMore,  // the input is used up; a partial header or message is kept inside
    kHeader,    // a message begins: header() is set; call Take(), Pass() or Skip(), then Next()
    kMessage,   // (after Take) the whole message, header included, is in message()
    kBytes,     // (after Pass) bytes() is the next piece of the message, the first one from
                // its type byte on
    kError,     // a malformed header: a length below 4 or above the limit, or a bad type byte
  };

  explicit MessageCursor(uint32_t max_length) : max_length_(max_length) {}

  // Consumes from the front of `*in` what the current step needs.
  Step Next(std::string_view* in);
  // The decision for the message whose header Next() just returned.
  void Take();
  void Pass();
  void Skip();

  const Header& header() const { return header_; }
  std::string_view message() const { return message_; }
  std::string_view bytes() const { return bytes_; }
  // Part of a message has been read (the stream is not at a message boundary).
  // After kError: the length the bad header gave (0 when it was the type byte).
  uint32_t error_length() const { return error_length_; }
  bool InMessage() const { return state_ != State::kBoundary || !partial_.empty(); }
  // Forgets everything (the stream was cut; a new one starts at a boundary).
  void Reset();
  void set_max_length(uint32_t max_length) { max_length_ = max_length; }

 private:
  // Where the walk is.
  enum class State {
    kBoundary,  // expecting a header (partial_ may hold its first bytes)
    kDeciding,  // header read and reported; waiting for Take / Pass / Skip
    kTaking,    // assembling a whole message
    kPassing,   // handing out the rest of a message in pieces
    kSkipping,  // dropping the rest of a message
    kBroken,    // a malformed header was seen; nothing more is framed
  };
  // What was decided in kDeciding, acted on by the next Next().
  enum class Decision { kNone, kTake, kPass, kSkip };

  uint32_t max_length_;
  State state_ = State::kBoundary;
  Decision decision_ = Decision::kNone;
  Header header_;
  std::string partial_;             // a header split across reads (up to 5 bytes)
  bool header_in_partial_ = false;  // the current header came from partial_, not from the input
  std::string buf_;                 // a whole message assembled across reads
  bool release_buf_ = false;        // buf_ was handed out and is cleared by the next Next()
  uint32_t error_length_ = 0;
  size_t remaining_ = 0;  // bytes of the current message still to pass or skip
  std::string_view message_, bytes_;
};

}  // namespace pgwarden::pgwire
