// The fake Kubernetes API server (tests/fakes/kube_apiserver/fake_apiserver.py) as a child process
// for C++ tests: started on a free port with a test PKI and a bearer token, killed in the destructor.
// Blocking helpers to create/read/patch objects and to drive the /fake/ control API.
#pragma once
#include <sys/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kube/config.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/ws_client.hpp"

namespace boost::asio {
class io_context;
}

namespace cg::testing {

class FakeApiServer {
 public:
  // `extra_args` go to fake_apiserver.py (e.g. {"--bookmark-interval", "0.2"}). Throws when it does not start.
  explicit FakeApiServer(std::vector<std::string> extra_args = {}, std::string token = "test-token");
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  unsigned short port() const { return port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  const std::string& token() const { return token_; }
  const std::string& dir() const { return dir_; }
  std::string ca_pem() const { return ca_.cert_pem(); }
  std::string kubeconfig_path() const { return dir_ + "/kubeconfig"; }  // written by the fake
  // Connection settings for the client under test: the server URL, its CA, the token.
  kube::KubeConfig kube_config() const;

  // One API request with the bearer token.
  HttpResponse request(const std::string& method, const std::string& path, const std::string& body = "",
                       const std::string& content_type = "application/json");
  // Server-side apply of a whole object (creates or updates; the namespace is created when missing).
  // Returns the stored object; throws on a non-2xx answer.
  nlohmann::json apply(const nlohmann::json& obj, const std::string& manager = "test-client");
  // Server-side apply to the /status subresource.
  nlohmann::json apply_status(const nlohmann::json& obj, const std::string& manager);
  // JSON merge patch on an object (path from apiVersion/kind/namespace/name of `ref`).
  nlohmann::json merge_patch(const nlohmann::json& ref, const nlohmann::json& patch);
  // The object, or null when it does not exist (404).
  nlohmann::json get(const std::string& api_version, const std::string& kind, const std::string& ns, const std::string& name);
  void remove(const std::string& api_version, const std::string& kind, const std::string& ns, const std::string& name);
  void ensure_namespace(const std::string& ns);

  // The control API: POST/PUT/DELETE/GET /fake/<path>. Throws on a non-2xx answer.
  nlohmann::json control(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr);
  // The request log (items), e.g. requests("resource=secrets").
  nlohmann::json requests(const std::string& query = "");
  int open_watches();

  // "/api/v1/namespaces/ns/secrets/name", "/apis/openchoreo.dev/v1alpha1/clusterdataplanes/name", ...
  static std::string object_path(const std::string& api_version, const std::string& kind, const std::string& ns,
                                 const std::string& name);

 private:
  ClientTls tls() const;
  std::string dir_;
  std::string token_;
  Cert ca_, server_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  std::vector<std::string> namespaces_;
};

// An io_context run by `threads` threads until destruction (for clients under test).
class IoRunner {
 public:
  explicit IoRunner(int threads = 2);
  ~IoRunner();
  boost::asio::io_context& ioc();
  void stop();  // stops and joins the threads (idempotent)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cg::testing
