// Reading PgBouncer's auth_file (userlist.txt) and classifying stored passwords.
#include "pgwire/userlist.h"

#include <fstream>
#include <sstream>
#include <string_view>

#include "pgwire/auth.h"

namespace pgwarden::pgwire {
namespace {

constexpr size_t kMd5HashLength = 35;  // "md5" + 32 hex digits
constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

void SkipSpaces(std::string_view line, size_t* pos) {
  while (*pos < line.size() && IsSpace(line[*pos])) ++(*pos);
}

// Reads a double-quoted field at *pos ("" inside stands for one quote).
// On failure returns false with *error saying why.
bool ReadQuoted(std::string_view line, size_t* pos, std::string* out, std::string* error) {
  if (*pos >= line.size() || line[*pos] != '"') {
    *error = "expected a double-quoted field";
    return false;
  }
  ++(*pos);
  out->clear();
  while (*pos < line.size()) {
    char c = line[(*pos)++];
    if (c != '"') {
      out->push_back(c);
      continue;
    }
    if (*pos < line.size() && line[*pos] == '"') {  // escaped quote
      out->push_back('"');
      ++(*pos);
      continue;
    }
    return true;
  }
  *error = "unterminated double-quoted field";
  return false;
}

}  // namespace

UserCredential ClassifyCredential(std::string value) {
  UserCredential c;
  if (value.size() == kMd5HashLength && value.compare(0, 3, "md5") == 0 &&
      value.find_first_not_of("0123456789abcdef", 3) == std::string::npos) {
    c.kind = UserCredential::Kind::kMd5;
  } else if (ParseScramSecret(value).has_value()) {
    c.kind = UserCredential::Kind::kScram;
  } else {
    c.kind = UserCredential::Kind::kPlain;  // as PostgreSQL: anything else is a password
  }
  c.value = std::move(value);
  return c;
}

Result<std::map<std::string, UserCredential>> ParseUserList(const std::string& text,
                                                            const std::string& source_name) {
  std::map<std::string, UserCredential> users;
  std::string_view rest = text;
  int line_number = 0;
  while (!rest.empty()) {
    ++line_number;
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    auto fail = [&](const std::string& why) -> Status {
      return InvalidArgument(source_name + ":" + std::to_string(line_number) + ": " + why);
    };

    size_t pos = 0;
    SkipSpaces(line, &pos);
    if (pos == line.size() || line[pos] == ';' || line[pos] == '#') continue;
    if (line.find('\0') != std::string_view::npos) return fail("NUL byte in line");

    std::string user, value, error;
    if (!ReadQuoted(line, &pos, &user, &error)) return fail(error + " (user name)");
    if (user.empty()) return fail("empty user name");
    SkipSpaces(line, &pos);
    if (!ReadQuoted(line, &pos, &value, &error)) {
      return fail(error + " (password for user \"" + user + "\")");
    }
    // PgBouncer ignores whatever follows the second field.
    if (value.compare(0, kScramPrefix.size(), kScramPrefix) == 0 &&
        !ParseScramSecret(value).has_value()) {
      // PostgreSQL would take this as a plain password; here it is almost
      // surely a mangled secret, so say so instead of failing every login.
      return fail("malformed SCRAM secret for user \"" + user + "\"");
    }
    // A later line for the same user wins, as in PgBouncer.
    users[user] = ClassifyCredential(std::move(value));
  }
  return users;
}

Result<std::map<std::string, UserCredential>> LoadUserListFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open auth file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return IoError("cannot read auth file " + path);
  return ParseUserList(text.str(), path);
}

}  // namespace pgwarden::pgwire
