// Status files for the embedded file plane source:
// <dir>/<Kind>.<namespace or _cluster>.<name>.json, replaced atomically (write + rename).
// File names are built only from valid Kubernetes names (the namespace a DNS-1123 label, the name a
// DNS-1123 subdomain): the plane sources reject other names, and this sink refuses them again
// rather than build a path from one (a write answers `gone`, so the writer does not retry it).
#pragma once
#include <optional>
#include <string>

#include "k8s_status_writer/status_sink.hpp"

namespace cg::status {

class FileStatusSink final : public StatusSink {
 public:
  explicit FileStatusSink(std::string dir);  // creates the directory
  std::optional<PlaneStatus> read(const plane::CrRef& ref) override;
  void write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) override;
  void remove(const plane::CrRef& ref) override;
  // nullopt (and a log line) when the CR's namespace or name is not a valid Kubernetes name.
  std::optional<std::string> path_for(const plane::CrRef& ref) const;

 private:
  std::string dir_;
};

}  // namespace cg::status
