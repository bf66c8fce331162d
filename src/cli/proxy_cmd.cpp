// `pgwarden proxy`: the pooler in front of PostgreSQL.
#include <signal.h>

#include <iostream>
#include <thread>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"
#include "proxy/proxy.h"
#include "proxy/proxy_config.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kProxyHelp = R"(usage: pgwarden proxy -c FILE [--validate-config]

Runs the PostgreSQL connection pooler described by the `proxy:` section of
the configuration: listeners, databases, pools, authentication, limits.

options:
  -c, --config FILE    the YAML configuration (needs `scope`; `proxy:` may be empty)
  --validate-config    check the configuration and exit: 0 when valid, 2 with the problems
  -h, --help           this help

signals: SIGHUP (or RELOAD in the admin console) reads the file again and
applies it without dropping clients: auth_file, hba, users, pool sizes and
limits, timeouts and databases (a changed server address moves that pool's
connections; pool_mode applies to new pools); listen, workers, metrics_listen
and TLS need a restart. A file with errors changes nothing (the log says why).
SIGTERM or SIGINT stop accepting, let transactions finish
(proxy.shutdown_timeout), then close.
)";

}  // namespace

int ProxyCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first, {"config"}, {"validate-config", "help"},
            {{"c", "config"}, {"h", "help"}});
  if (args.Flag("help")) {
    std::cout << kProxyHelp;
    return kExitOk;
  }
  auto path = args.Get("config");
  if (!path) throw UsageError{"pgwarden proxy needs -c FILE (see pgwarden proxy --help)"};
  config::Config cluster;
  proxy::ProxyConfig cfg;
  try {
    cluster = config::LoadConfigFile(*path, config::ConfigUse::kProxy);
    cfg = proxy::ParseProxyConfig(cluster);
  } catch (const config::ConfigError& e) {
    std::cerr << "pgwarden: invalid configuration:\n" << e.what() << "\n";
    return kExitUsage;
  }
  if (args.Flag("validate-config")) {
    std::cout << *path << ": configuration is valid\n";
    return kExitOk;
  }
  LogLevel level = LogLevel::kInfo;
  ParseLogLevel(cluster.log_level, &level);
  SetLogLevel(level);
  SetLogPrefix("proxy");

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  proxy::Proxy proxy(cluster, cfg);
  proxy.SetReloader([file = *path]() -> Result<proxy::ProxyConfig> {
    try {
      return proxy::ParseProxyConfig(config::LoadConfigFile(file, config::ConfigUse::kProxy));
    } catch (const config::ConfigError& e) {
      return InvalidArgument(std::string("invalid configuration: ") + e.what());
    }
  });
  Status st = proxy.Start();
  if (!st.ok()) {
    std::cerr << "pgwarden proxy: " << st.message() << "\n";
    return st.code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  std::thread signal_thread([&] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig == SIGHUP) {
        Status r = proxy.Reload();
        if (!r.ok()) LOG_ERROR("proxy", "reload failed, keeping the old settings: " << r.message());
        continue;
      }
      proxy.Shutdown();
      return;
    }
  });
  signal_thread.detach();
  proxy.Wait();
  LOG_INFO("proxy", "stopped");
  return kExitOk;
}

}  // namespace pgwarden::cli
