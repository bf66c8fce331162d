// EtcdDcs: wires an EtcdClient under the shared KvDcs semantics.
#include "dcs/etcd_dcs.h"

#include <utility>

namespace pgwarden::dcs {

EtcdDcs::EtcdDcs(std::vector<std::string> endpoints, std::string key_prefix, int ttl_seconds,
                 std::chrono::milliseconds request_timeout)
    : EtcdClientHolder(std::move(endpoints), request_timeout),
      KvDcs(EtcdClientHolder::client, std::move(key_prefix), ttl_seconds) {}

}  // namespace pgwarden::dcs
