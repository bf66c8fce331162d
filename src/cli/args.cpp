// Option parsing.
#include "cli/args.h"

#include <charconv>

namespace pgwarden::cli {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& with_value,
           const std::set<std::string>& flags, const std::map<std::string, std::string>& aliases) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) positional_.emplace_back(argv[i]);
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      positional_.push_back(a);
      continue;
    }
    std::string name = a[1] == '-' ? a.substr(2) : a.substr(1);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (auto al = aliases.find(name); al != aliases.end()) name = al->second;
    if (with_value.count(name)) {
      if (inline_value) {
        values_[name] = *inline_value;
      } else if (i + 1 < argc) {
        values_[name] = argv[++i];
      } else {
        throw UsageError{"option " + a + " needs a value"};
      }
    } else if (flags.count(name)) {
      if (inline_value) throw UsageError{"option --" + name + " takes no value"};
      flags_.insert(name);
    } else {
      throw UsageError{"unknown option " + a};
    }
  }
}

std::optional<std::string> Args::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::GetOr(const std::string& name, const std::string& fallback) const {
  return Get(name).value_or(fallback);
}

int Args::GetInt(const std::string& name, int fallback, int lo, int hi) const {
  auto v = Get(name);
  if (!v) return fallback;
  int n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || ptr != v->data() + v->size() || n < lo || n > hi) {
    throw UsageError{"--" + name + " must be an integer from " + std::to_string(lo) + " to " +
                     std::to_string(hi) + ", got '" + *v + "'"};
  }
  return n;
}

}  // namespace pgwarden::cli
