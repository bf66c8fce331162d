// EtcdDcs: the production Dcs, on an etcd v3 cluster through its JSON gateway.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "dcs/etcd_client.h"
#include "dcs/kv_dcs.h"

namespace pgwarden::dcs {

namespace internal {
// Lets EtcdDcs construct its client before the KvDcs base that uses it.
struct EtcdClientHolder {
  EtcdClientHolder(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
      : client(std::move(endpoints), timeout) {}
  EtcdClient client;
};
}  // namespace internal

// One per agent (or CLI command). Keys live under `key_prefix`
// ("/service/<scope>/") in Patroni's layout; see KvDcs for the semantics and
// EtcdClient for endpoint failover and timeouts. Thread-compatible, except
// that WaitForChange() may run concurrently with the other methods.
class EtcdDcs final : private internal::EtcdClientHolder, public KvDcs {
 public:
  // endpoints: "host:port" of the etcd members (REQUIRES: not empty);
  // request_timeout: per endpoint and request.
  EtcdDcs(std::vector<std::string> endpoints, std::string key_prefix, int ttl_seconds,
          std::chrono::milliseconds request_timeout);

  // The underlying client, e.g. for reads outside the cluster prefix.
  EtcdClient& client() { return EtcdClientHolder::client; }
};

}  // namespace pgwarden::dcs
