// pgwarden entry point: dispatch to subcommands, nothing else.
#include "cli/cli.h"

int main(int argc, char** argv) { return pgwarden::cli::Main(argc, argv); }
