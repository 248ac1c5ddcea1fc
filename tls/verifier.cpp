#include "tls/verifier.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <unordered_map>

#include "common/metrics.hpp"
#include "common/thread_annotations.hpp"

namespace cg::tls {

PeerChain PeerChain::from_ssl(SSL* ssl) {
  PeerChain pc;
  pc.leaf_ = SSL_get1_peer_certificate(ssl);
  if (!pc.leaf_) return pc;
  // Server side: the stack holds what the client sent after its leaf.
  STACK_OF(X509)* sk = SSL_get_peer_cert_chain(ssl);
  if (sk) {
    for (int i = 0; i < sk_X509_num(sk); ++i) {
      X509* c = sk_X509_value(sk, i);
      if (X509_cmp(c, pc.leaf_) == 0) continue;
      X509_up_ref(c);
      pc.inter_.push_back(c);
    }
  }
  return pc;
}

PeerChain PeerChain::from_pem(std::string_view pem) {
  PeerChain pc;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (!pc.leaf_) pc.leaf_ = c;
    else pc.inter_.push_back(c);
  }
  BIO_free(bio);
  ERR_clear_error();
  return pc;
}

PeerChain::PeerChain(const PeerChain& o) { *this = o; }
PeerChain& PeerChain::operator=(const PeerChain& o) {
  if (this == &o) return *this;
  reset();
  leaf_ = o.leaf_;
  if (leaf_) X509_up_ref(leaf_);
  for (X509* c : o.inter_) {
    X509_up_ref(c);
    inter_.push_back(c);
  }
  return *this;
}
PeerChain::PeerChain(PeerChain&& o) noexcept : leaf_(o.leaf_), inter_(std::move(o.inter_)) { o.leaf_ = nullptr; }
PeerChain& PeerChain::operator=(PeerChain&& o) noexcept {
  if (this != &o) {
    reset();
    leaf_ = o.leaf_;
    inter_ = std::move(o.inter_);
    o.leaf_ = nullptr;
  }
  return *this;
}
PeerChain::~PeerChain() { reset(); }
void PeerChain::reset() {
  if (leaf_) X509_free(leaf_);
  leaf_ = nullptr;
  for (X509* c : inter_) X509_free(c);
  inter_.clear();
}

namespace {
// Go does not require keyCertSign on CA certificates (upstream §3.10); OpenSSL does. Certificates
// that are CAs by basicConstraints are accepted as issuers whatever their keyUsage says.
int go_compatible_callback(int ok, X509_STORE_CTX* ctx) {
  if (ok) return ok;
  int err = X509_STORE_CTX_get_error(ctx);
  X509* cert = X509_STORE_CTX_get_current_cert(ctx);
  if ((err == X509_V_ERR_INVALID_CA || err == X509_V_ERR_KEYUSAGE_NO_CERTSIGN) && cert &&
      (X509_get_extension_flags(cert) & EXFLAG_CA)) {
    X509_STORE_CTX_set_error(ctx, X509_V_OK);
    return 1;
  }
  return ok;
}

// Go's x509 refuses MD5 and SHA-1 signatures (InsecureAlgorithmError) on every certificate of a
// chain except the trust anchor, whose own signature is never checked. OpenSSL with the default
// verification parameters accepts both: the chain it built is checked here. Returns the digest's
// name when `c` is signed with one of them (MD2, MD4, MD5, MD5-SHA1, SHA-1), nullptr otherwise.
const char* insecure_signature_digest(X509* c) {
  int mdnid = NID_undef;
  if (X509_get_signature_info(c, &mdnid, nullptr, nullptr, nullptr) != 1) return nullptr;
  switch (mdnid) {
    case NID_md2: return "MD2";
    case NID_md4: return "MD4";
    case NID_md5: return "MD5";
    case NID_md5_sha1: return "MD5-SHA1";
    case NID_sha1: return "SHA-1";
    default: return nullptr;
  }
}

bool eku_allows_client(X509* c, bool required) {
  uint32_t flags = X509_get_extension_flags(c);
  if (!(flags & EXFLAG_XKUSAGE)) return !required;
  uint32_t xku = X509_get_extended_key_usage(c);
  return (xku & (XKU_SSL_CLIENT | XKU_ANYEKU)) != 0;
}
}  // namespace

namespace {
// Successful verdicts by (the CR's CA store, the exact certificates the agent sent): an agent that
// reconnects with the same chain to an unchanged CR skips X509_verify_cert (its signature checks).
// The key is the stores' identity (a changed CA is a new store object; a destroyed one never
// matches again) and the full DER of the chain, compared byte for byte, never only a hash. An entry
// lasts until the earliest notAfter of the chain it built, at most kVerifyCacheTtl. Failures are not
// cached. Bounded: expired entries are dropped when it is full, and everything if that is not enough.
constexpr auto kVerifyCacheTtl = std::chrono::minutes(5);
constexpr size_t kVerifyCacheMax = 16384;

std::string chain_der(const PeerChain& chain) {
  std::string out;
  auto add = [&](X509* c) {
    const int n = i2d_X509(c, nullptr);
    if (n <= 0) return false;
    const size_t at = out.size();
    out.resize(at + 4 + static_cast<size_t>(n));
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((n >> (8 * i)) & 0xff);
    auto* p = reinterpret_cast<unsigned char*>(out.data() + at + 4);
    return i2d_X509(c, &p) == n;
  };
  if (!add(chain.leaf())) return {};
  for (X509* c : chain.intermediates())
    if (!add(c)) return {};
  return out;
}

class VerifyCache {
 public:
  bool hit(const CaStore* store, const std::string& der, SysTime now) {
    cg::MutexLock lk(mu_);
    auto [b, e] = map_.equal_range(key(store, der));
    for (auto it = b; it != e; ++it) {
      const Entry& en = it->second;
      if (en.store.lock().get() == store && en.der == der) {
        if (now < en.until) {
          ++stats_.hits;
          metrics::cr_verification_cache(true);
          return true;
        }
        map_.erase(it);
        break;
      }
    }
    ++stats_.misses;
    metrics::cr_verification_cache(false);
    return false;
  }
  void put(const std::shared_ptr<const CaStore>& store, std::string der, SysTime until, SysTime now) {
    cg::MutexLock lk(mu_);
    if (map_.size() >= kVerifyCacheMax) {
      for (auto it = map_.begin(); it != map_.end();)
        it = it->second.until <= now || it->second.store.expired() ? map_.erase(it) : std::next(it);
      if (map_.size() >= kVerifyCacheMax) map_.clear();
    }
    const size_t k = key(store.get(), der);
    map_.emplace(k, Entry{store, std::move(der), until});
  }
  VerifyCacheStats stats() {
    cg::MutexLock lk(mu_);
    VerifyCacheStats s = stats_;
    s.entries = map_.size();
    return s;
  }

 private:
  struct Entry {
    std::weak_ptr<const CaStore> store;
    std::string der;
    SysTime until;
  };
  static size_t key(const CaStore* store, const std::string& der) {
    return std::hash<std::string>{}(der) ^ (std::hash<const void*>{}(store)*0x9e3779b97f4a7c15ULL);
  }
  cg::Mutex mu_;
  std::unordered_multimap<size_t, Entry> map_ CG_GUARDED_BY(mu_);
  VerifyCacheStats stats_ CG_GUARDED_BY(mu_);
};

VerifyCache& verify_cache() {
  static VerifyCache c;
  return c;
}
}  // namespace

VerifyCacheStats verify_cache_stats() { return verify_cache().stats(); }

std::string_view metric_label(VerifyFailure f) {
  switch (f) {
    case VerifyFailure::ca_not_loaded: return "ca_not_loaded";
    case VerifyFailure::unknown_authority: return "unknown_authority";
    case VerifyFailure::expired: return "expired";
    case VerifyFailure::not_yet_valid: return "not_yet_valid";
    case VerifyFailure::no_client_auth: return "no_client_auth";
    case VerifyFailure::insecure_algorithm: return "insecure_algorithm";
    case VerifyFailure::none:
    case VerifyFailure::no_client_certificate:
    case VerifyFailure::other: return "other";
  }
  return "other";
}

Verdict verify_one(const PeerChain& chain, const Anchor& anchor, std::optional<SysTime> now) {
  Verdict v{anchor.key, false, {}};
  if (!anchor.store) {
    v.reason = anchor.load_error.empty() ? "client CA not loaded" : anchor.load_error;
    v.failure = VerifyFailure::ca_not_loaded;
    return v;
  }
  if (chain.empty()) {
    v.reason = "no client certificate presented";
    v.failure = VerifyFailure::no_client_certificate;
    return v;
  }
  // The cache answers only for the real clock (tests that pass `now` always verify).
  const SysTime clock = std::chrono::system_clock::now();
  std::string der = now ? std::string() : chain_der(chain);
  if (!der.empty() && verify_cache().hit(anchor.store.get(), der, clock)) {
    v.ok = true;
    return v;
  }
  std::optional<SysTime> until;
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (X509* c : chain.intermediates()) sk_X509_push(untrusted, c);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  bool ok = false;
  if (ctx && X509_STORE_CTX_init(ctx, anchor.store->store(), chain.leaf(), untrusted) == 1) {
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN);
    X509_STORE_CTX_set_verify_cb(ctx, go_compatible_callback);
    if (now) X509_STORE_CTX_set_time(ctx, 0, std::chrono::system_clock::to_time_t(*now));
    if (X509_verify_cert(ctx) == 1) {
      ok = true;
      STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(ctx);
      const int n = built ? sk_X509_num(built) : 0;
      for (int i = 0; i < n; ++i) {
        X509* c = sk_X509_value(built, i);
        const SysTime na = x509_not_after(c);
        if (!until || na < *until) until = na;
        // The last certificate is the trust anchor (from the CR's bundle): its signature is not used.
        if (const char* weak = i < n - 1 ? insecure_signature_digest(c) : nullptr) {
          ok = false;
          v.reason = i == 0 ? "certificate signed with " + std::string(weak) + " (insecure algorithm)"
                            : "intermediate certificate '" + x509_subject(c) + "' signed with " + std::string(weak) +
                                  " (insecure algorithm)";
          v.failure = VerifyFailure::insecure_algorithm;
          break;
        }
        if (!eku_allows_client(c, i == 0)) {
          ok = false;
          v.reason = i == 0 ? "certificate does not allow extended key usage clientAuth"
                            : "a certificate in the chain restricts extended key usage and excludes clientAuth";
          v.failure = VerifyFailure::no_client_auth;
          break;
        }
      }
    } else {
      int err = X509_STORE_CTX_get_error(ctx);
      v.reason = X509_verify_cert_error_string(err);
      v.failure = VerifyFailure::other;
      if (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
          err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || err == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
          err == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE) {
        v.reason = "certificate signed by unknown authority (" + v.reason + ")";
        v.failure = VerifyFailure::unknown_authority;
      } else if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CRL_HAS_EXPIRED) {
        v.failure = VerifyFailure::expired;
      } else if (err == X509_V_ERR_CERT_NOT_YET_VALID || err == X509_V_ERR_CRL_NOT_YET_VALID) {
        v.failure = VerifyFailure::not_yet_valid;
      }
    }
  } else {
    v.reason = "internal error initialising verification";
    v.failure = VerifyFailure::other;
  }
  if (ctx) X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  ERR_clear_error();
  v.ok = ok;
  if (ok) v.failure = VerifyFailure::none;
  if (ok && !der.empty() && until && *until > clock)
    verify_cache().put(anchor.store, std::move(der), std::min<SysTime>(*until, clock + kVerifyCacheTtl), clock);
  return v;
}

std::vector<Verdict> verify_all(const PeerChain& chain, const std::vector<Anchor>& anchors, std::optional<SysTime> now) {
  std::vector<Verdict> out;
  out.reserve(anchors.size());
  for (const auto& a : anchors) out.push_back(verify_one(chain, a, now));
  return out;
}

}  // namespace cg::tls
