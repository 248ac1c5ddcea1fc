// Per-CR verification of an agent's certificate chain (upstream §3.2 with Go-compatible semantics):
// each CR's bundle is checked in isolation, every bundle certificate is a trust anchor (partial
// chains), the agent's own intermediates are used, EKU clientAuth is required, validity is checked,
// and certificates signed with MD5 or SHA-1 are refused (the trust anchor's own signature excepted), as Go does.
#pragma once
#include <cstdint>
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

// Where a CR's CA bundle stands. Upstream lists a CR whose clientCA is not set, or whose bytes (a
// value, or a Secret's key) do not parse, as a candidate for its planeID (an agent then hears
// "certificate not valid for any CR"), and skips only a CR whose Secret reference cannot be followed
// ("no <type> CRs found" when every CR is such).
enum class CaState { loaded, unparseable, not_configured, unreachable };

struct Anchor {
  std::string key;  // CR auth key "ns/name"
  std::shared_ptr<const CaStore> store;  // null: CA could not be loaded
  std::string load_error;  // why `store` is null
  CaState state = CaState::loaded;
  bool candidate() const { return state != CaState::unreachable; }
};

// Why a chain failed one CR's verification: decided where the check fails; the reason text is for
// humans only (logs, the 401 body), the metric label comes from this.
enum class VerifyFailure : uint8_t {
  none,  // verified
  ca_not_loaded,  // the CR's CA bundle could not be loaded (clientCA unset, Secret missing, ...)
  no_client_certificate,  // the agent presented no certificate
  unknown_authority,  // no chain to the CR's bundle
  expired,  // a certificate of the chain has expired
  not_yet_valid,  // a certificate of the chain is not valid yet
  no_client_auth,  // extended key usage excludes clientAuth
  insecure_algorithm,  // a certificate of the chain is signed with MD5 or SHA-1
  other,  // any other X.509 error, or an internal one
};
// The `reason` label of cluster_gateway_cr_verification_failures_total (docs/operations.md):
// unknown_authority, expired, not_yet_valid, no_client_auth, insecure_algorithm, ca_not_loaded, other.
std::string_view metric_label(VerifyFailure f);

struct Verdict {
  std::string key;
  bool ok = false;
  std::string reason;  // empty when ok; human text
  VerifyFailure failure = VerifyFailure::none;
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
