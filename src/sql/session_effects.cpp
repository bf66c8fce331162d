// Session effects of SQL: a cheap word/lexer prefilter, then libpg_query's parse tree.
#include "sql/session_effects.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <array>
#include <cstring>

// libpg_query's copy of the GUC (one per thread, like all its state).
extern "C" {
extern __thread bool standard_conforming_strings;
}

namespace pgwarden::sql {
namespace {

// ---------------------------------------------------------------- prefilter

bool IdentStart(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
bool IdentCont(unsigned char c) { return IdentStart(c) || (c >= '0' && c <= '9') || c == '$'; }
bool DollarTagCont(unsigned char c) { return IdentStart(c) || (c >= '0' && c <= '9'); }
bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }
bool IsSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool EqualsLower(std::string_view word, std::string_view lower) {
  if (word.size() != lower.size()) return false;
  for (size_t i = 0; i < word.size(); ++i) {
    char c = word[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

bool StartsWithLower(std::string_view word, std::string_view lower) {
  return word.size() >= lower.size() && EqualsLower(word.substr(0, lower.size()), lower);
}

// Words that, wherever they appear, may mean a statement with session
// effects (lower case; checked per word, first by its first letter, since
// this runs on every query string).
bool IsTriggerWord(std::string_view w) {
  if (w.size() < 4) return false;
  char c = w[0];
  if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  switch (c) {
    case 'r':
      return EqualsLower(w, "reset");
    case 'd':
      return EqualsLower(w, "discard") || EqualsLower(w, "deallocate") ||
             EqualsLower(w, "declare") || EqualsLower(w, "dblink_connect") ||
             EqualsLower(w, "dblink_connect_u");
    case 'l':
      return EqualsLower(w, "listen") || EqualsLower(w, "load") || EqualsLower(w, "lastval");
    case 'p':
      return EqualsLower(w, "prepare") || StartsWithLower(w, "pg_temp") ||
             StartsWithLower(w, "pg_advisory_lock") || StartsWithLower(w, "pg_try_advisory_lock") ||
             EqualsLower(w, "pg_settings") || StartsWithLower(w, "pgw_");
    case 't':
      return EqualsLower(w, "temp") || EqualsLower(w, "temporary");
    case 's':
      return EqualsLower(w, "set_config");
    case 'c':
      return EqualsLower(w, "currval");
    default:
      return false;
  }
}

// Skips a quoted literal or identifier starting at s[i] (the quote). Returns
// the index after the closing quote, or npos when it does not end.
size_t SkipQuoted(std::string_view s, size_t i, char quote, bool backslash_escapes) {
  for (size_t j = i + 1; j < s.size(); ++j) {
    if (backslash_escapes && s[j] == '\\') {
      ++j;
      continue;
    }
    if (s[j] == quote) {
      if (j + 1 < s.size() && s[j + 1] == quote) {
        ++j;
        continue;
      }
      return j + 1;
    }
  }
  return std::string_view::npos;
}

// One pass of a lexer that knows comments, literals, quoted identifiers and
// dollar quoting, as PostgreSQL 15's scanner reads them. True when a
// statement begins with SET or DO, when a word or a quoted identifier is one
// of the trigger words, when an identifier is spelled with Unicode escapes
// (U&"..."), or when the text cannot be lexed to its end (an unterminated
// literal or comment: assume the worst). Literals are data and are skipped.
// `backslash_strings`: standard_conforming_strings is off.
bool MaySpellAnEffect(std::string_view s, bool backslash_strings) {
  constexpr size_t npos = std::string_view::npos;
  size_t i = 0;
  const size_t n = s.size();
  bool at_start = true;
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    if (c == '-' && i + 1 < n && s[i + 1] == '-') {  // to the end of the line: \n or \r
      size_t e = s.find_first_of("\n\r", i);
      i = e == npos ? n : e + 1;
      continue;
    }
    if (c == '/' && i + 1 < n && s[i + 1] == '*') {
      int depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
      if (depth > 0) return true;
      continue;
    }
    if (c == ';') {
      at_start = true;
      ++i;
      continue;
    }
    if (c == '\'') {
      i = SkipQuoted(s, i, '\'', backslash_strings);
      if (i == npos) return true;
      at_start = false;
      continue;
    }
    if (c == '"') {  // a quoted identifier: a name like any other
      size_t end = SkipQuoted(s, i, '"', false);
      if (end == npos) return true;
      if (IsTriggerWord(s.substr(i + 1, end - i - 2))) return true;
      i = end;
      at_start = false;
      continue;
    }
    if (c == '$') {
      size_t j = i + 1;
      if (j < n && IsDigit(static_cast<unsigned char>(s[j]))) {  // $1: a parameter
        while (j < n && IsDigit(static_cast<unsigned char>(s[j]))) ++j;
        i = j;
        at_start = false;
        continue;
      }
      if (j < n && (s[j] == '$' || IdentStart(static_cast<unsigned char>(s[j])))) {
        while (j < n && DollarTagCont(static_cast<unsigned char>(s[j]))) ++j;
        if (j < n && s[j] == '$') {
          std::string_view tag = s.substr(i, j - i + 1);
          size_t close = s.find(tag, j + 1);
          if (close == npos) return true;
          i = close + tag.size();
          at_start = false;
          continue;
        }
      }
      ++i;
      at_start = false;
      continue;
    }
    if (IsDigit(c)) {  // a number as PostgreSQL 15 reads one: digits[.digits][e[+-]digits]
      size_t j = i;
      while (j < n && IsDigit(static_cast<unsigned char>(s[j]))) ++j;
      if (j < n && s[j] == '.') {
        ++j;
        while (j < n && IsDigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < n && IsDigit(static_cast<unsigned char>(s[k]))) {
          while (k < n && IsDigit(static_cast<unsigned char>(s[k]))) ++k;
          j = k;
        }
      }
      i = j;
      at_start = false;
      continue;
    }
    if (IdentStart(c)) {
      size_t j = i;
      while (j < n && IdentCont(static_cast<unsigned char>(s[j]))) ++j;
      std::string_view word = s.substr(i, j - i);
      if (at_start && (EqualsLower(word, "set") || EqualsLower(word, "do"))) return true;
      if (IsTriggerWord(word)) return true;
      at_start = false;
      if (j < n && s[j] == '\'') {
        // E'...' always reads backslashes; U&'', B'', X'', N'' and a type
        // name before a literal follow the setting.
        bool escapes = EqualsLower(word, "e") || backslash_strings;
        if (EqualsLower(word, "u")) escapes = false;
        i = SkipQuoted(s, j, '\'', escapes);
        if (i == npos) return true;
        continue;
      }
      if (j + 1 < n && s[j] == '&' && EqualsLower(word, "u")) {
        if (s[j + 1] == '"') return true;  // an identifier with escapes: read it as anything
        if (s[j + 1] == '\'') {
          i = SkipQuoted(s, j + 1, '\'', false);
          if (i == npos) return true;
          continue;
        }
      }
      i = j;
      continue;
    }
    at_start = false;
    ++i;
  }
  return false;
}

// ---------------------------------------------------------------- parse tree

constexpr int kMaxDepth = 2000;
constexpr int32_t kCursorOptHold = 0x0020;  // CURSOR_OPT_HOLD in parsenodes.h

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsTempName(const char* s) { return s != nullptr && std::strncmp(s, "pg_temp", 7) == 0; }

bool IsTempRelation(const PgQuery__RangeVar* rv) {
  if (rv == nullptr) return false;
  return (rv->relpersistence != nullptr && rv->relpersistence[0] == 't') ||
         IsTempName(rv->schemaname);
}

// A string constant argument ('x' or 'x'::type), or nullptr.
const char* ConstString(const PgQuery__Node* n) {
  if (n == nullptr) return nullptr;
  if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) return ConstString(n->type_cast->arg);
  if (n->node_case != PG_QUERY__NODE__NODE_A_CONST) return nullptr;
  const PgQuery__AConst* c = n->a_const;
  if (c->val_case == PG_QUERY__A__CONST__VAL_SVAL && c->sval) return c->sval->sval;
  return nullptr;
}

bool IsNullConst(const PgQuery__Node* n) {
  if (n == nullptr) return false;
  if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) return IsNullConst(n->type_cast->arg);
  return n->node_case == PG_QUERY__NODE__NODE_A_CONST && n->a_const->isnull;
}

// true / false for a boolean constant (true, 't'::bool, 'on', ...), else -1.
int ConstBool(const PgQuery__Node* n) {
  if (n == nullptr) return -1;
  if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) return ConstBool(n->type_cast->arg);
  if (n->node_case != PG_QUERY__NODE__NODE_A_CONST) return -1;
  const PgQuery__AConst* c = n->a_const;
  if (c->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL && c->boolval) return c->boolval->boolval;
  if (c->val_case == PG_QUERY__A__CONST__VAL_SVAL && c->sval) {
    std::string v = Lower(c->sval->sval);
    if (v == "t" || v == "true" || v == "on" || v == "yes" || v == "1") return 1;
    if (v == "f" || v == "false" || v == "off" || v == "no" || v == "0") return 0;
  }
  if (c->val_case == PG_QUERY__A__CONST__VAL_IVAL && c->ival) return c->ival->ival != 0;
  return -1;
}

// A value the proxy cannot carry between servers: a search_path that puts
// pg_temp where it creates tables, a client_encoding the proxy cannot lex, or
// for those two any value that is not a constant.
bool ContainsTempSchema(std::string_view v) {
  for (size_t i = 0; i + 7 <= v.size(); ++i) {
    if (StartsWithLower(v.substr(i), "pg_temp")) return true;
  }
  return false;
}

void CheckValue(const std::string& name, PgQuery__Node* const* args, size_t n_args,
                SessionEffects* out) {
  if (name != "search_path" && name != "client_encoding") return;
  for (size_t i = 0; i < n_args; ++i) {
    const PgQuery__Node* a = args[i];
    const char* text = ConstString(a);
    std::string ident;
    if (text == nullptr && a->node_case == PG_QUERY__NODE__NODE_A_CONST && a->a_const->isnull)
      continue;
    if (text == nullptr) {  // SET search_path = a, b: identifiers come as constants too
      out->pins |= name == "search_path" ? kPinTempObject : kPinEncoding;
      return;
    }
    if (name == "search_path" && ContainsTempSchema(text)) out->pins |= kPinTempObject;
    if (name == "client_encoding" && IsUnsafeClientEncoding(text)) out->pins |= kPinEncoding;
  }
}

// The last part of a function's (possibly qualified) name.
std::string FunctionName(const PgQuery__FuncCall* f) {
  if (f->n_funcname == 0) return {};
  const PgQuery__Node* last = f->funcname[f->n_funcname - 1];
  if (last->node_case != PG_QUERY__NODE__NODE_STRING || !last->string) return {};
  return Lower(last->string->sval);
}

void VisitFuncCall(const PgQuery__FuncCall* f, SessionEffects* out) {
  std::string name = FunctionName(f);
  if (name == "set_config") {
    const char* param = f->n_args >= 1 ? ConstString(f->args[0]) : nullptr;
    int local = f->n_args >= 3 ? ConstBool(f->args[2]) : -1;
    if (param == nullptr) {
      out->pins |= kPinParameter;
    } else if (local != 1) {  // not transaction-local (or not known to be)
      // set_config(name, NULL, ...) resets the parameter, as RESET does.
      bool reset = f->n_args >= 2 && IsNullConst(f->args[1]);
      std::string name = Lower(param);
      if (!reset && f->n_args >= 2) CheckValue(name, &f->args[1], 1, out);
      out->steps.push_back({reset ? Step::Kind::kReset : Step::Kind::kSet, std::move(name)});
    }
  } else if (name == "pg_advisory_lock" || name == "pg_advisory_lock_shared" ||
             name == "pg_try_advisory_lock" || name == "pg_try_advisory_lock_shared") {
    out->pins |= kPinAdvisoryLock;
  } else if (name == "currval" || name == "lastval") {
    out->sequences = true;
  } else if (name == "dblink_connect" || name == "dblink_connect_u") {
    out->pins |= kPinRemoteLink;
  }
}

// Walks every message below `m` (through protobuf-c's descriptors, so every
// node type is covered) for function calls and temporary relations.
void WalkTree(const ProtobufCMessage* m, int depth, SessionEffects* out) {
  if (m == nullptr) return;
  if (depth > kMaxDepth) {
    out->pins |= kPinTooComplex;
    return;
  }
  const ProtobufCMessageDescriptor* d = m->descriptor;
  if (d == &pg_query__func_call__descriptor) {
    VisitFuncCall(reinterpret_cast<const PgQuery__FuncCall*>(m), out);
  } else if (d == &pg_query__range_var__descriptor) {
    // Reading a temporary relation is harmless (no other client's can exist
    // on a pooled connection); creating one is caught per statement, but a
    // RangeVar marked temporary only ever appears where one is created.
    auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
    if (rv->relpersistence != nullptr && rv->relpersistence[0] == 't') out->pins |= kPinTempObject;
  } else if (d == &pg_query__into_clause__descriptor) {
    // SELECT ... INTO pg_temp.x (or INTO TEMP x)
    auto* into = reinterpret_cast<const PgQuery__IntoClause*>(m);
    if (IsTempRelation(into->rel) && into->on_commit != PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
      out->pins |= kPinTempObject;
  }
  const char* base = reinterpret_cast<const char*>(m);
  for (unsigned i = 0; i < d->n_fields; ++i) {
    const ProtobufCFieldDescriptor& f = d->fields[i];
    if (f.type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      uint32_t which = *reinterpret_cast<const uint32_t*>(base + f.quantifier_offset);
      if (which != f.id) continue;
    }
    if (f.label == PROTOBUF_C_LABEL_REPEATED) {
      size_t count = *reinterpret_cast<const size_t*>(base + f.quantifier_offset);
      auto* items = *reinterpret_cast<ProtobufCMessage* const* const*>(base + f.offset);
      for (size_t k = 0; k < count; ++k) WalkTree(items[k], depth + 1, out);
    } else {
      WalkTree(*reinterpret_cast<ProtobufCMessage* const*>(base + f.offset), depth + 1, out);
    }
  }
}

// Names a creating statement gives its object: any part "pg_temp…" means the
// temporary schema.
bool AnyTempName(PgQuery__Node* const* names, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const PgQuery__Node* x = names[i];
    if (x->node_case == PG_QUERY__NODE__NODE_STRING && x->string && IsTempName(x->string->sval))
      return true;
  }
  return false;
}

void VisitVariableSet(const PgQuery__VariableSetStmt* v, SessionEffects* out) {
  using K = PgQuery__VariableSetKind;
  if (v->kind == K::PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL) {
    out->steps.push_back({Step::Kind::kResetAll, {}});
    return;
  }
  std::string name = Lower(v->name ? v->name : "");
  if (v->kind == K::PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI) {
    // SET TRANSACTION [SNAPSHOT] lasts for the transaction; SET SESSION
    // CHARACTERISTICS changes the session's defaults.
    if (name == "session characteristics") out->pins |= kPinCharacteristics;
    return;
  }
  if (v->is_local) return;
  if (name == "role" || name == "session_authorization") {
    out->pins |= kPinRole;
    return;
  }
  bool reset = v->kind == K::PG_QUERY__VARIABLE_SET_KIND__VAR_RESET ||
               v->kind == K::PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT;
  if (!reset) CheckValue(name, v->args, v->n_args, out);
  out->steps.push_back({reset ? Step::Kind::kReset : Step::Kind::kSet, std::move(name)});
}

void VisitTransaction(const PgQuery__TransactionStmt* t, SessionEffects* out) {
  using K = PgQuery__TransactionStmtKind;
  std::string name = t->savepoint_name ? t->savepoint_name : "";
  switch (t->kind) {
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
      out->steps.push_back({Step::Kind::kBegin, {}});
      break;
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
      out->steps.push_back({Step::Kind::kCommit, {}});
      if (t->chain) out->steps.push_back({Step::Kind::kBegin, {}});
      break;
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
      out->steps.push_back({Step::Kind::kRollback, {}});
      if (t->chain) out->steps.push_back({Step::Kind::kBegin, {}});
      break;
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
      out->steps.push_back({Step::Kind::kSavepoint, std::move(name)});
      break;
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
      out->steps.push_back({Step::Kind::kRelease, std::move(name)});
      break;
    case K::PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
      out->steps.push_back({Step::Kind::kRollbackTo, std::move(name)});
      break;
    default:
      break;  // COMMIT / ROLLBACK PREPARED: another transaction's
  }
}

void VisitStatement(const PgQuery__Node* n, SessionEffects* out) {
  if (n == nullptr) return;
  switch (n->node_case) {
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
      VisitVariableSet(n->variable_set_stmt, out);
      return;  // its arguments are constants
    case PG_QUERY__NODE__NODE_DISCARD_STMT:
      if (n->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
        out->discard_all = true;
        out->steps.push_back({Step::Kind::kResetAll, {}});
      }
      return;
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
      VisitTransaction(n->transaction_stmt, out);
      return;
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
      out->pins |= kPinListen;
      return;
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
      out->pins |= kPinPrepare;
      break;  // and what the prepared query calls
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT: {
      const char* name = n->deallocate_stmt->name;
      if (name == nullptr || name[0] == '\0')
        out->deallocate_all = true;
      else
        out->deallocated.emplace_back(name);
      return;
    }
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
      if (n->declare_cursor_stmt->options & kCursorOptHold) out->pins |= kPinHoldCursor;
      break;
    case PG_QUERY__NODE__NODE_UPDATE_STMT: {
      const PgQuery__RangeVar* rel = n->update_stmt->relation;
      if (rel && rel->relname && std::strcmp(rel->relname, "pg_settings") == 0)
        out->pins |= kPinSettingsTable;
      break;
    }
    case PG_QUERY__NODE__NODE_EXECUTE_STMT:
      if (n->execute_stmt->name && std::strncmp(n->execute_stmt->name, "pgw_", 4) == 0)
        out->pins |= kPinProxyStatement;
      break;
    case PG_QUERY__NODE__NODE_LOAD_STMT:
      out->pins |= kPinLoad;
      return;
    case PG_QUERY__NODE__NODE_DO_STMT:
      out->pins |= kPinDo;
      return;
    case PG_QUERY__NODE__NODE_CREATE_STMT: {
      const PgQuery__CreateStmt* c = n->create_stmt;
      if (IsTempRelation(c->relation) && c->oncommit != PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
        out->pins |= kPinTempObject;
      // A temporary table that drops itself at commit leaves nothing behind;
      // skip the RangeVar check of the walk for it.
      if (IsTempRelation(c->relation)) {
        for (size_t i = 0; i < c->n_table_elts; ++i) WalkTree(&c->table_elts[i]->base, 1, out);
        return;
      }
      break;
    }
    case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT: {
      const PgQuery__CreateTableAsStmt* c = n->create_table_as_stmt;
      if (c->into && IsTempRelation(c->into->rel)) {
        if (c->into->on_commit != PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
          out->pins |= kPinTempObject;
        if (c->query != nullptr) WalkTree(&c->query->base, 1, out);
        return;
      }
      break;
    }
    case PG_QUERY__NODE__NODE_VIEW_STMT:
      if (IsTempRelation(n->view_stmt->view)) out->pins |= kPinTempObject;
      break;
    case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
      if (IsTempRelation(n->create_seq_stmt->sequence)) out->pins |= kPinTempObject;
      break;
    case PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT: {
      // Its SET clauses apply inside the function only; its body is a string.
      const PgQuery__CreateFunctionStmt* f = n->create_function_stmt;
      if (AnyTempName(f->funcname, f->n_funcname)) out->pins |= kPinTempObject;
      return;
    }
    case PG_QUERY__NODE__NODE_DEFINE_STMT:
      if (AnyTempName(n->define_stmt->defnames, n->define_stmt->n_defnames))
        out->pins |= kPinTempObject;
      return;
    case PG_QUERY__NODE__NODE_COMPOSITE_TYPE_STMT:
      if (IsTempRelation(n->composite_type_stmt->typevar)) out->pins |= kPinTempObject;
      return;
    case PG_QUERY__NODE__NODE_CREATE_DOMAIN_STMT:
      if (AnyTempName(n->create_domain_stmt->domainname, n->create_domain_stmt->n_domainname))
        out->pins |= kPinTempObject;
      return;
    case PG_QUERY__NODE__NODE_CREATE_ENUM_STMT:
      if (AnyTempName(n->create_enum_stmt->type_name, n->create_enum_stmt->n_type_name))
        out->pins |= kPinTempObject;
      return;
    case PG_QUERY__NODE__NODE_ALTER_FUNCTION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_SET_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_SET_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SYSTEM_STMT:
      return;  // their SET clauses are for later sessions or other code
    default:
      break;
  }
  WalkTree(&n->base, 0, out);
}

}  // namespace

namespace {

// The words of a short statement: identifiers lower-cased, quoted ones as
// written; stops at anything else (a literal, a comment, punctuation).
std::vector<std::string> LeadingWords(std::string_view s, size_t max_words) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < s.size() && words.size() < max_words) {
    auto c = static_cast<unsigned char>(s[i]);
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    if (c == '"') {
      size_t end = SkipQuoted(s, i, '"', false);
      if (end == std::string_view::npos) break;
      std::string w;
      for (size_t k = i + 1; k + 1 < end; ++k) {
        w += s[k];
        if (s[k] == '"') ++k;  // a doubled quote
      }
      words.push_back(std::move(w));
      i = end;
      continue;
    }
    if (!IdentStart(c)) break;
    size_t j = i;
    while (j < s.size() && IdentCont(static_cast<unsigned char>(s[j]))) ++j;
    words.push_back(Lower(s.substr(i, j - i)));
    i = j;
  }
  return words;
}

}  // namespace

std::optional<Step> TransactionStep(std::string_view sql) {
  // First a look at the first letter, which rules out nearly every statement.
  size_t i = 0;
  while (i < sql.size() && IsSpace(static_cast<unsigned char>(sql[i]))) ++i;
  if (i == sql.size()) return std::nullopt;
  char c = sql[i];
  if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  if (c != 'b' && c != 's' && c != 'c' && c != 'e' && c != 'r' && c != 'a' && c != 'p')
    return std::nullopt;
  std::vector<std::string> w = LeadingWords(sql, 4);
  if (w.empty()) return std::nullopt;
  using K = Step::Kind;
  const std::string& first = w[0];
  if (first == "begin" || (first == "start" && w.size() > 1 && w[1] == "transaction"))
    return Step{K::kBegin, {}};
  if (first == "commit" || first == "end") {
    if (w.size() > 1 && w[1] == "prepared") return std::nullopt;
    return Step{K::kCommit, {}};
  }
  if (first == "prepare" && w.size() > 1 && w[1] == "transaction") return Step{K::kCommit, {}};
  if (first == "savepoint" && w.size() > 1) return Step{K::kSavepoint, w[1]};
  if (first == "release" && w.size() > 1) {
    size_t n = w[1] == "savepoint" ? 2 : 1;
    if (w.size() > n) return Step{K::kRelease, w[n]};
    return std::nullopt;
  }
  if (first == "rollback" || first == "abort") {
    size_t k = 1;
    if (k < w.size() && (w[k] == "work" || w[k] == "transaction")) ++k;
    if (k < w.size() && w[k] == "prepared") return std::nullopt;
    if (k < w.size() && w[k] == "to") {
      ++k;
      if (k < w.size() && w[k] == "savepoint") ++k;
      if (k < w.size()) return Step{K::kRollbackTo, w[k]};
      return std::nullopt;
    }
    return Step{K::kRollback, {}};
  }
  return std::nullopt;
}

bool IsUnsafeClientEncoding(std::string_view name) {
  // PostgreSQL's client-only encodings (and their aliases), in which a
  // character's second byte may be 0x5C.
  static const char* const kUnsafe[] = {
      "sjis", "shift_jis", "shiftjis",   "mskanji", "win932", "windows932", "shift_jis_2004",
      "big5", "win950",    "windows950", "gbk",     "win936", "windows936", "cp936",
      "uhc",  "win949",    "windows949", "johab",   "gb18030"};
  std::string n;
  for (char c : name) {
    if (c == '-' || c == '_' || c == ' ') continue;
    n += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  for (const char* u : kUnsafe) {
    std::string k;
    for (const char* p = u; *p; ++p)
      if (*p != '_') k += *p;
    if (n == k) return true;
  }
  return false;
}

const char* PinReasonText(uint32_t pins) {
  if (pins & kPinRole) return "SET ROLE / SET SESSION AUTHORIZATION";
  if (pins & kPinParameter) return "set_config() of a parameter named by an expression";
  if (pins & kPinTempObject) return "a temporary object";
  if (pins & kPinListen) return "LISTEN";
  if (pins & kPinPrepare) return "PREPARE";
  if (pins & kPinHoldCursor) return "a cursor WITH HOLD";
  if (pins & kPinAdvisoryLock) return "a session advisory lock";
  if (pins & kPinLoad) return "LOAD";
  if (pins & kPinDo) return "a DO block";
  if (pins & kPinCharacteristics) return "SET SESSION CHARACTERISTICS";
  if (pins & kPinRemoteLink) return "dblink_connect()";
  if (pins & kPinTooComplex) return "a statement too big or too deeply nested to analyse";
  if (pins & kPinEncoding) return "a client_encoding whose bytes the proxy cannot read";
  if (pins & kPinAmbiguous) return "a statement that depends on standard_conforming_strings";
  if (pins & kPinUnparsed) return "a statement PostgreSQL 15's grammar refuses";
  if (pins & kPinProxyStatement) return "a statement that names one of the proxy's own";
  if (pins & kPinSettingsTable) return "UPDATE pg_settings";
  return "";
}

bool MayAffectSession(std::string_view sql) {
  if (MaySpellAnEffect(sql, false)) return true;
  // Without a backslash both readings of the literals are the same.
  return sql.find('\\') != std::string_view::npos && MaySpellAnEffect(sql, true);
}

namespace {

// Longer strings are not parsed on a worker thread: their client is pinned.
constexpr size_t kMaxAnalysedBytes = 1 << 20;

bool SameEffects(const SessionEffects& a, const SessionEffects& b) {
  return a.steps == b.steps && a.discard_all == b.discard_all && a.deallocated == b.deallocated &&
         a.deallocate_all == b.deallocate_all && a.sequences == b.sequences && a.pins == b.pins &&
         a.parse_error == b.parse_error && a.statements == b.statements;
}

SessionEffects AnalyzeOnce(std::string_view sql, bool scs) {
  SessionEffects out;
  std::string text(sql);  // NUL-terminated for the C API
  standard_conforming_strings = scs;
  PgQueryProtobufParseResult r = pg_query_parse_protobuf(text.c_str());
  if (r.error != nullptr) {
    // PostgreSQL 15 would refuse it too; but what it refuses the proxy
    // cannot see into, should the server read it otherwise.
    out.parse_error = true;
    out.pins |= kPinUnparsed;
    pg_query_free_protobuf_parse_result(r);
    return out;
  }
  PgQuery__ParseResult* tree = pg_query__parse_result__unpack(
      nullptr, r.parse_tree.len, reinterpret_cast<const uint8_t*>(r.parse_tree.data));
  pg_query_free_protobuf_parse_result(r);
  if (tree == nullptr) {
    out.pins |= kPinTooComplex;  // could not be read back: assume the worst
    return out;
  }
  out.statements = static_cast<int>(tree->n_stmts);
  for (size_t i = 0; i < tree->n_stmts; ++i) VisitStatement(tree->stmts[i]->stmt, &out);
  pg_query__parse_result__free_unpacked(tree, nullptr);
  return out;
}

}  // namespace

SessionEffects AnalyzeSessionEffects(std::string_view sql, bool scs) {
  // Stop at a NUL, as PostgreSQL does for the protocol's strings.
  sql = sql.substr(0, sql.find('\0'));
  if (sql.size() > kMaxAnalysedBytes) {  // not worth a worker thread's time: assume the worst
    SessionEffects out;
    out.pins |= kPinTooComplex;
    return out;
  }
  SessionEffects out = AnalyzeOnce(sql, scs);
  // With a backslash the text may read differently under the other setting
  // (a query sent right behind a SET standard_conforming_strings is read by
  // the server under the new one): if it does, assume the worst.
  if (sql.find('\\') != std::string_view::npos) {
    SessionEffects other = AnalyzeOnce(sql, !scs);
    if (!SameEffects(out, other)) out.pins |= kPinAmbiguous;
  }
  return out;
}

}  // namespace pgwarden::sql
