// Subcommand table and top-level help.
#include "cli/cli.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kHelp = R"(usage: pgwarden <command> [options]

PostgreSQL replication and high availability in one binary.

commands:
  node -c FILE     run the agent for one PostgreSQL server
  proxy -c FILE    run the connection pooler
  watchdog         stop PostgreSQL when its agent stops re-arming (started by node)
  up               start a local cluster (etcd + N nodes) in the background
  down             stop a local cluster
  status           show the cluster's members and replication
  dsn              print a connection URI for psql / pgbench
  history          list the cluster's timeline switches (failovers)
  version          print the version

`pgwarden <command> --help` tells more. Exit codes: 0 ok, 1 runtime
failure, 2 usage or configuration error.
)";

struct Command {
  const char* name;
  int (*run)(int, char**, int);
};

int VersionCommand(int, char**, int) {
  std::printf("pgwarden %s\n", PGWARDEN_VERSION);
  return kExitOk;
}

constexpr Command kCommands[] = {
    {"node", NodeCommand},         {"up", UpCommand},           {"down", DownCommand},
    {"status", StatusCommand},     {"dsn", DsnCommand},         {"proxy", ProxyCommand},
    {"watchdog", WatchdogCommand}, {"history", HistoryCommand}, {"version", VersionCommand},
};

}  // namespace

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kHelp;
    return kExitUsage;
  }
  std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    std::cout << kHelp;
    return kExitOk;
  }
  if (name == "--version") return VersionCommand(argc, argv, 2);
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc, argv, 2);
    } catch (const UsageError& e) {
      std::cerr << "pgwarden " << name << ": " << e.message << "\n";
      return kExitUsage;
    } catch (const std::exception& e) {
      std::cerr << "pgwarden " << name << ": " << e.what() << "\n";
      return kExitFailure;
    }
  }
  std::cerr << "pgwarden: unknown command '" << name << "'\n\n" << kHelp;
  return kExitUsage;
}

}  // namespace pgwarden::cli
