// The /api/v1/planes endpoints as functions of the registry and the index (gateway/plane_endpoints.*):
// upstream's JSON shapes and texts, and which sessions are closed, without a connection.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "common/log.hpp"
#include "gateway/plane_endpoints.hpp"
#include "plane_index/objects.hpp"
#include "tests/support/fake_handle.hpp"
#include "tests/support/pki.hpp"

using cg::gateway::PlaneAnswer;
using cg::testing::FakeHandle;
using json = nlohmann::json;

namespace {

const bool kQuietLogs = [] {
  if (!std::getenv("CG_TEST_LOG")) cg::log::init(cg::log::Level::error, cg::log::Format::json);
  return true;
}();

const cg::SysTime T0 = cg::SysTime{} + std::chrono::hours(24 * 365 * 56);

cg::plane::PlaneCR cr(const std::string& kind, const std::string& ns, const std::string& name, json spec) {
  json meta = {{"name", name}};
  if (!ns.empty()) meta["namespace"] = ns;
  auto r =
      cg::plane::parse_object({{"apiVersion", "openchoreo.dev/v1alpha1"}, {"kind", kind}, {"metadata", meta}, {"spec", spec}});
  INFO(r.error);
  REQUIRE(r.cr.has_value());
  return *r.cr;
}

json with_ca(const std::string& plane_id, const std::string& bundle) {
  return {{"planeID", plane_id}, {"clusterAgent", {{"clientCA", {{"value", bundle}}}}}};
}

struct World {
  cg::plane::PlaneIndex index;
  std::unique_ptr<cg::session::SessionRegistry> registry = cg::session::make_local_registry();
  std::shared_ptr<FakeHandle> a = std::make_shared<FakeHandle>(1, "dataplane", "p1", T0, T0);
  std::shared_ptr<FakeHandle> b = std::make_shared<FakeHandle>(2, "dataplane", "p1", T0, T0);
  std::shared_ptr<FakeHandle> other = std::make_shared<FakeHandle>(3, "workflowplane", "p2", T0, T0);
  World() {
    auto ca = cg::testing::make_ca("endpoints-ca");
    cg::plane::PlaneWorld w;
    w.crs.push_back(cr("DataPlane", "ns", "dp", with_ca("p1", ca.cert_pem())));
    w.crs.push_back(cr("DataPlane", "ns", "no-ca", {{"planeID", "p1"}}));
    w.crs.push_back(cr("DataPlane", "ns", "junk", with_ca("p1", "not a certificate")));
    index.replace(w);
    REQUIRE(registry->add(a, {"ns/dp"}));
    REQUIRE(registry->add(b, {"ns/dp"}));
    REQUIRE(registry->add(other, {"/wp"}));
  }
};

}  // namespace

TEST_CASE("plane status: every plane with a session, and one plane or CR", "[gateway][plane_endpoints]") {
  World w;
  auto all = cg::gateway::all_planes_status(*w.registry);
  REQUIRE(all.status == 200);
  CHECK(all.json["total"] == 2);
  REQUIRE(all.json["planes"].size() == 2);
  CHECK(all.json["planes"][0]["planeType"] == "dataplane");
  CHECK(all.json["planes"][0]["connectedAgents"] == 2);
  CHECK(all.json["planes"][1]["planeType"] == "workflowplane");

  auto one = cg::gateway::plane_status(*w.registry, {"dataplane", "p1", "", ""});
  CHECK(one.json["connected"] == true);
  CHECK(one.json["connectedAgents"] == 2);
  auto cr = cg::gateway::plane_status(*w.registry, {"dataplane", "p1", "ns", "no-ca"});
  CHECK(cr.json["connected"] == false);
  CHECK(cr.json["connectedAgents"] == 0);
  CHECK(cr.json["lastSeen"] == "0001-01-01T00:00:00Z");
}

TEST_CASE("reconnect closes every session of the plane with 1001, and only those", "[gateway][plane_endpoints]") {
  World w;
  auto r = cg::gateway::reconnect_plane(*w.registry, {"dataplane", "p1"});
  CHECK(r.status == 200);
  CHECK(r.json == json{{"success", true}, {"disconnectedAgents", 2}});
  CHECK(w.a->close_code() == 1001);
  CHECK(w.b->close_code() == 1001);
  CHECK(w.other->close_code() == 0);
}

TEST_CASE("notify: upstream's texts for bad payloads and unusable CRs", "[gateway][plane_endpoints]") {
  World w;
  auto notify = [&](const json& j) { return cg::gateway::notify_plane(w.index, *w.registry, j.dump()); };
  auto bad = cg::gateway::notify_plane(w.index, *w.registry, "[1,2");
  CHECK((bad.status == 400 && bad.text == "invalid payload: body is not a JSON object"));
  auto arr = cg::gateway::notify_plane(w.index, *w.registry, "[1]");
  CHECK((arr.status == 400 && arr.text == "invalid payload: body is not a JSON object"));
  auto missing = notify({{"planeType", "dataplane"}, {"planeID", 7}, {"event", "updated"}});
  CHECK((missing.status == 400 && missing.text == "missing required fields: planeType, planeID, event"));
  auto unknown = notify({{"planeType", "dataplane"}, {"planeID", "p1"}, {"event", "renamed"}});
  CHECK((unknown.status == 400 && unknown.text == "unknown event type: renamed"));
  auto gone =
      notify({{"planeType", "dataplane"}, {"planeID", "p1"}, {"event", "updated"}, {"namespace", "ns"}, {"name", "nope"}});
  CHECK((gone.status == 503 && gone.text == "failed to fetch CR CA for re-validation: CR ns/nope not found"));
  auto no_ca =
      notify({{"planeType", "dataplane"}, {"planeID", "p1"}, {"event", "updated"}, {"namespace", "ns"}, {"name", "no-ca"}});
  CHECK((no_ca.status == 503 && no_ca.text == "failed to fetch CR CA for re-validation: CR ns/no-ca has no CA configured"));
  auto junk =
      notify({{"planeType", "dataplane"}, {"planeID", "p1"}, {"event", "updated"}, {"namespace", "ns"}, {"name", "junk"}});
  CHECK((junk.status == 500 && junk.text == "re-validation failed: failed to parse new CA certificate"));
  // Nothing was closed by any of these.
  CHECK(w.a->close_code() == 0);
  CHECK(w.b->close_code() == 0);
}

TEST_CASE("notify deleted disconnects the plane's sessions", "[gateway][plane_endpoints]") {
  World w;
  auto r = cg::gateway::notify_plane(w.index, *w.registry,
                                     json{{"planeType", "dataplane"}, {"planeID", "p1"}, {"event", "deleted"}}.dump());
  CHECK(r.status == 200);
  CHECK(r.json == json{{"success", true}, {"action", "disconnect"}, {"disconnectedAgents", 2}});
  CHECK(w.a->close_code() == 1001);
  CHECK(w.other->close_code() == 0);
}
