// One client's session parameters: its values and its startup values, and what its statements,
// the server's reports and the proxy's own queries do to them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/session_params.h"
#include "sql/session_effects.h"

namespace pgwarden::proxy {

// The parameter half of a client session, without sockets: the session feeds
// it what it sees and sends the queries it returns. Values are relative to
// the pool's defaults (ParamSet); `server` arguments are the attached server
// connection's values, which it keeps in step. Owned by the client session;
// used on its thread only.
class ClientParams {
 public:
  explicit ClientParams(const ParamCatalog& catalog) : catalog_(catalog) {}

  // --- login
  // The pool's defaults (null until its first server logged in).
  void SetDefaults(std::shared_ptr<const ParamDefaults> defaults) {
    defaults_ = std::move(defaults);
  }
  bool has_defaults() const { return defaults_ != nullptr; }
  // The parameters the client asked for at startup (id, value). True when a
  // server must check and spell some of them first (SetupQueries); false when
  // they are settled already (application_name needs no server, and a value
  // equal to the default is the default).
  bool TakeStartup(std::vector<std::pair<int, std::string>> asked);
  // The set_config() queries that check and spell what TakeStartup left.
  std::vector<ParamQuery> SetupQueries();
  // The checked values are the client's startup values from now on.
  void FinishStartup() {
    startup_ = values_;
    asked_.clear();
  }

  // The client's value of `id` as the server spells it (the default when it has none).
  const std::string& Value(int id) const;
  const ParamSet& values() const { return values_; }
  bool standard_conforming_strings() const {
    return Value(catalog_.standard_conforming_strings_id()) != "off";
  }

  // --- lending
  // What makes `server` the client's: set_config() / RESET queries (the
  // RESETs are recorded in *server at once: they answer with no value).
  // *may_fail: something other than application_name is set, which the
  // client's request should wait for.
  // `reset_values`: where the server's own RESET leads (its login values,
  // relative to the pool's defaults; they differ after ALTER ROLE … SET):
  // for those the default is set by value, not by RESET.
  std::vector<ParamQuery> Reconcile(ParamSet* server, const ParamSet& reset_values, bool* may_fail);

  // --- what the traffic tells
  // A statement the client is about to run. Returns the names of untracked
  // parameters it sets (the session pins the client for those).
  std::vector<std::string> OnStatement(const sql::SessionEffects& effects);
  // A ParameterStatus; `ours`: from a query of the proxy's. False: hold it
  // back from the client (FinishBatch tells the client what it came to).
  bool OnParameterStatus(int id, std::string_view name, std::string_view value, bool ours,
                         ParamSet* server);
  // A row of a proxy query of parameters (set_config() or current_setting()).
  // `for_client`: the values are the client's too (not while it is leaving).
  void OnRow(const std::vector<int>& columns, const std::vector<std::string>& values,
             ParamSet* server, bool for_client);
  // The server answered part of the batch in progress with an error.
  void OnClientError() {
    if (!batch_steps_.empty()) batch_failed_ = true;
  }
  // The batch in progress RESET a parameter the client gave at startup: its
  // answer decides what to put back (the session holds the client's next
  // bytes until FinishBatch).
  bool holding() const { return !batch_steps_.empty(); }
  // The batch is answered (its ReadyForQuery, status `txn_status`): appends
  // to *to_client, before that ReadyForQuery, the ParameterStatus messages the
  // client is to see, and returns the queries that put startup values back.
  std::vector<ParamQuery> FinishBatch(char txn_status, std::string* to_client);
  // An unreported parameter was touched: read them back when the transaction
  // is over. True once, then false until touched again.
  bool TakeReadbackDue() {
    bool due = readback_due_;
    readback_due_ = false;
    return due;
  }
  // A custom placeholder (a dotted name) was set: it stays in the session even
  // after DISCARD ALL, as PostgreSQL keeps it.
  bool set_placeholder() const { return set_placeholder_; }

 private:
  const std::string& Default(int id) const { return (*defaults_)[static_cast<size_t>(id)]; }

  const ParamCatalog& catalog_;
  std::shared_ptr<const ParamDefaults> defaults_;
  ParamSet values_;   // the client's values now
  ParamSet startup_;  // what it gave at startup: what RESET returns to
  std::vector<std::pair<int, std::string>> asked_;  // startup values the server is to check
  bool readback_due_ = false;
  bool set_placeholder_ = false;
  // The batch in progress, from its first RESET of a startup parameter on:
  // its parameter and transaction steps, whether an error answered part of
  // it, and the ParameterStatus messages held back meanwhile.
  std::vector<sql::Step> batch_steps_;
  bool batch_failed_ = false;
  std::vector<std::pair<std::string, std::string>> held_status_;
};

}  // namespace pgwarden::proxy
