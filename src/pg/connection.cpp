// libpq wrapper.
#include "pg/connection.h"

#include <libpq-fe.h>

namespace pgwarden::pg {

std::string QueryResult::text(size_t row, size_t col, std::string fallback) const {
  const auto& v = rows[row][col];
  return v ? *v : fallback;
}

Connection::~Connection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& conninfo,
                                                     std::chrono::seconds connect_timeout) {
  std::string full = conninfo;
  // A URI takes parameters after '?'; key=value strings take them appended.
  bool uri = conninfo.rfind("postgres://", 0) == 0 || conninfo.rfind("postgresql://", 0) == 0;
  std::string timeout = std::to_string(std::max<int64_t>(1, connect_timeout.count()));
  if (uri) {
    full += (conninfo.find('?') == std::string::npos ? "?" : "&");
    full += "connect_timeout=" + timeout;
  } else {
    full += " connect_timeout=" + timeout;
  }
  PGconn* c = PQconnectdb(full.c_str());
  if (c == nullptr) return PgUnavailable("out of memory allocating a libpq connection");
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    PQfinish(c);
    return PgUnavailable(msg);
  }
  return std::unique_ptr<Connection>(new Connection(c));
}

Result<QueryResult> Connection::Query(const std::string& sql,
                                      const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                               values.empty() ? nullptr : values.data(), nullptr, nullptr, 0);
  std::unique_ptr<PGresult, decltype(&PQclear)> guard(res, &PQclear);
  auto st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    if (PQstatus(conn_) != CONNECTION_OK) return PgUnavailable(msg);
    return InvalidArgument(msg);
  }
  QueryResult out;
  int ncols = PQnfields(res);
  int nrows = PQntuples(res);
  for (int c = 0; c < ncols; ++c) out.columns.emplace_back(PQfname(res, c));
  out.rows.reserve(nrows);
  for (int r = 0; r < nrows; ++r) {
    auto& row = out.rows.emplace_back();
    row.reserve(ncols);
    for (int c = 0; c < ncols; ++c) {
      if (PQgetisnull(res, r, c))
        row.emplace_back(std::nullopt);
      else
        row.emplace_back(std::string(PQgetvalue(res, r, c), PQgetlength(res, r, c)));
    }
  }
  return out;
}

Status Connection::Exec(const std::string& sql, const std::vector<std::string>& params) {
  return Query(sql, params).status();
}

bool Connection::healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

std::string QuoteLiteral(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string QuoteIdent(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace pgwarden::pg
