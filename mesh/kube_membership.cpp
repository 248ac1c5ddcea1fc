#include "mesh/kube_membership.hpp"

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/thread_annotations.hpp"
#include "kube/informer.hpp"

namespace cg::mesh {
using nlohmann::json;

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
    if (!o.is_object()) return {};
    auto m = o.find("metadata");
    if (m == o.end() || !m->is_object()) return {};
    auto n = m->find("name");
    return n != m->end() && n->is_string() ? n->get<std::string>() : std::string();
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
