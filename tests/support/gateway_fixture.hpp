// An in-process gateway on loopback with ports picked by the OS, a generated server PKI, a
// temporary planes directory (file plane source) and helpers to read status files.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gateway/gateway.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/ws_client.hpp"

namespace cg::testing {

std::string make_temp_dir(const std::string& prefix);

// YAML for a plane CR whose clientCA is an inline value (PEM text, indented as a block scalar).
std::string plane_yaml(const std::string& kind, const std::string& ns, const std::string& name, const std::string& plane_id,
                       const std::string& ca_pem);
// YAML for a plane CR whose clientCA comes from a secret.
std::string plane_yaml_secret(const std::string& kind, const std::string& ns, const std::string& name,
                              const std::string& plane_id, const std::string& secret_ns, const std::string& secret,
                              const std::string& key);
std::string secret_yaml(const std::string& ns, const std::string& name, const std::string& key, const std::string& pem);

struct GatewayFixture {
  explicit GatewayFixture(std::function<void(gateway::Config&)> tweak = {});
  ~GatewayFixture();
  void start();

  void write_plane(const std::string& file, const std::string& yaml);  // atomic replace
  void remove_plane(const std::string& file);
  ClientTls client(const Cert& leaf, const std::vector<Cert>& send_chain = {}) const;
  std::string ws_target(const std::string& plane_type, const std::string& plane_id) const;
  std::unique_ptr<WsClient> connect(const std::string& plane_type, const std::string& plane_id, const ClientTls& tls,
                                    HttpResult* res = nullptr);
  // Status file content, or null when absent.
  nlohmann::json status(const std::string& kind, const std::string& ns, const std::string& name) const;
  unsigned short port() const { return gw->agent_port(); }

  std::string dir, planes_dir, status_dir;
  Cert server_ca, server;
  Cert internal_ca, caller;  // internal API: CA and a control-plane client certificate
  // TLS settings for an internal API caller (the controller certificate by default).
  ClientTls internal_client() const;
  gateway::Config cfg;
  std::unique_ptr<gateway::Gateway> gw;
};

// Polls `pred` every 20 ms until it holds or `timeout` passes. Returns the last value of `pred`.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace cg::testing
