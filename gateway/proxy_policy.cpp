#include "gateway/proxy_policy.hpp"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/utf8.hpp"

namespace cg::gateway {

namespace {

constexpr std::array<std::string_view, 7> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
constexpr std::array<std::string_view, 3> kTargets = {"k8s", "monitoring", "logs"};
constexpr size_t kMaxRules = 1000;  // rule names are metric label values: keep the set small

// Valid UTF-8 kept; every invalid byte becomes U+FFFD (log lines and comparisons stay well defined).
std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string asn1_utf8(const ASN1_STRING* s) {
  if (!s) return {};
  unsigned char* buf = nullptr;
  int n = ASN1_STRING_to_UTF8(&buf, s);
  if (n < 0) return {};
  std::string out(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
  OPENSSL_free(buf);
  return sanitize_utf8(out);
}

// ---- segment globs ----------------------------------------------------------------------------

// '*' inside a segment: any run of characters (classic wildcard match, linear backtracking).
bool glob_segment(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (p < pat.size() && pat[p] == s[i]) {
      ++p;
      ++i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

std::vector<std::string_view> path_segments(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (path.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t p = path.find('/', start);
    out.push_back(path.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

// ---- YAML -------------------------------------------------------------------------------------

[[noreturn]] void fail(const YAML::Node& n, const std::string& where, const std::string& what) {
  std::string line = n.Mark().is_null() ? std::string() : "line " + std::to_string(n.Mark().line + 1) + ": ";
  throw PolicyError(line + where + ": " + what);
}

std::string scalar(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) fail(n, where, "must be a string");
  return n.Scalar();
}

void only_keys(const YAML::Node& map, const std::string& where, std::initializer_list<std::string_view> keys) {
  for (const auto& kv : map) {
    std::string k = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      std::string allowed;
      for (auto a : keys) {
        if (!allowed.empty()) allowed += ", ";
        allowed += a;
      }
      // fail() throws, so this runs once, not once per pass as the check assumes.
      // NOLINTNEXTLINE(performance-inefficient-string-concatenation)
      fail(kv.first, where, "unknown key '" + k + "' (allowed: " + allowed + ")");
    }
  }
}

PolicyAction action_of(const YAML::Node& n, const std::string& where) {
  std::string v = scalar(n, where);
  if (v == "allow") return PolicyAction::allow;
  if (v == "deny") return PolicyAction::deny;
  fail(n, where, "'" + v + "' is not allow or deny");
}

std::vector<std::string> string_list(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence() || n.size() == 0) fail(n, where, "must be a non-empty list (omit the key to match every value)");
  std::vector<std::string> out;
  for (size_t i = 0; i < n.size(); ++i) out.push_back(scalar(n[i], where + "[" + std::to_string(i) + "]"));
  return out;
}

bool valid_rule_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-' && s.back() != '-' && s != "default";
}

PolicyRule parse_rule(const YAML::Node& n, const std::string& where) {
  if (!n.IsMap()) fail(n, where, "must be a mapping");
  PolicyRule r;
  if (!n["name"]) fail(n, where, "name is required");
  r.name = scalar(n["name"], where + ".name");
  if (!valid_rule_name(r.name))
    fail(n["name"], where + ".name",
         "'" + r.name +
             "' must be 1-63 characters a-z, 0-9 and '-' (not at either end), "
             "and not 'default'");
  const std::string at = where + " (" + r.name + ")";
  only_keys(n, at, {"name", "action", "callers", "methods", "targets", "paths"});
  if (!n["action"]) fail(n, at, "action is required (allow or deny)");
  r.action = action_of(n["action"], at + ".action");
  if (auto c = n["callers"]) {
    if (!c.IsSequence() || c.size() == 0) fail(c, at + ".callers", "must be a non-empty list (omit it to match every caller)");
    for (size_t i = 0; i < c.size(); ++i) {
      const std::string w = at + ".callers[" + std::to_string(i) + "]";
      const YAML::Node s = c[i];
      if (!s.IsMap() || s.size() == 0) fail(s, w, "must be a mapping with commonName, dnsName and/or uri");
      only_keys(s, w, {"commonName", "dnsName", "uri"});
      CallerSelector sel;
      if (s["commonName"]) sel.common_name = scalar(s["commonName"], w + ".commonName");
      if (s["dnsName"]) sel.dns_name = scalar(s["dnsName"], w + ".dnsName");
      if (s["uri"]) sel.uri = scalar(s["uri"], w + ".uri");
      for (const auto* v : {&sel.common_name, &sel.dns_name, &sel.uri})
        if (*v && (*v)->empty()) fail(s, w, "a caller field must not be empty");
      r.callers.push_back(std::move(sel));
    }
  }
  if (auto m = n["methods"]) {
    for (auto& v : string_list(m, at + ".methods")) {
      std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
      if (std::find(kMethods.begin(), kMethods.end(), v) == kMethods.end())
        fail(m, at + ".methods", "'" + v + "' is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
      r.methods.push_back(v);
    }
  }
  if (auto t = n["targets"]) {
    for (auto& v : string_list(t, at + ".targets")) {
      if (std::find(kTargets.begin(), kTargets.end(), v) == kTargets.end())
        fail(t, at + ".targets", "'" + v + "' is not one of k8s, monitoring, logs");
      r.targets.push_back(v);
    }
  }
  if (!n["paths"]) fail(n, at, "paths is required (a list of path patterns)");
  auto texts = string_list(n["paths"], at + ".paths");
  for (size_t i = 0; i < texts.size(); ++i) {
    try {
      r.paths.push_back(compile_path_pattern(texts[i]));
    } catch (const PolicyError& e) {
      fail(n["paths"][i], at + ".paths[" + std::to_string(i) + "]", e.what());
    }
  }
  return r;
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

const char* action_name(PolicyAction a) { return a == PolicyAction::allow ? "allow" : "deny"; }

}  // namespace

size_t utf8_sequence_length(std::string_view s, size_t i) { return utf8_length(s, i); }

// ---- identity ---------------------------------------------------------------------------------

CallerIdentity identity_from_certificate(x509_st* cert) {
  CallerIdentity id;
  if (!cert) return id;
  id.verified = true;
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
  if (idx >= 0) id.common_name = asn1_utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type == GEN_DNS) id.dns_names.push_back(asn1_utf8(g->d.dNSName));
      if (g->type == GEN_URI) id.uris.push_back(asn1_utf8(g->d.uniformResourceIdentifier));
    }
    GENERAL_NAMES_free(sans);
  }
  return id;
}

nlohmann::json identity_json(const CallerIdentity& id) {
  if (!id.verified) return "anonymous";
  nlohmann::json j = {{"commonName", id.common_name}};
  if (!id.dns_names.empty()) j["dnsNames"] = id.dns_names;
  if (!id.uris.empty()) j["uris"] = id.uris;
  return j;
}

// ---- patterns and evaluation ------------------------------------------------------------------

PathPattern compile_path_pattern(std::string_view text) {
  auto bad = [&](const std::string& why) -> PolicyError {
    return PolicyError("path pattern '" + sanitize_utf8(text) + "' " + why);
  };
  if (text.empty() || text.front() != '/') throw bad("must start with '/'");
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) throw bad("contains a control character");
    if (c == '?' || c == '#' || c == '%' || c == '\\')
      throw bad(std::string("contains '") + static_cast<char>(c) + "' (patterns match decoded paths without a query)");
  }
  if (sanitize_utf8(text) != text) throw bad("is not valid UTF-8");
  PathPattern p;
  p.text = std::string(text);
  if (text == "/") return p;
  if (text.back() == '/')
    throw bad("ends with '/': write the resource itself (/api/v1/secrets) or it and everything below (/api/v1/secrets/**)");
  for (auto seg : path_segments(text)) {
    if (seg.empty()) throw bad("contains an empty segment (//)");
    if (seg == "." || seg == "..") throw bad("contains a '.' or '..' segment");
    if (seg != "**" && seg.find("**") != std::string_view::npos)
      throw bad("uses '**' inside a segment (only a whole segment may be **)");
    p.segments.emplace_back(seg);
  }
  return p;
}

bool match_path_pattern(const PathPattern& p, std::string_view path) {
  auto segs = path_segments(path);
  const size_t P = p.segments.size(), S = segs.size();
  if (std::find(p.segments.begin(), p.segments.end(), "**") == p.segments.end()) {
    // No '**': one pattern segment per path segment (linear; a path of thousands of segments costs
    // one comparison of the counts).
    if (P != S) return false;
    for (size_t i = 0; i < P; ++i)
      if (!glob_segment(p.segments[i], segs[i])) return false;
    return true;
  }
  // m[i][j]: pattern segments i.. match path segments j.. (filled from the end).
  std::vector<char> m((P + 1) * (S + 1), 0);
  auto at = [&](size_t i, size_t j) -> char& { return m[i * (S + 1) + j]; };
  at(P, S) = 1;
  for (size_t i = P; i-- > 0;) {
    const std::string& ps = p.segments[i];
    for (size_t j = S + 1; j-- > 0;) {
      if (ps == "**") at(i, j) = at(i + 1, j) || (j < S && at(i, j + 1));
      else at(i, j) = j < S && glob_segment(ps, segs[j]) && at(i + 1, j + 1);
    }
  }
  return at(0, 0) != 0;
}

bool caller_matches(const CallerSelector& s, const CallerIdentity& id) {
  if (!id.verified) return false;
  if (s.common_name && *s.common_name != id.common_name) return false;
  if (s.dns_name && std::find(id.dns_names.begin(), id.dns_names.end(), *s.dns_name) == id.dns_names.end()) return false;
  if (s.uri && std::find(id.uris.begin(), id.uris.end(), *s.uri) == id.uris.end()) return false;
  return true;
}

PolicyDecision evaluate(const Policy& policy, const CallerIdentity& caller, std::string_view method, std::string_view target,
                        std::string_view canonical_path) {
  for (const auto& r : policy.rules) {
    if (!r.methods.empty() && std::find(r.methods.begin(), r.methods.end(), method) == r.methods.end()) continue;
    if (!r.targets.empty() && std::find(r.targets.begin(), r.targets.end(), target) == r.targets.end()) continue;
    if (!r.callers.empty() &&
        std::none_of(r.callers.begin(), r.callers.end(), [&](const CallerSelector& s) { return caller_matches(s, caller); }))
      continue;
    if (std::none_of(r.paths.begin(), r.paths.end(), [&](const PathPattern& p) { return match_path_pattern(p, canonical_path); }))
      continue;
    return {r.action, r.name};
  }
  return {policy.default_action, "default"};
}

Policy parse_policy(std::string_view yaml_text) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    throw PolicyError("not valid YAML: " + e.msg + (e.mark.is_null() ? "" : " (line " + std::to_string(e.mark.line + 1) + ")"));
  }
  if (!root.IsMap()) throw PolicyError("the policy must be a YAML mapping with defaultAction and rules");
  only_keys(root, "policy", {"defaultAction", "rules"});
  Policy p;
  if (!root["defaultAction"]) throw PolicyError("defaultAction is required (allow or deny)");
  p.default_action = action_of(root["defaultAction"], "defaultAction");
  if (auto rules = root["rules"]; rules && !rules.IsNull()) {
    if (!rules.IsSequence()) fail(rules, "rules", "must be a list");
    if (rules.size() > kMaxRules) fail(rules, "rules", "more than " + std::to_string(kMaxRules) + " rules");
    std::set<std::string> names;
    for (size_t i = 0; i < rules.size(); ++i) {
      auto r = parse_rule(rules[i], "rules[" + std::to_string(i) + "]");
      if (!names.insert(r.name).second) fail(rules[i], "rules[" + std::to_string(i) + "].name", "'" + r.name + "' is used twice");
      p.rules.push_back(std::move(r));
    }
  }
  return p;
}

// ---- the file ---------------------------------------------------------------------------------

PolicyFile::PolicyFile(const boost::asio::any_io_executor& control, std::string path, std::chrono::milliseconds poll)
    : path_(std::move(path)), poll_(poll), timer_(control) {
  auto text = read_file(path_);
  if (!text) throw PolicyError("proxy policy file " + path_ + " cannot be read");
  try {
    current_ = std::make_shared<const Policy>(parse_policy(*text));
  } catch (const PolicyError& e) {
    throw PolicyError("proxy policy file " + path_ + ": " + e.what());
  }
  applied_hash_ = seen_hash_ = sha256_hex(*text);
  applied_ = 1;
  metrics::proxy_policy_reload("ok");
  log::info("proxy policy loaded", {{"file", path_},
                                    {"sha256", applied_hash_.substr(0, 16)},
                                    {"rules", current_->rules.size()},
                                    {"defaultAction", action_name(current_->default_action)}});
}

PolicyFile::~PolicyFile() { stop(); }

void PolicyFile::start() {
  timer_.run_after(poll_, [this] { tick(); });
}

void PolicyFile::stop() { timer_.stop(); }

std::shared_ptr<const Policy> PolicyFile::current() const {
  cg::MutexLock lk(mu_);
  return current_;
}

uint64_t PolicyFile::applied() const {
  cg::MutexLock lk(mu_);
  return applied_;
}

uint64_t PolicyFile::refused() const {
  cg::MutexLock lk(mu_);
  return refused_;
}

void PolicyFile::tick() {
  check_once();
  timer_.run_after(poll_, [this] { tick(); });
}

void PolicyFile::check_once() {
  auto text = read_file(path_);
  cg::MutexLock lk(mu_);
  if (!text) {
    if (refused_hash_ != "unreadable") {
      refused_hash_ = "unreadable";
      ++refused_;
      const std::string kept = applied_hash_.substr(0, 16);
      lk.unlock();
      metrics::proxy_policy_reload("error");
      log::error("proxy policy file cannot be read; the previous policy stays in force", {{"file", path_}, {"sha256", kept}});
    }
    return;
  }
  const std::string hash = sha256_hex(*text);
  if (hash == applied_hash_) {
    seen_hash_ = hash;
    refused_hash_.clear();
    return;
  }
  // A new content is applied once it reads the same twice in a row (not caught half written).
  if (hash != seen_hash_) {
    seen_hash_ = hash;
    return;
  }
  if (hash == refused_hash_) return;  // already refused and logged
  lk.unlock();
  std::shared_ptr<const Policy> next;
  std::string error;
  try {
    next = std::make_shared<const Policy>(parse_policy(*text));
  } catch (const PolicyError& e) {
    error = e.what();
  }
  lk.lock();
  if (!next) {
    refused_hash_ = hash;
    ++refused_;
    const std::string kept = applied_hash_.substr(0, 16);
    lk.unlock();
    metrics::proxy_policy_reload("error");
    log::error("proxy policy reload refused; the previous policy stays in force",
               {{"file", path_}, {"reason", error}, {"sha256", hash.substr(0, 16)}, {"keptSha256", kept}});
    return;
  }
  current_ = next;
  applied_hash_ = hash;
  refused_hash_.clear();
  ++applied_;
  lk.unlock();
  metrics::proxy_policy_reload("ok");
  log::info("proxy policy reloaded", {{"file", path_},
                                      {"sha256", hash.substr(0, 16)},
                                      {"rules", next->rules.size()},
                                      {"defaultAction", action_name(next->default_action)}});
}

}  // namespace cg::gateway
