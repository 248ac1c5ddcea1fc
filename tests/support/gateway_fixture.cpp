#include "tests/support/gateway_fixture.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/ids.hpp"

namespace cg::testing {
namespace fs = std::filesystem;

std::string make_temp_dir(const std::string& prefix) {
  auto p = fs::temp_directory_path() / (prefix + "-" + random_hex(6));
  fs::create_directories(p);
  return p.string();
}

namespace {
std::string indent(const std::string& text, const std::string& pad) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) out += pad + line + "\n";
  return out;
}
std::string header(const std::string& kind, const std::string& ns, const std::string& name) {
  std::string y = "apiVersion: openchoreo.dev/v1alpha1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n";
  if (!ns.empty()) y += "  namespace: " + ns + "\n";
  return y;
}
}  // namespace

std::string plane_yaml(const std::string& kind, const std::string& ns, const std::string& name, const std::string& plane_id,
                       const std::string& ca_pem) {
  std::string y = header(kind, ns, name) + "spec:\n";
  if (!plane_id.empty()) y += "  planeID: " + plane_id + "\n";
  y += "  clusterAgent:\n    clientCA:\n      value: |\n" + indent(ca_pem, "        ");
  return y;
}

std::string plane_yaml_secret(const std::string& kind, const std::string& ns, const std::string& name,
                              const std::string& plane_id, const std::string& secret_ns, const std::string& secret,
                              const std::string& key) {
  std::string y = header(kind, ns, name) + "spec:\n";
  if (!plane_id.empty()) y += "  planeID: " + plane_id + "\n";
  y += "  clusterAgent:\n    clientCA:\n      secretKeyRef:\n        name: " + secret + "\n        key: " + key + "\n";
  if (!secret_ns.empty()) y += "        namespace: " + secret_ns + "\n";
  return y;
}

std::string secret_yaml(const std::string& ns, const std::string& name, const std::string& key, const std::string& pem) {
  return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\ndata:\n  " + key + ": " +
         base64(pem) + "\n";
}

GatewayFixture::GatewayFixture(std::function<void(gateway::Config&)> tweak) {
  dir = make_temp_dir("cg-test");
  planes_dir = dir + "/planes";
  status_dir = dir + "/status";
  fs::create_directories(planes_dir);
  server_ca = make_ca("test gateway CA");
  server = make_server(server_ca);
  write_file(dir + "/server.crt", server.cert_pem());
  write_file(dir + "/server.key", server.key_pem());
  internal_ca = make_ca("test internal CA");
  caller = make_signed(CertSpec{.cn = "openchoreo-controller-manager"}, internal_ca);
  write_file(dir + "/internal-ca.crt", internal_ca.cert_pem());
  cfg.bind = "127.0.0.1";
  cfg.port = 0;
  cfg.health_port = 0;
  cfg.internal_port = 0;
  cfg.internal_client_ca = dir + "/internal-ca.crt";
  cfg.server_cert = dir + "/server.crt";
  cfg.server_key = dir + "/server.key";
  cfg.planes_dir = planes_dir;
  cfg.status_dir = status_dir;
  cfg.heartbeat_interval = std::chrono::seconds(30);
  cfg.heartbeat_timeout = std::chrono::seconds(90);
  cfg.status_heartbeat_interval = std::chrono::seconds(30);
  cfg.startup_grace = std::chrono::seconds(0);
  cfg.shutdown_timeout = std::chrono::seconds(5);
  cfg.io_threads = 2;
  if (tweak) tweak(cfg);
}

GatewayFixture::~GatewayFixture() {
  if (gw) gw->shutdown();
  gw.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

void GatewayFixture::start() {
  gw = std::make_unique<gateway::Gateway>(cfg);
  gw->start();
}

void GatewayFixture::write_plane(const std::string& file, const std::string& yaml) {
  const std::string tmp = planes_dir + "/.tmp-" + random_hex(4);
  write_file(tmp, yaml);
  fs::rename(tmp, planes_dir + "/" + file);
}

void GatewayFixture::remove_plane(const std::string& file) { fs::remove(planes_dir + "/" + file); }

ClientTls GatewayFixture::client(const Cert& leaf, const std::vector<Cert>& chain) const {
  ClientTls t;
  t.cert_chain_pem = leaf.cert_pem();
  for (const auto& c : chain) t.cert_chain_pem += c.cert_pem();
  t.key_pem = leaf.key_pem();
  t.ca_pem = server_ca.cert_pem();
  return t;
}

ClientTls GatewayFixture::internal_client() const { return client(caller); }

std::string GatewayFixture::ws_target(const std::string& type, const std::string& id) const {
  return "/ws?planeID=" + id + "&planeType=" + type;
}

std::unique_ptr<WsClient> GatewayFixture::connect(const std::string& type, const std::string& id, const ClientTls& tls,
                                                  HttpResult* res) {
  HttpResult local;
  return WsClient::connect(port(), ws_target(type, id), tls, res ? *res : local);
}

nlohmann::json GatewayFixture::status(const std::string& kind, const std::string& ns, const std::string& name) const {
  std::ifstream f(status_dir + "/" + kind + "." + (ns.empty() ? "_cluster" : ns) + "." + name + ".json");
  if (!f) return nullptr;
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace cg::testing
