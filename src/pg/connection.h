// A libpq connection with typed results: the control channel to a PostgreSQL server.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "pg/quoting.h"

struct pg_conn;

namespace pgwarden::pg {

// Rows of text values; a NULL is nullopt.
struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;

  // REQUIRES: row < rows.size(), col < columns.size()
  const std::optional<std::string>& at(size_t row, size_t col) const { return rows[row][col]; }
  // The value or `fallback` when NULL.
  std::string text(size_t row, size_t col, std::string fallback = "") const;
};

// One blocking libpq connection. Owned by one thread at a time.
class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects with a libpq conninfo string ("host=... port=..." or a URI).
  // PgUnavailable with libpq's message on failure.
  static Result<std::unique_ptr<Connection>> Open(const std::string& conninfo,
                                                  std::chrono::seconds connect_timeout);

  // Runs one statement; `params` are bound as $1, $2, ... (text).
  Result<QueryResult> Query(const std::string& sql, const std::vector<std::string>& params = {});
  // Runs a statement and ignores its rows.
  Status Exec(const std::string& sql, const std::vector<std::string>& params = {});
  bool healthy() const;

 private:
  explicit Connection(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
};

using ConnectionPtr = std::unique_ptr<Connection>;

// Quotes a SQL string literal ('...' with '' doubling).
std::string QuoteLiteral(const std::string& value);
// Quotes a SQL identifier ("..." with "" doubling).
std::string QuoteIdent(const std::string& value);

}  // namespace pgwarden::pg
