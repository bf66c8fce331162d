// What a SQL string does to its session beyond its own transaction, read with the real parser.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgwarden::sql {

// Session state a statement leaves behind that a pooler cannot carry from one
// server connection to another: the client that creates it must keep its
// server connection (bits of SessionEffects::pins).
enum PinReason : uint32_t {
  kPinNone = 0,
  kPinRole = 1u << 0,             // SET ROLE / SET SESSION AUTHORIZATION (and RESET of them)
  kPinParameter = 1u << 1,        // set_config() with a name that is not a constant
  kPinTempObject = 1u << 2,       // a temporary table, view, sequence or pg_temp object
  kPinListen = 1u << 3,           // LISTEN
  kPinPrepare = 1u << 4,          // SQL-level PREPARE
  kPinHoldCursor = 1u << 5,       // DECLARE ... WITH HOLD
  kPinAdvisoryLock = 1u << 6,     // a session-level advisory lock
  kPinLoad = 1u << 7,             // LOAD of a library
  kPinDo = 1u << 8,               // a DO block (code the proxy cannot see into)
  kPinCharacteristics = 1u << 9,  // SET SESSION CHARACTERISTICS AS TRANSACTION
  kPinRemoteLink = 1u << 10,      // dblink_connect(): a named connection kept by the session
  kPinTooComplex = 1u << 11,      // too big or too deep to analyse: assume the worst
  kPinEncoding = 1u << 12,   // a client_encoding whose bytes the proxy cannot lex (SJIS, BIG5…)
  kPinAmbiguous = 1u << 13,  // means different things with standard_conforming_strings on/off
  kPinUnparsed = 1u << 14,   // PostgreSQL 15's grammar refuses it: assume the worst
  kPinProxyStatement = 1u << 15,  // names one of the proxy's own statements (pgw_…)
  kPinSettingsTable = 1u << 16,   // UPDATE pg_settings: set_config() by another name
};

// What DISCARD ALL does not undo, or what the proxy could not see into: a
// client pinned for these is not unpinned by DISCARD ALL, and its server is
// closed rather than reset when it leaves.
inline constexpr uint32_t kPinsBeyondDiscard = kPinLoad | kPinRemoteLink | kPinDo | kPinTooComplex |
                                               kPinEncoding | kPinAmbiguous | kPinUnparsed |
                                               kPinProxyStatement;

// Pins taken as a precaution, when the analysis could not see what a string
// does (not because it was seen to do something).
inline constexpr uint32_t kPinsPrecaution = kPinTooComplex | kPinUnparsed | kPinAmbiguous;

// Client encodings in which the second byte of a character can be a
// backslash or a quote: the proxy's lexer cannot read such a client's SQL.
bool IsUnsafeClientEncoding(std::string_view name);

// The words for the first reason in `pins` ("LISTEN", "a temporary object", ...).
const char* PinReasonText(uint32_t pins);

// One thing a statement does that decides what a session parameter is after
// it, in order: a SET or RESET (not SET LOCAL or set_config(..., true), which
// last only for their transaction), or the transaction control that keeps or
// undoes them.
struct Step {
  enum class Kind : uint8_t {
    kSet,         // SET name = …, set_config(name, value, false)
    kReset,       // RESET name, SET name TO DEFAULT, set_config(name, NULL, false)
    kResetAll,    // RESET ALL, DISCARD ALL
    kBegin,       // BEGIN, START TRANSACTION
    kCommit,      // COMMIT, END, PREPARE TRANSACTION (the session leaves it either way)
    kRollback,    // ROLLBACK, ABORT
    kSavepoint,   // SAVEPOINT name
    kRelease,     // RELEASE [SAVEPOINT] name
    kRollbackTo,  // ROLLBACK TO [SAVEPOINT] name
  };
  Kind kind = Kind::kSet;
  std::string name;  // the parameter (lower case, as PostgreSQL compares them) or the savepoint

  bool touches_parameter() const {
    return kind == Kind::kSet || kind == Kind::kReset || kind == Kind::kResetAll;
  }
  bool operator==(const Step& o) const { return kind == o.kind && name == o.name; }
};

// What one query string (one or more statements) does to the session.
struct SessionEffects {
  std::vector<Step> steps;               // parameters and transaction control, in order
  bool discard_all = false;              // DISCARD ALL
  std::vector<std::string> deallocated;  // names DEALLOCATE drops (not ALL), as written
  bool deallocate_all = false;           // DEALLOCATE ALL
  bool sequences = false;    // calls currval() / lastval(): reads the session's sequence cache
  uint32_t pins = kPinNone;  // PinReason bits
  bool parse_error = false;  // the parser refused it (PostgreSQL will too: it runs nothing)
  int statements = 0;        // how many statements the string holds

  bool touches_parameters() const {
    for (const auto& s : steps) {
      if (s.touches_parameter()) return true;
    }
    return false;
  }
  // Anything beyond transaction control.
  bool any() const {
    return touches_parameters() || discard_all || !deallocated.empty() || deallocate_all ||
           sequences || pins != kPinNone;
  }
};

// The transaction control a single statement is (BEGIN, COMMIT, ROLLBACK TO
// s, …), read from its words without the parser: for prepared statements,
// whose text is seen once at Parse. Nothing for anything else.
std::optional<Step> TransactionStep(std::string_view sql);

// Cheap and conservative: false only when `sql` cannot contain a statement
// with any of the effects above, so that the parser runs only for the few
// strings that might. A lexer that knows comments, quoting and dollar quoting
// looks at the first word of each statement (SET, DO) and at every name
// (RESET, LISTEN, TEMP, set_config, pg_advisory_lock…); it runs for both
// values of standard_conforming_strings when the text has a backslash, so a
// wrong guess of that setting cannot hide a statement. fuzz/sql_fuzz.cpp
// checks it against the parser.
bool MayAffectSession(std::string_view sql);

// Parses `sql` with libpg_query (PostgreSQL 15's grammar) and collects its
// effects. `standard_conforming_strings` is the session's value (it changes how
// backslashes in literals are read). Thread-safe (libpg_query keeps its state
// per thread).
SessionEffects AnalyzeSessionEffects(std::string_view sql, bool standard_conforming_strings = true);

}  // namespace pgwarden::sql
