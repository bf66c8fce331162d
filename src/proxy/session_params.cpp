// Tracked session parameters: catalog, per-connection values, reconciling, startup options.
#include "proxy/session_params.h"

#include <algorithm>

#include "pgwire/message.h"

namespace pgwarden::proxy {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace

const std::vector<std::string>& ParamCatalog::Reported() {
  // PostgreSQL 15's GUC_REPORT parameters that a client can set. The order
  // fixes the ids the accessors in the header name. Not here: the read-only
  // ones (server_version, server_encoding, integer_datetimes, is_superuser,
  // in_hot_standby) and session_authorization, which only SET SESSION
  // AUTHORIZATION changes (that pins the client).
  static const std::vector<std::string> kReported = {
      "application_name", "client_encoding",
      "DateStyle",        "default_transaction_read_only",
      "IntervalStyle",    "standard_conforming_strings",
      "TimeZone"};
  return kReported;
}

ParamCatalog::ParamCatalog(const std::vector<std::string>& extra) {
  for (const auto& n : Reported()) {
    names_.push_back(n);
    lower_.push_back(Lower(n));
  }
  reported_count_ = static_cast<int>(names_.size());
  for (const auto& n : extra) {
    if (static_cast<int>(names_.size()) >= kMaxParameters) break;  // the config refuses more
    std::string l = Lower(n);
    if (l.empty() || std::find(lower_.begin(), lower_.end(), l) != lower_.end()) continue;
    unreported_.push_back(static_cast<int>(names_.size()));
    names_.push_back(l);
    lower_.push_back(l);
  }
  if (!unreported_.empty()) {
    readback_query_ = "SELECT ";
    for (size_t i = 0; i < unreported_.size(); ++i) {
      if (i > 0) readback_query_ += ", ";
      readback_query_ += "pg_catalog.current_setting(" +
                         EscapedLiteral(names_[static_cast<size_t>(unreported_[i])]) + ")";
    }
  }
}

int ParamCatalog::Find(std::string_view name) const {
  for (size_t i = 0; i < lower_.size(); ++i) {
    const std::string& l = lower_[i];
    if (l.size() != name.size()) continue;
    bool same = true;
    for (size_t k = 0; k < l.size() && same; ++k) {
      char c = name[k];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      same = c == l[k];
    }
    if (same) return static_cast<int>(i);
  }
  return -1;
}

const std::string* ParamSet::Find(int id) const {
  for (const auto& [k, v] : items_) {
    if (k == id) return &v;
    if (k > id) break;
  }
  return nullptr;
}

void ParamSet::Assign(int id, std::string_view value, const std::string& default_value) {
  if (value == default_value) {
    Erase(id);
    return;
  }
  auto it = std::lower_bound(items_.begin(), items_.end(), id,
                             [](const Item& a, int b) { return a.first < b; });
  if (it != items_.end() && it->first == id)
    it->second.assign(value);
  else
    items_.insert(it, {id, std::string(value)});
}

void ParamSet::Erase(int id) {
  auto it = std::lower_bound(items_.begin(), items_.end(), id,
                             [](const Item& a, int b) { return a.first < b; });
  if (it != items_.end() && it->first == id) items_.erase(it);
}

std::vector<ParamChange> Reconcile(const ParamSet& client, const ParamSet& server) {
  std::vector<ParamChange> out;
  auto c = client.begin(), s = server.begin();
  while (c != client.end() || s != server.end()) {
    if (s == server.end() || (c != client.end() && c->first < s->first)) {
      out.push_back({c->first, &c->second});  // the client has a value, the server the default
      ++c;
    } else if (c == client.end() || s->first < c->first) {
      out.push_back({s->first, nullptr});  // the server has a value, the client the default
      ++s;
    } else {
      if (c->second != s->second) out.push_back({c->first, &c->second});
      ++c;
      ++s;
    }
  }
  return out;
}

uint64_t ResetsInEffect(const std::vector<sql::Step>& steps, const ParamCatalog& catalog) {
  using K = sql::Step::Kind;
  const uint64_t all = catalog.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << catalog.size()) - 1;
  // A frame is a transaction (empty name) or a savepoint, with the resets in
  // effect when it began.
  struct Frame {
    bool savepoint;
    std::string name;
    uint64_t saved;
  };
  std::vector<Frame> stack;
  uint64_t resets = 0;
  auto bit = [&](const std::string& name) -> uint64_t {
    int id = catalog.Find(name);
    return id < 0 ? 0 : uint64_t{1} << id;
  };
  for (const auto& st : steps) {
    switch (st.kind) {
      case K::kSet:
        resets &= ~bit(st.name);
        break;
      case K::kReset:
        resets |= bit(st.name);
        break;
      case K::kResetAll:
        resets = all;
        break;
      case K::kBegin:
        stack.push_back({false, {}, resets});
        break;
      case K::kCommit:
        stack.clear();  // savepoints go with their transaction; its changes stay
        break;
      case K::kRollback: {
        // Back to the transaction's start; begun before the sequence: to its start.
        resets = !stack.empty() && !stack.front().savepoint ? stack.front().saved : 0;
        stack.clear();
        break;
      }
      case K::kSavepoint:
        stack.push_back({true, st.name, resets});
        break;
      case K::kRelease:
      case K::kRollbackTo: {
        size_t i = stack.size();
        while (i > 0 && !(stack[i - 1].savepoint && stack[i - 1].name == st.name)) --i;
        if (i == 0) {  // a savepoint from before the sequence
          if (st.kind == K::kRollbackTo) {
            resets = 0;
            stack.clear();
          }
          break;
        }
        if (st.kind == K::kRollbackTo) {
          resets = stack[i - 1].saved;
          stack.resize(i);  // the savepoint itself stays
        } else {
          stack.resize(i - 1);
        }
        break;
      }
    }
  }
  return resets;
}

std::vector<ParamQuery> ApplyQueries(const ParamCatalog& catalog,
                                     const std::vector<ParamChange>& changes) {
  std::vector<ParamQuery> out;
  ParamQuery rest;
  std::string resets;
  for (const ParamChange& ch : changes) {
    const std::string& name = catalog.name(ch.id);
    if (ch.value == nullptr) {
      if (ch.id == catalog.client_encoding_id()) {
        out.push_back({"RESET client_encoding", {}});
      } else {
        resets += ";RESET " + QuotedIdentifier(name);
      }
      continue;
    }
    std::string call = "pg_catalog.set_config(" + EscapedLiteral(name) + ", " +
                       EscapedLiteral(*ch.value) + ", false)";
    if (ch.id == catalog.client_encoding_id()) {
      out.push_back({"SELECT " + call, {ch.id}});
      continue;
    }
    rest.sql += rest.sql.empty() ? "SELECT " : ", ";
    rest.sql += call;
    rest.columns.push_back(ch.id);
  }
  if (rest.sql.empty() && !resets.empty()) {
    rest.sql = resets.substr(1);
  } else {
    rest.sql += resets;
  }
  if (!rest.sql.empty()) out.push_back(std::move(rest));
  return out;
}

std::string EscapedLiteral(std::string_view v) {
  std::string out = "E'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out += c;
    out += c;
  }
  return out + "'";
}

std::string QuotedIdentifier(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Result<std::vector<std::pair<std::string, std::string>>> ParseStartupOptions(
    std::string_view options) {
  // Words, as pg_split_opts splits them.
  std::vector<std::string> words;
  std::string word;
  bool in_word = false, escape = false;
  for (char c : options) {
    if (escape) {
      word += c;
      escape = false;
      in_word = true;
      continue;
    }
    if (c == '\\') {
      escape = true;
      in_word = true;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    word += c;
    in_word = true;
  }
  if (in_word) words.push_back(std::move(word));

  std::vector<std::pair<std::string, std::string>> out;
  auto setting = [&](std::string_view text, std::string_view how) -> Status {
    size_t eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return InvalidArgument(std::string(how) + std::string(text) + " requires a value");
    std::string name(text.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    out.emplace_back(std::move(name), std::string(text.substr(eq + 1)));
    return Status::Ok();
  };
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.rfind("--", 0) == 0 && w.size() > 2) {
      PGW_RETURN_IF_ERROR(setting(std::string_view(w).substr(2), "--"));
    } else if (w == "-c") {
      if (i + 1 == words.size()) return InvalidArgument("-c requires a value");
      PGW_RETURN_IF_ERROR(setting(words[++i], "-c "));
    } else if (w.rfind("-c", 0) == 0 && w.size() > 2) {
      PGW_RETURN_IF_ERROR(setting(std::string_view(w).substr(2), "-c "));
    } else {
      return InvalidArgument(
          "the proxy accepts only -c name=value and --name=value in options, not \"" + w + "\"");
    }
  }
  return out;
}

std::string CanonicalApplicationName(std::string_view v) {
  constexpr size_t kMax = 63;  // NAMEDATALEN - 1
  if (v.size() > kMax) {
    size_t cut = kMax;
    // Do not split a UTF-8 character: back up over continuation bytes.
    while (cut > 0 && (static_cast<unsigned char>(v[cut]) & 0xC0) == 0x80) --cut;
    v = v.substr(0, cut);
  }
  std::string out(v);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 32 || u > 126) c = '?';
  }
  return out;
}

bool ParseDataRow(std::string_view body, std::vector<std::string>* values) {
  values->clear();
  size_t pos = 0;
  int16_t n = 0;
  if (!pgwire::ReadInt16(body, &pos, &n) || n < 0) return false;
  for (int i = 0; i < n; ++i) {
    int32_t len = 0;
    if (!pgwire::ReadInt32(body, &pos, &len)) return false;
    if (len < 0) {
      values->emplace_back();
      continue;
    }
    if (pos + static_cast<size_t>(len) > body.size()) return false;
    values->emplace_back(body.substr(pos, static_cast<size_t>(len)));
    pos += static_cast<size_t>(len);
  }
  return pos == body.size();
}

}  // namespace pgwarden::proxy
