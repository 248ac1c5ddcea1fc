// Status on the CRs' /status subresource through server-side apply (field manager "cluster-gateway",
// force=true): the body holds only what the gateway owns (observedGeneration, agentConnection and the
// conditions AgentConnected and Ready), so conditions of other types and fields written by other
// managers (the plane controllers' "Created", ...) are left alone; conditions merge by type.
//
// Results: 2xx ok; 404 gone; 429 retry after Retry-After; 409, 5xx and network errors retry;
// 422 and other 4xx fail with the server's message (the writer logs and retries with backoff).
// read() returns nullopt: the writer starts from the status the index observed on the CR.
#pragma once
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "k8s_status_writer/status_sink.hpp"

namespace cg::kube {
class KubeClient;
}

namespace cg::status {

struct KubeSinkOptions {
  std::string field_manager = "cluster-gateway";
  std::chrono::milliseconds timeout{10000};
};

class KubeStatusSink final : public StatusSink {
 public:
  explicit KubeStatusSink(kube::KubeClient& client, KubeSinkOptions opts = {});
  std::optional<PlaneStatus> read(const plane::CrRef& ref) override;
  void write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) override;
  void remove(const plane::CrRef& ref) override;

  // PATCH target: /apis/openchoreo.dev/v1alpha1/[namespaces/<ns>/]<plural>/<name>/status?fieldManager=..&force=true
  std::string status_path(const plane::CrRef& ref) const;
  // The apply configuration sent for `status` (JSON, which is valid YAML).
  static nlohmann::json apply_body(const plane::CrRef& ref, const PlaneStatus& status);

 private:
  kube::KubeClient& client_;
  KubeSinkOptions opts_;
};

}  // namespace cg::status
