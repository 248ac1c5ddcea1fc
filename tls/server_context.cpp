#include "tls/server_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>
#include <stdexcept>

namespace cg::tls {

const char* const kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

namespace {
std::string last_ssl_error() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

void require_readable(const std::string& path, const char* what) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(std::string(what) + " " + path + " cannot be read");
}

int accept_any(int, X509_STORE_CTX*) { return 1; }
}  // namespace

std::shared_ptr<boost::asio::ssl::context> make_server_context(const ServerTlsOptions& opts) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* c = ctx->native_handle();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_cipher_list(c, kTls12Ciphers) != 1) throw std::runtime_error("cipher list: " + last_ssl_error());

  require_readable(opts.cert_file, "server certificate");
  require_readable(opts.key_file, "server key");
  if (SSL_CTX_use_certificate_chain_file(c, opts.cert_file.c_str()) != 1)
    throw std::runtime_error("server certificate " + opts.cert_file + ": " + last_ssl_error());
  if (SSL_CTX_use_PrivateKey_file(c, opts.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("server key " + opts.key_file + ": " + last_ssl_error());
  if (SSL_CTX_check_private_key(c) != 1)
    throw std::runtime_error("server key does not match the server certificate: " + last_ssl_error());

  static const unsigned char sid[] = "cluster-gateway";
  SSL_CTX_set_session_id_context(c, sid, sizeof sid - 1);
  // Never stateless tickets: a session decrypted from a ticket carries the peer's leaf but not the
  // intermediates it sent (SSL_get_peer_cert_chain is NULL then), so an agent whose certificate comes
  // from an intermediate CA would fail per-CR verification on every resumed connection (bug 14,
  // docs/reliability.md). With SSL_OP_NO_TICKET, TLS 1.3 tickets are stateful (the ticket only names
  // a session in this server's cache) and TLS 1.2 resumes by session ID: the cached SSL_SESSION is
  // the one of the full handshake, peer chain included. One ticket per handshake (OpenSSL's default
  // is two). Without a cache, no session is kept and no ticket is minted.
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  if (opts.session_cache_entries == 0) {
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 0);
  } else {
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(c, static_cast<long>(opts.session_cache_entries));
    SSL_CTX_set_timeout(c, static_cast<long>(opts.session_lifetime.count()));
    SSL_CTX_set_num_tickets(c, 1);
  }
  if (opts.require_client_ca_file.empty() && !opts.request_client_cert) {
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  } else if (opts.require_client_ca_file.empty()) {
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, accept_any);
  } else {
    require_readable(opts.require_client_ca_file, "client CA");
    if (SSL_CTX_load_verify_locations(c, opts.require_client_ca_file.c_str(), nullptr) != 1)
      throw std::runtime_error("client CA " + opts.require_client_ca_file + ": " + last_ssl_error());
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

}  // namespace cg::tls
