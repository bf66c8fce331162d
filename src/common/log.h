// Logging: one line per event to stderr, with time, level and component.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace pgwarden {

// Severity of a log line.
enum class LogLevel {
  kDebug = 0,  // detail for developers
  kInfo,       // what the process did
  kWarn,       // something unexpected that it recovered from
  kError,      // something failed
};

// Thread-safe; lines below the threshold are dropped before formatting.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug" | "info" | "warn" | "error"; false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* out);
// Sets a prefix printed on every line (e.g. the member name).
void SetLogPrefix(std::string prefix);
void LogLine(LogLevel level, std::string_view component, std::string_view message);

}  // namespace pgwarden

#define PGW_LOG(level, component, expr)                                       \
  do {                                                                        \
    if (::pgwarden::LogLevel::level >= ::pgwarden::GetLogLevel()) {           \
      std::ostringstream _os;                                                 \
      _os << expr;                                                            \
      ::pgwarden::LogLine(::pgwarden::LogLevel::level, component, _os.str()); \
    }                                                                         \
  } while (0)
#define LOG_DEBUG(component, expr) PGW_LOG(kDebug, component, expr)
#define LOG_INFO(component, expr) PGW_LOG(kInfo, component, expr)
#define LOG_WARN(component, expr) PGW_LOG(kWarn, component, expr)
#define LOG_ERROR(component, expr) PGW_LOG(kError, component, expr)
