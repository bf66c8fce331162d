// The states of a client session, shared by the session and what reports on it (admin, metrics).
#pragma once

namespace pgwarden::proxy {

// Where a client session is; changed only in ClientSession::SetState().
enum class ClientState {
  kLogin,      // startup packet and authentication (ClientLogin)
  kSetup,      // authenticated: a server is fetched to learn the pool's parameters or to set
               //   and check the client's startup parameters, then given back
  kIdle,       // logged in, no request in flight, no server
  kWaiting,    // has a request and waits for a server connection
  kPreparing,  // a server is attached; server_check_query and the client's parameters run
               //   before its request goes out
  kActive,     // a server is attached and the client's requests go to it
  kResetting,  // the client left; server_reset_query runs before the server goes back
  kClosing,    // draining output, then closed
  kClosed,     // done
};

// As SHOW CLIENTS shows it: login | idle | waiting | active | closing.
const char* ClientStateName(ClientState s);

}  // namespace pgwarden::proxy
