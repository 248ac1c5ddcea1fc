// Per-CR verification of an agent's certificate chain (upstream §3.2 with Go-compatible semantics):
// each CR's bundle is checked in isolation, every bundle certificate is a trust anchor (partial
// chains), the agent's own intermediates are used, EKU clientAuth is required, validity is checked.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "tls/ca_store.hpp"

typedef struct ssl_st SSL;

namespace cg::tls {

// The certificates an agent presented: the leaf and the untrusted intermediates after it.
class PeerChain {
 public:
  PeerChain() = default;
  static PeerChain from_ssl(SSL* ssl);
  static PeerChain from_pem(std::string_view pem);  // first cert = leaf
  PeerChain(const PeerChain&);
  PeerChain& operator=(const PeerChain&);
  PeerChain(PeerChain&&) noexcept;
  PeerChain& operator=(PeerChain&&) noexcept;
  ~PeerChain();

  bool empty() const { return leaf_ == nullptr; }
  X509* leaf() const { return leaf_; }
  const std::vector<X509*>& intermediates() const { return inter_; }
  std::string subject() const { return x509_subject(leaf_); }
  std::string issuer() const { return x509_issuer(leaf_); }
  SysTime not_after() const { return x509_not_after(leaf_); }

 private:
  void reset();
  X509* leaf_ = nullptr;
  std::vector<X509*> inter_;
};

struct Anchor {
  std::string key;                         // CR auth key "ns/name"
  std::shared_ptr<const CaStore> store;    // null: CA could not be loaded
  std::string load_error;                  // why `store` is null
};

struct Verdict {
  std::string key;
  bool ok = false;
  std::string reason;  // empty when ok
};

// Verifies the chain against one CR's store. `now` overrides the clock (tests; no cache then).
// Successful verdicts are cached by (store, exact chain) until the chain's earliest notAfter, at
// most 5 minutes (see verifier.cpp).
Verdict verify_one(const PeerChain& chain, const Anchor& anchor, std::optional<SysTime> now = std::nullopt);
struct VerifyCacheStats {
  uint64_t hits = 0, misses = 0;
  size_t entries = 0;
};
VerifyCacheStats verify_cache_stats();

std::vector<Verdict> verify_all(const PeerChain& chain, const std::vector<Anchor>& anchors,
                                std::optional<SysTime> now = std::nullopt);

}  // namespace cg::tls
