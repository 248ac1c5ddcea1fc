#include "kube/config.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "common/base64.hpp"
#include "common/log.hpp"

namespace cg::kube {
namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return false;
  out = ss.str();
  return true;
}

std::string read_required(const std::string& path, const std::string& what) {
  std::string out;
  if (!read_file(path, out)) throw std::runtime_error(what + ": cannot read " + path);
  return out;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string home_dir() {
  std::string h = env("HOME");
  if (!h.empty()) return h;
  if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) return pw->pw_dir;
  return {};
}

// Base64 as in kubeconfig "-data" fields ([]byte in Go: standard encoding); whitespace is tolerated.
std::string decode_data(const std::string& text, const std::string& what) {
  std::string s;
  for (char c : text)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') s += c;
  auto d = base64_decode(s);
  if (!d) throw std::runtime_error(what + " is not valid base64");
  return *d;
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  if (p.rfind("~/", 0) == 0) return home_dir() + p.substr(1);
  return (fs::path(base_dir) / p).lexically_normal().string();
}

std::string scalar(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return {};
  YAML::Node v = n[key];
  if (!v || v.IsNull()) return {};
  if (!v.IsScalar()) throw std::runtime_error(std::string("field '") + key + "' must be a string");
  return v.as<std::string>();
}

bool boolean(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return false;
  YAML::Node v = n[key];
  if (!v || v.IsNull()) return false;
  try {
    return v.as<bool>();
  } catch (const YAML::Exception&) {
    throw std::runtime_error(std::string("field '") + key + "' must be a boolean");
  }
}

// The entry named `name` in a kubeconfig list (clusters, users, contexts): {name, <field>: {...}}.
std::optional<YAML::Node> find_named(const YAML::Node& root, const char* list, const char* field, const std::string& name) {
  const YAML::Node l = root[list];
  if (!l || l.IsNull()) return std::nullopt;
  if (!l.IsSequence()) throw std::runtime_error(std::string("'") + list + "' must be a list");
  for (const auto& e : l) {
    if (!e.IsMap() || scalar(e, "name") != name) continue;
    const YAML::Node f = e[field];
    if (f && !f.IsNull() && !f.IsMap())
      throw std::runtime_error(std::string(list) + " entry \"" + name + "\" must hold a mapping");
    return f && f.IsMap() ? f : YAML::Node(YAML::NodeType::Map);
  }
  return std::nullopt;
}

}  // namespace

// --- TokenSource ------------------------------------------------------------------------------

std::shared_ptr<TokenSource> TokenSource::fixed(const std::string& token) {
  auto t = std::shared_ptr<TokenSource>(new TokenSource());
  cg::MutexLock lk(t->mu_);  // nothing else sees it yet; taken for the analysis' sake
  t->token_ = trim(token);
  return t;
}

std::shared_ptr<TokenSource> TokenSource::file(std::string path) {
  auto t = std::shared_ptr<TokenSource>(new TokenSource());
  t->path_ = std::move(path);
  cg::MutexLock lk(t->mu_);
  t->reload_locked(true);
  return t;
}

bool TokenSource::reload_locked(bool initial) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (initial) throw std::runtime_error("token file " + path_ + " cannot be read");
    return false;
  }
  if (!initial && st.st_mtim.tv_sec == mtime_.tv_sec && st.st_mtim.tv_nsec == mtime_.tv_nsec &&
      static_cast<long long>(st.st_size) == size_ && static_cast<unsigned long long>(st.st_ino) == inode_)
    return true;
  std::string text;
  if (!read_file(path_, text)) {
    if (initial) throw std::runtime_error("token file " + path_ + " cannot be read");
    return false;
  }
  std::string t = trim(text);
  if (t.empty()) {
    if (initial) throw std::runtime_error("token file " + path_ + " is empty");
    return false;  // being rewritten: keep the last token, look again next time
  }
  bool changed = !initial && t != token_;
  token_ = std::move(t);
  mtime_ = st.st_mtim;
  size_ = static_cast<long long>(st.st_size);
  inode_ = static_cast<unsigned long long>(st.st_ino);
  warned_ = false;
  if (changed) log::info("kubernetes token reloaded", {{"file", path_}});
  return true;
}

std::string TokenSource::token() {
  cg::MutexLock lk(mu_);
  if (!path_.empty() && !reload_locked(false) && !warned_) {
    warned_ = true;
    log::warn("kubernetes token file cannot be read; keeping the previous token", {{"file", path_}});
  }
  return token_;
}

// --- KubeConfig --------------------------------------------------------------------------------

std::string KubeConfig::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return port == "443" ? h : h + ":" + port;
}

void parse_server_url(const std::string& url, KubeConfig& cfg) {
  std::string rest = url;
  if (auto p = url.find("://"); p != std::string::npos) {
    std::string scheme = url.substr(0, p);
    for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme == "http") throw std::runtime_error("server " + url + ": plain http:// is not supported, use https://");
    if (scheme != "https") throw std::runtime_error("server " + url + ": unsupported scheme '" + scheme + "'");
    rest = url.substr(p + 3);
  }
  std::string authority = rest, path;
  if (auto s = rest.find_first_of("/?#"); s != std::string::npos) {
    authority = rest.substr(0, s);
    path = rest.substr(s);
    if (auto q = path.find_first_of("?#"); q != std::string::npos) path = path.substr(0, q);
  }
  if (authority.find('@') != std::string::npos) throw std::runtime_error("server " + url + ": user info is not supported");
  std::string host, port = "443";
  if (!authority.empty() && authority[0] == '[') {
    auto e = authority.find(']');
    if (e == std::string::npos) throw std::runtime_error("server " + url + ": unterminated IPv6 address");
    host = authority.substr(1, e - 1);
    std::string after = authority.substr(e + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw std::runtime_error("server " + url + ": bad port");
      port = after.substr(1);
    }
  } else if (auto c = authority.rfind(':'); c != std::string::npos) {
    host = authority.substr(0, c);
    port = authority.substr(c + 1);
  } else {
    host = authority;
  }
  if (host.empty()) throw std::runtime_error("server " + url + ": host is missing");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) == 0 ||
      std::stoi(port) > 65535)
    throw std::runtime_error("server " + url + ": invalid port '" + port + "'");
  while (!path.empty() && path.back() == '/') path.pop_back();
  cfg.server = url;
  cfg.host = host;
  cfg.port = port;
  cfg.base_path = path;
  if (cfg.tls_server_name.empty()) cfg.tls_server_name = host;
}

KubeConfig load_in_cluster(const InClusterPaths& paths) {
  std::string host = env("KUBERNETES_SERVICE_HOST"), port = env("KUBERNETES_SERVICE_PORT");
  if (host.empty() || port.empty())
    throw std::runtime_error(
        "unable to load in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined");
  KubeConfig cfg;
  bool v6 = host.find(':') != std::string::npos;
  parse_server_url("https://" + (v6 ? "[" + host + "]" : host) + ":" + port, cfg);
  const std::string dir = paths.service_account_dir;
  const std::string token_path = dir + "/token", ca_path = dir + "/ca.crt";
  if (::access(token_path.c_str(), R_OK) != 0)
    throw std::runtime_error("unable to load in-cluster configuration: service account token " + token_path + " cannot be read");
  cfg.token_source = TokenSource::file(token_path);
  if (::access(ca_path.c_str(), R_OK) != 0)
    throw std::runtime_error("unable to load in-cluster configuration: cluster CA " + ca_path + " cannot be read");
  cfg.ca_pem = read_required(ca_path, "in-cluster configuration: cluster CA");
  if (cfg.ca_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
    throw std::runtime_error("in-cluster configuration: " + ca_path + " holds no PEM certificate");
  std::string ns;
  if (read_file(dir + "/namespace", ns)) cfg.default_namespace = trim(ns);
  cfg.source = "in-cluster";
  return cfg;
}

KubeConfig load_kubeconfig_file(const std::string& path, const std::string& context_override) {
  std::string text;
  if (!read_file(path, text)) throw std::runtime_error("kubeconfig " + path + " cannot be read");
  const std::string where = "kubeconfig " + path;
  const std::string base_dir = fs::path(path).parent_path().string();
  YAML::Node loaded;
  try {
    loaded = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(where + ": invalid YAML: " + e.what());
  }
  if (!loaded || !loaded.IsMap()) throw std::runtime_error(where + ": not a kubeconfig (expected a mapping)");
  const YAML::Node root = loaded;

  KubeConfig cfg;
  try {
    std::string ctx_name = context_override.empty() ? scalar(root, "current-context") : context_override;
    if (ctx_name.empty()) throw std::runtime_error("current-context is not set (and no context was given)");
    auto ctx_found = find_named(root, "contexts", "context", ctx_name);
    if (!ctx_found) throw std::runtime_error("context \"" + ctx_name + "\" not found");
    const YAML::Node ctx = *ctx_found;
    std::string cluster_name = scalar(ctx, "cluster"), user_name = scalar(ctx, "user");
    if (cluster_name.empty()) throw std::runtime_error("context \"" + ctx_name + "\" names no cluster");
    auto cluster_found = find_named(root, "clusters", "cluster", cluster_name);
    if (!cluster_found) throw std::runtime_error("cluster \"" + cluster_name + "\" (of context \"" + ctx_name + "\") not found");
    const YAML::Node cluster = *cluster_found;
    const std::string cl = "cluster \"" + cluster_name + "\": ";
    std::string server = scalar(cluster, "server");
    if (server.empty()) throw std::runtime_error(cl + "server is not set");
    cfg.tls_server_name = scalar(cluster, "tls-server-name");
    try {
      parse_server_url(server, cfg);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(cl + e.what());
    }
    cfg.insecure_skip_tls_verify = boolean(cluster, "insecure-skip-tls-verify");
    std::string ca_data = scalar(cluster, "certificate-authority-data");
    std::string ca_file = scalar(cluster, "certificate-authority");
    if (!ca_data.empty()) {
      cfg.ca_pem = decode_data(ca_data, cl + "certificate-authority-data");
    } else if (!ca_file.empty()) {
      std::string p = resolve(base_dir, ca_file);
      if (!read_file(p, cfg.ca_pem)) throw std::runtime_error(cl + "certificate-authority " + p + " cannot be read");
    }
    if (!cfg.ca_pem.empty() && cfg.ca_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
      throw std::runtime_error(cl + "the certificate authority holds no PEM certificate");
    if (cfg.insecure_skip_tls_verify && !cfg.ca_pem.empty())
      throw std::runtime_error(cl + "specifying a root certificates file with the insecure flag is not allowed");

    if (!user_name.empty()) {
      auto user_found = find_named(root, "users", "user", user_name);
      if (!user_found) throw std::runtime_error("user \"" + user_name + "\" (of context \"" + ctx_name + "\") not found");
      const YAML::Node user = *user_found;
      const std::string ul = "user \"" + user_name + "\": ";
      std::string token = scalar(user, "token");
      std::string token_file = scalar(user, "tokenFile");
      if (token_file.empty()) token_file = scalar(user, "token-file");
      if (!token.empty()) {
        cfg.token_source = TokenSource::fixed(token);
      } else if (!token_file.empty()) {
        try {
          cfg.token_source = TokenSource::file(resolve(base_dir, token_file));
        } catch (const std::runtime_error& e) {
          throw std::runtime_error(ul + e.what());
        }
      }
      std::string cert_data = scalar(user, "client-certificate-data"), cert_file = scalar(user, "client-certificate");
      std::string key_data = scalar(user, "client-key-data"), key_file = scalar(user, "client-key");
      if (!cert_data.empty()) {
        cfg.client_cert_pem = decode_data(cert_data, ul + "client-certificate-data");
      } else if (!cert_file.empty()) {
        std::string p = resolve(base_dir, cert_file);
        if (!read_file(p, cfg.client_cert_pem)) throw std::runtime_error(ul + "client-certificate " + p + " cannot be read");
      }
      if (!key_data.empty()) {
        cfg.client_key_pem = decode_data(key_data, ul + "client-key-data");
      } else if (!key_file.empty()) {
        std::string p = resolve(base_dir, key_file);
        if (!read_file(p, cfg.client_key_pem)) throw std::runtime_error(ul + "client-key " + p + " cannot be read");
      }
      if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty())
        throw std::runtime_error(ul + (cfg.client_cert_pem.empty() ? "client-key is set but client-certificate is not"
                                                                   : "client-certificate is set but client-key is not"));
      bool has_auth = cfg.token_source || !cfg.client_cert_pem.empty();
      if (!has_auth && user["exec"] && !user["exec"].IsNull())
        throw std::runtime_error(ul +
                                 "exec credential plugins are not supported; use a token, tokenFile or a client "
                                 "certificate");
      if (!has_auth && user["auth-provider"] && !user["auth-provider"].IsNull())
        throw std::runtime_error(ul + "auth-provider is not supported; use a token, tokenFile or a client certificate");
      if (!has_auth && !scalar(user, "username").empty())
        throw std::runtime_error(ul + "basic authentication (username/password) is not supported");
    }
    cfg.default_namespace = scalar(ctx, "namespace");
    if (cfg.default_namespace.empty()) cfg.default_namespace = "default";
    cfg.source = "kubeconfig " + path + " (context " + ctx_name + ")";
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(where + ": " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(where + ": " + e.what());
  }
  return cfg;
}

std::string kubeconfig_path(const std::string& explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  std::string kc = env("KUBECONFIG");
  std::stringstream ss(kc);
  for (std::string part; std::getline(ss, part, ':');)
    if (!part.empty()) return part;
  std::string home = home_dir();
  if (home.empty()) return {};
  std::string p = home + "/.kube/config";
  std::error_code ec;
  return fs::exists(p, ec) ? p : std::string();
}

KubeConfig load_default(const std::string& explicit_kubeconfig, const std::string& context) {
  if (!explicit_kubeconfig.empty()) return load_kubeconfig_file(explicit_kubeconfig, context);
  std::string kc = env("KUBECONFIG");
  if (!kc.empty()) {
    std::string p = kubeconfig_path();
    if (!p.empty()) return load_kubeconfig_file(p, context);
  }
  if (!env("KUBERNETES_SERVICE_HOST").empty()) return load_in_cluster();
  std::string p = kubeconfig_path();
  if (!p.empty()) return load_kubeconfig_file(p, context);
  throw std::runtime_error(
      "no Kubernetes configuration found: no kubeconfig given (--kubeconfig), KUBECONFIG is not set, "
      "KUBERNETES_SERVICE_HOST is not set (not in a cluster) and " +
      (home_dir().empty() ? std::string("$HOME is unknown") : home_dir() + "/.kube/config does not exist"));
}

}  // namespace cg::kube
