#include "k8s_status_writer/file_sink.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/ids.hpp"
#include "common/log.hpp"
#include "plane_index/objects.hpp"

namespace cg::status {
namespace fs = std::filesystem;

FileStatusSink::FileStatusSink(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("--status-dir " + dir_ + ": " + ec.message());
}

std::optional<std::string> FileStatusSink::path_for(const plane::CrRef& ref) const {
  // The kind has no dot, a namespace neither ("_cluster" is no valid namespace), so no two CRs share a file.
  std::string problem = plane::dns1123_subdomain_problem("metadata.name", ref.name);
  if (problem.empty() && !ref.ns.empty()) problem = plane::dns1123_label_problem("metadata.namespace", ref.ns);
  if (!problem.empty()) {
    log::error("status file name refused", {{"kind", std::string(plane::info(ref.kind).name)}, {"reason", problem}});
    return std::nullopt;
  }
  return dir_ + "/" + std::string(plane::info(ref.kind).name) + "." + (ref.ns.empty() ? "_cluster" : ref.ns) + "." + ref.name +
         ".json";
}

std::optional<PlaneStatus> FileStatusSink::read(const plane::CrRef& ref) {
  const auto path = path_for(ref);
  if (!path) return std::nullopt;
  std::ifstream f(*path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return PlaneStatus::from_json(j);
}

void FileStatusSink::write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) {
  WriteResult r;
  const auto target = path_for(ref);
  if (!target) {
    r.gone = true;  // no file can ever be written for it: do not retry
    r.error = "invalid CR name for a status file";
    done(r);
    return;
  }
  const std::string& path = *target;
  const std::string tmp = dir_ + "/.tmp-" + random_hex(6);
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << status.to_json().dump(2) << "\n";
    f.flush();
    if (!f) {
      r.error = "cannot write " + tmp;
      std::remove(tmp.c_str());
      done(r);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    r.error = "cannot rename to " + path;
    std::remove(tmp.c_str());
  } else {
    r.ok = true;
  }
  done(r);
}

void FileStatusSink::remove(const plane::CrRef& ref) {
  if (const auto path = path_for(ref)) std::remove(path->c_str());
}

}  // namespace cg::status
