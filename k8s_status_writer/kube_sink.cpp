#include "k8s_status_writer/kube_sink.hpp"
#include "common/json_text.hpp"

#include "kube/client.hpp"

namespace cg::status {

KubeStatusSink::KubeStatusSink(kube::KubeClient& client, KubeSinkOptions opts) : client_(client), opts_(std::move(opts)) {}

std::optional<PlaneStatus> KubeStatusSink::read(const plane::CrRef&) { return std::nullopt; }

void KubeStatusSink::remove(const plane::CrRef&) {}

std::string KubeStatusSink::status_path(const plane::CrRef& ref) const {
  const auto& ki = plane::info(ref.kind);
  std::string p = "/apis/" + std::string(plane::kApiVersion) + "/";
  if (!ki.cluster_scoped) p += "namespaces/" + kube::url_encode(ref.ns) + "/";
  p += std::string(ki.plural) + "/" + kube::url_encode(ref.name) +
       "/status?fieldManager=" + kube::url_encode(opts_.field_manager) + "&force=true";
  return p;
}

nlohmann::json KubeStatusSink::apply_body(const plane::CrRef& ref, const PlaneStatus& status) {
  const auto& ki = plane::info(ref.kind);
  nlohmann::json meta = {{"name", ref.name}};
  if (!ki.cluster_scoped) meta["namespace"] = ref.ns;
  const nlohmann::json full = status.to_json();
  nlohmann::json st = nlohmann::json::object();
  st["observedGeneration"] = status.observed_generation;
  if (full.contains("agentConnection")) st["agentConnection"] = full["agentConnection"];
  nlohmann::json conds = nlohmann::json::array();
  for (const auto& c : full.value("conditions", nlohmann::json::array()))
    if (c.value("type", "") == kAgentConnected || c.value("type", "") == kReady) conds.push_back(c);
  st["conditions"] = std::move(conds);
  return {{"apiVersion", std::string(plane::kApiVersion)},
          {"kind", std::string(ki.name)},
          {"metadata", std::move(meta)},
          {"status", std::move(st)}};
}

void KubeStatusSink::write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) {
  kube::Request req;
  req.method = "PATCH";
  req.path = status_path(ref);
  req.content_type = "application/apply-patch+yaml";
  req.body = to_json_text(apply_body(ref, status));
  req.timeout = opts_.timeout;
  client_.request(std::move(req), [done = std::move(done)](kube::Response r) {
    WriteResult w;
    if (r.ok()) {
      w.ok = true;
    } else if (r.status == 404) {
      w.gone = true;
      w.error = r.message();
    } else {
      w.error = r.message();
      if (r.status == 429) w.retry_after = r.retry_after.value_or(std::chrono::seconds(1));
      else if (r.retry_after && r.status >= 500) w.retry_after = *r.retry_after;
    }
    if (done) done(std::move(w));
  });
}

}  // namespace cg::status
