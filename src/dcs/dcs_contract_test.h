// The Dcs contract tests (dcs_contract_test.cpp), run on every backend that instantiates them.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "dcs/kv_dcs.h"
#include "dcs/kv_store.h"

namespace pgwarden::dcs {

// One cluster (a key prefix) on one store, handing out Dcs instances that
// play different nodes (or different runs of one node).
class DcsBackend {
 public:
  virtual ~DcsBackend() = default;
  // A new Dcs on the cluster, with its own lease of `ttl_seconds`.
  virtual std::unique_ptr<KvDcs> NewDcs(int ttl_seconds) = 0;
  // The smallest TTL the backend honours.
  virtual int ShortTtl() const = 0;
  // Returns once leases of `ttl_seconds` that nobody renewed have expired.
  virtual void LetLeasesExpire(int ttl_seconds) = 0;
  // The raw store, to write keys no Dcs method writes.
  virtual KvStore& Store() = 0;
  // The cluster's key prefix, e.g. "/service/test1/".
  virtual std::string Prefix() const = 0;
};

// A test parameter: a name and how to make a fresh backend.
struct BackendParam {
  std::string name;
  std::function<std::unique_ptr<DcsBackend>()> make;
};
inline std::ostream& operator<<(std::ostream& os, const BackendParam& p) { return os << p.name; }

class DcsContractTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    ASSERT_NE(backend_, nullptr) << "backend " << GetParam().name << " is not available";
  }
  std::unique_ptr<KvDcs> NewDcs(int ttl_seconds = 30) { return backend_->NewDcs(ttl_seconds); }

  std::unique_ptr<DcsBackend> backend_;
};

}  // namespace pgwarden::dcs
