#include "plane_index/file_source.hpp"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::plane {
namespace fs = std::filesystem;

namespace {
const int kMaxDepth = 64;

nlohmann::json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s.empty() || s == "null" || s == "~" || s == "Null" || s == "NULL") return nullptr;
  static const std::regex int_re("^[-+]?[0-9]+$");
  static const std::regex float_re("^[-+]?([0-9]*\\.[0-9]+|[0-9]+\\.)([eE][-+]?[0-9]+)?$");
  if (s.size() < 19 && std::regex_match(s, int_re)) return std::stoll(s);
  if (s.size() < 40 && std::regex_match(s, float_re)) return std::stod(s);
  return s;
}

nlohmann::json to_json(const YAML::Node& n, int depth) {
  if (depth > kMaxDepth) throw std::runtime_error("document nests deeper than 64 levels");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& c : n) a.push_back(to_json(c, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) throw std::runtime_error("mapping keys must be scalars");
        o[kv.first.Scalar()] = to_json(kv.second, depth + 1);
      }
      return o;
    }
  }
  return nullptr;
}
}  // namespace

FileParse parse_yaml_documents(const std::string& text) {
  FileParse out;
  std::vector<YAML::Node> nodes;
  try {
    nodes = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    out.file_error = std::string("YAML syntax error: ") + e.what();
    return out;
  }
  for (const auto& n : nodes) {
    ParsedObject p;
    try {
      nlohmann::json j = to_json(n, 0);
      if (j.is_null()) continue;  // empty document
      p = parse_object(j);
    } catch (const std::exception& e) {
      p.error = e.what();
    }
    out.docs.push_back(std::move(p));
  }
  return out;
}

FilePlaneSource::FilePlaneSource(std::string dir, PlaneIndex& index, std::chrono::milliseconds poll)
    : dir_(std::move(dir)), index_(index), poll_(poll) {}

FilePlaneSource::~FilePlaneSource() { stop(); }

void FilePlaneSource::start() {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) throw std::runtime_error("--planes-dir " + dir_ + " is not a directory");
  scan_now();
  thread_ = std::thread([this] { run(); });
}

void FilePlaneSource::stop() {
  {
    std::lock_guard lk(wake_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FilePlaneSource::run() {
  std::unique_lock lk(wake_mu_);
  while (!stopping_) {
    wake_.wait_for(lk, poll_, [this] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    try {
      scan_now();
    } catch (const std::exception& e) {
      log::error("plane directory scan failed", {{"dir", dir_}, {"reason", e.what()}});
    }
    lk.lock();
  }
}

std::vector<FileProblem> FilePlaneSource::problems() const {
  std::lock_guard lk(mu_);
  return problems_;
}

void FilePlaneSource::scan_now() {
  std::lock_guard lk(scan_mu_);
  scan();
}

bool FilePlaneSource::scan() {
  std::map<std::string, std::string> contents;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    auto ext = p.extension().string();
    if (ext != ".yaml" && ext != ".yml") continue;
    if (p.filename().string().rfind('.', 0) == 0) continue;  // hidden/temporary files
    if (!it->is_regular_file(ec)) continue;
    std::ifstream f(p, std::ios::binary);
    if (!f) continue;  // vanished between listing and opening
    std::ostringstream ss;
    ss << f.rdbuf();
    contents[p.filename().string()] = ss.str();
  }
  bool first = files_.empty() && !index_.synced();
  bool changed = first;
  // Removed files.
  for (auto it = files_.begin(); it != files_.end();) {
    if (!contents.count(it->first)) {
      log::info("plane file removed", {{"file", it->first}});
      it = files_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  std::vector<FileProblem> new_problems;
  {
    std::lock_guard lk(mu_);
    for (const auto& pr : problems_)
      if (contents.count(pr.file) && files_.count(pr.file) && files_[pr.file].content == contents[pr.file])
        new_problems.push_back(pr);  // unchanged file: its problems still stand
  }
  for (auto& [name, text] : contents) {
    auto& st = files_[name];
    if (st.content == text) continue;  // unchanged since the last scan
    st.content = text;
    FileParse fp = parse_yaml_documents(text);
    if (!fp.file_error.empty()) {
      new_problems.push_back({name, -1, fp.file_error});
      metrics::plane_document_rejected();
      log::warn("plane file rejected; its last good documents stay in force", {{"file", name}, {"reason", fp.file_error}});
      continue;
    }
    std::vector<ParsedObject> good = st.last_good;
    good.resize(fp.docs.size());
    for (size_t i = 0; i < fp.docs.size(); ++i) {
      if (!fp.docs[i].error.empty()) {
        new_problems.push_back({name, static_cast<int>(i), fp.docs[i].error});
        metrics::plane_document_rejected();
        log::warn("plane document rejected; its last good version stays in force",
                    {{"file", name}, {"document", i}, {"reason", fp.docs[i].error}});
        continue;  // keep good[i] from before (if any)
      }
      good[i] = std::move(fp.docs[i]);
      if (good[i].cr) good[i].cr->origin = name + "#" + std::to_string(i);
    }
    changed = true;
    st.last_good = std::move(good);
  }
  {
    std::lock_guard lk(mu_);
    problems_ = new_problems;
  }
  if (!changed) return false;

  PlaneWorld world;
  std::map<CrRef, std::string> seen;
  for (const auto& [name, st] : files_) {
    for (const auto& d : st.last_good) {
      if (d.secret) world.secrets.push_back(*d.secret);
      if (!d.cr) continue;
      PlaneCR cr = *d.cr;
      if (auto it = seen.find(cr.ref); it != seen.end()) {
        log::warn("duplicate plane CR; the first definition wins",
                  {{"cr", cr.ref.auth_key()}, {"kind", std::string(info(cr.ref.kind).name)}, {"first", it->second}, {"duplicate", cr.origin}});
        continue;
      }
      seen[cr.ref] = cr.origin;
      // Generation: metadata.generation when given, else 1, bumped whenever the spec changes.
      std::string spec = cr.spec.dump();
      auto g = generations_.find(cr.ref);
      if (g == generations_.end()) {
        generations_[cr.ref] = {spec, cr.generation};
      } else if (g->second.spec != spec) {
        g->second.spec = spec;
        g->second.generation = std::max(g->second.generation + 1, cr.generation);
      } else {
        g->second.generation = std::max(g->second.generation, cr.generation);
      }
      cr.generation = generations_[cr.ref].generation;
      world.crs.push_back(std::move(cr));
    }
  }
  for (auto it = generations_.begin(); it != generations_.end();)
    it = seen.count(it->first) ? std::next(it) : generations_.erase(it);
  index_.replace(world);
  return true;
}

}  // namespace cg::plane
