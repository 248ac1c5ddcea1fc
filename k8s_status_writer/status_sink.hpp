// Where desired statuses go: status files (file plane source) or the Kubernetes /status subresource.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include "k8s_status_writer/status_model.hpp"
#include "plane_index/plane_types.hpp"

namespace cg::status {

struct WriteResult {
  bool ok = false;
  bool gone = false;  // the CR no longer exists (404): drop the key
  std::optional<Duration> retry_after;  // server asked to wait (429 Retry-After)
  std::string error;
};

class StatusSink {
 public:
  virtual ~StatusSink() = default;
  // What a previous run persisted for this CR, used as the starting point after a restart.
  virtual std::optional<PlaneStatus> read(const plane::CrRef& ref) = 0;
  // Persists one status; `done` may be called from any thread, at most once.
  virtual void write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) = 0;
  // The CR is gone: forget what was written for it.
  virtual void remove(const plane::CrRef& ref) = 0;
};

}  // namespace cg::status
