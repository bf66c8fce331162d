// Quoting for the three syntaxes pgwarden writes for PostgreSQL: postgresql.conf values,
// pg_hba.conf tokens and libpq conninfo values. Every value pgwarden writes goes through these.
#pragma once

#include <string>
#include <string_view>

namespace pgwarden::pg {

// A postgresql.conf value as a quoted string: PostgreSQL reads back exactly
// `value` (guc-file.l: '' is a quote, backslash escapes; a raw newline cannot
// appear inside quotes, so it is written as \n).
// REQUIRES: no NUL byte (the config loader refuses one).
std::string QuoteConfValue(std::string_view value);

// A pg_hba.conf user or database token, double-quoted so that no name is
// read as a keyword (all, replication, +group, @file) and commas and spaces
// stay part of it ("" is a quote). REQUIRES: no NUL, CR or LF byte.
std::string QuoteHbaToken(std::string_view value);

// A libpq conninfo value: single quotes with \' and \\ escapes. Any byte but NUL.
std::string QuoteConninfoValue(std::string_view value);

}  // namespace pgwarden::pg
