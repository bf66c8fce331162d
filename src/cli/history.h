// The rows `pgwarden history` prints, from the `history` key: pure, for tests.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pgwarden::cli {

// One row per entry [timeline, lsn, reason, time, new leader] of Patroni's
// `history` JSON: the LSN as PostgreSQL writes it (0/3000060), missing
// fields empty; entries that are not arrays are skipped.
std::vector<std::vector<std::string>> HistoryRows(const nlohmann::json& history);

}  // namespace pgwarden::cli
