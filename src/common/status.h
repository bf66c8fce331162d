// Errors as values: Status (ok or a categorised error) and Result<T>.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace pgwarden {

// The few error categories callers branch on.
enum class ErrorCode {
  kOk = 0,           // success
  kInvalidArgument,  // bad input from a user, a config file or a peer
  kNotFound,         // a key, file or object that does not exist
  kDcsUnavailable,   // no etcd endpoint answered
  kPgUnavailable,    // PostgreSQL could not be reached or refused
  kConflict,         // a compare-and-swap lost, or state changed under us
  kTimeout,          // an operation ran out of time
  kIo,               // file system or socket error
  kFatal,            // an invariant broke; the caller should stop
};

const char* ErrorCodeName(ErrorCode code);

// A success or an error with a message. Cheap on success (empty string).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<category>: <message>", or "ok".
  std::string ToString() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status DcsUnavailable(std::string m) { return {ErrorCode::kDcsUnavailable, std::move(m)}; }
inline Status PgUnavailable(std::string m) { return {ErrorCode::kPgUnavailable, std::move(m)}; }
inline Status Conflict(std::string m) { return {ErrorCode::kConflict, std::move(m)}; }
inline Status Timeout(std::string m) { return {ErrorCode::kTimeout, std::move(m)}; }
inline Status IoError(std::string m) { return {ErrorCode::kIo, std::move(m)}; }
inline Status Fatal(std::string m) { return {ErrorCode::kFatal, std::move(m)}; }

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error, or Ok when there is a value.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace pgwarden

// Returns the Status of an expression from the enclosing function when it failed.
#define PGW_RETURN_IF_ERROR(expr)    \
  do {                               \
    ::pgwarden::Status _st = (expr); \
    if (!_st.ok()) return _st;       \
  } while (0)
