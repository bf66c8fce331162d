// NodeStatus: derived values of the agent's published snapshot.
#include "agent/node_status.h"

#include "agent/rest_api.h"

namespace pgwarden::agent {

std::optional<uint64_t> NodeStatus::ReplicationLagBytes() const {
  // The leader itself trails nobody.
  if (is_leader && !in_recovery) return 0;
  Lsn leader_position = LeaderPosition(cluster);
  if (!leader_position.valid() || !replay_lsn.valid()) return std::nullopt;
  return leader_position.BytesAfter(replay_lsn);
}

}  // namespace pgwarden::agent
