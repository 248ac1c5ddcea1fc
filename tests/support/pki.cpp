#include "tests/support/pki.hpp"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <fstream>
#include <stdexcept>

namespace cg::testing {
namespace {
std::atomic<long> g_serial{1000};

std::shared_ptr<EVP_PKEY> gen_key(KeyType t) {
  EVP_PKEY* k = t == KeyType::ec_p256 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
  if (!k) throw std::runtime_error("key generation failed");
  return {k, EVP_PKEY_free};
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) throw std::runtime_error("bad extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

Cert build(const CertSpec& s, X509* issuer_cert, EVP_PKEY* issuer_key) {
  auto key = gen_key(s.key);
  std::shared_ptr<X509> cert(X509_new(), X509_free);
  X509* c = cert.get();
  X509_set_version(c, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c), ++g_serial);
  X509_gmtime_adj(X509_getm_notBefore(c), static_cast<long>(s.not_before.count()));
  X509_gmtime_adj(X509_getm_notAfter(c), static_cast<long>(s.not_after.count()));
  X509_set_pubkey(c, key.get());
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(s.org.c_str()), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(s.cn.c_str()), -1, -1, 0);
  X509* issuer = issuer_cert ? issuer_cert : c;
  X509_set_issuer_name(c, X509_get_subject_name(issuer));
  if (s.is_ca) {
    add_ext(c, issuer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(c, issuer, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
  } else {
    add_ext(c, issuer, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(c, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
  }
  add_ext(c, issuer, NID_subject_key_identifier, "hash");
  if (issuer_cert) add_ext(c, issuer, NID_authority_key_identifier, "keyid:always");
  if (!s.no_eku && (s.client_auth || s.server_auth)) {
    std::string eku;
    if (s.client_auth) eku = "clientAuth";
    if (s.server_auth) eku += std::string(eku.empty() ? "" : ",") + "serverAuth";
    add_ext(c, issuer, NID_ext_key_usage, eku);
  } else if (!s.no_eku && !s.is_ca) {
    add_ext(c, issuer, NID_ext_key_usage, "emailProtection");
  }
  std::string san;
  for (const auto& d : s.dns) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const auto& i : s.ips) san += (san.empty() ? "" : ",") + std::string("IP:") + i;
  if (!san.empty()) add_ext(c, issuer, NID_subject_alt_name, san);
  const EVP_MD* md = s.digest == SigDigest::md5 ? EVP_md5() : s.digest == SigDigest::sha1 ? EVP_sha1() : EVP_sha256();
  if (!X509_sign(c, issuer_key ? issuer_key : key.get(), md)) throw std::runtime_error("sign failed");
  return Cert(cert, key);
}
}  // namespace

std::string Cert::cert_pem() const {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, cert_.get());
  char* d = nullptr;
  long n = BIO_get_mem_data(b, &d);
  std::string s(d, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

std::string Cert::key_pem() const {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key_.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* d = nullptr;
  long n = BIO_get_mem_data(b, &d);
  std::string s(d, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

Cert make_self_signed(const CertSpec& spec) { return build(spec, nullptr, nullptr); }
Cert make_signed(const CertSpec& spec, const Cert& issuer) { return build(spec, issuer.x509(), issuer.key()); }

Cert make_ca(const std::string& cn, KeyType key) {
  CertSpec s;
  s.cn = cn;
  s.is_ca = true;
  s.client_auth = false;
  s.key = key;
  return make_self_signed(s);
}

Cert make_server(const Cert& ca) {
  CertSpec s;
  s.cn = "cluster-gateway";
  s.client_auth = false;
  s.server_auth = true;
  s.dns = {"localhost", "cluster-gateway"};
  s.ips = {"127.0.0.1"};
  return make_signed(s, ca);
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::trunc | std::ios::binary);
  f << content;
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace cg::testing
