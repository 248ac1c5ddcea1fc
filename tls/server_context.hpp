// TLS server contexts for the agent listener (client certificate requested, verified by the
// application per CR) and the internal listener (client certificate required, verified in the
// handshake against one CA bundle).
#pragma once
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace cg::tls {

struct ServerTlsOptions {
  std::string cert_file;
  std::string key_file;
  // Empty: request a client certificate but accept any (the agent port). Otherwise require one
  // that chains to this bundle (the internal port).
  std::string require_client_ca_file;
  // With no CA file: whether to ask the client for a certificate at all.
  bool request_client_cert = true;
  // Stateful TLS session resumption (the agent port, --tls-session-cache): the server keeps up to this
  // many sessions, each with the chain its agent presented, for `session_lifetime`. A resumed session
  // is authorized again against the current CRs, like a full handshake (gateway/agent_listener.cpp).
  // 0: every handshake is full, and no session or ticket is issued.
  uint64_t session_cache_entries = 0;
  std::chrono::seconds session_lifetime{3600};
};

// Throws std::runtime_error with a readable message on bad files.
std::shared_ptr<boost::asio::ssl::context> make_server_context(const ServerTlsOptions& opts);

// TLS 1.2 cipher list: ECDHE with AEAD only (TLS 1.3 suites are all AEAD).
extern const char* const kTls12Ciphers;

}  // namespace cg::tls
