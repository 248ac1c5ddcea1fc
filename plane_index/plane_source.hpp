// Where plane CRs and CA secrets come from: a directory of YAML (here) or the Kubernetes API.
#pragma once

namespace cg::plane {

class PlaneSource {
 public:
  virtual ~PlaneSource() = default;
  // Applies the first snapshot to the index (synchronously where possible), then follows changes.
  virtual void start() = 0;
  virtual void stop() = 0;
};

}  // namespace cg::plane
