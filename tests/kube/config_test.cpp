// Kubernetes connection settings: kubeconfig variants, in-cluster files, path selection, clear errors.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <future>
#include <optional>
#include <string>

#include "kube/client.hpp"
#include "kube/config.hpp"
#include "tests/support/fake_apiserver.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/pki.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using cg::kube::KubeConfig;
using cg::testing::base64;
using cg::testing::write_file;

namespace {

// Sets (or unsets) an environment variable for the lifetime of the guard.
class EnvGuard {
 public:
  EnvGuard(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
    if (value) setenv(name, value->c_str(), 1);
    else unsetenv(name);
  }
  ~EnvGuard() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

struct TempDir {
  TempDir() : path(cg::testing::make_temp_dir("cg-kubeconfig-test")) {}
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name, const std::string& content) const {
    std::string p = path + "/" + name;
    fs::create_directories(fs::path(p).parent_path());
    write_file(p, content);
    return p;
  }
  std::string path;
};

std::string kubeconfig(const std::string& cluster, const std::string& user, const std::string& current = "ctx",
                       const std::string& ns = "") {
  std::string y = "apiVersion: v1\nkind: Config\nclusters:\n- name: c1\n  cluster:\n" + cluster +
                  "users:\n- name: u1\n  user:\n" + user + "contexts:\n- name: ctx\n  context:\n    cluster: c1\n    user: u1\n" +
                  (ns.empty() ? "" : "    namespace: " + ns + "\n") +
                  "- name: other\n  context:\n    cluster: c1\n    user: u1\n    namespace: other-ns\n";
  if (!current.empty()) y += "current-context: " + current + "\n";
  return y;
}

std::string load_error(const std::string& path, const std::string& context = "") {
  try {
    cg::kube::load_kubeconfig_file(path, context);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("kubeconfig with a token and certificate-authority-data", "[kube_config]") {
  TempDir d;
  auto ca = cg::testing::make_ca("kube-ca");
  auto p = d.file("config",
                  kubeconfig("    server: https://10.1.2.3:6443\n    certificate-authority-data: " + base64(ca.cert_pem()) + "\n",
                             "    token: sekret-token\n", "ctx", "team-a"));
  KubeConfig c = cg::kube::load_kubeconfig_file(p);
  CHECK(c.server == "https://10.1.2.3:6443");
  CHECK(c.host == "10.1.2.3");
  CHECK(c.port == "6443");
  CHECK(c.base_path.empty());
  CHECK(c.tls_server_name == "10.1.2.3");
  CHECK(c.ca_pem == ca.cert_pem());
  CHECK_FALSE(c.insecure_skip_tls_verify);
  CHECK(c.token() == "sekret-token");
  CHECK_FALSE(c.has_client_cert());
  CHECK(c.default_namespace == "team-a");
  CHECK_THAT(c.source, Contains(p) && Contains("ctx"));
  CHECK(c.host_header() == "10.1.2.3:6443");
}

TEST_CASE("kubeconfig with client certificate and key data", "[kube_config]") {
  TempDir d;
  auto ca = cg::testing::make_ca("kube-ca");
  cg::testing::CertSpec spec;
  spec.cn = "admin";
  auto leaf = cg::testing::make_signed(spec, ca);
  auto p = d.file("config", kubeconfig("    server: https://api.example.com\n    insecure-skip-tls-verify: true\n"
                                       "    tls-server-name: kubernetes.default\n",
                                       "    client-certificate-data: " + base64(leaf.cert_pem()) +
                                           "\n    client-key-data: " + base64(leaf.key_pem()) + "\n"));
  KubeConfig c = cg::kube::load_kubeconfig_file(p);
  CHECK(c.host == "api.example.com");
  CHECK(c.port == "443");
  CHECK(c.host_header() == "api.example.com");
  CHECK(c.tls_server_name == "kubernetes.default");
  CHECK(c.insecure_skip_tls_verify);
  CHECK(c.ca_pem.empty());
  CHECK(c.client_cert_pem == leaf.cert_pem());
  CHECK(c.client_key_pem == leaf.key_pem());
  CHECK(c.token().empty());
  CHECK(c.default_namespace == "default");

  // The client loads the pair; a key that does not belong to the certificate is refused.
  cg::testing::IoRunner io(1);
  CHECK_NOTHROW(cg::kube::KubeClient(io.ioc(), c));
  KubeConfig bad = c;
  bad.client_key_pem = cg::testing::make_ca("other").key_pem();
  CHECK_THROWS_WITH(cg::kube::KubeClient(io.ioc(), bad), Contains("client key"));
}

TEST_CASE("kubeconfig with CA and client certificate files relative to it, and a token file", "[kube_config]") {
  TempDir d;
  auto ca = cg::testing::make_ca("kube-ca");
  auto leaf = cg::testing::make_signed(cg::testing::CertSpec{}, ca);
  d.file("certs/ca.crt", ca.cert_pem());
  d.file("certs/client.crt", leaf.cert_pem());
  d.file("certs/client.key", leaf.key_pem());
  std::string token_path = d.file("certs/token", "first-token\n");
  auto p = d.file("kube/config", kubeconfig("    server: https://[::1]:8443/k8s/clusters/c-1/\n"
                                            "    certificate-authority: ../certs/ca.crt\n",
                                            "    client-certificate: ../certs/client.crt\n"
                                            "    client-key: ../certs/client.key\n"
                                            "    tokenFile: ../certs/token\n"));
  KubeConfig c = cg::kube::load_kubeconfig_file(p);
  CHECK(c.host == "::1");
  CHECK(c.port == "8443");
  CHECK(c.base_path == "/k8s/clusters/c-1");
  CHECK(c.host_header() == "[::1]:8443");
  CHECK(c.ca_pem == ca.cert_pem());
  CHECK(c.client_cert_pem == leaf.cert_pem());
  CHECK(c.client_key_pem == leaf.key_pem());
  CHECK(c.token() == "first-token");

  // The token file is re-read when it changes (mtime/size/inode), not on every call.
  write_file(token_path, "second-token-longer\n");
  fs::last_write_time(token_path, fs::last_write_time(token_path) + std::chrono::seconds(2));
  CHECK(c.token() == "second-token-longer");
  // Unreadable later: the last token stays.
  fs::remove(token_path);
  CHECK(c.token() == "second-token-longer");

  // "token-file" is accepted as a spelling too.
  std::string t2 = d.file("t2", "other\n");
  auto p2 = d.file("config2",
                   kubeconfig("    server: https://k:1\n    insecure-skip-tls-verify: true\n", "    token-file: " + t2 + "\n"));
  CHECK(cg::kube::load_kubeconfig_file(p2).token() == "other");
}

TEST_CASE("kubeconfig: a context can be chosen explicitly", "[kube_config]") {
  TempDir d;
  auto p = d.file("config", kubeconfig("    server: https://k:1\n    insecure-skip-tls-verify: true\n", "    token: t\n"));
  CHECK(cg::kube::load_kubeconfig_file(p).default_namespace == "default");
  CHECK(cg::kube::load_kubeconfig_file(p, "other").default_namespace == "other-ns");
}

TEST_CASE("kubeconfig errors name what is missing", "[kube_config]") {
  TempDir d;
  const std::string ok_cluster = "    server: https://k:1\n    insecure-skip-tls-verify: true\n";
  SECTION("no current-context") {
    auto p = d.file("config", kubeconfig(ok_cluster, "    token: t\n", ""));
    CHECK_THAT(load_error(p), Contains("current-context is not set") && Contains(p));
  }
  SECTION("unknown context") {
    auto p = d.file("config", kubeconfig(ok_cluster, "    token: t\n", "nope"));
    CHECK_THAT(load_error(p), Contains("context \"nope\" not found"));
  }
  SECTION("no server") {
    auto p = d.file("config", kubeconfig("    insecure-skip-tls-verify: true\n", "    token: t\n"));
    CHECK_THAT(load_error(p), Contains("cluster \"c1\": server is not set"));
  }
  SECTION("plain http") {
    auto p = d.file("config", kubeconfig("    server: http://k:80\n", "    token: t\n"));
    CHECK_THAT(load_error(p), Contains("http://"));
  }
  SECTION("unreadable CA file") {
    auto p = d.file("config",
                    kubeconfig("    server: https://k:1\n    certificate-authority: /nonexistent/ca.crt\n", "    token: t\n"));
    CHECK_THAT(load_error(p), Contains("certificate-authority /nonexistent/ca.crt cannot be read"));
  }
  SECTION("bad CA data") {
    auto p = d.file("config", kubeconfig("    server: https://k:1\n    certificate-authority-data: '%%%'\n", "    token: t\n"));
    CHECK_THAT(load_error(p), Contains("certificate-authority-data is not valid base64"));
  }
  SECTION("insecure together with a CA") {
    auto p = d.file("config", kubeconfig("    server: https://k:1\n    insecure-skip-tls-verify: true\n"
                                         "    certificate-authority-data: " +
                                             base64(cg::testing::make_ca("x").cert_pem()) + "\n",
                                         "    token: t\n"));
    CHECK_THAT(load_error(p), Contains("insecure"));
  }
  SECTION("certificate without key") {
    auto p = d.file(
        "config", kubeconfig(ok_cluster, "    client-certificate-data: " + base64(cg::testing::make_ca("x").cert_pem()) + "\n"));
    CHECK_THAT(load_error(p), Contains("client-certificate is set but client-key is not"));
  }
  SECTION("exec plugin") {
    auto p = d.file("config", kubeconfig(ok_cluster, "    exec:\n      command: aws\n"));
    CHECK_THAT(load_error(p), Contains("exec credential plugins are not supported"));
  }
  SECTION("missing token file") {
    auto p = d.file("config", kubeconfig(ok_cluster, "    tokenFile: /nonexistent/token\n"));
    CHECK_THAT(load_error(p), Contains("/nonexistent/token"));
  }
  SECTION("no such file") { CHECK_THAT(load_error(d.path + "/absent"), Contains("cannot be read")); }
  SECTION("not YAML") {
    auto p = d.file("config", "clusters: [\n");
    CHECK_THAT(load_error(p), Contains("invalid YAML"));
  }
}

TEST_CASE("kubeconfig path: explicit, else the first KUBECONFIG entry, else ~/.kube/config", "[kube_config]") {
  TempDir d;
  auto a = d.file("a", kubeconfig("    server: https://a:1\n    insecure-skip-tls-verify: true\n", "    token: ta\n"));
  auto b = d.file("b", kubeconfig("    server: https://b:1\n    insecure-skip-tls-verify: true\n", "    token: tb\n"));
  auto home = d.file("home/.kube/config",
                     kubeconfig("    server: https://home:1\n    insecure-skip-tls-verify: true\n", "    token: th\n"));
  EnvGuard h("HOME", d.path + "/home");
  EnvGuard svc("KUBERNETES_SERVICE_HOST", std::nullopt);
  {
    EnvGuard kc("KUBECONFIG", ":" + b + ":" + a);
    CHECK(cg::kube::kubeconfig_path(a) == a);
    CHECK(cg::kube::kubeconfig_path() == b);
    CHECK(cg::kube::load_default().host == "b");
    CHECK(cg::kube::load_default(a).host == "a");
  }
  {
    EnvGuard kc("KUBECONFIG", std::nullopt);
    CHECK(cg::kube::kubeconfig_path() == home);
    CHECK(cg::kube::load_default().host == "home");
    fs::remove(home);
    CHECK(cg::kube::kubeconfig_path().empty());
    CHECK_THROWS_WITH(cg::kube::load_default(), Contains("no Kubernetes configuration found") && Contains(".kube/config"));
  }
}

TEST_CASE("in-cluster configuration from the service account files", "[kube_config]") {
  TempDir d;
  auto ca = cg::testing::make_ca("cluster-ca");
  cg::kube::InClusterPaths paths{d.path + "/sa"};
  SECTION("complete") {
    d.file("sa/token", "sa-token-1\n");
    d.file("sa/ca.crt", ca.cert_pem());
    d.file("sa/namespace", "openchoreo\n");
    EnvGuard h("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    EnvGuard p("KUBERNETES_SERVICE_PORT", "443");
    KubeConfig c = cg::kube::load_in_cluster(paths);
    CHECK(c.server == "https://10.96.0.1:443");
    CHECK(c.host == "10.96.0.1");
    CHECK(c.port == "443");
    CHECK(c.ca_pem == ca.cert_pem());
    CHECK(c.token() == "sa-token-1");
    CHECK(c.default_namespace == "openchoreo");
    CHECK(c.source == "in-cluster");
    // The kubelet rotates the token: the next call sees the new one.
    d.file("sa/token", "sa-token-2-rotated\n");
    CHECK(c.token() == "sa-token-2-rotated");
  }
  SECTION("IPv6 service host") {
    d.file("sa/token", "t\n");
    d.file("sa/ca.crt", ca.cert_pem());
    EnvGuard h("KUBERNETES_SERVICE_HOST", "fd00::1");
    EnvGuard p("KUBERNETES_SERVICE_PORT", "6443");
    KubeConfig c = cg::kube::load_in_cluster(paths);
    CHECK(c.host == "fd00::1");
    CHECK(c.server == "https://[fd00::1]:6443");
    CHECK(c.default_namespace.empty());
  }
  SECTION("not in a cluster") {
    EnvGuard h("KUBERNETES_SERVICE_HOST", std::nullopt);
    CHECK_THROWS_WITH(cg::kube::load_in_cluster(paths), Contains("KUBERNETES_SERVICE_HOST"));
  }
  SECTION("no token") {
    d.file("sa/ca.crt", ca.cert_pem());
    EnvGuard h("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    EnvGuard p("KUBERNETES_SERVICE_PORT", "443");
    CHECK_THROWS_WITH(cg::kube::load_in_cluster(paths), Contains(d.path + "/sa/token"));
  }
  SECTION("no CA") {
    d.file("sa/token", "t\n");
    EnvGuard h("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    EnvGuard p("KUBERNETES_SERVICE_PORT", "443");
    CHECK_THROWS_WITH(cg::kube::load_in_cluster(paths), Contains(d.path + "/sa/ca.crt"));
  }
}

TEST_CASE("server URLs", "[kube_config]") {
  KubeConfig c;
  cg::kube::parse_server_url("https://Example.com:6443/", c);
  CHECK(c.host == "Example.com");
  CHECK(c.port == "6443");
  CHECK(c.base_path.empty());
  KubeConfig d;
  cg::kube::parse_server_url("k8s.local", d);
  CHECK(d.host == "k8s.local");
  CHECK(d.port == "443");
  KubeConfig e;
  CHECK_THROWS_WITH(cg::kube::parse_server_url("https://h:99999", e), Contains("invalid port"));
  CHECK_THROWS_WITH(cg::kube::parse_server_url("ftp://h", e), Contains("unsupported scheme"));
  CHECK_THROWS_WITH(cg::kube::parse_server_url("https://:1", e), Contains("host is missing"));
}

TEST_CASE("the kubeconfig the fake API server writes is usable by the client", "[kube_config][fake]") {
  cg::testing::FakeApiServer fake;
  KubeConfig c = cg::kube::load_kubeconfig_file(fake.kubeconfig_path());
  CHECK(c.host == "127.0.0.1");
  CHECK(c.token() == fake.token());
  cg::testing::IoRunner io;
  cg::kube::KubeClient client(io.ioc(), c);
  std::promise<cg::kube::Response> done;
  client.request({"GET", "/apis/openchoreo.dev/v1alpha1/clusterdataplanes", "", "", std::chrono::seconds(10)},
                 [&](cg::kube::Response r) { done.set_value(std::move(r)); });
  auto r = done.get_future().get();
  CHECK(r.status == 200);
  CHECK_THAT(r.body, Contains("ClusterDataPlaneList"));
  client.shutdown();
}
