// Kubernetes connection settings: in-cluster (service account) or a kubeconfig file.
// Errors are std::runtime_error with a message naming what is missing or wrong.
#pragma once
#include <chrono>
#include <ctime>
#include <memory>
#include <string>

#include "common/thread_annotations.hpp"

namespace cg::kube {

// A bearer token: fixed, or read from a file and re-read whenever the file's mtime, size or inode
// changes (projected service account tokens are rotated by the kubelet). Thread-safe.
class TokenSource {
 public:
  static std::shared_ptr<TokenSource> fixed(const std::string& token);
  // Reads the file now; throws when it cannot be read or is empty.
  static std::shared_ptr<TokenSource> file(std::string path);

  // The current token (whitespace-trimmed). A file that became unreadable keeps the last token.
  std::string token() CG_EXCLUDES(mu_);
  const std::string& path() const { return path_; }

 private:
  TokenSource() = default;
  bool reload_locked(bool initial) CG_REQUIRES(mu_);

  cg::Mutex mu_;  // a leaf (logs only under it)
  std::string path_;  // empty: fixed token; set before the source is shared, then constant
  std::string token_ CG_GUARDED_BY(mu_);
  struct timespec mtime_ CG_GUARDED_BY(mu_) {};
  long long size_ CG_GUARDED_BY(mu_) = -1;
  unsigned long long inode_ CG_GUARDED_BY(mu_) = 0;
  bool warned_ CG_GUARDED_BY(mu_) = false;
};

struct KubeConfig {
  std::string server;  // as configured, e.g. "https://10.96.0.1:443"
  std::string host;  // "10.96.0.1", "::1", "api.example.com" (no brackets)
  std::string port = "443";
  std::string base_path;  // path prefix of the server URL without trailing '/', usually ""
  std::string tls_server_name;  // name the server certificate is checked against (and SNI); default: host
  std::string ca_pem;  // trusted CA bundle; empty: the system's default roots
  bool insecure_skip_tls_verify = false;
  std::string client_cert_pem;  // client certificate (chain) and key, both or neither
  std::string client_key_pem;
  std::shared_ptr<TokenSource> token_source;  // null: no bearer token
  std::string default_namespace;  // the context's / service account's namespace, if known
  std::string source;  // "in-cluster" or "kubeconfig PATH (context NAME)", for logs

  std::string token() const { return token_source ? token_source->token() : std::string(); }
  bool has_client_cert() const { return !client_cert_pem.empty(); }
  // "host:port" with IPv6 hosts bracketed, for the Host header.
  std::string host_header() const;
};

struct InClusterPaths {
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";  // token, ca.crt, namespace
};

// In-cluster settings from KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT and the service account files.
KubeConfig load_in_cluster(const InClusterPaths& paths = {});

// A kubeconfig file. `context` empty: the file's current-context. Relative file references are resolved
// against the kubeconfig's directory, as kubectl does.
KubeConfig load_kubeconfig_file(const std::string& path, const std::string& context = "");

// The kubeconfig path that applies: `explicit_path`, else the first entry of $KUBECONFIG, else
// ~/.kube/config. Returns "" when none is given and ~/.kube/config does not exist.
std::string kubeconfig_path(const std::string& explicit_path = "");

// What the gateway uses: an explicit kubeconfig or $KUBECONFIG when given; else in-cluster when
// KUBERNETES_SERVICE_HOST is set; else ~/.kube/config. Throws naming everything that was tried.
KubeConfig load_default(const std::string& explicit_kubeconfig = "", const std::string& context = "");

// Parses "https://host[:port][/prefix]" into cfg.host/port/base_path (throws on other schemes).
void parse_server_url(const std::string& url, KubeConfig& cfg);

}  // namespace cg::kube
