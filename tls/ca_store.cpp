#include "tls/ca_store.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cctype>

namespace cg::tls {
namespace {

std::string strip_ws(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) out += c;
  return out;
}

bool b64_decode(std::string_view in, std::string& out) {
  std::string s = strip_ws(in);
  if (s.empty() || s.size() % 4 != 0) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return false;
  out.assign(s.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  if (n < 0) return false;
  size_t pad = 0;
  if (s.size() >= 1 && s[s.size() - 1] == '=') ++pad;
  if (s.size() >= 2 && s[s.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return true;
}

struct PemBlock {
  std::string label;
  std::string body;  // base64 text between the armour lines
};

std::vector<PemBlock> split_pem(std::string_view text) {
  std::vector<PemBlock> blocks;
  size_t pos = 0;
  constexpr std::string_view kBegin = "-----BEGIN ";
  while (true) {
    size_t b = text.find(kBegin, pos);
    if (b == std::string_view::npos) break;
    size_t le = text.find("-----", b + kBegin.size());
    if (le == std::string_view::npos) break;
    std::string label(text.substr(b + kBegin.size(), le - b - kBegin.size()));
    std::string end_marker = "-----END " + label + "-----";
    size_t body_start = le + 5;
    size_t e = text.find(end_marker, body_start);
    if (e == std::string_view::npos) {
      blocks.push_back({label, ""});  // unterminated: counted as a skipped block
      break;
    }
    blocks.push_back({label, std::string(text.substr(body_start, e - body_start))});
    pos = e + end_marker.size();
  }
  return blocks;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

std::string name_str(X509_NAME* n) {
  if (!n) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, n, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string s(data, static_cast<size_t>(len));
  BIO_free(bio);
  return s;
}
}  // namespace

std::string x509_subject(X509* c) { return c ? name_str(X509_get_subject_name(c)) : ""; }
std::string x509_issuer(X509* c) { return c ? name_str(X509_get_issuer_name(c)) : ""; }

SysTime x509_not_after(X509* c) {
  const ASN1_TIME* t = X509_get0_notAfter(c);
  struct tm tm {};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return SysTime{};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string x509_sha256(X509* c) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(c, EVP_sha256(), md, &n);
  return hex(md, n);
}

std::shared_ptr<const CaStore> CaStore::from_bundle(std::string_view bundle, std::string& error) {
  std::string text(bundle);
  if (text.find("-----BEGIN") == std::string::npos) {
    std::string decoded;
    if (!b64_decode(text, decoded) || decoded.find("-----BEGIN") == std::string::npos) {
      error = strip_ws(text).empty() ? "CA bundle is empty" : "CA bundle is neither PEM nor base64-encoded PEM";
      return nullptr;
    }
    text = std::move(decoded);
  }
  std::shared_ptr<CaStore> st(new CaStore());
  st->store_ = X509_STORE_new();
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  for (const auto& blk : split_pem(text)) {
    if (blk.label != "CERTIFICATE") {
      ++st->skipped_;
      continue;
    }
    std::string der;
    if (!b64_decode(blk.body, der)) {
      ++st->skipped_;
      continue;
    }
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    X509* cert = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
    if (!cert) {
      ++st->skipped_;
      continue;
    }
    if (X509_STORE_add_cert(st->store_, cert) == 1) {
      ++st->count_;
      st->subjects_.push_back(x509_subject(cert));
      EVP_DigestUpdate(md, der.data(), der.size());
    }
    X509_free(cert);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(md, out, &n);
  EVP_MD_CTX_free(md);
  ERR_clear_error();
  if (st->count_ == 0) {
    error = "CA bundle contains no usable certificate";
    return nullptr;
  }
  st->fingerprint_ = hex(out, n);
  return st;
}

CaStore::~CaStore() {
  if (store_) X509_STORE_free(store_);
}

}  // namespace cg::tls
