// Kubernetes membership of the mesh: the peers are the endpoints (any condition) of the headless Service
// --mesh-service, from its EndpointSlices (discovery.k8s.io/v1, label kubernetes.io/service-name),
// listed and watched through kube::Informer. Each endpoint's replica id is its Pod's name
// (targetRef), which is what every replica uses as --replica-id ($POD_NAME).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "mesh/endpoint_slice.hpp"
#include "mesh/mesh.hpp"

namespace cg::kube {
class KubeClient;
class Informer;
}  // namespace cg::kube

namespace cg::mesh {

class KubeMembership {
 public:
  // Calls `on_peers` (on the informer's threads) with the union of every slice's peers, sorted,
  // whenever it changes.
  KubeMembership(kube::KubeClient& client, const std::string& ns, const std::string& service, std::string self,
                 uint16_t default_port, std::function<void(std::vector<PeerAddress>)> on_peers);
  ~KubeMembership();
  void start();
  void stop();  // waits until no callback runs

 private:
  struct State;
  std::shared_ptr<State> st_;
  std::shared_ptr<kube::Informer> informer_;
};

}  // namespace cg::mesh
