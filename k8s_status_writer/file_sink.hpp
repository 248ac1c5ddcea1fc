// Status files for the embedded file plane source:
// <dir>/<Kind>.<namespace or _cluster>.<name>.json, replaced atomically (write + rename).
#pragma once
#include <string>

#include "k8s_status_writer/status_sink.hpp"

namespace cg::status {

class FileStatusSink final : public StatusSink {
 public:
  explicit FileStatusSink(std::string dir);  // creates the directory
  std::optional<PlaneStatus> read(const plane::CrRef& ref) override;
  void write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) override;
  void remove(const plane::CrRef& ref) override;
  std::string path_for(const plane::CrRef& ref) const;

 private:
  std::string dir_;
};

}  // namespace cg::status
