// Parsing of sizes ("1MB", "16kB", "1048576") and durations ("30s", "5min", "250ms").
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgwarden {

// Bytes from a plain integer or an integer with a unit: B, kB/KB, MB, GB, TB
// (powers of 1024, as PostgreSQL reads them). nullopt on anything else.
std::optional<uint64_t> ParseByteSize(std::string_view text);

// A duration from an integer with a unit: ms, s, min, h, d; a plain integer
// means `default_unit`. nullopt on anything else.
std::optional<std::chrono::milliseconds> ParseDuration(
    std::string_view text, std::chrono::milliseconds default_unit = std::chrono::seconds(1));

// "1.5 MiB", "512 B": for humans.
std::string FormatBytes(uint64_t bytes);

}  // namespace pgwarden
