// PgBouncer's auth_file format (userlist.txt): "user" "password-or-secret" per line.
#pragma once

#include <map>
#include <string>

#include "common/status.h"

namespace pgwarden::pgwire {

// One user's credential as written in the file: a plain password, an md5
// hash ("md5..."), or a SCRAM secret ("SCRAM-SHA-256$...").
struct UserCredential {
  enum class Kind {
    kPlain,  // the password itself
    kMd5,    // "md5" + 32 hex digits
    kScram,  // SCRAM-SHA-256 secret
  };
  Kind kind = Kind::kPlain;
  std::string value;
};

// Parses the file's text: one `"user" "value"` per line, double quotes
// inside values doubled (""), blank lines and lines starting with ';' or '#'
// ignored. Text after the second field is ignored, as PgBouncer does. A
// value starting with "SCRAM-SHA-256$" that does not parse is an error (a
// mangled secret, not a password). A later line for a user replaces an
// earlier one. InvalidArgument "<source>:<line>: ..." for anything else.
Result<std::map<std::string, UserCredential>> ParseUserList(const std::string& text,
                                                            const std::string& source_name);
Result<std::map<std::string, UserCredential>> LoadUserListFile(const std::string& path);

// Classifies a stored value (from the file or from pg_shadow.passwd).
UserCredential ClassifyCredential(std::string value);

}  // namespace pgwarden::pgwire
