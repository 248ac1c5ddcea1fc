#include "mesh/endpoint_slice.hpp"

#include <nlohmann/json.hpp>
#include <optional>

namespace cg::mesh {
using nlohmann::json;

namespace {
const std::string* str(const json& j, const char* k) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
}
}  // namespace

std::vector<PeerAddress> peers_of_slice(const json& slice, const std::string& self, uint16_t default_port) {
  std::vector<PeerAddress> out;
  if (!slice.is_object()) return out;
  uint16_t port = default_port;
  if (auto ports = slice.find("ports"); ports != slice.end() && ports->is_array()) {
    std::optional<uint16_t> named, only;
    for (const auto& p : *ports) {
      if (!p.is_object()) continue;
      auto n = p.find("port");
      if (n == p.end() || !n->is_number_integer() || n->get<int64_t>() < 1 || n->get<int64_t>() > 65535) continue;
      auto v = static_cast<uint16_t>(n->get<int64_t>());
      if (auto name = str(p, "name"); name && *name == "mesh") named = v;
      only = ports->size() == 1 ? std::optional<uint16_t>(v) : only;
    }
    port = named ? *named : only ? *only : default_port;
  }
  auto eps = slice.find("endpoints");
  if (eps == slice.end() || !eps->is_array()) return out;
  for (const auto& e : *eps) {
    if (!e.is_object()) continue;
    // Every endpoint listed is a peer, whatever its conditions. A starting pod (not ready yet) is not
    // ready until it has every peer's directory, so the peers must send it theirs. A terminating one
    // still drains: a request it holds may wait for an agent that moves to another replica, which it
    // learns only from that replica's updates (it says `bye` when it stops, and leaves the slice when
    // its Pod is gone). It reports draining once SIGTERM arrives, and is not picked from then on.
    auto addrs = e.find("addresses");
    if (addrs == e.end() || !addrs->is_array() || addrs->empty() || !(*addrs)[0].is_string()) continue;
    PeerAddress p;
    p.host = (*addrs)[0].get<std::string>();
    p.port = port;
    if (auto t = e.find("targetRef"); t != e.end() && t->is_object()) {
      auto kind = str(*t, "kind");
      auto name = str(*t, "name");
      if (name && (!kind || *kind == "Pod")) p.replica = *name;
    }
    if (p.replica.empty())
      if (auto h = str(e, "hostname")) p.replica = *h;
    if (p.host.empty() || p.host.size() > 253 || p.replica.size() > 253) continue;
    if (!self.empty() && p.replica == self) continue;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace cg::mesh
