// Size and duration parsing.
#include "common/units.h"

#include <charconv>
#include <cstdio>

namespace pgwarden {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits "123unit" into 123 and "unit"; false when there is no leading number.
bool SplitNumber(std::string_view text, uint64_t* number, std::string_view* unit) {
  text = Trim(text);
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *number);
  if (ec != std::errc() || ptr == text.data()) return false;
  *unit = Trim(text.substr(ptr - text.data()));
  return true;
}

bool MulOverflows(uint64_t a, uint64_t b) { return b != 0 && a > UINT64_MAX / b; }

}  // namespace

std::optional<uint64_t> ParseByteSize(std::string_view text) {
  uint64_t n = 0;
  std::string_view unit;
  if (!SplitNumber(text, &n, &unit)) return std::nullopt;
  uint64_t mul;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "kB" || unit == "KB" || unit == "k" || unit == "K")
    mul = 1ull << 10;
  else if (unit == "MB" || unit == "M")
    mul = 1ull << 20;
  else if (unit == "GB" || unit == "G")
    mul = 1ull << 30;
  else if (unit == "TB" || unit == "T")
    mul = 1ull << 40;
  else
    return std::nullopt;
  if (MulOverflows(n, mul)) return std::nullopt;
  return n * mul;
}

std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text,
                                                       std::chrono::milliseconds default_unit) {
  uint64_t n = 0;
  std::string_view unit;
  if (!SplitNumber(text, &n, &unit)) return std::nullopt;
  uint64_t ms;
  if (unit.empty())
    ms = static_cast<uint64_t>(default_unit.count());
  else if (unit == "ms")
    ms = 1;
  else if (unit == "s")
    ms = 1000;
  else if (unit == "min" || unit == "m")
    ms = 60'000;
  else if (unit == "h")
    ms = 3'600'000;
  else if (unit == "d")
    ms = 86'400'000;
  else
    return std::nullopt;
  if (MulOverflows(n, ms) || n * ms > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(n * ms));
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

}  // namespace pgwarden
