// Differential tests: psycopg2 and node-postgres sessions see the same directly and via the proxy.
//
// The corpus (clients/differential.py, clients/differential.js) runs three ways: straight on
// PostgreSQL, through a session-pooling entry and through a transaction-pooling entry of one
// proxy, the proxied runs beside a noisy client of the same entry. Both must match exactly,
// except on steps annotated with a difference the README documents, where the proxy's answer
// must be that documented alternative: in both modes a RESET's server default for the rest of
// its own query string; in transaction pooling also the others.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The PostgreSQL database the corpus runs in, and the proxy's two entries for it.
constexpr const char* kDbname = "diffdb";
constexpr const char* kSessionDb = "diff_session";  // session pooling, pool 2
constexpr const char* kTransactionDb = "diff_tx";   // transaction pooling, pool 1: clients share it

// The binary's time budget after the cluster is up: every child gets what is left of it.
constexpr auto kBudget = std::chrono::seconds(110);

// The objects the corpus reads (created once, as app, in kDbname). The database's own settings fix
// what a fresh server connection shows, which the corpus's annotations name.
constexpr const char* kSetupSql = R"SQL(
CREATE SCHEMA diff_s1;
CREATE SCHEMA diff_s2;
CREATE TABLE public.t (id int, label text);
INSERT INTO public.t VALUES (1, 'public'), (2, 'public-2');
CREATE TABLE diff_s1.t (id int, label text);
INSERT INTO diff_s1.t VALUES (1, 's1');
CREATE TABLE diff_s1.only_s1 (label text);
INSERT INTO diff_s1.only_s1 VALUES ('only in s1');
CREATE TABLE diff_s2.t (id int, label text);
INSERT INTO diff_s2.t VALUES (1, 's2'), (2, 's2-2');
CREATE TABLE diff_copy (id int, label text);
CREATE SEQUENCE diff_seq_py;
CREATE SEQUENCE diff_seq_js;
)SQL";

// tests/integration/clients/<name>, next to this file.
std::string ClientScript(const std::string& name) {
  return (std::filesystem::path(__FILE__).parent_path() / "clients" / name).string();
}

// --- The noisy neighbour --------------------------------------------------------------------

// A client of the same proxy database that keeps leaving on its server connections what a leak
// would show: other session parameters (TimeZone, search_path, DateStyle, statement_timeout,
// application_name, standard_conforming_strings off, client_encoding LATIN1, ...), its own
// temporary table and advisory locks, and now and then a bout that pins it (temporary table,
// session advisory lock, SQL and protocol prepared statements, a held cursor, LISTEN) ended by
// DISCARD ALL. It reconnects every few rounds so that in session pooling it changes servers too.
// Runs on its own thread between Start() and Stop(); owned by one test.
class NoiseClient {
 public:
  explicit NoiseClient(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  ~NoiseClient() { Stop(); }
  NoiseClient(const NoiseClient&) = delete;
  NoiseClient& operator=(const NoiseClient&) = delete;

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Rounds completed (each sets every parameter and runs one transaction).
  int rounds() const { return rounds_.load(); }
  // Failures of its own statements, "statement: SQLSTATE message" (a few).
  std::vector<std::string> errors() const {
    std::lock_guard lock(mu_);
    return errors_;
  }

 private:
  // How one statement went.
  enum class Outcome {
    kOk,       // every result came and none was an error
    kFailed,   // an error (noted); the connection may go on
    kStopped,  // Stop() was called, or the connection broke: drop it
  };

  void Loop() {
    int round = 0;
    while (!stop_) {
      std::string err;
      PqConn c = OpenPq(conninfo_ + " application_name=noise_app", &err);
      if (!c) {
        Note("connect", err);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      for (int k = 0; k < 2 && !stop_; ++k, ++round) {
        if (RunRound(c.get(), round) == Outcome::kStopped) break;
        if (PQstatus(c.get()) != CONNECTION_OK) break;
        ++rounds_;
      }
    }
  }

  Outcome RunRound(PGconn* c, int round) {
    const bool odd = round % 2 == 1;
    std::vector<std::string> values = {
        std::string("SET TimeZone = '") + (odd ? "Pacific/Chatham" : "Asia/Kathmandu") + "'",
        "SET search_path = diff_s2",
        std::string("SET DateStyle = '") + (odd ? "Postgres, YMD" : "German") + "'",
        std::string("SET IntervalStyle = '") + (odd ? "sql_standard" : "iso_8601") + "'",
        "SET statement_timeout = '150ms'",
        "SET lock_timeout = '7s'",
        "SET extra_float_digits = -5",
        "SET application_name = 'noise_app_" + std::to_string(round % 3) + "'",
        "SET standard_conforming_strings = off",
        "SET client_encoding = 'LATIN1'",
        "SET default_transaction_read_only = on",
        "SELECT 'noise'",
    };
    for (const auto& sql : values) {
      if (Exec(c, sql) == Outcome::kStopped) return Outcome::kStopped;
    }
    // A transaction that holds the server for several round trips.
    const std::vector<std::string> transaction = {
        "BEGIN READ WRITE",
        "CREATE TEMP TABLE noise_tmp (x int) ON COMMIT DROP",
        "INSERT INTO noise_tmp VALUES (1)",
        "SELECT pg_advisory_xact_lock(4243)",
        "SET LOCAL TimeZone = 'America/Anchorage'",
        "SET LOCAL search_path = diff_s1",
        "COMMIT",
    };
    for (const auto& sql : transaction) {
      if (Exec(c, sql) == Outcome::kStopped) return Outcome::kStopped;
    }
    if (round % 4 != 3) return Outcome::kOk;
    // Pinned: state that must never outlive DISCARD ALL or reach another client.
    const std::vector<std::string> pinned = {
        "SET default_transaction_read_only = off",
        "CREATE TEMP TABLE noise_keep (x int)",
        "INSERT INTO noise_keep VALUES (1)",
        "SELECT pg_advisory_lock(4242)",
        "PREPARE noise_p AS SELECT 1",
        "DECLARE noise_c CURSOR WITH HOLD FOR SELECT 1",
        "LISTEN noise_chan",
    };
    for (const auto& sql : pinned) {
      if (Exec(c, sql) == Outcome::kStopped) return Outcome::kStopped;
    }
    // The node-postgres corpus's statement name, with another text.
    if (!PQsendPrepare(c, "diff_named", "SELECT 'noise'::text", 0, nullptr)) {
      Note("prepare diff_named", PQerrorMessage(c));
    } else if (Collect(c, "prepare diff_named") == Outcome::kStopped) {
      return Outcome::kStopped;
    }
    if (!PQsendQueryPrepared(c, "diff_named", 0, nullptr, nullptr, nullptr, 0)) {
      Note("execute diff_named", PQerrorMessage(c));
    } else if (Collect(c, "execute diff_named") == Outcome::kStopped) {
      return Outcome::kStopped;
    }
    return Exec(c, "DISCARD ALL");
  }

  Outcome Exec(PGconn* c, const std::string& sql) {
    if (!PQsendQuery(c, sql.c_str())) {
      Note(sql, PQerrorMessage(c));
      return Outcome::kFailed;
    }
    return Collect(c, sql);
  }

  // Reads every result of what was sent, waiting (the proxy may queue us for a server) until it
  // came, Stop() was called (kStopped: the caller drops the connection) or a minute passed.
  Outcome Collect(PGconn* c, const std::string& what) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    bool failed = false;
    for (;;) {
      while (PQisBusy(c)) {
        if (stop_) return Outcome::kStopped;
        if (Clock::now() > deadline) {
          Note(what, "no answer within 60 s");
          return Outcome::kStopped;
        }
        pollfd p{PQsocket(c), POLLIN, 0};
        poll(&p, 1, 50);
        if (!PQconsumeInput(c)) {
          Note(what, PQerrorMessage(c));
          return Outcome::kStopped;
        }
      }
      PGresult* r = PQgetResult(c);
      if (r == nullptr) break;
      if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
        const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        Note(what, std::string(state ? state : "") + " " + PQresultErrorMessage(r));
        failed = true;
      }
      PQclear(r);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return failed ? Outcome::kFailed : Outcome::kOk;
  }

  void Note(const std::string& what, const std::string& error) {
    std::lock_guard lock(mu_);
    if (errors_.size() < 10) errors_.push_back(what + ": " + error);
  }

  const std::string conninfo_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  mutable std::mutex mu_;
  std::vector<std::string> errors_;  // guarded by mu_
};

// --- Transcripts -----------------------------------------------------------------------------

// One script's output: a JSON object per step, in order.
struct Transcript {
  std::vector<json> steps;
  bool done = false;    // the script printed its last line
  std::string problem;  // why the run is unusable ("" when it is not)
};

Transcript ParseTranscript(const CommandResult& r) {
  Transcript t;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      t.problem = "not a JSON line: " + line;
      break;
    }
    if (j.value("done", false)) {
      t.done = true;
      continue;
    }
    t.steps.push_back(std::move(j));
  }
  if (t.problem.empty() && (r.exit_code != 0 || !t.done)) t.problem = "the script did not finish";
  if (!t.problem.empty()) t.problem += "\n" + r.Describe();
  return t;
}

std::string StepKey(const json& step) {
  return step.value("session", std::string("?")) + "#" + std::to_string(step.value("step", -99));
}

std::string Shorten(std::string s, size_t max = 400) {
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

// The fields in which two records of one step differ, one line each.
std::string DescribeDifference(const json& direct, const json& proxied) {
  std::set<std::string> keys;
  for (const auto& [k, v] : direct.items()) keys.insert(k);
  for (const auto& [k, v] : proxied.items()) keys.insert(k);
  std::ostringstream os;
  for (const auto& k : keys) {
    json a = direct.contains(k) ? direct[k] : json();
    json b = proxied.contains(k) ? proxied[k] : json();
    if (a == b) continue;
    if (a.is_object() && b.is_object()) {  // params: only the ones that differ
      for (const auto& [pk, pv] : a.items()) {
        json pb = b.contains(pk) ? b[pk] : json();
        if (pv != pb)
          os << "      " << k << "." << pk << ": direct " << pv.dump() << ", proxy " << pb.dump()
             << "\n";
      }
      continue;
    }
    os << "      " << k << ": direct " << Shorten(a.dump()) << ", proxy " << Shorten(b.dump())
       << "\n";
  }
  return os.str();
}

// Replaces every cell equal to `from` with `to` in rows ([[...], ...]).
void ReplaceCells(json& rows, const std::string& from, const std::string& to) {
  if (!rows.is_array()) return;
  for (auto& row : rows) {
    if (!row.is_array()) continue;
    for (auto& cell : row)
      if (cell.is_string() && cell.get<std::string>() == from) cell = to;
  }
}

// Whether `proxied` is the alternative the step's annotation documents
// (`direct` being what PostgreSQL itself answered); `why` says what is off when it is not.
bool IsDocumentedAlternative(const json& direct, const json& proxied, std::string* why) {
  const json& diff = direct["diff"];
  const std::string kind = diff.value("kind", std::string());
  if (kind == "startup_param_reset") {
    // Each named parameter reads its server default, in the cells and in ParameterStatus; on a
    // step that ends the transaction ParameterStatus may be back at the startup value already.
    json alt = direct;
    const bool ends = diff.value("ends_transaction", false);
    for (const auto& [name, v] : diff["params"].items()) {
      const std::string startup = v["startup"], def = v["default"];
      if (alt.contains("params") && alt["params"].is_object() && alt["params"].contains(name)) {
        const json seen = proxied.contains("params") && proxied["params"].is_object() &&
                                  proxied["params"].contains(name)
                              ? proxied["params"][name]
                              : json();
        alt["params"][name] = ends && seen == startup ? startup : def;
      }
      if (!diff.contains("rows")) {
        if (alt.contains("rows")) ReplaceCells(alt["rows"], startup, def);
        if (alt.contains("results"))
          for (auto& r : alt["results"])
            if (r.contains("rows")) ReplaceCells(r["rows"], startup, def);
      }
    }
    if (diff.contains("rows")) alt["rows"] = diff["rows"];
    if (alt == proxied) return true;
    *why = "not the documented alternative (server defaults); against it:\n" +
           DescribeDifference(alt, proxied);
    return false;
  }
  if (kind == "sequence_cache") {
    json alt = direct;
    for (const char* k : {"columns", "rows", "status", "rowcount", "command", "rowCount"})
      alt.erase(k);
    alt["ok"] = false;
    alt["sqlstate"] = diff["sqlstate"];
    alt["message"] = diff["message"];
    if (alt == proxied) return true;
    *why = "not the documented alternative (" + diff["sqlstate"].get<std::string>() +
           "); against it:\n" + DescribeDifference(alt, proxied);
    return false;
  }
  if (kind == "proxy_statements") {
    // Columns name, from_sql, statement. The client's SQL-level statements are listed alike;
    // protocol-level ones may be missing, and the proxy's own (pgw_..., not from SQL) may show.
    json a = direct, b = proxied;
    for (const char* k : {"rows", "status", "rowcount", "command", "rowCount"}) {
      a.erase(k);
      b.erase(k);
    }
    if (a != b) {
      *why = "differs beyond the rows:\n" + DescribeDifference(a, b);
      return false;
    }
    json from_sql = json::array(), others = json::array();
    for (const auto& row : direct.value("rows", json::array()))
      if (row.size() >= 2 && row[1] == "t") from_sql.push_back(row);
    for (const auto& row : proxied.value("rows", json::array())) {
      const bool ours =
          row.size() >= 2 && row[0].is_string() && row[0].get<std::string>().rfind("pgw_", 0) == 0;
      if (!ours) {
        others.push_back(row);
      } else if (row[1] != "f") {
        *why = "a pgw_ statement that claims to come from SQL: " + row.dump();
        return false;
      }
    }
    if (from_sql == others) return true;
    *why = "the statements besides the proxy's pgw_ ones are " + others.dump() +
           ", PostgreSQL's SQL-level ones " + from_sql.dump();
    return false;
  }
  *why = "unknown annotation kind '" + kind + "'";
  return false;
}

// How a proxied transcript compares with the direct one.
struct Comparison {
  int steps = 0;
  std::vector<std::string> documented;  // annotated steps that showed their alternative
  std::vector<std::string> failures;    // readable, one per differing step
};

Comparison CompareTranscripts(const Transcript& direct, const Transcript& proxied,
                              bool transaction_mode) {
  Comparison c;
  std::map<std::string, const json*> by_key;
  for (const auto& s : proxied.steps) by_key[StepKey(s)] = &s;
  for (const auto& d : direct.steps) {
    ++c.steps;
    const std::string key = StepKey(d);
    std::string head = key + "  " + Shorten(d.value("sql", std::string()), 160);
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      c.failures.push_back(head + "\n      missing from the proxied run\n");
      continue;
    }
    const json& p = *it->second;
    by_key.erase(it);
    if (d == p) continue;
    const bool annotated = d.contains("diff") && d["diff"].is_object();
    // (2) holds in both pooling modes; the others only in transaction pooling.
    const bool applies = annotated && (transaction_mode || d["diff"].value("kind", std::string()) ==
                                                               "startup_param_reset");
    if (applies) {
      std::string why;
      if (IsDocumentedAlternative(d, p, &why)) {
        c.documented.push_back(head + "  [" + d["diff"].value("reason", std::string()) + "]");
        continue;
      }
      c.failures.push_back(head + "\n      annotated " + d["diff"].value("reason", std::string()) +
                           ", but " + why + "    all differences:\n" + DescribeDifference(d, p));
      continue;
    }
    c.failures.push_back(head +
                         (annotated ? "  (annotated, but exact equality is required here)" : "") +
                         "\n" + DescribeDifference(d, p));
  }
  for (const auto& [key, s] : by_key)
    c.failures.push_back(key + "\n      only in the proxied run: " + Shorten(s->dump()) + "\n");
  return c;
}

// --- The environment -------------------------------------------------------------------------

// One cluster, the corpus's database, one proxy with a session-pooling entry (pool 2) and a
// transaction-pooling one (pool 1) for it, and the two clients. Shared by the tests of the binary.
class DifferentialEnv : public ProxyClusterEnv {
 public:
  void SetUp() override {
    setup = StartCluster("pgw-itest-differential");
    if (!setup.ok()) return;
    deadline = Clock::now() + kBudget;
    setup = CreateDatabase();
    if (!setup.ok()) return;
    ProxyOptions o;
    o.databases = {{kSessionDb, kDbname, 2, "session"},
                   {kTransactionDb, kDbname, 1, "transaction"}};
    setup = proxy->Start(tmp->path(), backend->pg_port(), o);
    if (!setup.ok()) return;
    Result<std::string> py = FindPythonWithPsycopg2(Budget(std::chrono::seconds(30)));
    if (py.ok())
      python = *py;
    else
      python_problem = py.status().message();
    std::string dir = tmp->Sub("node");
    mkdir(dir.c_str(), 0755);
    Result<NodePostgres> pg = InstallNodePostgres(dir, Budget(std::chrono::seconds(90)));
    if (pg.ok()) {
      node = pg->node;
      node_modules = pg->node_modules;
    } else {
      node_problem = pg.status().message();
    }
  }

  // What is left of the time budget for one child, at most `want` (and at least a second).
  std::chrono::milliseconds Budget(std::chrono::milliseconds want) const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::max(std::chrono::milliseconds(1000), std::min(want, left));
  }

  Clock::time_point deadline = Clock::now() + kBudget;
  std::string python;          // a python3 that imports psycopg2
  std::string python_problem;  // why there is none
  std::string node;            // node, with pg@8 under node_modules
  std::string node_modules;
  std::string node_problem;
  std::map<std::string, Transcript> direct;  // by client, run once

 private:
  Status CreateDatabase() {
    std::string err;
    PqConn c = OpenPq(backend->DirectConninfo(), &err);
    if (!c) return IoError("app on postgres: " + err);
    for (const std::string& sql :
         {std::string("CREATE DATABASE ") + kDbname +
              " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'",
          std::string("ALTER DATABASE ") + kDbname + " SET TimeZone = 'Etc/UTC'",
          std::string("ALTER DATABASE ") + kDbname + " SET DateStyle = 'ISO, MDY'",
          std::string("ALTER DATABASE ") + kDbname + " SET IntervalStyle = 'postgres'"}) {
      PqOutcome o = PqExec(c.get(), sql);
      if (!o.ok) return IoError(sql + ": " + o.error);
    }
    PqConn d = OpenPq(backend->DirectConninfo(std::string("dbname=") + kDbname), &err);
    if (!d) return IoError("app on " + std::string(kDbname) + ": " + err);
    PqOutcome o = PqExec(d.get(), kSetupSql);
    if (!o.ok) return IoError(std::string("creating the corpus's objects: ") + o.error);
    return Status::Ok();
  }
};

DifferentialEnv* const env =
    static_cast<DifferentialEnv*>(::testing::AddGlobalTestEnvironment(new DifferentialEnv));

// The clients the corpus is written for.
enum class Client {
  kPsycopg2,      // differential.py
  kNodePostgres,  // differential.js
};

const char* ClientName(Client c) { return c == Client::kPsycopg2 ? "psycopg2" : "node-postgres"; }

class ProxyDifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(env->setup.ok()) << env->setup.ToString();
    ASSERT_TRUE(env->proxy->alive()) << env->proxy->Log();
  }
  void TearDown() override {
    EXPECT_TRUE(env->proxy->alive()) << "the proxy died\n" << env->proxy->Log();
    if (HasFailure()) std::fprintf(stderr, "%s", env->proxy->Log(40).c_str());
  }

  // Fails (never skips) when the client is not installed.
  void RequireClient(Client c) {
    const std::string& problem = c == Client::kPsycopg2 ? env->python_problem : env->node_problem;
    ASSERT_TRUE(problem.empty()) << problem;
    const std::string script =
        ClientScript(c == Client::kPsycopg2 ? "differential.py" : "differential.js");
    ASSERT_EQ(access(script.c_str(), R_OK), 0) << "the corpus script is missing: " << script;
  }

  // Runs the client's corpus against 127.0.0.1:port / dbname.
  Transcript RunCorpus(Client c, uint16_t port, const std::string& dbname) {
    // What earlier runs changed in permanent objects, put back directly.
    std::string err;
    PqConn conn = OpenPq(env->backend->DirectConninfo(std::string("dbname=") + kDbname), &err);
    EXPECT_TRUE(conn) << err;
    if (conn) {
      PqOutcome o = PqExec(conn.get(),
                           "ALTER SEQUENCE diff_seq_py RESTART; ALTER SEQUENCE diff_seq_js RESTART;"
                           " TRUNCATE diff_copy");
      EXPECT_TRUE(o.ok) << o.error;
    }
    std::vector<std::string> argv;
    ProcessOptions o;
    o.cwd = env->tmp->path();
    if (c == Client::kPsycopg2) {
      argv = {env->python, ClientScript("differential.py")};
    } else {
      argv = {env->node, ClientScript("differential.js")};
      o.env = {"NODE_PATH=" + env->node_modules};
    }
    for (const std::string& a : {std::string("127.0.0.1"), std::to_string(port), dbname,
                                 std::string(kAppUser), std::string(kAppPassword)})
      argv.push_back(a);
    CommandResult r = itest::Run(argv, env->Budget(std::chrono::seconds(45)), o);
    // For debugging: PGW_DIFFERENTIAL_DIR=dir keeps every transcript as dir/<client>-<db>.jsonl.
    if (const char* keep = std::getenv("PGW_DIFFERENTIAL_DIR"))
      WriteFile(std::string(keep) + "/" + ClientName(c) + "-" + dbname + ".jsonl", r.out);
    return ParseTranscript(r);
  }

  // The corpus straight on PostgreSQL, once per client; sanity-checked.
  const Transcript& Direct(Client c) {
    auto it = env->direct.find(ClientName(c));
    if (it != env->direct.end()) return it->second;
    Transcript t = RunCorpus(c, env->backend->pg_port(), kDbname);
    return env->direct.emplace(ClientName(c), std::move(t)).first->second;
  }

  // Through the proxy's `dbname`, with the noisy neighbour on the same proxy database; then the
  // comparison with the direct run, every differing step reported.
  void CheckThroughProxy(Client c, const std::string& dbname, bool transaction_mode) {
    RequireClient(c);
    if (HasFatalFailure()) return;
    const Transcript& direct = Direct(c);
    ASSERT_TRUE(direct.problem.empty()) << "the corpus failed directly on PostgreSQL:\n"
                                        << direct.problem;
    CheckCorpusItself(c, direct);
    NoiseClient noise(env->proxy->Conninfo(dbname));
    noise.Start();
    const auto started = Clock::now();
    Transcript proxied = RunCorpus(c, env->proxy->port(), dbname);
    noise.Stop();
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    ASSERT_TRUE(proxied.problem.empty())
        << "the corpus failed through the proxy (" << dbname << "):\n"
        << proxied.problem;
    EXPECT_GT(noise.rounds(), 0) << "the noisy client never completed a round";
    for (const auto& e : noise.errors()) ADD_FAILURE() << "the noisy client failed: " << e;

    Comparison cmp = CompareTranscripts(direct, proxied, transaction_mode);
    std::printf(
        "[differential] %s via %s: %d steps in %.1f s, %d noise rounds, %zu documented "
        "differences, %zu differing steps\n",
        ClientName(c), dbname.c_str(), cmp.steps, seconds, noise.rounds(), cmp.documented.size(),
        cmp.failures.size());
    for (const auto& d : cmp.documented) std::printf("    documented: %s\n", d.c_str());
    if (cmp.failures.empty()) return;
    std::ostringstream os;
    os << cmp.failures.size() << " of " << cmp.steps << " steps of the " << ClientName(c)
       << " corpus differ between PostgreSQL and the proxy's " << dbname << " ("
       << (transaction_mode ? "transaction" : "session") << " pooling):\n";
    const size_t shown = std::min<size_t>(cmp.failures.size(), 25);
    for (size_t i = 0; i < shown; ++i) os << "  " << cmp.failures[i];
    if (shown < cmp.failures.size())
      os << "  ... and " << cmp.failures.size() - shown << " more differing steps\n";
    ADD_FAILURE() << os.str();
  }

  // The corpus means what it says: a few answers PostgreSQL must give directly.
  void CheckCorpusItself(Client c, const Transcript& t) {
    auto find = [&](const std::string& session, const std::string& sql) -> const json* {
      for (const auto& s : t.steps)
        if (s.value("session", "") == session && s.value("sql", "") == sql) return &s;
      return nullptr;
    };
    EXPECT_GT(t.steps.size(), 150u);
    const json* sleep = c == Client::kPsycopg2 ? find("statement_timeout", "SELECT pg_sleep(2)")
                                               : find("statement_timeout", "SELECT pg_sleep($1)");
    ASSERT_NE(sleep, nullptr);
    EXPECT_EQ(sleep->value("sqlstate", ""), "57014") << "statement_timeout did not cancel pg_sleep";
    const json* seq = c == Client::kPsycopg2 ? find("sequences", "SELECT nextval('diff_seq_py')")
                                             : find("sequences", "SELECT nextval($1)");
    ASSERT_NE(seq, nullptr);
    EXPECT_EQ(seq->value("rows", json()), json::parse(R"([["1"]])"));
  }
};

TEST_F(ProxyDifferentialTest, Psycopg2SessionPoolingMatchesDirect) {
  CheckThroughProxy(Client::kPsycopg2, kSessionDb, /*transaction_mode=*/false);
}

TEST_F(ProxyDifferentialTest, Psycopg2TransactionPoolingMatchesDirectButForDocumentedDifferences) {
  CheckThroughProxy(Client::kPsycopg2, kTransactionDb, /*transaction_mode=*/true);
}

TEST_F(ProxyDifferentialTest, NodePostgresSessionPoolingMatchesDirect) {
  CheckThroughProxy(Client::kNodePostgres, kSessionDb, /*transaction_mode=*/false);
}

TEST_F(ProxyDifferentialTest,
       NodePostgresTransactionPoolingMatchesDirectButForDocumentedDifferences) {
  CheckThroughProxy(Client::kNodePostgres, kTransactionDb, /*transaction_mode=*/true);
}

}  // namespace
}  // namespace pgwarden::itest
