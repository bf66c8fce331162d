// A small command-line option parser shared by the subcommands.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace pgwarden::cli {

// Thrown for a usage error; the message is printed and the exit code is 2.
struct UsageError {
  std::string message;
};

// Parses "--name value", "--name=value", "-c value" and boolean flags.
class Args {
 public:
  // `with_value`: options that take a value (long names without dashes, or a
  // one-letter short name). `flags`: boolean options. Throws UsageError.
  Args(int argc, char** argv, int first, const std::set<std::string>& with_value,
       const std::set<std::string>& flags, const std::map<std::string, std::string>& aliases = {});

  bool Has(const std::string& name) const { return values_.count(name) || flags_.count(name); }
  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& fallback) const;
  // An integer option within [lo, hi]; throws UsageError naming the option.
  int GetInt(const std::string& name, int fallback, int lo, int hi) const;
  bool Flag(const std::string& name) const { return flags_.count(name) > 0; }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

}  // namespace pgwarden::cli
