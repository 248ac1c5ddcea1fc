// The peers an EndpointSlice lists (pure): every endpoint (ready, starting or terminating) on the mesh
// port, named after their Pod; hostile objects give no peers and never throw.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "mesh/kube_membership.hpp"

using namespace cg::mesh;
using nlohmann::json;

TEST_CASE("peers_of_slice takes starting and terminating endpoints too on the mesh port named after their Pod but not itself") {
  json slice = json::parse(R"({
    "metadata": {"name": "cluster-gateway-mesh-abc"},
    "addressType": "IPv4",
    "ports": [{"name": "other", "port": 9000}, {"name": "mesh", "port": 8445}],
    "endpoints": [
      {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "gw-a"}},
      {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "gw-b"}},
      {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}, "targetRef": {"kind": "Pod", "name": "gw-c"}},
      {"addresses": ["10.0.0.4"], "targetRef": {"kind": "Pod", "name": "gw-self"}},
      {"addresses": ["10.0.0.5"], "hostname": "gw-e"},
      {"addresses": [], "targetRef": {"kind": "Pod", "name": "gw-f"}}
    ]})");
  auto peers = peers_of_slice(slice, "gw-self", 1);
  // gw-b is starting (not ready): a peer, so that it gets the directories it waits for to turn ready.
  // gw-c is terminating: still a peer while it drains (a request it holds may wait for an agent that
  // moved to another replica; it learns where only from the updates).
  REQUIRE(peers.size() == 4);
  CHECK(peers[0] == PeerAddress{"10.0.0.1", 8445, "gw-a"});
  CHECK(peers[1] == PeerAddress{"10.0.0.2", 8445, "gw-b"});
  CHECK(peers[2] == PeerAddress{"10.0.0.3", 8445, "gw-c"});
  CHECK(peers[3] == PeerAddress{"10.0.0.5", 8445, "gw-e"});
  // One unnamed port: that one; none: the default.
  slice["ports"] = json::parse(R"([{"port": 7000}])");
  CHECK(peers_of_slice(slice, "gw-self", 1)[0].port == 7000);
  slice.erase("ports");
  CHECK(peers_of_slice(slice, "gw-self", 8445)[0].port == 8445);
}

TEST_CASE("peers_of_slice gives nothing for hostile slices") {
  for (
      const char* bad :
      {"null", "[]", "{}", R"({"endpoints": 5})", R"({"endpoints": [5, "x", null]})", R"({"endpoints": [{"addresses": [7]}]})",
       R"({"ports": "x", "endpoints": [{"addresses": "10.0.0.1"}]})",
       R"({"ports": [{"name": "mesh", "port": 70000}], "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}, "targetRef": {"name": 3}}]})"}) {
    INFO(bad);
    auto j = json::parse(bad);
    std::vector<PeerAddress> peers;
    CHECK_NOTHROW(peers = peers_of_slice(j, "self", 8445));
    for (const auto& p : peers) {
      CHECK_FALSE(p.host.empty());
      CHECK(p.port == 8445);
    }
  }
}
