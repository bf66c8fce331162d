// Tests of the admin console: command parsing, the columns and rows of each SHOW, permissions.
#include "proxy/admin.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <regex>

#include "pgwire/message.h"
#include "proxy/proxy.h"

namespace pgwarden::proxy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------- parsing

TEST(ParseAdminCommandTest, ShowIsCaseInsensitiveWithOptionalSemicolon) {
  for (const char* sql :
       {"SHOW POOLS", "show pools", "  Show\tPools ;", "SHOW POOLS;;", "\nshow\n  POOLS\n"}) {
    AdminCommand c = ParseAdminCommand(sql);
    EXPECT_EQ(c.verb, AdminVerb::kShow) << sql;
    EXPECT_EQ(c.subject, "pools") << sql;
    EXPECT_EQ(c.argument, "") << sql;
  }
}

TEST(ParseAdminCommandTest, ArgumentKeepsItsCaseAndLosesQuotes) {
  AdminCommand c = ParseAdminCommand("show stats MyDb;");
  EXPECT_EQ(c.verb, AdminVerb::kShow);
  EXPECT_EQ(c.subject, "stats");
  EXPECT_EQ(c.argument, "MyDb");
  EXPECT_EQ(ParseAdminCommand("PAUSE \"My\"\"Db\"").argument, "My\"Db");
}

TEST(ParseAdminCommandTest, ControlCommands) {
  EXPECT_EQ(ParseAdminCommand("reload;").verb, AdminVerb::kReload);
  EXPECT_EQ(ParseAdminCommand("SHUTDOWN").verb, AdminVerb::kShutdown);
  AdminCommand p = ParseAdminCommand("Pause");
  EXPECT_EQ(p.verb, AdminVerb::kPause);
  EXPECT_EQ(p.argument, "");
  AdminCommand r = ParseAdminCommand("RESUME app ;");
  EXPECT_EQ(r.verb, AdminVerb::kResume);
  EXPECT_EQ(r.argument, "app");
}

TEST(ParseAdminCommandTest, EmptyQuery) {
  for (const char* sql : {"", " ", ";", " ; ;\n"}) {
    EXPECT_EQ(ParseAdminCommand(sql).verb, AdminVerb::kEmpty) << "'" << sql << "'";
  }
}

TEST(ParseAdminCommandTest, UnknownCommandsAndWrongWordCounts) {
  for (const char* sql : {"SELECT 1", "SHOW", "RELOAD now", "SHUTDOWN NOW PLEASE", "PAUSE a b",
                          "SHOW POOLS; SHOW STATS", "SHOW STATS a b"}) {
    EXPECT_EQ(ParseAdminCommand(sql).verb, AdminVerb::kUnknown) << sql;
  }
  EXPECT_EQ(ParseAdminCommand("  select 1 ; ").text, "select 1");
}

// ---------------------------------------------------------------- running

// A proxy that is configured but never started: pools and clients are
// created directly, as sessions would.
class AdminTest : public ::testing::Test {
 protected:
  static ProxyConfig Config() {
    ProxyConfig cfg;
    DatabaseConfig app;
    app.name = "app";
    app.host = "10.0.0.5";
    app.port = 5433;
    app.dbname = "app_prod";
    app.user = "app_owner";
    app.pool_size = 7;
    app.pool_mode = PoolMode::kSession;
    cfg.databases["app"] = app;
    DatabaseConfig any;
    any.name = "*";
    cfg.databases["*"] = any;
    cfg.admin_users = {"postgres"};
    cfg.stats_users = {"monitor"};
    return cfg;
  }

  AdminReply Run(std::string_view sql, bool may_modify = true) {
    return ExecuteAdminCommand(proxy_, ParseAdminCommand(sql), may_modify);
  }

  // Registers a client of (database, user) in `state`.
  std::shared_ptr<ClientInfo> AddClient(const std::string& database, const std::string& user,
                                        ClientState state) {
    auto c = proxy_.RegisterClient();
    std::lock_guard lock(c->mu);
    c->database = database;
    c->user = user;
    c->state = state;
    c->addr = "192.168.1.9";
    c->port = 40000;
    c->connect_time = std::chrono::steady_clock::now() - std::chrono::hours(1);
    c->request_time = std::chrono::steady_clock::now();
    return c;
  }

  static std::vector<std::string> Column(const AdminReply& r, const std::string& name) {
    std::vector<std::string> out;
    auto it = std::find(r.columns.begin(), r.columns.end(), name);
    EXPECT_NE(it, r.columns.end()) << name;
    if (it == r.columns.end()) return out;
    size_t i = static_cast<size_t>(it - r.columns.begin());
    for (const auto& row : r.rows) out.push_back(row.at(i).value_or("NULL"));
    return out;
  }

  Proxy proxy_{config::Config{}, Config()};
};

TEST_F(AdminTest, ShowPoolsColumnsAndClientCounts) {
  proxy_.FindOrCreatePool("app", "alice");
  proxy_.FindOrCreatePool("other", "bob");
  AddClient("app", "alice", ClientState::kIdle);
  AddClient("app", "alice", ClientState::kActive);
  AddClient("app", "alice", ClientState::kWaiting);
  AddClient("app", "alice", ClientState::kLogin);
  AddClient("other", "bob", ClientState::kWaiting);
  AdminReply r = Run("SHOW POOLS");
  EXPECT_EQ(r.tag, "SHOW");
  EXPECT_THAT(r.columns,
              ElementsAre("database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
                          "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
                          "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                          "maxwait", "maxwait_us", "pool_mode"));
  ASSERT_EQ(r.rows.size(), 2u);
  for (const auto& row : r.rows) EXPECT_EQ(row.size(), r.columns.size());
  EXPECT_THAT(Column(r, "database"), ElementsAre("app", "other"));
  EXPECT_THAT(Column(r, "user"), ElementsAre("alice", "bob"));
  EXPECT_THAT(Column(r, "cl_active"), ElementsAre("2", "0"));
  EXPECT_THAT(Column(r, "cl_waiting"), ElementsAre("1", "1"));
  EXPECT_THAT(Column(r, "sv_idle"), ElementsAre("0", "0"));
  EXPECT_THAT(Column(r, "pool_mode"), ElementsAre("session", "transaction"));
}

TEST_F(AdminTest, ShowClientsColumnsAndTimes) {
  auto c = AddClient("app", "alice", ClientState::kIdle);
  {
    std::lock_guard lock(c->mu);
    c->application_name = "psql";
  }
  AdminReply r = Run("show clients");
  EXPECT_THAT(r.columns, ElementsAre("type", "user", "database", "state", "addr", "port",
                                     "local_addr", "local_port", "connect_time", "request_time",
                                     "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid",
                                     "tls", "application_name", "pinned"));
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].size(), r.columns.size());
  EXPECT_THAT(Column(r, "type"), ElementsAre("C"));
  EXPECT_THAT(Column(r, "addr"), ElementsAre("192.168.1.9"));
  EXPECT_THAT(Column(r, "port"), ElementsAre("40000"));
  EXPECT_THAT(Column(r, "local_port"), ElementsAre("6432"));
  EXPECT_THAT(Column(r, "link"), ElementsAre("NULL"));
  EXPECT_THAT(Column(r, "application_name"), ElementsAre("psql"));
  EXPECT_THAT(Column(r, "pinned"), ElementsAre(""));
  {
    std::lock_guard lock(c->mu);
    c->pinned = "LISTEN";
  }
  EXPECT_THAT(Column(Run("show clients"), "pinned"), ElementsAre("LISTEN"));
  std::regex time_re(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)");
  std::string connect = Column(r, "connect_time")[0];
  EXPECT_TRUE(std::regex_match(connect, time_re)) << connect;
  // One hour ago, in UTC.
  std::time_t hour_ago = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() -
                                                              std::chrono::hours(1));
  std::tm tm{};
  gmtime_r(&hour_ago, &tm);
  char prefix[32];
  std::strftime(prefix, sizeof prefix, "%Y-%m-%d %H:", &tm);
  EXPECT_EQ(connect.substr(0, 14), prefix);
}

TEST_F(AdminTest, ShowServersColumns) {
  proxy_.FindOrCreatePool("app", "alice");
  AdminReply r = Run("SHOW SERVERS");
  EXPECT_EQ(r.columns, Run("SHOW CLIENTS").columns);
  EXPECT_TRUE(r.rows.empty());  // no server was opened
}

TEST_F(AdminTest, ShowStatsSumsPoolsPerDatabase) {
  Pool* a = proxy_.FindOrCreatePool("app", "alice");
  Pool* b = proxy_.FindOrCreatePool("app", "bob");
  proxy_.FindOrCreatePool("other", "bob");
  a->stats().xact_count += 3;
  b->stats().xact_count += 1;
  a->stats().query_count += 8;
  a->stats().xact_time_us += 400;
  a->stats().bytes_received += 1000;
  b->stats().bytes_sent += 50;
  b->stats().wait_time_us += 20;
  a->stats().pinned_total += 3;
  a->stats().pinned += 1;
  AdminReply r = Run("SHOW STATS");
  EXPECT_THAT(
      r.columns,
      ElementsAre("database", "total_xact_count", "total_query_count", "total_received",
                  "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
                  "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time",
                  "avg_query_time", "avg_wait_time", "total_pinned_clients", "pinned_clients"));
  EXPECT_THAT(Column(r, "total_pinned_clients"), ElementsAre("3", "0"));
  EXPECT_THAT(Column(r, "pinned_clients"), ElementsAre("1", "0"));
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_THAT(Column(r, "database"), ElementsAre("app", "other"));
  EXPECT_THAT(Column(r, "total_xact_count"), ElementsAre("4", "0"));
  EXPECT_THAT(Column(r, "total_query_count"), ElementsAre("8", "0"));
  EXPECT_THAT(Column(r, "total_received"), ElementsAre("1000", "0"));
  EXPECT_THAT(Column(r, "total_sent"), ElementsAre("50", "0"));
  EXPECT_THAT(Column(r, "avg_xact_time"), ElementsAre("100", "0"));  // 400 us / 4 transactions
  EXPECT_THAT(Column(r, "avg_wait_time"), ElementsAre("5", "0"));

  AdminReply one = Run("SHOW STATS other");
  EXPECT_THAT(Column(one, "database"), ElementsAre("other"));

  AdminReply totals = Run("SHOW STATS_TOTALS");
  EXPECT_THAT(totals.columns,
              ElementsAre("database", "total_xact_count", "total_query_count", "total_received",
                          "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
                          "total_pinned_clients", "pinned_clients"));
  AdminReply avgs = Run("SHOW STATS_AVERAGES");
  EXPECT_THAT(avgs.columns,
              ElementsAre("database", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
                          "avg_xact_time", "avg_query_time", "avg_wait_time"));
  EXPECT_EQ(avgs.rows.size(), 2u);
}

TEST_F(AdminTest, ShowDatabasesListsEntriesAndWildcardDatabasesInUse) {
  AdminReply before = Run("SHOW DATABASES");
  EXPECT_THAT(before.columns,
              ElementsAre("name", "host", "port", "database", "force_user", "pool_size",
                          "min_pool_size", "reserve_pool", "server_lifetime", "pool_mode",
                          "max_connections", "current_connections", "paused", "disabled"));
  EXPECT_THAT(Column(before, "name"), ElementsAre("app"));  // "*" itself is not a database

  proxy_.FindOrCreatePool("reports", "bob");
  AdminReply r = Run("SHOW DATABASES");
  EXPECT_THAT(Column(r, "name"), ElementsAre("app", "reports"));
  EXPECT_THAT(Column(r, "host"), ElementsAre("10.0.0.5", "127.0.0.1"));
  EXPECT_THAT(Column(r, "port"), ElementsAre("5433", "5432"));
  EXPECT_THAT(Column(r, "database"), ElementsAre("app_prod", "reports"));
  EXPECT_THAT(Column(r, "force_user"), ElementsAre("app_owner", "NULL"));
  EXPECT_THAT(Column(r, "pool_size"), ElementsAre("7", "20"));
  EXPECT_THAT(Column(r, "server_lifetime"), ElementsAre("3600", "3600"));
  EXPECT_THAT(Column(r, "pool_mode"), ElementsAre("session", "NULL"));
  EXPECT_THAT(Column(r, "current_connections"), ElementsAre("0", "0"));
  EXPECT_THAT(Column(r, "paused"), ElementsAre("0", "0"));
}

TEST_F(AdminTest, ShowListsRows) {
  proxy_.FindOrCreatePool("app", "alice");
  AddClient("app", "alice", ClientState::kIdle);
  AddClient("", "", ClientState::kLogin);
  AdminReply r = Run("SHOW LISTS");
  EXPECT_THAT(r.columns, ElementsAre("list", "items"));
  EXPECT_THAT(Column(r, "list"),
              ElementsAre("databases", "users", "pools", "free_clients", "used_clients",
                          "login_clients", "free_servers", "used_servers", "dns_names", "dns_zones",
                          "dns_queries", "dns_pending"));
  EXPECT_THAT(Column(r, "items"),
              ElementsAre("1", "1", "1", "0", "2", "1", "0", "0", "0", "0", "0", "0"));
}

TEST_F(AdminTest, ShowConfigHasEveryKeyWithDefaults) {
  AdminReply r = Run("SHOW CONFIG");
  EXPECT_THAT(r.columns, ElementsAre("key", "value", "default", "changeable"));
  std::map<std::string, std::pair<std::string, std::string>> kv;
  for (const auto& row : r.rows) kv[*row[0]] = {*row[1], *row[2]};
  for (const char* key : {"listen",
                          "workers",
                          "worker_busy",
                          "pool_mode",
                          "default_pool_size",
                          "min_pool_size",
                          "reserve_pool_size",
                          "reserve_pool_timeout",
                          "max_client_conn",
                          "max_db_connections",
                          "server_lifetime",
                          "server_idle_timeout",
                          "query_wait_timeout",
                          "client_login_timeout",
                          "server_connect_timeout",
                          "shutdown_timeout",
                          "server_reset_query",
                          "track_extra_parameters",
                          "ignore_startup_parameters",
                          "client_message_timeout",
                          "server_check_query",
                          "server_check_delay",
                          "max_packet_size",
                          "auth_type",
                          "hba",
                          "auth_file",
                          "auth_query",
                          "auth_user",
                          "admin_users",
                          "stats_users",
                          "metrics_listen",
                          "client_tls.sslmode",
                          "client_tls.cert_file",
                          "client_tls.key_file",
                          "client_tls.ca_file",
                          "server_tls.sslmode",
                          "server_tls.cert_file",
                          "server_tls.key_file",
                          "server_tls.ca_file",
                          "databases"}) {
    EXPECT_TRUE(kv.count(key)) << key;
  }
  EXPECT_EQ(kv.size(), 40u);
  EXPECT_EQ(kv["listen"].first, "127.0.0.1:6432");
  EXPECT_EQ(kv["server_lifetime"], std::make_pair(std::string("3600"), std::string("3600")));
  EXPECT_EQ(kv["admin_users"], std::make_pair(std::string("postgres"), std::string("")));
  EXPECT_EQ(kv["databases"].first, "*,app");
  EXPECT_EQ(kv["max_packet_size"].first, "268435456");
  for (const auto& row : r.rows) EXPECT_EQ(*row[3], "no");

  AdminReply one = Run("SHOW CONFIG default_pool_size");
  ASSERT_EQ(one.rows.size(), 1u);
  EXPECT_EQ(*one.rows[0][1], "20");
}

TEST_F(AdminTest, ShowVersionAndHelp) {
  AdminReply v = Run("SHOW VERSION");
  EXPECT_THAT(v.columns, ElementsAre("version"));
  ASSERT_EQ(v.rows.size(), 1u);
  EXPECT_EQ(*v.rows[0][0], std::string("pgwarden ") + PGWARDEN_VERSION);
  AdminReply h = Run("show help");
  EXPECT_TRUE(h.columns.empty());
  EXPECT_THAT(h.notice, HasSubstr("SHOW STATS"));
  EXPECT_EQ(h.tag, "SHOW");
}

TEST_F(AdminTest, UnknownCommandsNameThemselves) {
  for (const char* sql : {"SELECT 1", "SHOW FOO", "SHOW POOLS extra", "reload please"}) {
    AdminReply r = Run(sql);
    EXPECT_EQ(r.error_sqlstate, "42601") << sql;
    EXPECT_THAT(r.error_message, HasSubstr("unknown admin command")) << sql;
    EXPECT_THAT(r.error_message, HasSubstr(sql)) << sql;
  }
}

TEST_F(AdminTest, StatsUsersMayOnlyShow) {
  for (const char* sql : {"RELOAD", "PAUSE", "RESUME app", "SHUTDOWN"}) {
    AdminReply r = Run(sql, /*may_modify=*/false);
    EXPECT_EQ(r.error_sqlstate, "42501") << sql;
  }
  EXPECT_EQ(Run("SHOW POOLS", false).error_sqlstate, "");
  EXPECT_EQ(Run("SHOW CONFIG", false).error_sqlstate, "");
  EXPECT_TRUE(proxy_.IsAdmin("postgres"));
  EXPECT_FALSE(proxy_.IsAdmin("monitor"));
  EXPECT_TRUE(proxy_.IsStatsUser("monitor"));
  EXPECT_FALSE(proxy_.IsStatsUser("postgres"));
}

TEST_F(AdminTest, PauseAndResume) {
  Pool* app = proxy_.FindOrCreatePool("app", "alice");
  Pool* other = proxy_.FindOrCreatePool("other", "bob");
  EXPECT_EQ(Run("PAUSE app").tag, "PAUSE");
  EXPECT_TRUE(app->paused());
  EXPECT_FALSE(other->paused());
  EXPECT_THAT(Column(Run("SHOW DATABASES"), "paused"), ElementsAre("1", "0"));
  EXPECT_EQ(Run("RESUME app").tag, "RESUME");
  EXPECT_FALSE(app->paused());
  EXPECT_EQ(Run("pause").tag, "PAUSE");
  EXPECT_TRUE(app->paused() && other->paused());
  EXPECT_EQ(Run("resume;").tag, "RESUME");
  EXPECT_FALSE(app->paused() || other->paused());
  EXPECT_EQ(Run("PAUSE nosuchdb").error_sqlstate, "3D000");
}

TEST_F(AdminTest, ReloadWithoutAuthFile) { EXPECT_EQ(Run("RELOAD").tag, "RELOAD"); }

// ---------------------------------------------------------------- the wire

struct Message {
  char type;
  std::string body;
};

std::vector<Message> Split(const std::string& wire) {
  std::vector<Message> out;
  std::string_view rest = wire;
  while (!rest.empty()) {
    pgwire::Header h;
    EXPECT_EQ(pgwire::DecodeHeader(rest, 1 << 20, &h), pgwire::DecodeStatus::kReady);
    out.push_back({h.type, std::string(rest.substr(5, h.body_size()))});
    rest.remove_prefix(h.wire_size());
  }
  return out;
}

TEST_F(AdminTest, WireOfShowVersion) {
  auto msgs = Split(RunAdminCommand(proxy_, "SHOW VERSION;", true).wire);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].type, 'T');
  EXPECT_EQ(msgs[1].type, 'D');
  EXPECT_THAT(msgs[1].body, HasSubstr(std::string("pgwarden ") + PGWARDEN_VERSION));
  EXPECT_EQ(msgs[2].type, 'C');
  EXPECT_EQ(msgs[2].body, std::string("SHOW") + '\0');
}

TEST_F(AdminTest, WireOfErrorsAndEmptyQuery) {
  auto err = Split(RunAdminCommand(proxy_, "FROB", true).wire);
  ASSERT_EQ(err.size(), 1u);
  EXPECT_EQ(err[0].type, 'E');
  auto fields = pgwire::ParseErrorFields(err[0].body);
  EXPECT_EQ(fields['C'], "42601");
  EXPECT_EQ(fields['M'], "unknown admin command: FROB");

  auto empty = Split(RunAdminCommand(proxy_, " ; ", true).wire);
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].type, 'I');

  auto help = Split(RunAdminCommand(proxy_, "SHOW HELP", true).wire);
  ASSERT_EQ(help.size(), 2u);
  EXPECT_EQ(help[0].type, 'N');
  EXPECT_EQ(help[1].type, 'C');
}

}  // namespace
}  // namespace pgwarden::proxy
