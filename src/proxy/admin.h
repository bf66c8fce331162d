// The admin console: the virtual database `pgwarden` with PgBouncer's SHOW commands.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgwarden::proxy {

class Proxy;

// What an admin command asks for.
enum class AdminVerb {
  kEmpty,     // nothing but whitespace and ';' (answered with EmptyQueryResponse)
  kShow,      // SHOW <subject> [argument]
  kReload,    // RELOAD
  kPause,     // PAUSE [db]
  kResume,    // RESUME [db]
  kShutdown,  // SHUTDOWN
  kUnknown,   // anything else, including a known verb with the wrong number of words
};

// One command line, split but not yet checked against what exists.
struct AdminCommand {
  AdminVerb verb = AdminVerb::kUnknown;
  std::string subject;   // SHOW only: what to show, lower case ("pools")
  std::string argument;  // optional database / key name, case kept, "quotes" removed
  std::string text;      // the command without surrounding whitespace and ';', for messages
};

// Splits `sql` into a command: keywords are case-insensitive, words are
// separated by any whitespace, trailing ';' are dropped. Pure.
AdminCommand ParseAdminCommand(std::string_view sql);

// What a command produced, before it is encoded: an error, or an optional
// result set, an optional notice and a command tag.
struct AdminReply {
  using Row = std::vector<std::optional<std::string>>;  // nullopt: NULL
  std::vector<std::string> columns;                     // RowDescription; empty: no result set
  std::vector<Row> rows;
  std::string notice;          // NoticeResponse sent before the tag (SHOW HELP)
  std::string tag;             // CommandComplete: "SHOW", "RELOAD", "PAUSE", ...
  bool empty_query = false;    // EmptyQueryResponse instead of a tag
  std::string error_sqlstate;  // non-empty: only an ErrorResponse is sent
  std::string error_message;
  std::string error_hint;
  // PAUSE: the reply goes out only once the paused pools' servers are all
  // back (no transaction left running), as PgBouncer's does.
  bool wait_for_pause = false;
  std::string pause_database;  // "" : every database
};

// Runs a parsed command against `proxy` (any thread; reads take the proxy's
// and pools' own locks). `may_modify` is false for stats_users: they may
// only run SHOW commands.
AdminReply ExecuteAdminCommand(Proxy& proxy, const AdminCommand& cmd, bool may_modify);

// The protocol messages of a reply, without the ReadyForQuery.
std::string EncodeAdminReply(const AdminReply& reply);

// What a command produced: protocol messages (RowDescription, DataRows,
// CommandComplete, or an ErrorResponse), without the ReadyForQuery.
struct AdminResult {
  std::string wire;
  bool wait_for_pause = false;  // send `wire` when Proxy::PauseDone(pause_database)
  std::string pause_database;
};

// Parses, runs and encodes one admin command (SHOW HELP|POOLS|CLIENTS|SERVERS|
// STATS|STATS_TOTALS|STATS_AVERAGES|DATABASES|LISTS|CONFIG|VERSION, RELOAD,
// PAUSE [db], RESUME [db], SHUTDOWN). Unknown commands give an ErrorResponse
// (42601); anything but SHOW without `may_modify` gives 42501.
AdminResult RunAdminCommand(Proxy& proxy, std::string_view sql, bool may_modify);

}  // namespace pgwarden::proxy
