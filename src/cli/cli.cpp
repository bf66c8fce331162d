// Subcommand table and top-level help.
#include "cli/cli.h"

#include <cstdio>
#include <cstring>

namespace pgwarden::cli {

int Main(int argc, char** argv) {
  std::printf("pgwarden %s\n", PGWARDEN_VERSION);
  return kExitOk;
}

}  // namespace pgwarden::cli
