// parse_object: the six plane kinds and v1 Secrets from Kubernetes-shaped JSON.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <string>

#include "plane_index/objects.hpp"
#include "plane_index/plane_types.hpp"

using Catch::Matchers::Contains;
using cg::plane::Kind;
using cg::plane::parse_object;
using json = nlohmann::json;

namespace {

json plane(const std::string& kind, const std::string& name, json spec = json::object(), json meta_extra = json::object()) {
  json meta = {{"name", name}};
  for (auto it = meta_extra.begin(); it != meta_extra.end(); ++it) meta[it.key()] = it.value();
  json o = {{"apiVersion", "openchoreo.dev/v1alpha1"}, {"kind", kind}, {"metadata", meta}};
  if (!spec.is_null()) o["spec"] = spec;
  return o;
}

std::string parse_error(const json& j) {
  auto r = parse_object(j);
  CHECK_FALSE(r.cr.has_value());
  CHECK_FALSE(r.secret.has_value());
  CHECK_FALSE(r.error.empty());
  return r.error;
}

}  // namespace

TEST_CASE("plane kinds table", "[plane_index][objects]") {
  CHECK(cg::plane::all_kinds().size() == 6);
  CHECK(cg::plane::kind_from_name("ClusterWorkflowPlane") == Kind::ClusterWorkflowPlane);
  CHECK_FALSE(cg::plane::kind_from_name("clusterworkflowplane").has_value());
  CHECK(cg::plane::is_valid_plane_type("dataplane"));
  CHECK(cg::plane::is_valid_plane_type("workflowplane"));
  CHECK(cg::plane::is_valid_plane_type("observabilityplane"));
  CHECK_FALSE(cg::plane::is_valid_plane_type("DataPlane"));
  CHECK(cg::plane::kinds_for_plane_type("workflowplane") == std::vector<Kind>{Kind::ClusterWorkflowPlane, Kind::WorkflowPlane});
  CHECK(cg::plane::kinds_for_plane_type("dataplane") == std::vector<Kind>{Kind::ClusterDataPlane, Kind::DataPlane});
  CHECK(cg::plane::kinds_for_plane_type("nope").empty());

  cg::plane::CrRef cluster{Kind::ClusterWorkflowPlane, "", "shared"};
  cg::plane::CrRef ns{Kind::WorkflowPlane, "team-a", "wp"};
  CHECK(cluster.auth_key() == "/shared");
  CHECK(ns.auth_key() == "team-a/wp");
  CHECK(cluster.plane_type() == "workflowplane");
  CHECK(cluster.id() == "ClusterWorkflowPlane//shared");
}

TEST_CASE("plane ID validation (DNS label, at most 63 characters)", "[plane_index][objects]") {
  CHECK(cg::plane::is_valid_plane_id("shared-workflow"));
  CHECK(cg::plane::is_valid_plane_id("us-west-2"));
  CHECK(cg::plane::is_valid_plane_id("a"));
  CHECK(cg::plane::is_valid_plane_id("0"));
  CHECK(cg::plane::is_valid_plane_id(std::string(63, 'a')));
  CHECK_FALSE(cg::plane::is_valid_plane_id(std::string(64, 'a')));
  CHECK_FALSE(cg::plane::is_valid_plane_id(""));
  CHECK_FALSE(cg::plane::is_valid_plane_id("Prod"));
  CHECK_FALSE(cg::plane::is_valid_plane_id("-lead"));
  CHECK_FALSE(cg::plane::is_valid_plane_id("trail-"));
  CHECK_FALSE(cg::plane::is_valid_plane_id("dot.ted"));
  CHECK_FALSE(cg::plane::is_valid_plane_id("under_score"));
}

TEST_CASE("all six plane kinds parse with their scope", "[plane_index][objects]") {
  struct Case {
    const char* kind;
    Kind expect;
    bool cluster;
    const char* plane_type;
  };
  auto c = GENERATE(Case{"DataPlane", Kind::DataPlane, false, "dataplane"},
                    Case{"ClusterDataPlane", Kind::ClusterDataPlane, true, "dataplane"},
                    Case{"WorkflowPlane", Kind::WorkflowPlane, false, "workflowplane"},
                    Case{"ClusterWorkflowPlane", Kind::ClusterWorkflowPlane, true, "workflowplane"},
                    Case{"ObservabilityPlane", Kind::ObservabilityPlane, false, "observabilityplane"},
                    Case{"ClusterObservabilityPlane", Kind::ClusterObservabilityPlane, true, "observabilityplane"});
  CAPTURE(c.kind);

  SECTION("without namespace") {
    auto r = parse_object(plane(c.kind, "p1"));
    REQUIRE(r.error.empty());
    REQUIRE(r.cr.has_value());
    CHECK_FALSE(r.secret.has_value());
    CHECK(r.cr->ref.kind == c.expect);
    CHECK(r.cr->ref.name == "p1");
    CHECK(r.cr->ref.ns == (c.cluster ? "" : "default"));
    CHECK(r.cr->ref.plane_type() == c.plane_type);
    CHECK(r.cr->ref.auth_key() == (c.cluster ? "/p1" : "default/p1"));
    CHECK(r.cr->plane_id == "p1");
    CHECK_FALSE(r.cr->plane_id_explicit);
    CHECK(r.cr->generation == 1);
    CHECK_FALSE(r.cr->has_client_ca);
  }
  SECTION("with a namespace") {
    auto r = parse_object(plane(c.kind, "p1", json::object(), {{"namespace", "team-a"}}));
    REQUIRE(r.cr.has_value());
    // Cluster-scoped kinds ignore metadata.namespace, as the API server does.
    CHECK(r.cr->ref.ns == (c.cluster ? "" : "team-a"));
    CHECK(r.cr->ref.auth_key() == (c.cluster ? "/p1" : "team-a/p1"));
  }
  SECTION("with an explicit planeID") {
    auto r = parse_object(plane(c.kind, "p1", {{"planeID", "shared"}}));
    REQUIRE(r.cr.has_value());
    CHECK(r.cr->plane_id == "shared");
    CHECK(r.cr->plane_id_explicit);
  }
}

TEST_CASE("effective planeID defaults to metadata.name", "[plane_index][objects]") {
  SECTION("no spec at all") {
    json o = plane("WorkflowPlane", "wp", nullptr);
    REQUIRE_FALSE(o.contains("spec"));
    auto r = parse_object(o);
    REQUIRE(r.cr.has_value());
    CHECK(r.cr->plane_id == "wp");
    CHECK(r.cr->spec == json::object());
  }
  SECTION("empty planeID") {
    auto r = parse_object(plane("ClusterWorkflowPlane", "cwp", {{"planeID", ""}}));
    REQUIRE(r.cr.has_value());
    CHECK(r.cr->plane_id == "cwp");
    CHECK_FALSE(r.cr->plane_id_explicit);
  }
  SECTION("null planeID") {
    auto r = parse_object(plane("DataPlane", "dp", {{"planeID", nullptr}}));
    REQUIRE(r.cr.has_value());
    CHECK(r.cr->plane_id == "dp");
  }
}

TEST_CASE("plane CR fields: generation, annotations, clientCA, observabilityPlaneRef, status", "[plane_index][objects]") {
  json spec = {{"planeID", "prod-ci"},
               {"clusterAgent", {{"clientCA", {{"secretKeyRef", {{"name", "ca"}, {"namespace", "sec"}, {"key", "ca.crt"}}}}}}},
               {"observabilityPlaneRef", {{"kind", "ClusterObservabilityPlane"}, {"name", "production-observability"}}},
               {"secretStoreRef", {{"name", "store"}}}};
  json meta = {{"generation", 7},
               {"resourceVersion", "12345"},
               {"annotations", {{"openchoreo.dev/display-name", "Production CI"}, {"numeric", 5}}}};
  json o = plane("ClusterWorkflowPlane", "secure", spec, meta);
  o["status"] = {{"observedGeneration", 6}};
  auto r = parse_object(o);
  REQUIRE(r.error.empty());
  REQUIRE(r.cr.has_value());
  const auto& cr = *r.cr;
  CHECK(cr.generation == 7);
  CHECK(cr.resource_version == "12345");
  CHECK(cr.display_name() == "Production CI");
  CHECK(cr.annotations.count("numeric") == 0);  // non-string annotation values are dropped
  CHECK(cr.has_client_ca);
  CHECK_FALSE(cr.ca_value.has_value());
  REQUIRE(cr.ca_secret.has_value());
  CHECK(cr.ca_secret->name == "ca");
  CHECK(cr.ca_secret->ns == "sec");
  CHECK(cr.ca_secret->key == "ca.crt");
  REQUIRE(cr.obs_ref.has_value());
  CHECK(cr.obs_ref->kind == "ClusterObservabilityPlane");
  CHECK(cr.obs_ref->name == "production-observability");
  CHECK(cr.spec == spec);
  CHECK(cr.status == json{{"observedGeneration", 6}});

  SECTION("inline value") {
    auto r2 = parse_object(plane("DataPlane", "dp", {{"clusterAgent", {{"clientCA", {{"value", "PEM"}}}}}}));
    REQUIRE(r2.cr.has_value());
    CHECK(r2.cr->has_client_ca);
    CHECK(r2.cr->ca_value == std::optional<std::string>("PEM"));
    CHECK_FALSE(r2.cr->ca_secret.has_value());
    CHECK(r2.cr->display_name() == "dp");  // no annotation: the name
  }
  SECTION("empty inline value counts as not set") {
    auto r2 = parse_object(plane("DataPlane", "dp", {{"clusterAgent", {{"clientCA", {{"value", ""}}}}}}));
    REQUIRE(r2.cr.has_value());
    CHECK(r2.cr->has_client_ca);
    CHECK_FALSE(r2.cr->ca_value.has_value());
  }
  SECTION("observabilityPlaneRef without kind") {
    auto r2 = parse_object(plane("WorkflowPlane", "wp", {{"observabilityPlaneRef", {{"name", "default"}}}}));
    REQUIRE(r2.cr.has_value());
    REQUIRE(r2.cr->obs_ref.has_value());
    CHECK(r2.cr->obs_ref->kind.empty());
    CHECK(r2.cr->obs_ref->name == "default");
  }
}

TEST_CASE("Secrets: data is base64-decoded, stringData is taken as-is", "[plane_index][objects]") {
  json s = {{"apiVersion", "v1"},
            {"kind", "Secret"},
            {"metadata", {{"name", "agent-ca"}, {"namespace", "team-a"}, {"resourceVersion", "9"}}},
            {"type", "Opaque"},
            {"data", {{"ca.crt", "aGVsbG8gd29ybGQ="}, {"empty", ""}, {"wrapped", "aGVs\nbG8="}}},
            {"stringData", {{"plain", "-----BEGIN CERTIFICATE-----\n"}}}};
  auto r = parse_object(s);
  REQUIRE(r.error.empty());
  REQUIRE(r.secret.has_value());
  CHECK_FALSE(r.cr.has_value());
  CHECK(r.secret->ns == "team-a");
  CHECK(r.secret->name == "agent-ca");
  CHECK(r.secret->resource_version == "9");
  CHECK(r.secret->data.at("ca.crt") == "hello world");
  CHECK(r.secret->data.at("empty").empty());
  CHECK(r.secret->data.at("wrapped") == "hello");
  CHECK(r.secret->data.at("plain") == "-----BEGIN CERTIFICATE-----\n");
  CHECK(r.secret->data.size() == 4);

  SECTION("stringData wins over data for the same key (Kubernetes merge semantics)") {
    json s2 = s;
    s2["stringData"] = {{"ca.crt", "from stringData"}};
    auto r2 = parse_object(s2);
    REQUIRE(r2.secret.has_value());
    CHECK(r2.secret->data.at("ca.crt") == "from stringData");
  }
  SECTION("namespace defaults to \"default\"") {
    json s2 = s;
    s2["metadata"].erase("namespace");
    auto r2 = parse_object(s2);
    REQUIRE(r2.secret.has_value());
    CHECK(r2.secret->ns == "default");
  }
  SECTION("a Secret without data is still a Secret") {
    auto r2 = parse_object({{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "x"}}}});
    REQUIRE(r2.secret.has_value());
    CHECK(r2.secret->data.empty());
  }
}

TEST_CASE("parse_object errors", "[plane_index][objects]") {
  SECTION("not an object") {
    parse_error(json::array({1, 2}));
    parse_error("a string");
    parse_error(nullptr);
  }
  SECTION("wrong apiVersion on a plane kind") {
    json o = plane("DataPlane", "dp");
    o["apiVersion"] = "openchoreo.dev/v1";
    CHECK_THAT(parse_error(o), Contains("apiVersion"));
    o.erase("apiVersion");
    CHECK_THAT(parse_error(o), Contains("apiVersion"));
  }
  SECTION("wrong apiVersion on a Secret") {
    json o = {{"apiVersion", "openchoreo.dev/v1alpha1"}, {"kind", "Secret"}, {"metadata", {{"name", "s"}}}};
    CHECK_THAT(parse_error(o), Contains("apiVersion"));
  }
  SECTION("unknown kind") {
    json o = plane("ConfigMap", "cm");
    CHECK_THAT(parse_error(o), Contains("ConfigMap"));
    CHECK_THAT(parse_error(plane("dataplane", "dp")), Contains("unsupported kind"));
  }
  SECTION("missing kind") {
    json o = plane("DataPlane", "dp");
    o.erase("kind");
    CHECK_THAT(parse_error(o), Contains("kind"));
  }
  SECTION("missing metadata") {
    json o = plane("DataPlane", "dp");
    o.erase("metadata");
    CHECK_THAT(parse_error(o), Contains("metadata"));
  }
  SECTION("missing or empty name") {
    json o = plane("DataPlane", "dp");
    o["metadata"].erase("name");
    CHECK_THAT(parse_error(o), Contains("metadata.name"));
    o["metadata"]["name"] = "";
    CHECK_THAT(parse_error(o), Contains("metadata.name"));
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"namespace", "x"}}}};
    CHECK_THAT(parse_error(s), Contains("metadata.name"));
  }
  SECTION("non-string name") {
    json o = plane("DataPlane", "dp");
    o["metadata"]["name"] = 12;
    CHECK_THAT(parse_error(o), Contains("metadata.name"));
  }
  SECTION("bad base64 in Secret data") {
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "s"}}}, {"data", {{"ca.crt", "not base64!"}}}};
    CHECK_THAT(parse_error(s), Contains("ca.crt"));
    s["data"]["ca.crt"] = "abc";  // length not a multiple of 4
    CHECK_THAT(parse_error(s), Contains("base64"));
    s["data"]["ca.crt"] = 42;
    CHECK_THAT(parse_error(s), Contains("ca.crt"));
  }
  SECTION("non-string stringData") {
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "s"}}}, {"stringData", {{"k", 1}}}};
    CHECK_THAT(parse_error(s), Contains("stringData"));
  }
  SECTION("non-string planeID") {
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"planeID", 42}})), Contains("spec.planeID"));
    CHECK_THAT(parse_error(plane("ClusterDataPlane", "dp", {{"planeID", json::array({"a"})}})), Contains("spec.planeID"));
  }
  SECTION("spec not a mapping") { CHECK_THAT(parse_error(plane("DataPlane", "dp", json::array())), Contains("spec")); }
  SECTION("bad generation") {
    CHECK_THAT(parse_error(plane("DataPlane", "dp", json::object(), {{"generation", 0}})), Contains("generation"));
    CHECK_THAT(parse_error(plane("DataPlane", "dp", json::object(), {{"generation", "3"}})), Contains("generation"));
  }
  SECTION("malformed clientCA") {
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"clusterAgent", "x"}})), Contains("clusterAgent"));
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"clusterAgent", {{"clientCA", "PEM"}}}})), Contains("clientCA"));
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"clusterAgent", {{"clientCA", {{"value", 5}}}}}})),
               Contains("clientCA.value"));
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"clusterAgent", {{"clientCA", {{"secretKeyRef", {{"name", 5}}}}}}}})),
               Contains("secretKeyRef.name"));
  }
  SECTION("malformed observabilityPlaneRef") {
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"observabilityPlaneRef", "obs"}})), Contains("observabilityPlaneRef"));
    CHECK_THAT(parse_error(plane("DataPlane", "dp", {{"observabilityPlaneRef", {{"kind", 1}}}})),
               Contains("observabilityPlaneRef.kind"));
  }
}

// Kubernetes validates metadata.name of custom resources and Secrets as a DNS-1123 subdomain
// (ValidateObjectMeta with NameIsDNSSubdomain) and metadata.namespace as a DNS-1123 label; both
// plane sources go through parse_object, so an object with another name is never loaded.
TEST_CASE("DNS-1123 subdomain and label rules (Kubernetes' IsDNS1123Subdomain / IsDNS1123Label)",
          "[plane_index][objects][names]") {
  struct Case {
    std::string value;
    bool subdomain;
    bool label;
  };
  const std::string l63(63, 'a');
  auto c = GENERATE_COPY(values<Case>({
      {"a", true, true},
      {"0", true, true},
      {"shared-workflow", true, true},
      {"us-west-2", true, true},
      {"a.b", true, false},
      {"example.com", true, false},
      {"1-2.3-4", true, false},
      {l63, true, true},
      {l63 + "a", true, false},  // a label of 64: still a subdomain (no per-part limit)
      {l63 + "." + l63 + "." + l63 + "." + std::string(61, 'a'), true, false},  // 253 characters
      {l63 + "." + l63 + "." + l63 + "." + std::string(62, 'a'), false, false},  // 254
      {"", false, false},
      {"Prod", false, false},
      {"-lead", false, false},
      {"trail-", false, false},
      {"a.-b", false, false},
      {"a-.b", false, false},
      {".a", false, false},
      {"a.", false, false},
      {"a..b", false, false},
      {".", false, false},
      {"..", false, false},
      {"a/b", false, false},
      {"../etc", false, false},
      {"a_b", false, false},
      {"a b", false, false},
      {"a&b", false, false},
      {"a?b", false, false},
      {"a%2fb", false, false},
      {"a#b", false, false},
      {std::string("a\0b", 3), false, false},
      {"a\nb", false, false},
      {"caf\xc3\xa9", false, false},
  }));
  CAPTURE(c.value);
  CHECK(cg::plane::is_dns1123_subdomain(c.value) == c.subdomain);
  CHECK(cg::plane::is_dns1123_label(c.value) == c.label);
  CHECK(cg::plane::dns1123_subdomain_problem("metadata.name", c.value).empty() == c.subdomain);
  CHECK(cg::plane::dns1123_label_problem("metadata.namespace", c.value).empty() == c.label);
}

TEST_CASE("invalid metadata.name / metadata.namespace: the object is rejected with the reason", "[plane_index][objects][names]") {
  struct Case {
    const char* what;
    std::string name;
    std::string ns;  // "" = not given
    const char* field;
  };
  auto c = GENERATE(values<Case>({
      {"NUL in the name", std::string("prod\0evil", 9), "", "metadata.name"},
      {"slash in the name", "a/b", "", "metadata.name"},
      {"dot-dot name", "..", "", "metadata.name"},
      {"path traversal", "../../etc/passwd", "", "metadata.name"},
      {"upper case", "Prod", "", "metadata.name"},
      {"newline", "a\nb", "", "metadata.name"},
      {"query characters", "a&b?c=d", "", "metadata.name"},
      {"254 characters", std::string(254, 'a'), "", "metadata.name"},
      {"namespace with a dot", "ok", "team.a", "metadata.namespace"},
      {"namespace with a slash", "ok", "team/a", "metadata.namespace"},
      {"namespace of 64", "ok", std::string(64, 'n'), "metadata.namespace"},
      {"namespace with NUL", "ok", std::string("team\0a", 6), "metadata.namespace"},
  }));
  CAPTURE(c.what);
  json meta = json::object();
  if (!c.ns.empty()) meta["namespace"] = c.ns;

  SECTION("namespaced plane kind") {
    std::string err = parse_error(plane("DataPlane", c.name, json::object(), meta));
    CHECK_THAT(err, Contains(c.field));
    CHECK_THAT(err, Contains("RFC 1123") || Contains("no more than"));
    CHECK(err.find('\0') == std::string::npos);  // the value is shown escaped
    CHECK(err.find('\n') == std::string::npos);
  }
  SECTION("Secret") {
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", meta}};
    s["metadata"]["name"] = c.name;
    CHECK_THAT(parse_error(s), Contains(c.field));
  }
  SECTION("cluster-scoped plane kind: the name is checked, the namespace ignored") {
    json o = plane("ClusterWorkflowPlane", c.name, json::object(), meta);
    if (std::string(c.field) == "metadata.name") {
      CHECK_THAT(parse_error(o), Contains("metadata.name"));
    } else {
      auto r = parse_object(o);
      REQUIRE(r.cr.has_value());
      CHECK(r.cr->ref.ns.empty());
    }
  }
}

TEST_CASE("valid Kubernetes names load: dots in names, 253 characters, 63-character namespaces",
          "[plane_index][objects][names]") {
  const std::string long_name =
      std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." + std::string(61, 'd');
  REQUIRE(long_name.size() == 253);
  for (const std::string& name : {std::string("prod.eu-1"), long_name, std::string("0")}) {
    CAPTURE(name);
    auto r = parse_object(plane("WorkflowPlane", name, json::object(), {{"namespace", std::string(63, 'n')}}));
    REQUIRE(r.error.empty());
    REQUIRE(r.cr.has_value());
    CHECK(r.cr->ref.name == name);
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", name}, {"namespace", "team-a"}}}};
    auto rs = parse_object(s);
    REQUIRE(rs.error.empty());
    CHECK(rs.secret->name == name);
  }
  SECTION("a non-string Secret namespace is an error, as for plane kinds") {
    json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", {{"name", "s"}, {"namespace", 5}}}};
    CHECK_THAT(parse_error(s), Contains("metadata.namespace"));
  }
}
