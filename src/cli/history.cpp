// `pgwarden history`: the cluster's timeline switches from the `history` key, as patronictl's.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/history.h"
#include "cli/local_cluster.h"
#include "common/lsn.h"
#include "dcs/etcd_dcs.h"

namespace pgwarden::cli {
namespace {

constexpr const char* kHistoryHelp = R"(usage: pgwarden history [--dir D | -c FILE] [--json]

Lists the cluster's timeline switches (the `history` key in etcd, in
Patroni's shape): for each promotion the timeline that ended, the LSN where
it ended, the reason, the time and the member that became leader.

options:
  --dir D        the cluster's directory (default ./pgwarden-data)
  -c FILE        a cluster or node configuration instead
  --json         the key's JSON as it is
  -h, --help     this help
)";

std::string Cell(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned()) return Lsn(v.get<uint64_t>()).ToString();
  if (v.is_null()) return "";
  return v.dump();
}

}  // namespace

std::vector<std::vector<std::string>> HistoryRows(const nlohmann::json& history) {
  std::vector<std::vector<std::string>> rows;
  if (!history.is_array()) return rows;
  for (const auto& entry : history) {
    if (!entry.is_array() || entry.empty()) continue;
    std::vector<std::string> row;
    for (size_t i = 0; i < 5; ++i) {
      if (i >= entry.size()) {
        row.emplace_back();
      } else if (i == 0 && entry[i].is_number()) {
        row.push_back(std::to_string(entry[i].get<int64_t>()));
      } else {
        row.push_back(Cell(entry[i]));
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

int HistoryCommand(int argc, char** argv, int first) {
  Args args(argc, argv, first, {"dir", "config"}, {"json", "help"},
            {{"c", "config"}, {"h", "help"}});
  if (args.Flag("help")) {
    std::cout << kHistoryHelp;
    return kExitOk;
  }
  config::Config cfg;
  try {
    cfg = LoadClientConfig(args.Get("config"), args.GetOr("dir", "pgwarden-data"));
  } catch (const config::ConfigError& e) {
    std::cerr << "pgwarden history: " << e.what() << "\n";
    return kExitUsage;
  }
  auto dcs = MakeClientDcs(cfg, std::chrono::milliseconds(3000));
  auto view = dcs->Load();
  if (!view.ok()) {
    std::cerr << "pgwarden history: " << view.status().message() << "\n";
    return kExitFailure;
  }
  const nlohmann::json history = view->history.value_or(nlohmann::json::array());
  if (args.Flag("json")) {
    std::printf("%s\n", history.dump(2).c_str());
    return kExitOk;
  }
  const std::vector<std::string> header = {"TL", "LSN", "Reason", "Timestamp", "New Leader"};
  auto rows = HistoryRows(history);
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto print = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size(); ++i) {
      std::printf("%s%-*s", i ? "  " : "", static_cast<int>(width[i]), r[i].c_str());
    }
    std::printf("\n");
  };
  print(header);
  for (const auto& r : rows) print(r);
  if (rows.empty()) std::printf("(no timeline switch yet)\n");
  return kExitOk;
}

}  // namespace pgwarden::cli
