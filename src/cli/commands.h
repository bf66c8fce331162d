// The subcommands of the pgwarden binary, one function each.
#pragma once

namespace pgwarden::cli {

// Each returns the process exit code (kExitOk, kExitFailure, kExitUsage) and
// takes the arguments after the subcommand name (argv[first..]).
int NodeCommand(int argc, char** argv, int first);
int UpCommand(int argc, char** argv, int first);
int DownCommand(int argc, char** argv, int first);
int StatusCommand(int argc, char** argv, int first);
int DsnCommand(int argc, char** argv, int first);
int HistoryCommand(int argc, char** argv, int first);
int ProxyCommand(int argc, char** argv, int first);
int WatchdogCommand(int argc, char** argv, int first);

}  // namespace pgwarden::cli
