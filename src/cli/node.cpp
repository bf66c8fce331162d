// `pgwarden node`: the agent for one PostgreSQL server.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <thread>

#include "agent/agent.h"
#include "agent/rest_api.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"
#include "dcs/etcd_dcs.h"
#include "net/http_server.h"
#include "pg/controller.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kNodeHelp = R"(usage: pgwarden node -c FILE [--validate-config]

Runs the agent for one PostgreSQL server: bootstraps it (initdb, or a base
backup from the leader), runs PostgreSQL as its child, holds or follows the
leader lease in etcd, promotes the best standby when the leader's lease
expires, rejoins a former primary with pg_rewind, keeps replication slots
and synchronous replication, and serves the Patroni-compatible REST API on
restapi.listen. Unless watchdog.mode is off it starts `pgwarden watchdog`,
which stops PostgreSQL if this agent stops renewing the lease.

options:
  -c, --config FILE    the YAML configuration (Patroni's shape)
  --validate-config    check the configuration and exit: 0 when valid,
                       2 with every problem listed
  -h, --help           this help

SIGTERM or SIGINT: fast shutdown of PostgreSQL, then the leader key is
released so the other members need not wait a full TTL.
)";

pg::PgSettings SettingsFrom(const config::Config& cfg) {
  pg::PgSettings s;
  s.member_name = cfg.name;
  s.data_dir = cfg.postgresql.data_dir;
  s.bin_dir = cfg.postgresql.bin_dir;
  s.os_user = cfg.postgresql.os_user;
  s.log_file = cfg.postgresql.log_file;
  s.listen = cfg.postgresql.listen;
  s.superuser = cfg.postgresql.superuser;
  s.replication = cfg.postgresql.replication;
  s.rewind = cfg.postgresql.rewind;
  s.initdb_args = cfg.bootstrap.initdb_args;
  s.parameters = cfg.bootstrap.dcs.parameters;
  for (const auto& [k, v] : cfg.postgresql.parameters) s.parameters[k] = v;
  s.pg_hba = cfg.postgresql.pg_hba;
  return s;
}

}  // namespace

int NodeCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first, {"config"}, {"validate-config", "help"},
            {{"c", "config"}, {"h", "help"}});
  if (args.Flag("help")) {
    std::cout << kNodeHelp;
    return kExitOk;
  }
  auto path = args.Get("config");
  if (!path) throw UsageError{"pgwarden node needs -c FILE (see pgwarden node --help)"};
  config::Config cfg;
  try {
    cfg = config::LoadConfigFile(*path, config::ConfigUse::kNode);
  } catch (const config::ConfigError& e) {
    std::cerr << "pgwarden: invalid configuration:\n" << e.what() << "\n";
    return kExitUsage;
  }
  if (args.Flag("validate-config")) {
    std::cout << *path << ": configuration is valid\n";
    return kExitOk;
  }
  LogLevel level = LogLevel::kInfo;
  ParseLogLevel(cfg.log_level, &level);
  SetLogLevel(level);
  SetLogPrefix(cfg.name);

  // Signals go to one thread that turns them into `stop`; every other thread
  // (created below) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> stop{false};
  std::thread signal_thread([&] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig == SIGHUP) {
        LOG_INFO("node", "SIGHUP: configuration reload is not supported yet; ignoring");
        continue;
      }
      LOG_INFO("node", "received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ": shutting down");
      stop = true;
      return;
    }
  });
  signal_thread.detach();

  std::vector<std::string> endpoints;
  for (const auto& h : cfg.etcd.hosts) endpoints.push_back(h.ToString());
  std::string endpoint_list;
  for (const auto& e : endpoints) endpoint_list += (endpoint_list.empty() ? "" : ", ") + e;
  LOG_INFO("node", "etcd endpoints: " << endpoint_list << "; key prefix " << cfg.KeyPrefix());

  // Every endpoint may take the request timeout: all of them together stay
  // within half the retry timeout, so a leader cut off from etcd learns it in
  // time to fence itself before its lease expires.
  auto request_timeout = std::chrono::milliseconds(std::max<int64_t>(
      500, cfg.bootstrap.dcs.retry_timeout * 1000 / (2 * static_cast<int64_t>(endpoints.size()))));
  auto dcs = std::make_unique<dcs::EtcdDcs>(endpoints, cfg.KeyPrefix(), cfg.bootstrap.dcs.ttl,
                                            request_timeout);
  auto pg = pg::MakePgController(SettingsFrom(cfg));
  SteadyClock clock;
  agent::Agent agent(cfg, std::move(dcs), std::move(pg), clock);

  // The watchdog: a process of its own that stops PostgreSQL when this agent
  // stops renewing the lease (frozen, killed, or starved), beside the data
  // directory like PostgreSQL's log.
  if (cfg.watchdog.mode != config::WatchdogMode::kOff) {
    agent::WatchdogOptions wd;
    wd.fifo_path = cfg.postgresql.data_dir + ".watchdog";
    wd.pid_file = cfg.postgresql.data_dir + ".watchdog.pid";
    wd.log_file = cfg.postgresql.data_dir + ".watchdog.log";
    wd.data_dir = cfg.postgresql.data_dir;
    wd.mode = cfg.watchdog.mode;
    wd.device = cfg.watchdog.device;
    auto client = std::make_unique<agent::WatchdogClient>();
    Status started = client->Start(wd);
    if (started.ok()) {
      LOG_INFO("node", "watchdog pid " << client->pid() << " (mode "
                                       << config::WatchdogModeName(wd.mode) << ", log "
                                       << wd.log_file << ")");
    } else if (wd.mode == config::WatchdogMode::kRequired) {
      LOG_ERROR("node", "watchdog.mode is required but the watchdog does not run: "
                            << started.message() << "; this member will not lead");
    } else {
      LOG_WARN("node", "the watchdog does not run: " << started.message()
                                                     << "; a frozen agent cannot fence itself");
    }
    agent.SetWatchdog(std::move(client), std::move(wd));
  }

  net::HttpServerOptions http;
  http.host = cfg.restapi.listen.host;
  http.port = cfg.restapi.listen.port;
  net::HttpServer rest(http, [&agent](const net::HttpRequest& req) {
    return agent::HandleRestRequest(agent.Snapshot(), req);
  });
  Status st = rest.Start();
  if (!st.ok()) {
    LOG_ERROR("node", "REST API: " << st.message());
    return kExitFailure;
  }
  LOG_INFO("node", "REST API listening on " << rest.address());
  int rc = agent.Run(stop);
  rest.Stop();
  return rc;
}

}  // namespace pgwarden::cli
