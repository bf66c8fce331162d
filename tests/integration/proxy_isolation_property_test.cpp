// An isolation property test: seeded random interleavings of clients doing SET / RESET / DISCARD /
// transactions / disconnects over a pool of two server connections, each checked against a model.
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <random>
#include <sstream>

#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using Clk = std::chrono::steady_clock;

// Every libpq call of the test answers within this or the test fails.
constexpr std::chrono::milliseconds kCallTimeout{10000};
// A transaction is ended (COMMIT, ROLLBACK or a disconnect) after at most this
// many operations of all clients.
constexpr int kMaxTransactionOps = 12;
// How many operations the failure message shows.
constexpr size_t kHistoryShown = 20;

// One tracked parameter and the values the test gives it, each spelled as
// current_setting() shows it (checked in the setup).
struct ParamSpec {
  std::string name;  // as PostgreSQL reports it in ParameterStatus
  bool reported;     // PostgreSQL sends it in ParameterStatus
  bool list;         // SET takes a list of identifiers (search_path), not a literal
  std::vector<std::string> values;
};

// The reported parameters a client may set, then proxy.track_extra_parameters'
// defaults. idle_in_transaction_session_timeout gets values far above the
// test's run time, so that no transaction left open across other clients'
// operations ends by it on a busy machine.
std::vector<ParamSpec> TrackedParams() {
  return {
      {"application_name", true, false, {"a", "b", ""}},
      {"client_encoding", true, false, {"UTF8", "LATIN1", "WIN1252"}},
      {"DateStyle", true, false, {"ISO, MDY", "SQL, DMY", "German, DMY"}},
      {"default_transaction_read_only", true, false, {"off", "on"}},
      {"IntervalStyle", true, false, {"postgres", "iso_8601", "sql_standard"}},
      {"standard_conforming_strings", true, false, {"on", "off"}},
      {"TimeZone", true, false, {"UTC", "Asia/Tokyo", "America/New_York"}},
      {"search_path", false, true, {"\"$user\", public", "public", "pg_catalog, public"}},
      {"statement_timeout", false, false, {"0", "1s", "2min"}},
      {"lock_timeout", false, false, {"0", "5s"}},
      {"idle_in_transaction_session_timeout", false, false, {"0", "1h", "10min"}},
      {"extra_float_digits", false, false, {"1", "2", "3"}},
  };
}

// The query that reads every tracked parameter, in TrackedParams() order.
std::string ReadbackQuery(const std::vector<ParamSpec>& specs) {
  std::string q = "SELECT ";
  for (size_t i = 0; i < specs.size(); ++i)
    q += (i ? ", " : "") + std::string("current_setting('") + specs[i].name + "')";
  return q;
}

// --- libpq with a deadline ----------------------------------------------------------

// What one query string did: the first error, or success; the first row of
// the last result that had rows.
struct Reply {
  bool ok = false;
  bool lost = false;     // no answer within kCallTimeout, or the connection broke
  std::string sqlstate;  // of the error ("" when ok)
  std::string error;     // its message
  std::vector<std::string> row;

  // "ok" or "error SQLSTATE message".
  std::string Describe() const {
    if (ok) return "ok";
    if (lost) return "no answer (" + error + ")";
    std::string m = error;
    while (!m.empty() && m.back() == '\n') m.pop_back();
    return "error " + sqlstate + " " + m;
  }
};

// PQsendQuery and every result, bounded by kCallTimeout.
Reply Exec(PGconn* c, const std::string& sql) {
  Reply r;
  if (!PQsendQuery(c, sql.c_str())) {
    r.lost = true;
    r.error = PQerrorMessage(c);
    return r;
  }
  const auto deadline = Clk::now() + kCallTimeout;
  bool failed = false;
  for (;;) {
    while (PQisBusy(c)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now());
      if (left.count() <= 0) {
        r.lost = true;
        r.error = "no answer within " + std::to_string(kCallTimeout.count()) + " ms";
        return r;
      }
      pollfd p{PQsocket(c), POLLIN, 0};
      poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      if (!PQconsumeInput(c)) {
        r.lost = true;
        r.error = PQerrorMessage(c);
        return r;
      }
    }
    PqResult res(PQgetResult(c));
    if (!res) break;
    ExecStatusType st = PQresultStatus(res.get());
    if (st == PGRES_TUPLES_OK) {
      if (PQntuples(res.get()) > 0) {
        r.row.clear();
        for (int i = 0; i < PQnfields(res.get()); ++i) r.row.push_back(PQgetvalue(res.get(), 0, i));
      }
    } else if (st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY && !failed) {
      failed = true;
      const char* code = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
      r.sqlstate = code ? code : "";
      r.error = PQresultErrorMessage(res.get());
    }
  }
  r.ok = !failed;
  if (PQstatus(c) == CONNECTION_BAD) r.lost = true;
  return r;
}

void IgnoreNotice(void*, const char*) {}

// A connection (connect_timeout=5 in the conninfo) whose notices (SET LOCAL
// outside a transaction, BEGIN twice) go nowhere.
PqConn Open(const std::string& conninfo, std::string* error) {
  PqConn c = OpenPq(conninfo, error);
  if (c) PQsetNoticeProcessor(c.get(), IgnoreNotice, nullptr);
  return c;
}

// --- The statements and their model -------------------------------------------------

// One statement of a query string.
enum class StmtKind {
  kSet,             // SET x = v
  kSetDefault,      // SET x TO DEFAULT
  kReset,           // RESET x
  kResetAll,        // RESET ALL
  kDiscardAll,      // DISCARD ALL
  kSetConfig,       // SELECT set_config('x', 'v', false)
  kSetConfigLocal,  // SELECT set_config('x', 'v', true)
  kSetLocal,        // SET LOCAL x = v
  kBegin,           // BEGIN
  kCommit,          // COMMIT
  kRollback,        // ROLLBACK
  kFail,            // SELECT 1/0
  kSavepoint,       // SAVEPOINT name (in `value`)
  kRollbackTo,      // ROLLBACK TO SAVEPOINT name
  kRelease,         // RELEASE SAVEPOINT name
};

struct Stmt {
  StmtKind kind;
  int param = -1;  // index into TrackedParams()
  std::string value;
};

// The SQL of one statement.
std::string StmtSql(const Stmt& s, const std::vector<ParamSpec>& specs) {
  const std::string name = s.param >= 0 ? specs[static_cast<size_t>(s.param)].name : "";
  const bool list = s.param >= 0 && specs[static_cast<size_t>(s.param)].list;
  const std::string rhs = list ? s.value : pg::QuoteLiteral(s.value);
  switch (s.kind) {
    case StmtKind::kSet:
      return "SET " + name + " = " + rhs;
    case StmtKind::kSetDefault:
      return "SET " + name + " TO DEFAULT";
    case StmtKind::kReset:
      return "RESET " + name;
    case StmtKind::kResetAll:
      return "RESET ALL";
    case StmtKind::kDiscardAll:
      return "DISCARD ALL";
    case StmtKind::kSetConfig:
      return "SELECT set_config('" + name + "', " + pg::QuoteLiteral(s.value) + ", false)";
    case StmtKind::kSetConfigLocal:
      return "SELECT set_config('" + name + "', " + pg::QuoteLiteral(s.value) + ", true)";
    case StmtKind::kSetLocal:
      return "SET LOCAL " + name + " = " + rhs;
    case StmtKind::kBegin:
      return "BEGIN";
    case StmtKind::kCommit:
      return "COMMIT";
    case StmtKind::kRollback:
      return "ROLLBACK";
    case StmtKind::kFail:
      return "SELECT 1/0";
    case StmtKind::kSavepoint:
      return "SAVEPOINT " + s.value;
    case StmtKind::kRollbackTo:
      return "ROLLBACK TO SAVEPOINT " + s.value;
    case StmtKind::kRelease:
      return "RELEASE SAVEPOINT " + s.value;
  }
  return "";
}

std::string StringSql(const std::vector<Stmt>& stmts, const std::vector<ParamSpec>& specs) {
  std::string sql;
  for (const Stmt& s : stmts) sql += (sql.empty() ? "" : "; ") + StmtSql(s, specs);
  return sql;
}

// What one client's session should show, with PostgreSQL's semantics: a
// parameter's reset value is what the client gave at startup, else the
// server's default; SET and set_config(.., false) last for the session once
// their transaction commits; SET LOCAL and set_config(.., true) for their
// transaction; a rollback undoes every change of the transaction, a rollback
// to a savepoint every change since the savepoint; a query string of several
// statements outside a transaction block is one implicit transaction. Owned by
// one test run.
class ClientModel {
 public:
  // Where the session is.
  enum class Txn {
    kIdle,      // no transaction
    kImplicit,  // inside a query string outside a transaction block
    kExplicit,  // in a transaction block (BEGIN)
    kAborted,   // in a failed transaction block: only COMMIT / ROLLBACK work
  };

  explicit ClientModel(const std::vector<std::string>& defaults) : defaults_(defaults) {}

  // A new session with these startup values (nullopt: not given).
  void Connect(const std::vector<std::optional<std::string>>& startup) {
    startup_ = startup;
    cur_.clear();
    for (size_t i = 0; i < defaults_.size(); ++i) cur_.push_back(ResetValue(static_cast<int>(i)));
    session_ = before_ = cur_;
    txn_ = Txn::kIdle;
    reset_in_txn_ = false;
  }

  // Applies one query string; "" when PostgreSQL answers it without error,
  // else the SQLSTATE of its error.
  std::string Apply(const std::vector<Stmt>& stmts) {
    const bool several = stmts.size() > 1;
    for (const Stmt& s : stmts) {
      if (txn_ == Txn::kAborted) {
        if (s.kind == StmtKind::kCommit || s.kind == StmtKind::kRollback) {
          End(false);  // COMMIT of a failed transaction rolls it back
          continue;
        }
        if (s.kind == StmtKind::kRollbackTo) {
          RollbackTo(s.value);
          continue;
        }
        return "25P02";
      }
      if (txn_ == Txn::kIdle) {
        before_ = session_ = cur_;
        txn_ = Txn::kImplicit;
        reset_in_txn_ = false;
      }
      const size_t p = static_cast<size_t>(std::max(s.param, 0));
      switch (s.kind) {
        case StmtKind::kBegin:
          txn_ = Txn::kExplicit;  // already in one: a warning and nothing more
          break;
        case StmtKind::kCommit:
          End(true);
          break;
        case StmtKind::kRollback:
          End(false);
          break;
        case StmtKind::kFail:
          return Fail("22012");
        case StmtKind::kDiscardAll:
          if (txn_ == Txn::kExplicit || several) return Fail("25001");
          ResetAll();
          break;
        case StmtKind::kSet:
        case StmtKind::kSetConfig:
          cur_[p] = session_[p] = s.value;
          break;
        case StmtKind::kSetDefault:
        case StmtKind::kReset:
          cur_[p] = session_[p] = ResetValue(s.param);
          reset_in_txn_ = true;
          break;
        case StmtKind::kResetAll:
          ResetAll();
          break;
        case StmtKind::kSetLocal:
        case StmtKind::kSetConfigLocal:
          cur_[p] = s.value;
          break;
        case StmtKind::kSavepoint:  // (only generated in a transaction block)
          savepoints_.push_back({s.value, cur_, session_});
          break;
        case StmtKind::kRollbackTo:
          RollbackTo(s.value);
          break;
        case StmtKind::kRelease:
          savepoints_.resize(SavepointIndex(s.value));
          break;
      }
    }
    if (txn_ == Txn::kImplicit) End(true);
    return "";
  }

  // The client went away: its transaction is rolled back.
  void Disconnect() {
    if (txn_ != Txn::kIdle) End(false);
  }

  Txn txn() const { return txn_; }
  // In a transaction block (failed or not) that stays open across other clients' operations.
  bool holding() const { return txn_ == Txn::kExplicit || txn_ == Txn::kAborted; }
  // The parameters can be read: not in a failed transaction.
  bool readable() const { return txn_ != Txn::kAborted; }
  // Through the proxy they can be compared with the model: outside a
  // transaction, or in one that did not RESET (there the proxy may show the
  // server's default until the transaction ends).
  bool proxy_comparable() const {
    return txn_ == Txn::kIdle || (txn_ == Txn::kExplicit && !reset_in_txn_);
  }
  const std::vector<std::string>& current() const { return cur_; }
  const std::vector<std::optional<std::string>>& startup() const { return startup_; }
  // The names of the savepoints in the open transaction, oldest first.
  std::vector<std::string> savepoints() const {
    std::vector<std::string> out;
    for (const auto& sp : savepoints_) out.push_back(sp.name);
    return out;
  }

 private:
  std::string ResetValue(int p) const {
    const auto& s = startup_[static_cast<size_t>(p)];
    return s ? *s : defaults_[static_cast<size_t>(p)];
  }
  void ResetAll() {
    for (size_t i = 0; i < cur_.size(); ++i)
      cur_[i] = session_[i] = ResetValue(static_cast<int>(i));
    reset_in_txn_ = true;
  }
  // An error: a transaction block fails and stays open, an implicit one is rolled back.
  std::string Fail(const std::string& sqlstate) {
    if (txn_ == Txn::kExplicit)
      txn_ = Txn::kAborted;
    else
      End(false);
    return sqlstate;
  }
  void End(bool commit) {
    if (commit)
      cur_ = session_;
    else
      cur_ = session_ = before_;
    txn_ = Txn::kIdle;
    reset_in_txn_ = false;
    savepoints_.clear();
  }
  // The latest savepoint of that name (the test only names existing ones).
  size_t SavepointIndex(const std::string& name) const {
    for (size_t i = savepoints_.size(); i > 0; --i)
      if (savepoints_[i - 1].name == name) return i - 1;
    return 0;
  }
  // Back to the savepoint's values, which stays; later savepoints go; a failed block works again.
  void RollbackTo(const std::string& name) {
    size_t i = SavepointIndex(name);
    cur_ = savepoints_[i].cur;
    session_ = savepoints_[i].session;
    savepoints_.resize(i + 1);
    txn_ = Txn::kExplicit;
  }

  struct Savepoint {
    std::string name;
    std::vector<std::string> cur, session;
  };

  const std::vector<std::string>& defaults_;
  std::vector<std::optional<std::string>> startup_;
  std::vector<std::string> cur_;      // what current_setting() shows now
  std::vector<std::string> session_;  // what stays when the transaction commits
  std::vector<std::string> before_;   // at the transaction's start: what a rollback restores
  Txn txn_ = Txn::kIdle;
  bool reset_in_txn_ = false;  // the transaction ran a RESET (or SET .. TO DEFAULT, RESET ALL)
  std::vector<Savepoint> savepoints_;
};

// --- Startup parameters ---------------------------------------------------------------

// What a client gives at connection start.
struct Startup {
  std::vector<std::pair<int, std::string>> options;  // `options` settings, in order
  std::vector<std::pair<int, std::string>> keys;     // libpq keywords (application_name, ...)
  bool long_form = false;                            // --name=value rather than -c name=value

  // The conninfo keywords after host/port/user/dbname.
  std::string ConninfoExtra(const std::vector<ParamSpec>& specs) const {
    std::string out;
    for (const auto& [p, v] : keys)
      out += specs[static_cast<size_t>(p)].name + "=" + pg::QuoteConninfoValue(v) + " ";
    std::string opts;
    for (const auto& [p, v] : options) {
      std::string escaped;
      for (char c : v) {
        if (c == ' ' || c == '\\') escaped += '\\';
        escaped += c;
      }
      opts += (opts.empty() ? "" : " ") + std::string(long_form ? "--" : "-c ") +
              specs[static_cast<size_t>(p)].name + "=" + escaped;
    }
    if (!opts.empty()) out += "options=" + pg::QuoteConninfoValue(opts);
    return out;
  }

  // The values PostgreSQL takes: `options` first, then the packet's own
  // parameters; libpq sends no keyword whose value is empty.
  std::vector<std::optional<std::string>> Values(size_t count) const {
    std::vector<std::optional<std::string>> out(count);
    for (const auto& [p, v] : options) out[static_cast<size_t>(p)] = v;
    for (const auto& [p, v] : keys)
      if (!v.empty()) out[static_cast<size_t>(p)] = v;
    return out;
  }
};

// --- The environment --------------------------------------------------------------

// One cluster and one proxy for the binary, and the parameters' values:
//   tx2        transaction, pool 2      session2  session, pool 2
class IsolationEnv : public ProxyClusterEnv {
 public:
  void SetUp() override {
    setup = StartCluster("pgw-itest-proxy-isolation");
    if (!setup.ok()) return;
    ProxyOptions o;
    o.workers = 2;
    o.databases = {{"tx2", "postgres", 2, "transaction"}, {"session2", "postgres", 2, "session"}};
    setup = proxy->Start(tmp->path(), backend->pg_port(), o);
    if (!setup.ok()) return;
    setup = LearnValues();
  }

  std::vector<ParamSpec> specs = TrackedParams();  // with each server default among the values
  std::vector<std::string> defaults;               // each parameter's server default

 private:
  // Reads the server defaults on a direct connection and checks that every
  // chosen value reads back exactly as given: by set_config(), by SET and at
  // startup in `options`.
  Status LearnValues() {
    std::string err;
    PqConn c = Open(backend->DirectConninfo(), &err);
    if (!c) return IoError("direct connection: " + err);
    const std::string readback = ReadbackQuery(specs);
    Reply d = Exec(c.get(), readback);
    if (!d.ok || d.row.size() != specs.size()) return IoError("server defaults: " + d.Describe());
    defaults = d.row;
    size_t most = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      auto& vals = specs[i].values;
      if (std::find(vals.begin(), vals.end(), defaults[i]) == vals.end())
        vals.push_back(defaults[i]);
      most = std::max(most, vals.size());
      for (const std::string& v : vals) {
        Stmt set_config{StmtKind::kSetConfig, static_cast<int>(i), v};
        Reply r = Exec(c.get(), StmtSql(set_config, specs));
        if (!r.ok || r.row.size() != 1 || r.row[0] != v)
          return InvalidArgument("the value '" + v + "' of " + specs[i].name +
                                 " is not canonical: set_config() answers " +
                                 (r.ok && !r.row.empty() ? "'" + r.row[0] + "'" : r.Describe()));
        Reply set =
            Exec(c.get(), "RESET ALL; " + StmtSql({StmtKind::kSet, static_cast<int>(i), v}, specs) +
                              "; SELECT current_setting('" + specs[i].name + "')");
        if (!set.ok || set.row.size() != 1 || set.row[0] != v)
          return InvalidArgument(
              "the value '" + v + "' of " + specs[i].name +
              " is not canonical: after SET it reads " +
              (set.ok && !set.row.empty() ? "'" + set.row[0] + "'" : set.Describe()));
      }
    }
    // At startup: the k-th value of every parameter on the k-th connection.
    for (size_t k = 0; k < most; ++k) {
      Startup s;
      for (size_t i = 0; i < specs.size(); ++i)
        s.options.emplace_back(static_cast<int>(i), specs[i].values[k % specs[i].values.size()]);
      PqConn sc = Open(backend->DirectConninfo(s.ConninfoExtra(specs)), &err);
      if (!sc) return InvalidArgument("startup with " + s.ConninfoExtra(specs) + ": " + err);
      Reply r = Exec(sc.get(), readback);
      if (!r.ok || r.row.size() != specs.size()) return IoError("readback: " + r.Describe());
      for (size_t i = 0; i < specs.size(); ++i) {
        if (r.row[i] != s.options[i].second)
          return InvalidArgument("the value '" + s.options[i].second + "' of " + specs[i].name +
                                 " is not canonical at startup: it reads '" + r.row[i] + "'");
      }
    }
    return Status::Ok();
  }
};

IsolationEnv* const env =
    static_cast<IsolationEnv*>(::testing::AddGlobalTestEnvironment(new IsolationEnv));

// --- One run -------------------------------------------------------------------------

struct IsolationCase {
  const char* name;
  const char* db;  // proxy database
  int clients;
  int ops;
  uint32_t seed;
  int max_open;  // clients that may hold a transaction open across others' operations
};

// One seeded run: N clients, each with a connection through the proxy and one
// straight to PostgreSQL, doing the same operations in lockstep. Owned by one test.
class IsolationRun {
 public:
  IsolationRun(const IsolationCase& c, uint32_t seed) : case_(c), seed_(seed), rng_(seed) {}

  // "" when every client saw its model's values after every operation, both
  // through the proxy and directly; else what differed, with the history.
  std::string Run() {
    const auto& specs = env->specs;
    readback_ = ReadbackQuery(specs);
    for (int i = 0; i < case_.clients; ++i) {
      clients_.emplace_back(env->defaults);
      std::string f = Connect(i, RandomStartup(), -1);
      if (!f.empty()) return f;
    }
    for (op_ = 0; op_ < case_.ops; ++op_) {
      std::string f = Step();
      if (!f.empty()) return f;
    }
    return "";
  }

 private:
  struct Client {
    explicit Client(const std::vector<std::string>& defaults) : model(defaults) {}
    PqConn proxy;
    PqConn direct;
    ClientModel model;
    int txn_since = -1;  // the op that opened the transaction it holds
    int connected_at = -1;
    std::string startup;  // how it connected (for the failure message)
  };

  uint32_t Pick(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  bool Chance(int percent) { return static_cast<int>(rng_() % 100) < percent; }
  int RandomParam() { return static_cast<int>(Pick(static_cast<uint32_t>(env->specs.size()))); }
  const std::string& RandomValue(int p) {
    const auto& v = env->specs[static_cast<size_t>(p)].values;
    return v[Pick(static_cast<uint32_t>(v.size()))];
  }

  Startup RandomStartup() {
    Startup s;
    s.long_form = Chance(25);
    const auto& specs = env->specs;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!Chance(30)) continue;
      const int p = static_cast<int>(i);
      const bool keyword =
          specs[i].name == "application_name" || specs[i].name == "client_encoding";
      if (keyword && Chance(50)) {
        s.keys.emplace_back(p, RandomValue(p));
        if (Chance(25)) s.options.emplace_back(p, RandomValue(p));  // the keyword wins
      } else {
        s.options.emplace_back(p, RandomValue(p));
        if (Chance(10)) s.options.emplace_back(p, RandomValue(p));  // the later one wins
      }
    }
    // Random order of the options (the last of a name wins).
    for (size_t i = s.options.size(); i > 1; --i) std::swap(s.options[i - 1], s.options[Pick(i)]);
    return s;
  }

  // A statement that changes one parameter (or all of them).
  Stmt RandomChange() {
    const int p = RandomParam();
    switch (Pick(20)) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4:
        return {StmtKind::kSet, p, RandomValue(p)};
      case 5:
      case 6:
      case 7:
        return {StmtKind::kSetConfig, p, RandomValue(p)};
      case 8:
      case 9:
      case 10:
        return {StmtKind::kSetLocal, p, RandomValue(p)};
      case 11:
      case 12:
        return {StmtKind::kSetConfigLocal, p, RandomValue(p)};
      case 13:
      case 14:
        return {StmtKind::kSetDefault, p, ""};
      case 15:
      case 16:
      case 17:
        return {StmtKind::kReset, p, ""};
      default:
        return {StmtKind::kResetAll, -1, ""};
    }
  }

  int Holders(int except) const {
    int n = 0;
    for (int i = 0; i < static_cast<int>(clients_.size()); ++i)
      if (i != except && clients_[static_cast<size_t>(i)].model.holding()) ++n;
    return n;
  }

  // What client `c` does next: a query string, or (empty) a reconnect.
  std::vector<Stmt> RandomOp(int c) {
    const Client& cl = clients_[static_cast<size_t>(c)];
    const auto one = [](StmtKind k) { return std::vector<Stmt>{Stmt{k, -1, ""}}; };
    if (cl.model.holding() && op_ - cl.txn_since >= kMaxTransactionOps) {
      uint32_t r = Pick(5);
      return r < 2   ? one(StmtKind::kCommit)
             : r < 4 ? one(StmtKind::kRollback)
                     : std::vector<Stmt>{};
    }
    const std::vector<std::string> savepoints = cl.model.savepoints();
    const auto savepoint_op = [&](StmtKind k) {
      return std::vector<Stmt>{
          Stmt{k, -1, savepoints[Pick(static_cast<uint32_t>(savepoints.size()))]}};
    };
    if (cl.model.txn() == ClientModel::Txn::kAborted) {
      uint32_t r = Pick(10);
      if (r < 3) return one(StmtKind::kRollback);
      if (r < 5) return one(StmtKind::kCommit);
      if (r < 7 && !savepoints.empty()) return savepoint_op(StmtKind::kRollbackTo);
      if (r < 9) return {RandomChange()};  // fails: the transaction is aborted
      return {};
    }
    if (cl.model.holding()) {
      uint32_t r = Pick(100);
      if (r < 50) return {RandomChange()};
      if (r < 53) return one(StmtKind::kFail);
      if (r < 54) return one(StmtKind::kDiscardAll);  // fails inside a transaction block
      if (r < 56) return one(StmtKind::kBegin);       // a warning
      if (r < 62) return {RandomChange(), RandomChange()};
      if (r < 66) return {Stmt{StmtKind::kSavepoint, -1, "s" + std::to_string(savepoints.size())}};
      if (r < 70 && !savepoints.empty()) return savepoint_op(StmtKind::kRollbackTo);
      if (r < 72 && !savepoints.empty()) return savepoint_op(StmtKind::kRelease);
      if (r < 78) return one(StmtKind::kCommit);
      if (r < 94) return one(StmtKind::kRollback);
      return {};
    }
    const bool may_hold = Holders(c) < case_.max_open;
    uint32_t r = Pick(100);
    if (r < 36) return {RandomChange()};
    if (r < 42) return one(StmtKind::kDiscardAll);
    if (r < 54 && may_hold) return one(StmtKind::kBegin);
    if (r < 66) {
      // A whole transaction in one query string.
      std::vector<Stmt> s{Stmt{StmtKind::kBegin, -1, ""}};
      for (uint32_t n = 1 + Pick(3); n > 0; --n) s.push_back(RandomChange());
      if (Chance(30)) {
        // A savepoint, changes after it, and a rollback to it or a release.
        s.push_back(Stmt{StmtKind::kSavepoint, -1, "s0"});
        for (uint32_t n = 1 + Pick(2); n > 0; --n) s.push_back(RandomChange());
        s.push_back(Stmt{Chance(70) ? StmtKind::kRollbackTo : StmtKind::kRelease, -1, "s0"});
        s.push_back(RandomChange());
      }
      if (may_hold && Chance(15)) {
        s.push_back(Stmt{StmtKind::kFail, -1, ""});  // the block stays open, failed
        return s;
      }
      s.push_back(Stmt{Chance(60) ? StmtKind::kCommit : StmtKind::kRollback, -1, ""});
      return s;
    }
    if (r < 78) {
      // Several statements: one implicit transaction, rolled back by an error.
      std::vector<Stmt> s;
      for (uint32_t n = 2 + Pick(2); n > 0; --n) s.push_back(RandomChange());
      if (Chance(30)) s.push_back(Stmt{StmtKind::kFail, -1, ""});
      return s;
    }
    if (r < 81) return one(StmtKind::kFail);
    if (r < 89) return {};
    return {RandomChange()};
  }

  // Opens client `c`'s two connections with `s` (after closing any it had).
  std::string Connect(int c, const Startup& s, int op) {
    Client& cl = clients_[static_cast<size_t>(c)];
    cl.model.Disconnect();
    cl.proxy.reset();  // PQfinish: Terminate
    cl.direct.reset();
    const std::string extra = s.ConninfoExtra(env->specs);
    cl.startup = extra.empty() ? "(nothing)" : extra;
    Note(op, c, "connect " + cl.startup);
    std::string err;
    cl.direct = Open(env->backend->DirectConninfo(extra), &err);
    if (!cl.direct)
      return Failure(c, "directly, connecting with " + cl.startup + " failed: " + err);
    cl.proxy = Open(env->proxy->Conninfo(case_.db, extra), &err);
    if (!cl.proxy)
      return Failure(c, "through the proxy, connecting with " + cl.startup + " failed: " + err);
    cl.model.Connect(s.Values(env->specs.size()));
    cl.connected_at = op;
    cl.txn_since = -1;
    return "";
  }

  std::string Step() {
    int c = static_cast<int>(Pick(static_cast<uint32_t>(case_.clients)));
    // A transaction open too long is ended by its holder.
    for (int i = 0; i < case_.clients; ++i) {
      const Client& h = clients_[static_cast<size_t>(i)];
      if (h.model.holding() && op_ - h.txn_since >= kMaxTransactionOps) c = i;
    }
    Client& cl = clients_[static_cast<size_t>(c)];
    std::vector<Stmt> stmts = RandomOp(c);
    if (stmts.empty()) {
      std::string f = Connect(c, RandomStartup(), op_);
      if (!f.empty()) return f;
    } else {
      const bool held = cl.model.holding();
      const std::string sql = StringSql(stmts, env->specs);
      const std::string want = cl.model.Apply(stmts);
      Reply direct = Exec(cl.direct.get(), sql);
      Reply proxied = Exec(cl.proxy.get(), sql);
      Note(op_, c, sql + "  -> " + (want.empty() ? "ok" : "error " + want));
      const auto same = [&](const Reply& r) { return r.ok ? want.empty() : r.sqlstate == want; };
      if (!same(direct))
        return Failure(c, "directly (the model is wrong), `" + sql + "` answered " +
                              direct.Describe() + ", the model says " +
                              (want.empty() ? "ok" : "error " + want));
      if (!same(proxied))
        return Failure(c, "through the proxy, `" + sql + "` answered " + proxied.Describe() +
                              ", PostgreSQL " + direct.Describe());
      if (!held && cl.model.holding()) cl.txn_since = op_;
    }
    std::string f = Check(c);
    if (!f.empty()) return f;
    if (case_.clients > 1) {
      int other = static_cast<int>(Pick(static_cast<uint32_t>(case_.clients - 1)));
      if (other >= c) ++other;
      f = Check(other);
    }
    return f;
  }

  // Client `c` reads all tracked parameters on both connections (and what
  // libpq was told in ParameterStatus) and compares them with its model.
  std::string Check(int c) {
    Client& cl = clients_[static_cast<size_t>(c)];
    if (!cl.model.readable()) return "";
    const auto& want = cl.model.current();
    const auto compare = [&](PGconn* conn, const std::string& how) -> std::string {
      Reply r = Exec(conn, readback_);
      if (!r.ok || r.row.size() != want.size())
        return Failure(c, how + ", reading the parameters answered " + r.Describe());
      std::string diff;
      for (size_t i = 0; i < want.size(); ++i) {
        const ParamSpec& spec = env->specs[i];
        if (r.row[i] != want[i])
          diff += "\n    current_setting('" + spec.name + "') is '" + r.row[i] +
                  "', the model says '" + want[i] + "'";
        const char* reported = spec.reported ? PQparameterStatus(conn, spec.name.c_str()) : nullptr;
        if (spec.reported && (reported == nullptr || reported != want[i]))
          diff += "\n    ParameterStatus " + spec.name + " is " +
                  (reported ? "'" + std::string(reported) + "'" : "missing") +
                  ", the model says '" + want[i] + "'";
      }
      if (diff.empty()) return "";
      return Failure(
          c, how + " (checked " +
                 (cl.model.txn() == ClientModel::Txn::kIdle ? "outside a transaction"
                                                            : "inside its open transaction") +
                 "):" + diff);
    };
    std::string f = compare(cl.direct.get(), "directly (the model is wrong)");
    if (f.empty() && cl.model.proxy_comparable()) f = compare(cl.proxy.get(), "through the proxy");
    return f;
  }

  void Note(int op, int c, const std::string& what) {
    history_.push_back({op, c,
                        (op < 0 ? "setup" : "#" + std::to_string(op)) + " client " +
                            std::to_string(c) + ": " + what});
  }

  // The failure message: the seed, the op, what differed, the last
  // operations and everything client `c` did since it connected.
  std::string Failure(int c, const std::string& what) {
    std::ostringstream out;
    out << "seed " << seed_ << " (" << case_.name << ", database " << case_.db << ", "
        << case_.clients << " clients), op " << op_ << " of " << case_.ops << ", client " << c
        << ": " << what << "\n  client " << c << " connected with "
        << clients_[static_cast<size_t>(c)].startup << "\n  the last operations:\n";
    size_t from = history_.size() > kHistoryShown ? history_.size() - kHistoryShown : 0;
    for (size_t i = from; i < history_.size(); ++i) out << "    " << history_[i].text << "\n";
    out << "  client " << c << " since it connected:\n";
    const int since = clients_[static_cast<size_t>(c)].connected_at;
    for (const auto& h : history_)
      if (h.client == c && h.op >= since) out << "    " << h.text << "\n";
    return out.str();
  }

  struct Entry {
    int op;
    int client;
    std::string text;
  };

  const IsolationCase& case_;
  const uint32_t seed_;
  std::mt19937 rng_;  // fully specified by the standard: the same ops everywhere
  std::vector<Client> clients_;
  std::vector<Entry> history_;
  std::string readback_;
  int op_ = -1;
};

void PrintTo(const IsolationCase& c, std::ostream* os) { *os << c.name; }

// Checks the shared cluster and proxy around each test.
class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(env->setup.ok()) << env->setup.ToString();
    ASSERT_TRUE(env->proxy->alive()) << env->proxy->Log();
  }
  void TearDown() override {
    EXPECT_TRUE(env->proxy->alive()) << "the proxy died\n" << env->proxy->Log();
    if (HasFailure()) std::fprintf(stderr, "%s", env->proxy->Log(60).c_str());
  }
};

class ProxyIsolationPropertyTest : public IsolationTest,
                                   public ::testing::WithParamInterface<IsolationCase> {};

// PGW_ISOLATION_SEED replaces the case's seed (to explore others).
TEST_P(ProxyIsolationPropertyTest, EveryClientSeesExactlyItsOwnParameters) {
  const IsolationCase& c = GetParam();
  uint32_t seed = c.seed;
  if (const char* s = std::getenv("PGW_ISOLATION_SEED"))
    seed = static_cast<uint32_t>(std::stoul(s));
  IsolationRun run(c, seed);
  std::string failure = run.Run();
  if (!failure.empty()) ADD_FAILURE() << failure;
}

// Each case: 5 clients over a transaction pool of 2 (one of them at a time in
// a transaction across the others' operations, so nobody waits), or 2 clients
// that each hold a server of a session pool of 2.
INSTANTIATE_TEST_SUITE_P(Seeds, ProxyIsolationPropertyTest,
                         ::testing::Values(IsolationCase{"Transaction_1", "tx2", 5, 400, 1, 1},
                                           IsolationCase{"Transaction_2", "tx2", 5, 400, 2, 1},
                                           IsolationCase{"Transaction_3", "tx2", 5, 400, 3, 1},
                                           IsolationCase{"Transaction_4", "tx2", 5, 400, 4, 1},
                                           IsolationCase{"Session_5", "session2", 2, 250, 5, 2},
                                           IsolationCase{"Session_6", "session2", 2, 250, 6, 2}),
                         [](const auto& info) { return std::string(info.param.name); });

// --- The shortest sequences the property test found failing ------------------------

// Runs `steps` (one query string each) on a new connection made with `startup`
// (conninfo keywords), directly and through the proxy database `db`; "" when
// both then show the same value of `param` (current_setting() and
// ParameterStatus), else what differed.
std::string CompareAfter(const std::string& db, const std::string& startup,
                         const std::vector<std::string>& steps, const std::string& param) {
  std::string err;
  PqConn direct = Open(env->backend->DirectConninfo(startup), &err);
  if (!direct) return "direct connection: " + err;
  PqConn proxied = Open(env->proxy->Conninfo(db, startup), &err);
  if (!proxied) return "through the proxy: " + err;
  std::string sequence = startup;
  for (const std::string& sql : steps) {
    sequence += "\n  " + sql;
    Reply d = Exec(direct.get(), sql);
    Reply p = Exec(proxied.get(), sql);
    if (d.ok != p.ok || d.sqlstate != p.sqlstate)
      return "`" + sql + "`: PostgreSQL answers " + d.Describe() + ", the proxy " + p.Describe();
  }
  const std::string show = "SELECT current_setting('" + param + "')";
  Reply d = Exec(direct.get(), show);
  Reply p = Exec(proxied.get(), show);
  if (!d.ok || !p.ok || d.row.empty() || p.row.empty())
    return "reading " + param + ": " + d.Describe() + " / " + p.Describe();
  std::string diff;
  if (d.row[0] != p.row[0])
    diff += "\n  " + param + " is '" + p.row[0] + "' through the proxy, '" + d.row[0] +
            "' on PostgreSQL";
  const char* dr = PQparameterStatus(direct.get(), param.c_str());
  const char* pr = PQparameterStatus(proxied.get(), param.c_str());
  if (dr && (!pr || std::string(dr) != pr))
    diff += "\n  ParameterStatus " + param + " is '" + (pr ? pr : "(none)") +
            "' through the proxy, '" + dr + "' on PostgreSQL";
  return diff.empty() ? "" : "on " + db + " after " + sequence + diff;
}

// A failure of this test when CompareAfter() finds a difference.
void ExpectSameAsPostgres(const std::string& db, const std::string& startup,
                          const std::vector<std::string>& steps, const std::string& param) {
  std::string f = CompareAfter(db, startup, steps, param);
  if (!f.empty()) ADD_FAILURE() << f;
}

using ProxyParamResetTest = IsolationTest;

// RESET ALL and then SET of a parameter to the server's default, in one query
// string: the SET stays (PostgreSQL), not the startup value.
TEST_F(ProxyParamResetTest, SetToTheDefaultAfterResetAllInOneQueryStringStays) {
  for (const char* db : {"tx2", "session2"}) {
    ExpectSameAsPostgres(db, "options='-c IntervalStyle=iso_8601'",
                         {"RESET ALL; SET IntervalStyle = 'postgres'"}, "IntervalStyle");
    ExpectSameAsPostgres(db, "options='-c statement_timeout=1s'",
                         {"BEGIN; RESET ALL; SET statement_timeout = 0; COMMIT"},
                         "statement_timeout");
  }
}

// A RESET that is rolled back leaves the value the client SET before, even
// when that is the server's default.
TEST_F(ProxyParamResetTest, RolledBackResetLeavesTheValueSetBefore) {
  for (const char* db : {"tx2", "session2"}) {
    ExpectSameAsPostgres(db, "options='-c IntervalStyle=iso_8601'",
                         {"SET IntervalStyle = 'postgres'", "BEGIN; RESET IntervalStyle; ROLLBACK"},
                         "IntervalStyle");
    ExpectSameAsPostgres(db, "options='-c statement_timeout=1s'",
                         {"SET statement_timeout = 0", "RESET statement_timeout; SELECT 1/0"},
                         "statement_timeout");
  }
}

// A RESET stays when a SET after it is rolled back to a savepoint: the
// startup value, not the server's default.
TEST_F(ProxyParamResetTest, ResetStaysWhenALaterSetIsRolledBackToASavepoint) {
  for (const char* db : {"tx2", "session2"}) {
    ExpectSameAsPostgres(db, "options='-c IntervalStyle=sql_standard'",
                         {"BEGIN; RESET IntervalStyle; SAVEPOINT s; SET IntervalStyle = "
                          "'iso_8601'; ROLLBACK TO SAVEPOINT s; COMMIT"},
                         "IntervalStyle");
  }
}

}  // namespace
}  // namespace pgwarden::itest
