#include "tls/verifier.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

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

bool eku_allows_client(X509* c, bool required) {
  uint32_t flags = X509_get_extension_flags(c);
  if (!(flags & EXFLAG_XKUSAGE)) return !required;
  uint32_t xku = X509_get_extended_key_usage(c);
  return (xku & (XKU_SSL_CLIENT | XKU_ANYEKU)) != 0;
}
}  // namespace

Verdict verify_one(const PeerChain& chain, const Anchor& anchor, std::optional<SysTime> now) {
  Verdict v{anchor.key, false, {}};
  if (!anchor.store) {
    v.reason = anchor.load_error.empty() ? "client CA not loaded" : anchor.load_error;
    return v;
  }
  if (chain.empty()) {
    v.reason = "no client certificate presented";
    return v;
  }
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
      for (int i = 0; built && i < sk_X509_num(built); ++i) {
        X509* c = sk_X509_value(built, i);
        if (!eku_allows_client(c, i == 0)) {
          ok = false;
          v.reason = i == 0 ? "certificate does not allow extended key usage clientAuth"
                            : "a certificate in the chain restricts extended key usage and excludes clientAuth";
          break;
        }
      }
    } else {
      int err = X509_STORE_CTX_get_error(ctx);
      v.reason = X509_verify_cert_error_string(err);
      if (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
          err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || err == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
          err == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE)
        v.reason = "certificate signed by unknown authority (" + v.reason + ")";
    }
  } else {
    v.reason = "internal error initialising verification";
  }
  if (ctx) X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  ERR_clear_error();
  v.ok = ok;
  return v;
}

std::vector<Verdict> verify_all(const PeerChain& chain, const std::vector<Anchor>& anchors,
                                std::optional<SysTime> now) {
  std::vector<Verdict> out;
  out.reserve(anchors.size());
  for (const auto& a : anchors) out.push_back(verify_one(chain, a, now));
  return out;
}

}  // namespace cg::tls
