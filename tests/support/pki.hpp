// Test PKI: certificates generated at test time with OpenSSL (CAs, intermediates, leaves with
// chosen EKU, validity windows and key types).
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

namespace cg::testing {

enum class KeyType { ec_p256, rsa2048 };
// The digest the issuer signs with (MD5 needs an RSA issuer key: there is no ECDSA-with-MD5).
enum class SigDigest { sha256, sha1, md5 };

struct CertSpec {
  std::string cn = "test";
  std::string org = "cluster-gateway tests";
  bool is_ca = false;
  bool client_auth = true;  // EKU clientAuth
  bool server_auth = false;  // EKU serverAuth
  bool no_eku = false;  // omit the EKU extension entirely
  std::vector<std::string> dns;
  std::vector<std::string> ips;
  std::chrono::seconds not_before = std::chrono::hours(-1);  // relative to now
  std::chrono::seconds not_after = std::chrono::hours(24 * 365);
  KeyType key = KeyType::ec_p256;
  SigDigest digest = SigDigest::sha256;
};

class Cert {
 public:
  Cert() = default;
  Cert(std::shared_ptr<X509> c, std::shared_ptr<EVP_PKEY> k) : cert_(std::move(c)), key_(std::move(k)) {}
  X509* x509() const { return cert_.get(); }
  EVP_PKEY* key() const { return key_.get(); }
  std::string cert_pem() const;
  std::string key_pem() const;

 private:
  std::shared_ptr<X509> cert_;
  std::shared_ptr<EVP_PKEY> key_;
};

Cert make_self_signed(const CertSpec& spec);
Cert make_signed(const CertSpec& spec, const Cert& issuer);

// Convenience: a CA, and a server certificate for 127.0.0.1/localhost issued by it.
Cert make_ca(const std::string& cn, KeyType key = KeyType::ec_p256);
Cert make_server(const Cert& ca);

void write_file(const std::string& path, const std::string& content);
std::string base64(const std::string& bytes);

}  // namespace cg::testing
