// Session parameters carried from one server connection to the next: which are tracked, their
// values per connection, and the SQL that makes a server's values a client's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "pgwire/message.h"
#include "sql/session_effects.h"

namespace pgwarden::proxy {

// The parameters the proxy keeps per client and sets on whichever server
// connection the client gets: those PostgreSQL 15 reports in ParameterStatus
// that a client may set, plus proxy.track_extra_parameters. A client that
// sets any other parameter keeps its server connection for the rest of its
// session. Built once at start; immutable and shared by every thread.
class ParamCatalog {
 public:
  // At most this many parameters are tracked (sets of them are bit masks).
  static constexpr int kMaxParameters = 64;
  // The reported ones, spelled as PostgreSQL reports them.
  static const std::vector<std::string>& Reported();

  // `extra`: proxy.track_extra_parameters (case-insensitive; duplicates of
  // reported ones are ignored).
  explicit ParamCatalog(const std::vector<std::string>& extra = {});

  // The id of a tracked parameter (names compare case-insensitively, as
  // PostgreSQL's do), or -1.
  int Find(std::string_view name) const;
  int size() const { return static_cast<int>(names_.size()); }
  // As PostgreSQL spells it (ParameterStatus, SHOW); lower case for extras.
  const std::string& name(int id) const { return names_[static_cast<size_t>(id)]; }
  bool reported(int id) const { return id < reported_count_; }
  int client_encoding_id() const { return 1; }
  int application_name_id() const { return 0; }
  int standard_conforming_strings_id() const { return 5; }
  // The ids of the unreported ones, ascending; and the query that reads their
  // values: SELECT pg_catalog.current_setting('x'), ... ("" when there are none).
  const std::vector<int>& unreported() const { return unreported_; }
  const std::string& readback_query() const { return readback_query_; }

 private:
  std::vector<std::string> names_;
  std::vector<std::string> lower_;
  int reported_count_ = 0;
  std::vector<int> unreported_;
  std::string readback_query_;
};

// Each tracked parameter's value in a pool's fresh server connections, by id.
using ParamDefaults = std::vector<std::string>;

// The values of tracked parameters that differ from the pool's defaults, by
// id: small (usually one or two entries), compared on every lending. Values
// are spelled as the server shows them (current_setting, ParameterStatus).
class ParamSet {
 public:
  const std::string* Find(int id) const;
  // Records `value`; one equal to `default_value` removes the entry instead.
  void Assign(int id, std::string_view value, const std::string& default_value);
  void Erase(int id);
  void Clear() { items_.clear(); }
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  using Item = std::pair<int, std::string>;
  std::vector<Item>::const_iterator begin() const { return items_.begin(); }
  std::vector<Item>::const_iterator end() const { return items_.end(); }
  bool operator==(const ParamSet& o) const { return items_ == o.items_; }

 private:
  std::vector<Item> items_;  // sorted by id
};

// One change that makes a server's parameter the client's: a value, or
// nullptr for the default (RESET).
struct ParamChange {
  int id;
  const std::string* value;
};

// What differs between the client's and the server's values (pure; both
// relative to the same defaults), in id order.
std::vector<ParamChange> Reconcile(const ParamSet& client, const ParamSet& server);

// A query that applies changes, and which parameter each column of its one
// result row shows (set_config() returns the value as the server spells it).
struct ParamQuery {
  std::string sql;
  std::vector<int> columns;
};

// The queries that apply `changes`: a client_encoding change first and alone
// (a query string is converted in the encoding in effect when it arrives),
// then set_config() for values and RESET for defaults in one string. Values
// are quoted as E'' literals, whatever standard_conforming_strings is.
std::vector<ParamQuery> ApplyQueries(const ParamCatalog& catalog,
                                     const std::vector<ParamChange>& changes);

// Which tracked parameters a sequence of statements that succeeded (one
// query string, or one extended-protocol batch) leaves at their reset value,
// as bits by id: a RESET (or RESET ALL) that no later SET overrides and no
// later ROLLBACK or ROLLBACK TO undoes. A ROLLBACK or ROLLBACK TO that reaches
// back past the start of the sequence undoes all of it. Pure.
uint64_t ResetsInEffect(const std::vector<sql::Step>& steps, const ParamCatalog& catalog);

// A string literal that reads the same with standard_conforming_strings on or
// off: E'…' with backslashes and quotes escaped.
std::string EscapedLiteral(std::string_view v);
// An identifier in double quotes.
std::string QuotedIdentifier(std::string_view v);

// The startup packet's `options`: "-c name=value" / "--name=value" settings
// (words split at unescaped whitespace, a backslash escapes the next
// character, '-' in names becomes '_', as PostgreSQL reads them).
// InvalidArgument naming any other switch or a setting without a value.
Result<std::vector<std::pair<std::string, std::string>>> ParseStartupOptions(
    std::string_view options);

// application_name as PostgreSQL 15 stores it: at most 63 bytes (cut at a
// UTF-8 character boundary), then every byte outside printable ASCII
// replaced by '?'.
std::string CanonicalApplicationName(std::string_view v);

// The values of a DataRow body ('D' without its header); a NULL reads as an
// empty string. False when it is malformed.
bool ParseDataRow(std::string_view body, std::vector<std::string>* values);

}  // namespace pgwarden::proxy
