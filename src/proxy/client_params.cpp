// ClientParams: startup values, reconciling a lent server, and putting RESET's values back.
#include "proxy/client_params.h"

#include "pgwire/message.h"

namespace pgwarden::proxy {
namespace {

uint64_t Bit(int id) { return uint64_t{1} << id; }

}  // namespace

const std::string& ClientParams::Value(int id) const {
  static const std::string kNone;
  if (const std::string* v = values_.Find(id)) return *v;
  return defaults_ ? Default(id) : kNone;
}

bool ClientParams::TakeStartup(std::vector<std::pair<int, std::string>> asked) {
  asked_ = std::move(asked);
  if (!defaults_) return true;  // the pool's first client: a server tells the defaults first
  bool need_server = false;
  for (const auto& [id, value] : asked_) {
    if (value == Default(id)) continue;
    // application_name needs no check (any text is valid once cleaned); the
    // others are spelled and checked by the server.
    if (id == catalog_.application_name_id())
      values_.Assign(id, value, Default(id));
    else
      need_server = true;
  }
  if (need_server) return true;
  asked_.clear();
  FinishStartup();
  return false;
}

std::vector<ParamQuery> ClientParams::SetupQueries() {
  std::vector<ParamChange> changes;
  for (const auto& [id, value] : asked_) {
    if (id == catalog_.application_name_id()) {
      values_.Assign(id, value, Default(id));
      continue;
    }
    if (value != Default(id)) changes.push_back({id, &value});
  }
  // asked_ stays until FinishStartup: a server lost meanwhile is replaced
  // and asked again.
  return ApplyQueries(catalog_, changes);
}

std::vector<ParamQuery> ClientParams::Reconcile(ParamSet* server, const ParamSet& reset_values,
                                                bool* may_fail) {
  *may_fail = false;
  std::vector<ParamChange> changes = proxy::Reconcile(values_, *server);
  for (auto& c : changes) {
    *may_fail |= c.id != catalog_.application_name_id();
    if (c.value != nullptr) continue;
    if (reset_values.Find(c.id) != nullptr) {
      c.value = &Default(c.id);  // its RESET would not lead to the pool's default
      continue;
    }
    // A RESET answers with no value: the server is at the default from now
    // on (set_config() answers with the value, recorded in OnRow).
    server->Erase(c.id);
  }
  return ApplyQueries(catalog_, changes);
}

std::vector<std::string> ClientParams::OnStatement(const sql::SessionEffects& e) {
  using K = sql::Step::Kind;
  std::vector<std::string> untracked;
  for (const auto& st : e.steps) {
    if (st.kind == K::kSet || st.kind == K::kReset) {
      int id = catalog_.Find(st.name);
      if (id < 0) {
        if (st.name.find('.') != std::string::npos) set_placeholder_ = true;
        untracked.push_back(st.name);
        continue;
      }
      if (!catalog_.reported(id)) readback_due_ = true;
    } else if (st.kind == K::kResetAll) {
      if (!catalog_.unreported().empty()) readback_due_ = true;
    }
    // From the batch's first RESET on, its steps decide what to put back.
    const bool reset = st.kind == K::kReset || st.kind == K::kResetAll;
    if ((reset || !batch_steps_.empty()) && !startup_.empty()) batch_steps_.push_back(st);
  }
  return untracked;
}

bool ClientParams::OnParameterStatus(int id, std::string_view name, std::string_view value,
                                     bool ours, ParamSet* server) {
  if (id >= 0 && defaults_) {
    server->Assign(id, value, Default(id));
    // The client's values follow what it is shown; what the proxy's own
    // queries change is the client's value already, or the client is gone.
    if (!ours) values_.Assign(id, value, Default(id));
  }
  if (ours || batch_steps_.empty()) return true;
  held_status_.emplace_back(std::string(name), std::string(value));
  return false;
}

void ClientParams::OnRow(const std::vector<int>& columns, const std::vector<std::string>& values,
                         ParamSet* server, bool for_client) {
  if (!defaults_) return;
  for (size_t i = 0; i < columns.size() && i < values.size(); ++i) {
    int id = columns[i];
    server->Assign(id, values[i], Default(id));
    if (for_client) values_.Assign(id, values[i], Default(id));
  }
}

std::vector<ParamQuery> ClientParams::FinishBatch(char txn_status, std::string* to_client) {
  std::vector<sql::Step> steps = std::move(batch_steps_);
  batch_steps_.clear();
  std::vector<std::pair<std::string, std::string>> held = std::move(held_status_);
  held_status_.clear();
  const bool failed = batch_failed_;
  batch_failed_ = false;
  // After an error the batch's changes went with its transaction (or will,
  // at the failed transaction's ROLLBACK): nothing to put back.
  uint64_t resets = 0;
  if (!failed && txn_status != 'E' && defaults_) resets = ResetsInEffect(steps, catalog_);
  std::vector<ParamChange> changes;
  uint64_t restored = 0;
  for (const auto& [id, value] : startup_) {
    if (!(resets & Bit(id))) continue;
    changes.push_back({id, &value});
    restored |= Bit(id);
  }
  // What the client is told before the ReadyForQuery: the batch's own
  // ParameterStatus messages, but for what is put back, and the values put
  // back; as on a direct connection, it never sees the server's default.
  for (const auto& [name, value] : held) {
    int id = catalog_.Find(name);
    if (id >= 0 && (restored & Bit(id))) continue;
    pgwire::AppendParameterStatus(*to_client, name, value);
  }
  for (const auto& c : changes) {
    if (catalog_.reported(c.id))
      pgwire::AppendParameterStatus(*to_client, catalog_.name(c.id), *c.value);
  }
  // set_config() runs inside the client's transaction when there is one: a
  // later ROLLBACK takes it back together with the RESET.
  return ApplyQueries(catalog_, changes);
}

}  // namespace pgwarden::proxy
