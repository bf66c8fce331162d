// PostgreSQL log sequence numbers: parsing "X/Y", formatting, byte distance.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgwarden {

// A WAL position. 0 is PostgreSQL's InvalidXLogRecPtr ("0/0").
class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t value) : value_(value) {}

  // Parses PostgreSQL's text form "16/B374D848" (hex, upper or lower case).
  static std::optional<Lsn> Parse(std::string_view text);

  constexpr uint64_t value() const { return value_; }
  constexpr bool valid() const { return value_ != 0; }
  // PostgreSQL's text form, e.g. "0/3000148".
  std::string ToString() const;

  // Bytes from `older` to this position; 0 when `older` is ahead.
  constexpr uint64_t BytesAfter(Lsn older) const {
    return value_ > older.value_ ? value_ - older.value_ : 0;
  }

  friend constexpr auto operator<=>(Lsn, Lsn) = default;

 private:
  uint64_t value_ = 0;
};

}  // namespace pgwarden
