#include "k8s_status_writer/file_sink.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/ids.hpp"

namespace cg::status {
namespace fs = std::filesystem;

FileStatusSink::FileStatusSink(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("--status-dir " + dir_ + ": " + ec.message());
}

std::string FileStatusSink::path_for(const plane::CrRef& ref) const {
  return dir_ + "/" + std::string(plane::info(ref.kind).name) + "." + (ref.ns.empty() ? "_cluster" : ref.ns) + "." +
         ref.name + ".json";
}

std::optional<PlaneStatus> FileStatusSink::read(const plane::CrRef& ref) {
  std::ifstream f(path_for(ref));
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return PlaneStatus::from_json(j);
}

void FileStatusSink::write(const plane::CrRef& ref, const PlaneStatus& status, std::function<void(WriteResult)> done) {
  WriteResult r;
  const std::string path = path_for(ref);
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

void FileStatusSink::remove(const plane::CrRef& ref) { std::remove(path_for(ref).c_str()); }

}  // namespace cg::status
