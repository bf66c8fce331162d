// The admin console (minimal until the full SHOW set lands).
#include "proxy/admin.h"

#include "pgwire/message.h"
#include "proxy/proxy.h"

namespace pgwarden::proxy {

AdminResult RunAdminCommand(Proxy& proxy, std::string_view sql) {
  AdminResult r;
  pgwire::AppendErrorResponse(r.wire, "ERROR", "0A000", "admin commands are not implemented yet");
  return r;
}

}  // namespace pgwarden::proxy
