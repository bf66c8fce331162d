// Subcommand dispatch for the pgwarden binary.
#pragma once

namespace pgwarden::cli {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;       // success
inline constexpr int kExitFailure = 1;  // a runtime failure
inline constexpr int kExitUsage = 2;    // usage or configuration error

// Runs the subcommand named by argv[1]; returns the process exit code.
int Main(int argc, char** argv);

}  // namespace pgwarden::cli
