#include "tests/support/fake_apiserver.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "plane_index/plane_types.hpp"
#include "tests/support/gateway_fixture.hpp"

#ifndef CG_SOURCE_DIR
#error "CG_SOURCE_DIR must be defined (the repository root)"
#endif

namespace cg::testing {
namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

FakeApiServer::FakeApiServer(std::vector<std::string> extra_args, std::string token) : token_(std::move(token)) {
  dir_ = make_temp_dir("cg-fake-kube");
  ca_ = make_ca("fake-kube-ca");
  server_ = make_server(ca_);
  write_file(dir_ + "/ca.crt", ca_.cert_pem());
  write_file(dir_ + "/server.crt", server_.cert_pem());
  write_file(dir_ + "/server.key", server_.key_pem());
  const std::string script = std::string(CG_SOURCE_DIR) + "/tests/fakes/kube_apiserver/fake_apiserver.py";
  const std::string port_file = dir_ + "/port";
  std::vector<std::string> args = {"/usr/bin/python3", "-B", script, "--port", "0", "--port-file", port_file};
  args.insert(args.end(), {"--cert", dir_ + "/server.crt", "--key", dir_ + "/server.key", "--ca", dir_ + "/ca.crt"});
  args.insert(args.end(), {"--write-kubeconfig", kubeconfig_path()});
  if (!token_.empty()) {
    args.push_back("--token");
    args.push_back(token_);
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = dir_ + "/stdout", err = dir_ + "/stderr";

  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o >= 0) dup2(o, 1);
    if (e >= 0) dup2(e, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string p = slurp(port_file);
    if (!p.empty() && p.back() == '\n') {
      port_ = static_cast<unsigned short>(std::stoi(p));
      break;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("fake apiserver exited at startup: " + slurp(err));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (port_ == 0) {
    std::string e = slurp(err);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    throw std::runtime_error("fake apiserver did not start within 30 s: " + e);
  }
}

FakeApiServer::~FakeApiServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    bool exited = false;
    for (int i = 0; i < 250 && !exited; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) exited = true;
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

kube::KubeConfig FakeApiServer::kube_config() const {
  kube::KubeConfig c;
  kube::parse_server_url(url(), c);
  c.ca_pem = ca_.cert_pem();
  if (!token_.empty()) c.token_source = kube::TokenSource::fixed(token_);
  c.source = "fake apiserver";
  return c;
}

ClientTls FakeApiServer::tls() const {
  ClientTls t;
  t.ca_pem = ca_.cert_pem();
  return t;
}

HttpResponse FakeApiServer::request(const std::string& method, const std::string& path, const std::string& body,
                                    const std::string& content_type) {
  std::vector<std::pair<std::string, std::string>> h = {{"Accept", "application/json"}};
  if (!token_.empty()) h.emplace_back("Authorization", "Bearer " + token_);
  if (!body.empty()) h.emplace_back("Content-Type", content_type);
  return https_request(port_, method, path, tls(), h, body);
}

std::string FakeApiServer::object_path(const std::string& api_version, const std::string& kind, const std::string& ns,
                                       const std::string& name) {
  if (api_version == "v1") {
    if (kind == "Namespace") return "/api/v1/namespaces/" + name;
    if (kind == "Secret") return "/api/v1/namespaces/" + ns + "/secrets/" + name;
    throw std::runtime_error("object_path: unsupported kind " + kind);
  }
  auto k = plane::kind_from_name(kind);
  if (!k) throw std::runtime_error("object_path: unsupported kind " + kind);
  const auto& ki = plane::info(*k);
  std::string p = "/apis/" + api_version + "/";
  if (!ki.cluster_scoped) p += "namespaces/" + ns + "/";
  return p + std::string(ki.plural) + "/" + name;
}

namespace {
std::string path_of(const nlohmann::json& obj) {
  const auto& m = obj.at("metadata");
  return FakeApiServer::object_path(obj.at("apiVersion").get<std::string>(), obj.at("kind").get<std::string>(),
                                    m.value("namespace", ""), m.at("name").get<std::string>());
}

nlohmann::json parse_or_throw(const HttpResponse& r, const std::string& what) {
  if (r.status < 200 || r.status >= 300)
    throw std::runtime_error(what + ": HTTP " + std::to_string(r.status) + " " + r.error + " " + r.body);
  return r.body.empty() ? nlohmann::json() : nlohmann::json::parse(r.body);
}
}  // namespace

void FakeApiServer::ensure_namespace(const std::string& ns) {
  if (ns.empty() || std::find(namespaces_.begin(), namespaces_.end(), ns) != namespaces_.end()) return;
  nlohmann::json obj = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}};
  auto r = request("PATCH", "/api/v1/namespaces/" + ns + "?fieldManager=test-client", obj.dump(), "application/apply-patch+yaml");
  parse_or_throw(r, "create namespace " + ns);
  namespaces_.push_back(ns);
}

nlohmann::json FakeApiServer::apply(const nlohmann::json& obj, const std::string& manager) {
  bool namespaced = obj.at("kind") == "Secret";
  if (auto k = plane::kind_from_name(obj.at("kind").get<std::string>())) namespaced = !plane::info(*k).cluster_scoped;
  if (namespaced) ensure_namespace(obj.at("metadata").value("namespace", "default"));
  auto r =
      request("PATCH", path_of(obj) + "?fieldManager=" + manager + "&force=true", obj.dump(), "application/apply-patch+yaml");
  return parse_or_throw(r, "apply " + path_of(obj));
}

nlohmann::json FakeApiServer::apply_status(const nlohmann::json& obj, const std::string& manager) {
  auto r = request("PATCH", path_of(obj) + "/status?fieldManager=" + manager + "&force=true", obj.dump(),
                   "application/apply-patch+yaml");
  return parse_or_throw(r, "apply status " + path_of(obj));
}

nlohmann::json FakeApiServer::merge_patch(const nlohmann::json& ref, const nlohmann::json& patch) {
  auto r = request("PATCH", path_of(ref), patch.dump(), "application/merge-patch+json");
  return parse_or_throw(r, "merge patch " + path_of(ref));
}

nlohmann::json FakeApiServer::get(const std::string& api_version, const std::string& kind, const std::string& ns,
                                  const std::string& name) {
  auto r = request("GET", object_path(api_version, kind, ns, name));
  if (r.status == 404) return nullptr;
  return parse_or_throw(r, "get " + object_path(api_version, kind, ns, name));
}

void FakeApiServer::remove(const std::string& api_version, const std::string& kind, const std::string& ns,
                           const std::string& name) {
  auto r = request("DELETE", object_path(api_version, kind, ns, name));
  parse_or_throw(r, "delete " + object_path(api_version, kind, ns, name));
}

nlohmann::json FakeApiServer::control(const std::string& method, const std::string& path, const nlohmann::json& body) {
  std::string p = path;
  if (!p.empty() && p[0] == '/') p.erase(0, 1);
  std::vector<std::pair<std::string, std::string>> h = {{"Accept", "application/json"}};
  std::string b = body.is_null() ? std::string() : body.dump();
  if (!b.empty()) h.emplace_back("Content-Type", "application/json");
  auto r = https_request(port_, method, "/fake/" + p, tls(), h, b);
  return parse_or_throw(r, "control " + method + " /fake/" + p);
}

nlohmann::json FakeApiServer::requests(const std::string& query) {
  return control("GET", "requests" + (query.empty() ? std::string() : "?" + query)).at("items");
}

int FakeApiServer::open_watches() { return control("GET", "watches").at("count").get<int>(); }

// --- IoRunner ----------------------------------------------------------------------------------

struct IoRunner::Impl {
  boost::asio::io_context ioc;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard;
  std::vector<std::thread> threads;
};

IoRunner::IoRunner(int threads) : impl_(std::make_unique<Impl>()) {
  impl_->guard.emplace(impl_->ioc.get_executor());
  for (int i = 0; i < threads; ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

IoRunner::~IoRunner() { stop(); }

boost::asio::io_context& IoRunner::ioc() { return impl_->ioc; }

void IoRunner::stop() {
  if (impl_->threads.empty()) return;
  impl_->guard.reset();
  // Let pending handlers (closing connections, cancelled watches) drain, then stop.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!impl_->ioc.stopped() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace cg::testing
