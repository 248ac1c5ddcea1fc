// One CR's trust anchors, decoded once and shared by every handshake that checks against that CR.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"

typedef struct x509_store_st X509_STORE;
typedef struct x509_st X509;

namespace cg::tls {

class CaStore {
 public:
  // `bundle` is PEM or base64-encoded PEM (the CRD text says base64; upstream expects PEM: both work).
  // Every CERTIFICATE block becomes a trust anchor; other blocks and unparsable certificates are
  // skipped. Returns nullptr and sets `error` when no usable certificate remains.
  static std::shared_ptr<const CaStore> from_bundle(std::string_view bundle, std::string& error);
  ~CaStore();
  CaStore(const CaStore&) = delete;
  CaStore& operator=(const CaStore&) = delete;

  X509_STORE* store() const { return store_; }
  size_t cert_count() const { return count_; }
  // SHA-256 over the anchors' DER, hex: identifies the bundle's content.
  const std::string& fingerprint() const { return fingerprint_; }
  // Subjects of the anchors, for logs.
  const std::vector<std::string>& subjects() const { return subjects_; }
  size_t skipped_blocks() const { return skipped_; }

 private:
  CaStore() = default;
  X509_STORE* store_ = nullptr;
  size_t count_ = 0;
  size_t skipped_ = 0;
  std::string fingerprint_;
  std::vector<std::string> subjects_;
};

// Helpers shared by the verifier and the gateway's logs.
std::string x509_subject(X509* cert);
std::string x509_issuer(X509* cert);
SysTime x509_not_after(X509* cert);
std::string x509_sha256(X509* cert);

}  // namespace cg::tls
