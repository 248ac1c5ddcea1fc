// PlaneIndex::replace: anchors per planeType/planeID (§3.2, §3.4), CA loading from value or
// secretKeyRef (§3.3), spec problems, observability references, change notifications, CA reuse.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "plane_index/index.hpp"
#include "tests/support/pki.hpp"

using Catch::Matchers::Contains;
using cg::plane::CrRef;
using cg::plane::IndexChange;
using cg::plane::Kind;
using cg::plane::PlaneCR;
using cg::plane::PlaneIndex;
using cg::plane::PlaneWorld;
using cg::plane::SecretObj;
using json = nlohmann::json;

namespace {

// Keep the test output readable: the index logs every load at info level (CG_TEST_LOG=1 shows it).
const bool kQuietLogs = [] {
  if (!std::getenv("CG_TEST_LOG")) cg::log::init(cg::log::Level::error, cg::log::Format::json);
  return true;
}();

PlaneCR cr(const std::string& kind, const std::string& ns, const std::string& name, json spec = json::object(),
           json meta_extra = json::object()) {
  json meta = {{"name", name}};
  if (!ns.empty()) meta["namespace"] = ns;
  for (auto it = meta_extra.begin(); it != meta_extra.end(); ++it) meta[it.key()] = it.value();
  auto r =
      cg::plane::parse_object({{"apiVersion", "openchoreo.dev/v1alpha1"}, {"kind", kind}, {"metadata", meta}, {"spec", spec}});
  INFO(r.error);
  REQUIRE(r.cr.has_value());
  return *r.cr;
}

json ca_value(const std::string& bundle, const std::string& plane_id = "") {
  json s = {{"clusterAgent", {{"clientCA", {{"value", bundle}}}}}};
  if (!plane_id.empty()) s["planeID"] = plane_id;
  return s;
}

json ca_secret(const std::string& name, const std::string& key, const std::string& ns = "", const std::string& plane_id = "") {
  json ref = {{"name", name}, {"key", key}};
  if (!ns.empty()) ref["namespace"] = ns;
  json s = {{"clusterAgent", {{"clientCA", {{"secretKeyRef", ref}}}}}};
  if (!plane_id.empty()) s["planeID"] = plane_id;
  return s;
}

SecretObj secret(const std::string& ns, const std::string& name, std::map<std::string, std::string> data) {
  SecretObj s;
  s.ns = ns;
  s.name = name;
  s.data = std::move(data);
  return s;
}

std::vector<std::string> keys(const std::vector<cg::tls::Anchor>& anchors) {
  std::vector<std::string> out;
  for (const auto& a : anchors) out.push_back(a.key);
  return out;
}

std::shared_ptr<const cg::plane::CrEntry> must_find(const PlaneIndex& idx, const CrRef& ref) {
  auto e = idx.find(ref);
  INFO(ref.id());
  REQUIRE(e != nullptr);
  return e;
}

struct Recorder {
  std::vector<IndexChange> changes;
  void attach(PlaneIndex& idx) {
    idx.add_listener([this](const IndexChange& c) { changes.push_back(c); });
  }
};

using PlaneKey = std::pair<std::string, std::string>;

}  // namespace

TEST_CASE("anchors lists the CRs of a plane type and planeID, cluster-scoped kinds first", "[plane_index][index]") {
  auto ca = cg::testing::make_ca("ca");
  const auto pem = ca.cert_pem();
  PlaneWorld w;
  // Namespaced ones first in the input (and WorkflowPlane sorts before ClusterWorkflowPlane by enum).
  w.crs.push_back(cr("WorkflowPlane", "team-b", "wp", ca_value(pem, "p1")));
  w.crs.push_back(cr("WorkflowPlane", "team-a", "wp", ca_value(pem, "p1")));
  w.crs.push_back(cr("WorkflowPlane", "team-c", "other", ca_value(pem, "p2")));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "shared", ca_value(pem, "p1")));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "p1", ca_value(pem)));  // planeID from the name
  w.crs.push_back(cr("DataPlane", "team-a", "dp", ca_value(pem, "p1")));
  w.crs.push_back(cr("ClusterDataPlane", "", "cdp", ca_value(pem, "p1")));

  PlaneIndex idx;
  CHECK_FALSE(idx.synced());
  idx.replace(w);
  CHECK(idx.synced());
  CHECK(idx.all().size() == 7);

  auto wf = idx.anchors("workflowplane", "p1");
  REQUIRE(wf.size() == 4);
  // Cluster-scoped first; within a kind in a stable (name) order.
  CHECK(wf[0].key.front() == '/');
  CHECK(wf[1].key.front() == '/');
  CHECK(std::set<std::string>{wf[0].key, wf[1].key} == std::set<std::string>{"/shared", "/p1"});
  CHECK(std::set<std::string>{wf[2].key, wf[3].key} == std::set<std::string>{"team-a/wp", "team-b/wp"});
  for (const auto& a : wf) {
    CHECK(a.store != nullptr);
    CHECK(a.load_error.empty());
  }

  CHECK(keys(idx.anchors("workflowplane", "p2")) == std::vector<std::string>{"team-c/other"});
  CHECK(keys(idx.anchors("dataplane", "p1")) == std::vector<std::string>{"/cdp", "team-a/dp"});
  CHECK(idx.anchors("observabilityplane", "p1").empty());
  CHECK(idx.anchors("workflowplane", "nope").empty());
  CHECK(idx.anchors("bogus", "p1").empty());
}

TEST_CASE("CA from clientCA.value: PEM and base64-encoded PEM", "[plane_index][index]") {
  auto ca = cg::testing::make_ca("value-ca");
  PlaneWorld w;
  w.crs.push_back(cr("DataPlane", "ns", "pem", ca_value(ca.cert_pem())));
  w.crs.push_back(cr("DataPlane", "ns", "b64", ca_value(cg::testing::base64(ca.cert_pem()))));
  w.crs.push_back(cr("DataPlane", "ns", "junk", ca_value("not a certificate")));
  PlaneIndex idx;
  idx.replace(w);
  auto pem = must_find(idx, {Kind::DataPlane, "ns", "pem"});
  auto b64 = must_find(idx, {Kind::DataPlane, "ns", "b64"});
  auto junk = must_find(idx, {Kind::DataPlane, "ns", "junk"});
  REQUIRE(pem->ca);
  REQUIRE(b64->ca);
  CHECK(pem->ca->cert_count() == 1);
  CHECK(pem->ca->fingerprint() == b64->ca->fingerprint());
  CHECK(pem->ca_error.empty());
  CHECK(junk->ca == nullptr);
  CHECK_THAT(junk->ca_error, Contains("clientCA.value"));

  // CRs whose CA cannot be loaded are still listed, with a null store and the reason.
  auto anchors = idx.anchors("dataplane", "junk");
  REQUIRE(anchors.size() == 1);
  CHECK(anchors[0].store == nullptr);
  CHECK(anchors[0].load_error == junk->ca_error);
}

TEST_CASE("CA from clientCA.secretKeyRef", "[plane_index][index]") {
  auto ca = cg::testing::make_ca("secret-ca");
  const auto pem = ca.cert_pem();
  PlaneWorld w;
  w.secrets.push_back(secret("team-a", "agent-ca", {{"ca.crt", pem}, {"empty", ""}}));
  w.secrets.push_back(secret("infra", "shared-ca", {{"ca.crt", pem}}));
  w.secrets.push_back(secret("default", "agent-ca", {{"ca.crt", pem}}));

  SECTION("namespace defaults to the CR's namespace") {
    w.crs.push_back(cr("WorkflowPlane", "team-a", "wp", ca_secret("agent-ca", "ca.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::WorkflowPlane, "team-a", "wp"});
    CHECK(e->ca != nullptr);
    CHECK(e->ca_error.empty());
  }
  SECTION("a namespaced CR does not fall back to another namespace") {
    w.crs.push_back(cr("WorkflowPlane", "team-b", "wp", ca_secret("agent-ca", "ca.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::WorkflowPlane, "team-b", "wp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("team-b/agent-ca"));
    CHECK_THAT(e->ca_error, Contains("not found"));
  }
  SECTION("explicit namespace") {
    w.crs.push_back(cr("WorkflowPlane", "team-a", "wp", ca_secret("shared-ca", "ca.crt", "infra")));
    w.crs.push_back(cr("ClusterWorkflowPlane", "", "cwp", ca_secret("shared-ca", "ca.crt", "infra")));
    PlaneIndex idx;
    idx.replace(w);
    CHECK(must_find(idx, {Kind::WorkflowPlane, "team-a", "wp"})->ca != nullptr);
    CHECK(must_find(idx, {Kind::ClusterWorkflowPlane, "", "cwp"})->ca != nullptr);
  }
  SECTION("cluster-scoped CR without secretKeyRef.namespace") {
    w.crs.push_back(cr("ClusterWorkflowPlane", "", "cwp", ca_secret("agent-ca", "ca.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::ClusterWorkflowPlane, "", "cwp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("required"));
    CHECK_THAT(e->ca_error, Contains("namespace"));
  }
  SECTION("missing secret") {
    w.crs.push_back(cr("DataPlane", "team-a", "dp", ca_secret("nope", "ca.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("not found"));
    CHECK_THAT(e->ca_error, Contains("nope"));
  }
  SECTION("missing key") {
    w.crs.push_back(cr("DataPlane", "team-a", "dp", ca_secret("agent-ca", "tls.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("tls.crt"));
    CHECK_THAT(e->ca_error, Contains("not found"));
  }
  SECTION("empty key") {
    w.crs.push_back(cr("DataPlane", "team-a", "dp", ca_secret("agent-ca", "empty")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("empty"));
  }
  SECTION("secret key holding no certificate") {
    w.secrets.push_back(secret("team-a", "bad-ca", {{"ca.crt", "garbage"}}));
    w.crs.push_back(cr("DataPlane", "team-a", "dp", ca_secret("bad-ca", "ca.crt")));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("bad-ca"));
  }
  SECTION("secretKeyRef without a key") {
    json spec = {{"clusterAgent", {{"clientCA", {{"secretKeyRef", {{"name", "agent-ca"}}}}}}}};
    w.crs.push_back(cr("DataPlane", "team-a", "dp", spec));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca == nullptr);
    CHECK_FALSE(e->ca_error.empty());
  }
  SECTION("secretKeyRef name or namespace that is no valid Kubernetes name: a CA error, never looked up") {
    // A Secret whose stored name matches the bad reference must not be found either (a file source
    // could not load one; this index is handed one directly).
    w.secrets.push_back(secret("team-a", "a&b", {{"ca.crt", pem}}));
    w.crs.push_back(cr("DataPlane", "team-a", "amp", ca_secret("a&b", "ca.crt")));
    w.crs.push_back(cr("DataPlane", "team-a", "slash", ca_secret("x/../agent-ca", "ca.crt")));
    w.crs.push_back(cr("DataPlane", "team-a", "query", ca_secret("agent-ca?watch=1", "ca.crt")));
    w.crs.push_back(cr("DataPlane", "team-a", "ns", ca_secret("agent-ca", "ca.crt", "team/a")));
    w.crs.push_back(cr("ClusterDataPlane", "", "cns", ca_secret("agent-ca", "ca.crt", "Team-A")));
    PlaneIndex idx;
    idx.replace(w);
    for (const char* name : {"amp", "slash", "query"}) {
      auto e = must_find(idx, {Kind::DataPlane, "team-a", name});
      CHECK(e->ca == nullptr);
      CHECK_THAT(e->ca_error, Contains("clientCA.secretKeyRef.name"));
      CHECK_THAT(e->ca_error, Contains("RFC 1123 subdomain"));
    }
    auto ns = must_find(idx, {Kind::DataPlane, "team-a", "ns"});
    CHECK(ns->ca == nullptr);
    CHECK_THAT(ns->ca_error, Contains("clientCA.secretKeyRef.namespace"));
    auto cns = must_find(idx, {Kind::ClusterDataPlane, "", "cns"});
    CHECK(cns->ca == nullptr);
    CHECK_THAT(cns->ca_error, Contains("clientCA.secretKeyRef.namespace"));
  }
  SECTION("value takes precedence over secretKeyRef") {
    json spec = {{"clusterAgent", {{"clientCA", {{"value", pem}, {"secretKeyRef", {{"name", "nope"}, {"key", "x"}}}}}}}};
    w.crs.push_back(cr("DataPlane", "team-a", "dp", spec));
    PlaneIndex idx;
    idx.replace(w);
    auto e = must_find(idx, {Kind::DataPlane, "team-a", "dp"});
    CHECK(e->ca != nullptr);
    CHECK(e->ca_error.empty());
  }
  SECTION("clientCA with neither value nor secretKeyRef, and no clientCA at all") {
    w.crs.push_back(cr("DataPlane", "team-a", "neither", {{"clusterAgent", {{"clientCA", json::object()}}}}));
    w.crs.push_back(cr("DataPlane", "team-a", "none"));
    PlaneIndex idx;
    idx.replace(w);
    auto neither = must_find(idx, {Kind::DataPlane, "team-a", "neither"});
    auto none = must_find(idx, {Kind::DataPlane, "team-a", "none"});
    CHECK(neither->ca == nullptr);
    CHECK_FALSE(neither->ca_error.empty());
    CHECK(none->ca == nullptr);
    CHECK_THAT(none->ca_error, Contains("clientCA"));
  }
}

TEST_CASE("spec problems: invalid planeID and observabilityPlaneRef kind", "[plane_index][index]") {
  auto pem = cg::testing::make_ca("ca").cert_pem();
  PlaneWorld w;
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "too-long", ca_value(pem, std::string(64, 'a'))));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "max-len", ca_value(pem, std::string(63, 'a'))));
  w.crs.push_back(cr("WorkflowPlane", "ns", "upper", ca_value(pem, "Prod")));
  w.crs.push_back(cr("DataPlane", "ns", "bad.name", ca_value(pem)));  // planeID from a name that is no DNS label
  w.crs.push_back(cr("ClusterObservabilityPlane", "", "obs", ca_value(pem)));
  json bad_ref = ca_value(pem);
  bad_ref["observabilityPlaneRef"] = {{"kind", "ObservabilityPlane"}, {"name", "obs"}};
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "bad-ref", bad_ref));
  json ns_ref = ca_value(pem);
  ns_ref["observabilityPlaneRef"] = {{"kind", "ObservabilityPlane"}, {"name", "nsobs"}};
  w.crs.push_back(cr("WorkflowPlane", "ns", "ns-ref", ns_ref));
  w.crs.push_back(cr("ObservabilityPlane", "ns", "nsobs", ca_value(pem)));
  json nameless = ca_value(pem);
  nameless["observabilityPlaneRef"] = {{"kind", "ClusterObservabilityPlane"}};
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "nameless-ref", nameless));

  PlaneIndex idx;
  idx.replace(w);

  auto too_long = must_find(idx, {Kind::ClusterWorkflowPlane, "", "too-long"});
  REQUIRE(too_long->spec_problems.size() == 1);
  CHECK_THAT(too_long->spec_problems[0], Contains("planeID"));
  CHECK_THAT(too_long->spec_problems[0], Contains("63"));
  // A spec problem does not stop the CA from loading.
  CHECK(too_long->ca != nullptr);

  CHECK(must_find(idx, {Kind::ClusterWorkflowPlane, "", "max-len"})->spec_problems.empty());

  auto upper = must_find(idx, {Kind::WorkflowPlane, "ns", "upper"});
  REQUIRE(upper->spec_problems.size() == 1);
  CHECK_THAT(upper->spec_problems[0], Contains("'Prod'"));

  auto bad_name = must_find(idx, {Kind::DataPlane, "ns", "bad.name"});
  REQUIRE(bad_name->spec_problems.size() == 1);
  CHECK_THAT(bad_name->spec_problems[0], Contains("metadata.name"));

  auto bad_ref_e = must_find(idx, {Kind::ClusterWorkflowPlane, "", "bad-ref"});
  REQUIRE(bad_ref_e->spec_problems.size() == 1);
  CHECK_THAT(bad_ref_e->spec_problems[0], Contains("observabilityPlaneRef.kind"));
  CHECK_THAT(bad_ref_e->spec_problems[0], Contains("ClusterObservabilityPlane"));

  // A namespaced WorkflowPlane may reference a namespaced ObservabilityPlane in its namespace.
  auto ns_ref_e = must_find(idx, {Kind::WorkflowPlane, "ns", "ns-ref"});
  CHECK(ns_ref_e->spec_problems.empty());
  CHECK(ns_ref_e->observability_problem.empty());

  auto nameless_e = must_find(idx, {Kind::ClusterWorkflowPlane, "", "nameless-ref"});
  REQUIRE(nameless_e->spec_problems.size() == 1);
  CHECK_THAT(nameless_e->spec_problems[0], Contains("name"));

  CHECK(must_find(idx, {Kind::ClusterObservabilityPlane, "", "obs"})->spec_problems.empty());
}

TEST_CASE("observabilityPlaneRef resolution", "[plane_index][index]") {
  auto pem = cg::testing::make_ca("ca").cert_pem();
  auto with_ref = [&](json ref) {
    json s = ca_value(pem);
    s["observabilityPlaneRef"] = std::move(ref);
    return s;
  };
  PlaneWorld w;
  w.crs.push_back(cr("ClusterObservabilityPlane", "", "production-observability", ca_value(pem)));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "found",
                     with_ref({{"kind", "ClusterObservabilityPlane"}, {"name", "production-observability"}})));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "missing", with_ref({{"kind", "ClusterObservabilityPlane"}, {"name", "gone"}})));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "default-kind", with_ref({{"name", "gone-too"}})));
  w.crs.push_back(cr("ClusterWorkflowPlane", "", "omitted", ca_value(pem)));
  w.crs.push_back(cr("WorkflowPlane", "ns", "ns-missing", with_ref({{"kind", "ObservabilityPlane"}, {"name", "x"}})));

  PlaneIndex idx;
  idx.replace(w);
  auto found = must_find(idx, {Kind::ClusterWorkflowPlane, "", "found"});
  CHECK(found->observability_problem.empty());
  CHECK(found->spec_problems.empty());

  auto missing = must_find(idx, {Kind::ClusterWorkflowPlane, "", "missing"});
  CHECK_THAT(missing->observability_problem, Contains("gone"));
  CHECK_THAT(missing->observability_problem, Contains("not found"));
  CHECK(missing->spec_problems.empty());

  auto defaulted = must_find(idx, {Kind::ClusterWorkflowPlane, "", "default-kind"});
  CHECK_THAT(defaulted->observability_problem, Contains("ClusterObservabilityPlane 'gone-too' not found"));

  auto omitted = must_find(idx, {Kind::ClusterWorkflowPlane, "", "omitted"});
  CHECK(omitted->observability_problem.empty());
  CHECK(omitted->spec_problems.empty());

  auto ns_missing = must_find(idx, {Kind::WorkflowPlane, "ns", "ns-missing"});
  CHECK_THAT(ns_missing->observability_problem, Contains("ns/x"));

  SECTION("creating the referenced plane clears the problem") {
    w.crs.push_back(cr("ClusterObservabilityPlane", "", "gone", ca_value(pem)));
    idx.replace(w);
    CHECK(must_find(idx, {Kind::ClusterWorkflowPlane, "", "missing"})->observability_problem.empty());
  }
}

TEST_CASE("listeners receive what changed", "[plane_index][index]") {
  auto ca1 = cg::testing::make_ca("ca1");
  auto ca2 = cg::testing::make_ca("ca2");
  PlaneWorld w;
  w.crs.push_back(cr("ClusterDataPlane", "", "cdp", ca_value(ca1.cert_pem(), "p1")));
  w.crs.push_back(cr("DataPlane", "ns", "dp", ca_value(ca1.cert_pem(), "p1")));
  w.crs.push_back(cr("WorkflowPlane", "ns", "wp", ca_value(ca1.cert_pem(), "w1")));
  const CrRef cdp{Kind::ClusterDataPlane, "", "cdp"};
  const CrRef dp{Kind::DataPlane, "ns", "dp"};
  const CrRef wp{Kind::WorkflowPlane, "ns", "wp"};

  PlaneIndex idx;
  Recorder rec;
  rec.attach(idx);
  CHECK(idx.version() == 0);
  idx.replace(w);
  REQUIRE(rec.changes.size() == 1);
  {
    const auto& c = rec.changes.back();
    CHECK(c.version == 1);
    CHECK(c.version == idx.version());
    CHECK(c.changed == std::set<CrRef>{cdp, dp, wp});
    CHECK(c.removed.empty());
    CHECK(c.planes == std::set<PlaneKey>{{"dataplane", "p1"}, {"workflowplane", "w1"}});
  }

  SECTION("an identical snapshot changes nothing") {
    idx.replace(w);
    CHECK(rec.changes.size() == 1);
    CHECK(idx.version() == 1);
  }
  SECTION("a new CA changes that CR and its plane") {
    w.crs[1] = cr("DataPlane", "ns", "dp", ca_value(ca2.cert_pem(), "p1"));
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    const auto& c = rec.changes.back();
    CHECK(c.version == 2);
    CHECK(c.changed == std::set<CrRef>{dp});
    CHECK(c.removed.empty());
    CHECK(c.planes == std::set<PlaneKey>{{"dataplane", "p1"}});
  }
  SECTION("a new planeID touches the old and the new plane") {
    w.crs[2] = cr("WorkflowPlane", "ns", "wp", ca_value(ca1.cert_pem(), "w2"));
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    const auto& c = rec.changes.back();
    CHECK(c.changed == std::set<CrRef>{wp});
    CHECK(c.planes == std::set<PlaneKey>{{"workflowplane", "w1"}, {"workflowplane", "w2"}});
    CHECK(keys(idx.anchors("workflowplane", "w2")) == std::vector<std::string>{"ns/wp"});
    CHECK(idx.anchors("workflowplane", "w1").empty());
  }
  SECTION("a generation bump is a status change but not an authorization change") {
    w.crs[0] = cr("ClusterDataPlane", "", "cdp", ca_value(ca1.cert_pem(), "p1"), {{"generation", 4}});
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    const auto& c = rec.changes.back();
    CHECK(c.changed == std::set<CrRef>{cdp});
    CHECK(c.planes.empty());
    CHECK(c.removed.empty());
  }
  SECTION("a display-name change is a status change only") {
    w.crs[0] = cr("ClusterDataPlane", "", "cdp", ca_value(ca1.cert_pem(), "p1"),
                  {{"annotations", {{"openchoreo.dev/display-name", "Shared"}}}});
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    CHECK(rec.changes.back().changed == std::set<CrRef>{cdp});
    CHECK(rec.changes.back().planes.empty());
  }
  SECTION("removing a CR") {
    w.crs.erase(w.crs.begin() + 1);
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    const auto& c = rec.changes.back();
    CHECK(c.removed == std::set<CrRef>{dp});
    CHECK(c.changed.empty());
    CHECK(c.planes == std::set<PlaneKey>{{"dataplane", "p1"}});
    CHECK(idx.find(dp) == nullptr);
    CHECK(keys(idx.anchors("dataplane", "p1")) == std::vector<std::string>{"/cdp"});
  }
  SECTION("CA turning invalid is an authorization change") {
    w.crs[1] = cr("DataPlane", "ns", "dp", ca_value("garbage", "p1"));
    idx.replace(w);
    REQUIRE(rec.changes.size() == 2);
    CHECK(rec.changes.back().changed == std::set<CrRef>{dp});
    CHECK(rec.changes.back().planes == std::set<PlaneKey>{{"dataplane", "p1"}});
  }
  SECTION("the new state is visible when the listener runs") {
    std::vector<std::string> seen;
    idx.add_listener([&](const IndexChange&) {
      for (const auto& a : idx.anchors("dataplane", "p1")) seen.push_back(a.key);
    });
    w.crs.push_back(cr("DataPlane", "ns2", "dp", ca_value(ca1.cert_pem(), "p1")));
    idx.replace(w);
    CHECK(seen == std::vector<std::string>{"/cdp", "ns/dp", "ns2/dp"});
  }
  SECTION("removing everything") {
    idx.replace(PlaneWorld{});
    REQUIRE(rec.changes.size() == 2);
    CHECK(rec.changes.back().removed == std::set<CrRef>{cdp, dp, wp});
    CHECK(idx.all().empty());
    CHECK(idx.synced());
  }
}

TEST_CASE("CA stores are reused while the bundle is unchanged", "[plane_index][index]") {
  auto ca1 = cg::testing::make_ca("ca1");
  auto ca2 = cg::testing::make_ca("ca2");
  const auto pem1 = ca1.cert_pem();
  PlaneWorld w;
  w.secrets.push_back(secret("ns", "s", {{"ca.crt", pem1}}));
  w.crs.push_back(cr("DataPlane", "ns", "a", ca_value(pem1)));
  w.crs.push_back(cr("DataPlane", "ns", "b", ca_value(pem1)));
  w.crs.push_back(cr("DataPlane", "ns", "c", ca_secret("s", "ca.crt")));
  w.crs.push_back(cr("DataPlane", "ns", "d", ca_value(ca2.cert_pem())));
  PlaneIndex idx;
  idx.replace(w);
  auto a1 = must_find(idx, {Kind::DataPlane, "ns", "a"})->ca;
  auto b1 = must_find(idx, {Kind::DataPlane, "ns", "b"})->ca;
  auto c1 = must_find(idx, {Kind::DataPlane, "ns", "c"})->ca;
  auto d1 = must_find(idx, {Kind::DataPlane, "ns", "d"})->ca;
  REQUIRE(a1);
  // The same bundle text, from a value or a secret, is decoded once.
  CHECK(a1.get() == b1.get());
  CHECK(a1.get() == c1.get());
  CHECK(a1.get() != d1.get());

  // Next snapshot: a and the secret unchanged, d's bundle changed.
  w.crs[3] = cr("DataPlane", "ns", "d", ca_value(cg::testing::make_ca("ca3").cert_pem()), {{"generation", 2}});
  w.crs[0] = cr("DataPlane", "ns", "a", ca_value(pem1), {{"generation", 5}});
  idx.replace(w);
  CHECK(must_find(idx, {Kind::DataPlane, "ns", "a"})->ca.get() == a1.get());
  CHECK(must_find(idx, {Kind::DataPlane, "ns", "c"})->ca.get() == a1.get());
  CHECK(must_find(idx, {Kind::DataPlane, "ns", "d"})->ca.get() != d1.get());

  // A bundle that leaves the world and comes back loads again with the same content.
  auto d2 = must_find(idx, {Kind::DataPlane, "ns", "d"})->ca;
  w.crs.pop_back();
  idx.replace(w);
  w.crs.push_back(cr("DataPlane", "ns", "d", ca_value(ca2.cert_pem())));
  idx.replace(w);
  auto d3 = must_find(idx, {Kind::DataPlane, "ns", "d"})->ca;
  REQUIRE(d3);
  CHECK(d3->fingerprint() == d1->fingerprint());
}

TEST_CASE("find, all and CR entries carry the parsed CR", "[plane_index][index]") {
  auto pem = cg::testing::make_ca("ca").cert_pem();
  PlaneWorld w;
  w.crs.push_back(cr("ObservabilityPlane", "obs-ns", "op", ca_value(pem, "o1"), {{"generation", 3}}));
  PlaneIndex idx;
  idx.replace(w);
  auto e = must_find(idx, {Kind::ObservabilityPlane, "obs-ns", "op"});
  CHECK(e->cr.plane_id == "o1");
  CHECK(e->cr.generation == 3);
  CHECK(idx.find({Kind::ObservabilityPlane, "other", "op"}) == nullptr);
  CHECK(idx.find({Kind::ClusterObservabilityPlane, "", "op"}) == nullptr);
  REQUIRE(idx.all().size() == 1);
  CHECK(idx.all()[0].get() == e.get());
}

TEST_CASE("the first snapshot marks the index synced even when empty", "[plane_index][index]") {
  PlaneIndex idx;
  CHECK_FALSE(idx.synced());
  idx.replace(PlaneWorld{});
  CHECK(idx.synced());
  CHECK(idx.version() == 1);
  CHECK(idx.all().empty());
}

TEST_CASE("rotating the referenced secret changes the CR's CA and its plane", "[plane_index][index]") {
  auto ca1 = cg::testing::make_ca("ca1");
  auto ca2 = cg::testing::make_ca("ca2");
  PlaneWorld w;
  w.secrets.push_back(secret("infra", "agent-ca", {{"ca.crt", ca1.cert_pem()}}));
  w.crs.push_back(cr("ClusterDataPlane", "", "cdp", ca_secret("agent-ca", "ca.crt", "infra", "p1")));
  const CrRef cdp{Kind::ClusterDataPlane, "", "cdp"};
  PlaneIndex idx;
  Recorder rec;
  rec.attach(idx);
  idx.replace(w);
  auto before = must_find(idx, cdp)->ca;
  REQUIRE(before);

  w.secrets[0].data["ca.crt"] = ca2.cert_pem();
  idx.replace(w);
  auto after = must_find(idx, cdp)->ca;
  REQUIRE(after);
  CHECK(after->fingerprint() != before->fingerprint());
  REQUIRE(rec.changes.size() == 2);
  CHECK(rec.changes.back().changed == std::set<CrRef>{cdp});
  CHECK(rec.changes.back().planes == std::set<PlaneKey>{{"dataplane", "p1"}});
  auto anchors = idx.anchors("dataplane", "p1");
  REQUIRE(anchors.size() == 1);
  CHECK(anchors[0].store == after);

  SECTION("deleting the secret leaves the CR without a CA") {
    w.secrets.clear();
    idx.replace(w);
    auto e = must_find(idx, cdp);
    CHECK(e->ca == nullptr);
    CHECK_THAT(e->ca_error, Contains("infra/agent-ca"));
    REQUIRE(rec.changes.size() == 3);
    CHECK(rec.changes.back().planes == std::set<PlaneKey>{{"dataplane", "p1"}});
  }
}
