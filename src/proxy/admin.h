// The admin console: the virtual database `pgwarden` with PgBouncer's SHOW commands.
#pragma once

#include <string>
#include <string_view>

namespace pgwarden::proxy {

class Proxy;

// What a command produced: protocol messages (RowDescription, DataRows,
// CommandComplete, or an ErrorResponse), without the ReadyForQuery.
struct AdminResult {
  std::string wire;
};

// Runs one admin command (SHOW POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|
// VERSION|LISTS, RELOAD, PAUSE [db], RESUME [db], SHUTDOWN), case-insensitive,
// with an optional trailing ';'. Unknown commands give an ErrorResponse.
AdminResult RunAdminCommand(Proxy& proxy, std::string_view sql);

}  // namespace pgwarden::proxy
