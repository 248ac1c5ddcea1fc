// The proxy path rules (canonical form, built-in deny-list) and the proxy policy (parse, evaluate,
// reload), as table tests. Request targets go through the same decoding as the internal API
// (boost::urls origin-form, decoded path), and every accepted path is checked against a model of
// upstream's agent (tests/fuzz/agent_url_model.hpp): what the agent requests is what was judged.
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/url/parse.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/metrics.hpp"
#include "gateway/proxy_policy.hpp"
#include "gateway/proxy_rules.hpp"
#include "tests/fuzz/agent_url_model.hpp"
#include "tests/support/control_thread.hpp"
#include "tests/support/gateway_fixture.hpp"

using namespace cg::gateway;
using cg::testing::agent_requested_path;

namespace {

const std::string kPrefix = "/api/proxy/dataplane/prod/_cluster/cdp/k8s";

struct Sent {
  std::string path, query;
};
// The internal API's decoding of a request target (gateway/internal_api.cpp dispatch()).
Sent decode_target(const std::string& target) {
  auto u = boost::urls::parse_origin_form(target);
  REQUIRE(u);
  return {std::string(u->path()), std::string(u->encoded_query())};
}

ProxyCheck check(const std::string& method, const std::string& target, const Policy* policy = nullptr,
                 const CallerIdentity* caller = nullptr) {
  auto s = decode_target(target);
  return check_proxy_request(method, s.path, s.query, std::nullopt, false, kMaxProxyBody, policy, caller);
}

CallerIdentity cn(const std::string& name) {
  CallerIdentity id;
  id.verified = true;
  id.common_name = name;
  return id;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_atomically(const std::string& path, const std::string& text) {
  cg::testing::write_file(path + ".tmp", text);
  std::filesystem::rename(path + ".tmp", path);
}

}  // namespace

TEST_CASE("every bypass form of the deny-list is refused or judged on the canonical path", "[proxy_rules]") {
  struct Row {
    std::string method, path;  // path: raw (encoded) as the caller sends it after the k8s target
    unsigned status;
    std::string want;  // 400: the path form's reason; 403: the rule; 0: the resource path judged
  };
  const std::vector<Row> rows = {
      // Reinterpreted by the agent's URL parser (issue 13): refused before any rule.
      {"GET", "/api/v1/namespaces/kube-system/secrets%3F", 400, "query"},
      {"GET", "/api/v1/namespaces/kube-system/secrets%3Flimit=1", 400, "query"},
      {"POST", "/api/v1/namespaces/ns/serviceaccounts/x/token%3F", 400, "query"},
      {"GET", "/api/v1/namespaces/kube-system/secrets%23", 400, "fragment"},
      {"GET", "/api/v1/namespaces/kube-system/secrets%23x", 400, "fragment"},
      {"GET", "/api/v1/namespaces/kube-system%252Fsecrets", 400, "percent"},
      {"GET", "/api/v1/namespaces/kube-system/%2573ecrets", 400, "percent"},
      {"GET", "/api/v1/namespaces/kube-system/secrets%2525", 400, "percent"},
      {"GET", "/api/v1/namespaces/default/pods%00", 400, "null_byte"},
      {"GET", "/api/v1/namespaces/default/pods%0Ax", 400, "control"},
      {"GET", "/api/v1/namespaces/default/pods%7F", 400, "control"},
      {"GET", "/api/v1/namespaces/kube-system%5Csecrets", 400, "backslash"},
      {"GET", "/api/v1/namespaces/default/pods/%FF", 400, "invalid_utf8"},
      {"GET", "/api/v1/namespaces/default/pods/%C0%AF", 400, "invalid_utf8"},  // overlong '/'
      // Forms the API server does not normalise: refused.
      {"GET", "/api/v1/namespaces/kube-system//secrets", 400, "empty_segment"},
      {"GET", "/api/v1/namespaces//secrets", 400, "empty_segment"},
      {"GET", "//api/v1/namespaces/kube-system/secrets", 400, "empty_segment"},
      {"GET", "/api/v1/namespaces/kube-system/secrets//", 400, "empty_segment"},
      {"GET", "/api/v1/namespaces/kube-system/./secrets", 400, "dot_segment"},
      {"GET", "/api/v1/namespaces/kube-system/secrets/.", 400, "dot_segment"},
      {"GET", "/api/v1/namespaces/x/../kube-system/secrets", 400, "traversal"},
      {"GET", "/api/v1/namespaces/x/%2E%2E/kube-system/secrets", 400, "traversal"},
      {"GET", "/api/v1/namespaces/x/secrets..", 400, "traversal"},  // upstream's substring check, after the rules
      // Legacy watch paths, trailing '/', encoded '/': judged as the resource they name.
      {"GET", "/api/v1/watch/namespaces/kube-system/secrets", 403, "builtin:kube-system-secrets"},
      {"GET", "/api/v1/watch/namespaces/kube-system/secrets/x", 403, "builtin:kube-system-secrets"},
      {"GET", "/api/v1/namespaces/kube-system/secrets/", 403, "builtin:kube-system-secrets"},
      {"GET", "/api/v1/namespaces/kube-system/secrets?watch=true", 403, "builtin:kube-system-secrets"},
      {"GET", "/api/v1/namespaces/kube-system%2Fsecrets", 403, "builtin:kube-system-secrets"},
      {"DELETE", "/api/v1/namespaces/kube-system/secrets/x", 403, "builtin:kube-system-secrets"},
      {"POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token", 403, "builtin:serviceaccount-token"},
      {"POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token/", 403, "builtin:serviceaccount-token"},
      {"GET", "/apis/v1/serviceaccounts", 403, "builtin:apis-v1-serviceaccounts"},
      // Upstream's current default allows these (its controller-manager lists them cluster-wide).
      {"GET", "/api/v1/secrets", 0, "/api/v1/secrets"},
      {"GET", "/api/v1/secrets?labelSelector=a%3Db", 0, "/api/v1/secrets"},
      {"GET", "/api/v1/watch/secrets", 0, "/api/v1/secrets"},
      {"GET", "/api/v1/serviceaccounts/", 0, "/api/v1/serviceaccounts"},
      {"GET", "/api/v1/namespaces/ns/serviceaccounts/sa/token", 0, "/api/v1/namespaces/ns/serviceaccounts/sa/token"},
      {"GET", "/api/v1/namespaces/kube-system/secretsx", 0, "/api/v1/namespaces/kube-system/secretsx"},
      {"GET", "/api/v1/namespaces/kube-system/configmaps", 0, "/api/v1/namespaces/kube-system/configmaps"},
      {"GET", "/apis/apps/v1/watch/namespaces/kube-system/deployments", 0, "/apis/apps/v1/namespaces/kube-system/deployments"},
      {"GET", "/api/v1/namespaces/watch/pods", 0, "/api/v1/namespaces/watch/pods"},
      {"GET", "/api/v1/namespaces/d/pods/caf%C3%A9", 0, "/api/v1/namespaces/d/pods/caf\xC3\xA9"},
      {"GET", "/api/v1/namespaces/d/pods/a%20b", 0, "/api/v1/namespaces/d/pods/a b"},
      {"GET", "/", 0, "/"},
  };
  for (const auto& r : rows) {
    INFO(r.method << " " << r.path);
    auto c = check(r.method, kPrefix + r.path);
    CHECK(c.status == r.status);
    if (r.status == 400) {
      CHECK(path_form_rule(c.path_form).reason == r.want);
      CHECK(c.message == path_form_rule(c.path_form).message);
      CHECK(c.rule.empty());
    } else if (r.status == 403) {
      CHECK(c.rule == r.want);
      CHECK(c.message == "Access to path is blocked: " + c.path);
    } else {
      CHECK(c.resource_path == r.want);
      // What upstream's agent requests is exactly the path that was judged.
      auto sent = decode_target(kPrefix + r.path);
      auto requested = agent_requested_path(c.path, sent.query);
      REQUIRE(requested);
      CHECK(*requested == c.path);
      CHECK(canonicalize_proxy_path(*requested).resource == c.resource_path);
    }
  }
}

TEST_CASE("without the canonical checks the agent would request another path (the bypass the table closes)", "[proxy_rules]") {
  // The model shows why each refused form matters: decoded once by the gateway, the agent's URL
  // parser reads '?', '#' and '%' again.
  CHECK(agent_requested_path("/api/v1/namespaces/kube-system/secrets?", "").value() == "/api/v1/namespaces/kube-system/secrets");
  CHECK(agent_requested_path("/api/v1/namespaces/kube-system/secrets#", "").value() == "/api/v1/namespaces/kube-system/secrets");
  CHECK(agent_requested_path("/api/v1/namespaces/kube-system/%73ecrets", "").value() == "/api/v1/namespaces/kube-system/secrets");
  CHECK(agent_requested_path("/api/v1/namespaces/kube-system%2Fsecrets", "").value() == "/api/v1/namespaces/kube-system/secrets");
  CHECK_FALSE(agent_requested_path("/api/v1/pods\n", ""));
}

TEST_CASE("the path-form table and the built-in deny-list are data with unique rows", "[proxy_rules]") {
  std::set<std::string_view> reasons;
  for (const auto& r : path_form_rules()) {
    CHECK(reasons.insert(r.reason).second);
    CHECK(&path_form_rule(r.form) == &r);
    if (r.form != PathForm::ok) CHECK_FALSE(r.message.empty());
  }
  CHECK(builtin_deny_rules().size() == builtin_policy().rules.size());
  for (const auto& r : builtin_policy().rules) CHECK(r.name.rfind("builtin:", 0) == 0);
  // The old default blocked these two; upstream's controller-manager needs them (PR #3321).
  CHECK_FALSE(is_blocked_path("GET", "/api/v1/secrets"));
  CHECK_FALSE(is_blocked_path("GET", "/api/v1/serviceaccounts"));
  CHECK(is_blocked_path("GET", "/api/v1/namespaces/kube-system/secrets"));
  CHECK(is_blocked_path("GET", "/api/v1/namespaces/kube-system/secrets?"));
}

TEST_CASE("upstream's validation order is kept around the new checks", "[proxy_rules]") {
  CHECK(check("TRACE", kPrefix + "/api/v1/namespaces/kube-system/secrets%3F").status == 405);
  CHECK(check("GET", "/api/proxy/dataplane/prod/_cluster/cdp/etcd/x%3F").status == 403);
  auto s = decode_target(kPrefix + "/api/v1/namespaces/kube-system/secrets");
  CHECK(check_proxy_request("POST", s.path, "", uint64_t{kMaxProxyBody + 1}, false).status == 403);  // 403 before 413
  s = decode_target(kPrefix + "/api/v1/namespaces/d/pods");
  CHECK(check_proxy_request("POST", s.path, "", uint64_t{kMaxProxyBody + 1}, false).status == 413);
}

// ---- policy: patterns, callers, evaluation ------------------------------------------------------

TEST_CASE("path patterns: '*' one segment, '*' inside a segment, '**' zero or more segments", "[proxy_policy]") {
  struct Row {
    std::string pattern, path;
    bool match;
  };
  const std::vector<Row> rows = {
      {"/api/v1/secrets", "/api/v1/secrets", true},
      {"/api/v1/secrets", "/api/v1/secrets/x", false},
      {"/api/v1/secrets", "/api/v1/secretsx", false},
      {"/api/v1/secrets/**", "/api/v1/secrets", true},
      {"/api/v1/secrets/**", "/api/v1/secrets/a/b", true},
      {"/api/v1/secrets/**", "/api/v1/secretsx", false},
      {"/api/v1/namespaces/*/secrets/**", "/api/v1/namespaces/a/secrets/s", true},
      {"/api/v1/namespaces/*/secrets/**", "/api/v1/namespaces/secrets", false},
      {"/api/v1/namespaces/*/secrets/**", "/api/v1/namespaces/a/b/secrets", false},
      {"/api/v1/namespaces/team-*/pods", "/api/v1/namespaces/team-a/pods", true},
      {"/api/v1/namespaces/team-*/pods", "/api/v1/namespaces/other/pods", false},
      {"/api/v1/namespaces/*-system/**", "/api/v1/namespaces/kube-system/secrets", true},
      {"/**/secrets/**", "/api/v1/namespaces/a/secrets/x", true},
      {"/**/secrets/**", "/api/v1/secrets", true},
      {"/**/secrets/**", "/api/v1/configmaps", false},
      {"/**", "/", true},
      {"/", "/", true},
      {"/", "/api", false},
      {"/api/*", "/api", false},
  };
  for (const auto& r : rows) {
    INFO(r.pattern << " ~ " << r.path);
    CHECK(match_path_pattern(compile_path_pattern(r.pattern), r.path) == r.match);
  }
  for (const char* bad : {"", "api/v1", "/api//v1", "/api/v1/", "/api/./v1", "/api/../v1", "/api/v1?x", "/api/v1#", "/api/%2F",
                          "/api\\v1", "/api/**x", "/api/a**", "/api/\x01"}) {
    INFO(bad);
    CHECK_THROWS_AS(compile_path_pattern(bad), PolicyError);
  }
}

TEST_CASE("caller selectors: CN, SAN DNS, SAN URI, all fields of one selector, never an anonymous caller", "[proxy_policy]") {
  CallerIdentity id = cn("openchoreo-controller-manager");
  id.dns_names = {"cm.openchoreo.svc", "cm"};
  id.uris = {"spiffe://cluster.local/ns/openchoreo/sa/cm"};
  CHECK(caller_matches({"openchoreo-controller-manager", std::nullopt, std::nullopt}, id));
  CHECK_FALSE(caller_matches({"openchoreo-api", std::nullopt, std::nullopt}, id));
  CHECK(caller_matches({std::nullopt, "cm", std::nullopt}, id));
  CHECK_FALSE(caller_matches({std::nullopt, "cm.other", std::nullopt}, id));
  CHECK(caller_matches({std::nullopt, std::nullopt, "spiffe://cluster.local/ns/openchoreo/sa/cm"}, id));
  CHECK(caller_matches({"openchoreo-controller-manager", "cm.openchoreo.svc", std::nullopt}, id));
  CHECK_FALSE(caller_matches({"openchoreo-controller-manager", "nope", std::nullopt}, id));
  CallerIdentity anonymous;
  CHECK_FALSE(caller_matches({"", std::nullopt, std::nullopt}, anonymous));
  CHECK(identity_json(anonymous) == "anonymous");
  CHECK(identity_json(id)["commonName"] == "openchoreo-controller-manager");
}

TEST_CASE("identity_from_certificate reads subject CN and SAN DNS/URI names", "[proxy_policy]") {
  std::unique_ptr<X509, decltype(&X509_free)> x(X509_new(), X509_free);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("OpenChoreo"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("openchoreo-controller-manager"), -1, -1, 0);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name,
                                            "DNS:cm.openchoreo.svc, URI:spiffe://cluster.local/ns/openchoreo/sa/cm, "
                                            "IP:127.0.0.1, DNS:cm");
  REQUIRE(ext);
  X509_add_ext(x.get(), ext, -1);
  X509_EXTENSION_free(ext);
  auto id = identity_from_certificate(x.get());
  CHECK(id.verified);
  CHECK(id.common_name == "openchoreo-controller-manager");
  CHECK(id.dns_names == std::vector<std::string>{"cm.openchoreo.svc", "cm"});
  CHECK(id.uris == std::vector<std::string>{"spiffe://cluster.local/ns/openchoreo/sa/cm"});
  CHECK_FALSE(identity_from_certificate(nullptr).verified);
}

TEST_CASE("the shipped strict example: the controller-manager lists Secrets, every other caller is denied them",
          "[proxy_policy]") {
  const std::string file = std::string(CG_SOURCE_DIR) + "/deploy/examples/proxy-policy/proxy-policy-strict.yaml";
  Policy p = parse_policy(read(file));
  const CallerIdentity cm = cn("openchoreo-controller-manager"), api = cn("openchoreo-api"), anonymous;
  struct Row {
    const CallerIdentity* who;
    std::string method, path;
    unsigned status;
    std::string rule;
  };
  const std::vector<Row> rows = {
      {&cm, "GET", "/api/v1/secrets?labelSelector=openchoreo.dev%2Fowner", 0, ""},
      {&cm, "GET", "/api/v1/serviceaccounts", 0, ""},
      {&cm, "GET", "/api/v1/watch/secrets", 0, ""},
      {&cm, "PUT", "/api/v1/namespaces/dp-ns/secrets/app-secret", 0, ""},
      {&cm, "DELETE", "/api/v1/namespaces/dp-ns/secrets/app-secret", 0, ""},
      {&cm, "POST", "/api/v1/secrets", 403, "deny-secrets"},  // lists only, cluster-wide
      {&cm, "GET", "/api/v1/namespaces/kube-system/secrets", 403, "builtin:kube-system-secrets"},
      {&api, "GET", "/api/v1/secrets", 403, "deny-secrets"},
      {&api, "GET", "/api/v1/secrets/", 403, "deny-secrets"},
      {&api, "GET", "/api/v1/watch/secrets", 403, "deny-secrets"},
      {&api, "GET", "/api/v1/namespaces/dp-ns/secrets/app-secret", 403, "deny-secrets"},
      {&api, "GET", "/api/v1/serviceaccounts", 403, "deny-cluster-serviceaccounts"},
      {&api, "GET", "/api/v1/namespaces/dp-ns/serviceaccounts/default", 0, ""},
      {&api, "GET", "/api/v1/namespaces/dp-ns/pods", 0, ""},
      {&anonymous, "GET", "/api/v1/secrets", 403, "deny-secrets"},
      {&anonymous, "GET", "/apis/apps/v1/deployments", 0, ""},
  };
  for (const auto& r : rows) {
    INFO(r.who->common_name << " " << r.method << " " << r.path);
    auto c = check(r.method, kPrefix + r.path, &p, r.who);
    CHECK(c.status == r.status);
    CHECK(c.rule == r.rule);
    if (r.status == 403 && r.rule.rfind("builtin:", 0) != 0)
      CHECK(c.message == "Access to path is denied by proxy policy (rule " + r.rule + "): " + c.path);
  }
}

TEST_CASE("policy evaluation: first match wins, then defaultAction, methods and targets narrow a rule", "[proxy_policy]") {
  Policy p = parse_policy(R"(
defaultAction: deny
rules:
  - name: cm-everything
    action: allow
    callers: [{commonName: cm}]
    paths: ["/**"]
  - name: no-deletes
    action: deny
    methods: [delete]
    paths: ["/**"]
  - name: reads
    action: allow
    methods: [GET, HEAD]
    targets: [k8s, monitoring]
    paths: ["/api/**", "/apis/**"]
)");
  const CallerIdentity cm = cn("cm"), other = cn("other");
  struct Row {
    const CallerIdentity* who;
    std::string method, target, path;
    PolicyAction action;
    std::string rule;
  };
  const std::vector<Row> rows = {
      {&cm, "DELETE", "k8s", "/api/v1/pods", PolicyAction::allow, "cm-everything"},
      {&other, "DELETE", "k8s", "/api/v1/pods", PolicyAction::deny, "no-deletes"},
      {&other, "GET", "k8s", "/api/v1/pods", PolicyAction::allow, "reads"},
      {&other, "GET", "logs", "/api/v1/pods", PolicyAction::deny, "default"},
      {&other, "POST", "k8s", "/api/v1/pods", PolicyAction::deny, "default"},
      {&other, "GET", "k8s", "/version", PolicyAction::deny, "default"},
  };
  for (const auto& r : rows) {
    INFO(r.who->common_name << " " << r.method << " " << r.target << " " << r.path);
    auto d = evaluate(p, *r.who, r.method, r.target, r.path);
    CHECK(d.action == r.action);
    CHECK(d.rule == r.rule);
  }
  // A policy cannot open what the built-in deny-list blocks.
  auto c = check("GET", kPrefix + "/api/v1/namespaces/kube-system/secrets", &p, &cm);
  CHECK(c.status == 403);
  CHECK(c.rule == "builtin:kube-system-secrets");
}

TEST_CASE("malformed policies are refused with the line and field at fault", "[proxy_policy]") {
  struct Row {
    std::string yaml, error;
  };
  const std::vector<Row> rows = {
      {"rules: []\n", "defaultAction is required"},
      {"defaultAction: maybe\n", "'maybe' is not allow or deny"},
      {"defaultAction: allow\nrules: {}\n", "rules: must be a list"},
      {"defaultAction: allow\nrule: []\n", "unknown key 'rule'"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    caller: [{commonName: x}]\n    paths: [/x]\n",
       "line 5: rules[0] (a): unknown key 'caller'"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    callers: [{cn: x}]\n    paths: [/x]\n",
       "unknown key 'cn' (allowed: commonName, dnsName, uri)"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    callers: []\n    paths: [/x]\n",
       "callers: must be a non-empty list"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    callers: [{commonName: ''}]\n    paths: [/x]\n",
       "must not be empty"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    methods: [GTE]\n    paths: [/x]\n",
       "'GTE' is not one of GET"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    methods: GET\n    paths: [/x]\n",
       "methods: must be a non-empty list"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    targets: [etcd]\n    paths: [/x]\n",
       "'etcd' is not one of k8s, monitoring, logs"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    paths: [/api/v1/secrets/]\n",
       "line 5: rules[0] (a).paths[0]: path pattern '/api/v1/secrets/' ends with '/'"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n", "paths is required"},
      {"defaultAction: allow\nrules:\n  - name: a\n    paths: [/x]\n", "action is required"},
      {"defaultAction: allow\nrules:\n  - action: deny\n    paths: [/x]\n", "name is required"},
      {"defaultAction: allow\nrules:\n  - name: Bad_Name\n    action: deny\n    paths: [/x]\n", "'Bad_Name' must be"},
      {"defaultAction: allow\nrules:\n  - name: default\n    action: deny\n    paths: [/x]\n", "'default' must be"},
      {"defaultAction: allow\nrules:\n  - {name: a, action: deny, paths: [/x]}\n  - {name: a, action: deny, paths: [/y]}\n",
       "line 4: rules[1].name: 'a' is used twice"},
      {"defaultAction: allow\nrules:\n  - name: a\n    action: deny\n    paths: [/x\n", "not valid YAML"},
      {"- just\n- a list\n", "must be a YAML mapping"},
      {"", "must be a YAML mapping"},
  };
  for (const auto& r : rows) {
    INFO(r.yaml);
    try {
      parse_policy(r.yaml);
      FAIL("accepted");
    } catch (const PolicyError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(r.error) != std::string::npos);
    }
  }
  CHECK(parse_policy("defaultAction: deny\nrules:\n").rules.empty());
}

TEST_CASE("PolicyFile: a change is applied, a malformed file is refused and the last good policy stays", "[proxy_policy]") {
  const std::string dir = cg::testing::make_temp_dir("cg-policy-");
  const std::string file = dir + "/policy.yaml";
  const std::string deny_secrets =
      "defaultAction: allow\nrules:\n  - {name: no-secrets, action: deny, paths: [/api/v1/secrets]}\n";
  const std::string deny_pods = "defaultAction: allow\nrules:\n  - {name: deny-pods, action: deny, paths: [/api/v1/pods]}\n";
  cg::testing::write_file(file, "defaultAction: allow\nrules:\n  - {name: x, action: deny}\n");
  cg::testing::ControlThread control;
  CHECK_THROWS_WITH(PolicyFile(control.executor(), file), Catch::Contains(file) && Catch::Contains("paths is required"));
  CHECK_THROWS_WITH(PolicyFile(control.executor(), dir + "/missing.yaml"), Catch::Contains("cannot be read"));

  write_atomically(file, deny_secrets);
  PolicyFile pf(control.executor(), file, std::chrono::milliseconds(20));
  const CallerIdentity anyone;
  auto decide = [&](const std::string& path) { return evaluate(*pf.current(), anyone, "GET", "k8s", path).rule; };
  CHECK(decide("/api/v1/secrets") == "no-secrets");
  pf.start();

  write_atomically(file, deny_pods);
  REQUIRE(cg::testing::wait_until([&] { return pf.applied() == 2; }));
  CHECK(decide("/api/v1/secrets") == "default");
  CHECK(decide("/api/v1/pods") == "deny-pods");

  write_atomically(file, "defaultAction: allow\nrules:\n  - {name: broken, action: deny, paths: [secrets]}\n");
  REQUIRE(cg::testing::wait_until([&] { return pf.refused() == 1; }));
  CHECK(decide("/api/v1/pods") == "deny-pods");  // the last good policy stays
  CHECK(pf.applied() == 2);

  std::filesystem::remove(file);  // unreadable: refused once, policy kept
  REQUIRE(cg::testing::wait_until([&] { return pf.refused() == 2; }));
  CHECK(decide("/api/v1/pods") == "deny-pods");

  write_atomically(file, deny_secrets);
  REQUIRE(cg::testing::wait_until([&] { return pf.applied() == 3; }));
  CHECK(decide("/api/v1/secrets") == "no-secrets");
  pf.stop();
  pf.stop();  // idempotent
  std::filesystem::remove_all(dir);
}
