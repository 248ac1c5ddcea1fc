#include "mesh/kube_membership.hpp"

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/thread_annotations.hpp"
#include "kube/informer.hpp"

namespace cg::mesh {
using nlohmann::json;

namespace {
const std::string* str(const json& j, const char* k) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
}
bool flag(const json& j, const char* k, bool absent) {
  if (!j.is_object()) return absent;
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) return absent;
  return it->is_boolean() ? it->get<bool>() : absent;
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
    const json empty = json::object();
    auto c = e.find("conditions");
    const json& cond = c != e.end() && c->is_object() ? *c : empty;
    // A starting pod (not ready yet) is a peer: it is not ready until it has every peer's directory,
    // so the peers must send it theirs. A terminating one is not (it drains and says `bye`).
    if (flag(cond, "terminating", false)) continue;
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

struct KubeMembership::State {
  std::string self;
  uint16_t port;
  std::function<void(std::vector<PeerAddress>)> on_peers;
  cg::Mutex mu;  // a leaf (on_peers is called without it)
  std::map<std::string, std::vector<PeerAddress>> slices CG_GUARDED_BY(mu);  // by slice name
  std::vector<PeerAddress> last CG_GUARDED_BY(mu);
  bool published CG_GUARDED_BY(mu) = false;

  void publish() {
    std::vector<PeerAddress> all;
    {
      cg::MutexLock lk(mu);
      for (const auto& [_, ps] : slices) all.insert(all.end(), ps.begin(), ps.end());
      std::sort(all.begin(), all.end());
      all.erase(std::unique(all.begin(), all.end()), all.end());
      if (published && all == last) return;
      published = true;
      last = all;
    }
    log::info("mesh peers from EndpointSlices", {{"peers", all.size()}, {"replica", self}});
    on_peers(std::move(all));
  }
  static std::string name_of(const json& o) {
    if (auto m = o.find("metadata"); m != o.end() && m->is_object())
      if (auto n = str(*m, "name")) return *n;
    return {};
  }
};

KubeMembership::KubeMembership(kube::KubeClient& client, const std::string& ns, const std::string& service, std::string self,
                               uint16_t default_port, std::function<void(std::vector<PeerAddress>)> on_peers)
    : st_(std::make_shared<State>()) {
  st_->self = std::move(self);
  st_->port = default_port;
  st_->on_peers = std::move(on_peers);
  kube::InformerResource res;
  res.path = "/apis/discovery.k8s.io/v1/namespaces/" + ns + "/endpointslices";
  res.label_selector = "kubernetes.io/service-name=" + service;
  res.api_version = "discovery.k8s.io/v1";
  res.kind = "EndpointSlice";
  res.name = "endpointslices/" + service;
  kube::InformerCallbacks cb;
  std::weak_ptr<State> w = st_;
  cb.on_list = [w](const std::vector<json>& items, const std::string&) {
    auto st = w.lock();
    if (!st) return;
    {
      cg::MutexLock lk(st->mu);
      st->slices.clear();
      for (const auto& it : items) st->slices[State::name_of(it)] = peers_of_slice(it, st->self, st->port);
    }
    st->publish();
  };
  cb.on_event = [w](kube::EventType type, const json& obj) {
    auto st = w.lock();
    if (!st) return;
    {
      cg::MutexLock lk(st->mu);
      if (type == kube::EventType::Deleted) st->slices.erase(State::name_of(obj));
      else st->slices[State::name_of(obj)] = peers_of_slice(obj, st->self, st->port);
    }
    st->publish();
  };
  informer_ = kube::Informer::create(client, std::move(res), kube::InformerOptions{}, std::move(cb));
}

KubeMembership::~KubeMembership() { stop(); }
void KubeMembership::start() { informer_->start(); }
void KubeMembership::stop() {
  if (!informer_) return;
  informer_->stop();
  informer_->inflight()->wait_zero(std::chrono::seconds(5));
}

}  // namespace cg::mesh
