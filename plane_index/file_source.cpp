#include "plane_index/file_source.hpp"

#include "common/json_text.hpp"
#include "common/utf8.hpp"

#include <cerrno>
#include <cstring>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::plane {
namespace fs = std::filesystem;

namespace {
const int kMaxDepth = 64;

// Scalars must be strict UTF-8 (cg::valid_utf8), as nlohmann::json requires to dump: yaml-cpp passes
// other bytes through, and a CR whose spec cannot be dumped would make every later scan throw.
nlohmann::json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (!valid_utf8(s)) throw std::runtime_error("document is not valid UTF-8");
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

// `budget`: values left for the whole file. Without aliases a file holds fewer values than bytes;
// aliases are expanded, and a few hundred bytes of nested aliases would expand to billions.
nlohmann::json to_json(const YAML::Node& n, int depth, size_t& budget) {
  if (depth > kMaxDepth) throw std::runtime_error("document nests deeper than 64 levels");
  if (budget == 0) throw std::runtime_error("document expands to too many values (nested YAML aliases)");
  --budget;
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& c : n) a.push_back(to_json(c, depth + 1, budget));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) throw std::runtime_error("mapping keys must be scalars");
        if (!valid_utf8(kv.first.Scalar())) throw std::runtime_error("document is not valid UTF-8");
        o[kv.first.Scalar()] = to_json(kv.second, depth + 1, budget);
      }
      return o;
    }
  }
  return nullptr;
}

// yaml-cpp 0.7's LoadAll loops forever, allocating an empty document per turn, on some malformed
// streams ("," or "{}, a" at the top level; jbeder/yaml-cpp#1040, fixed upstream after 0.8).
// The same parse with an event handler that keeps nothing, in a loop bounded by the text's length
// (every real document takes at least one byte), finds those streams before LoadAll sees them.
struct IgnoreEvents : YAML::EventHandler {
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

bool parser_loops(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents events;
  for (size_t docs = 0; parser.HandleNextDocument(events);)
    if (++docs > text.size() + 1) return true;
  return false;
}
}  // namespace

FileParse parse_yaml_documents(const std::string& text) {
  FileParse out;
  std::vector<YAML::Node> nodes;
  try {
    if (parser_loops(text)) {
      out.file_error = "YAML syntax error: the parser makes no progress (a stray ',' or flow collection?)";
      return out;
    }
    nodes = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    out.file_error = std::string("YAML syntax error: ") + e.what();
    return out;
  }
  size_t budget = 2 * text.size() + 1024;
  for (const auto& n : nodes) {
    ParsedObject p;
    try {
      nlohmann::json j = to_json(n, 0, budget);
      if (j.is_null()) continue;  // empty document
      p = parse_object(j);
    } catch (const std::exception& e) {
      p.error = e.what();
    }
    out.docs.push_back(std::move(p));
  }
  return out;
}

FilePlaneSource::FilePlaneSource(const boost::asio::any_io_executor& control, std::string dir, PlaneIndex& index,
                                 std::chrono::milliseconds poll, std::chrono::milliseconds settle)
    : dir_(std::move(dir)), index_(index), poll_(poll), settle_(settle), timer_(control) {}

FilePlaneSource::~FilePlaneSource() { stop(); }

void FilePlaneSource::start() {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) throw std::runtime_error("--planes-dir " + dir_ + " is not a directory");
  scan_now();
  timer_.run_after(poll_, [this] { tick(); });
}

void FilePlaneSource::stop() { timer_.stop(); }

void FilePlaneSource::tick() {
  try {
    scan(std::chrono::steady_clock::now());
  } catch (const std::exception& e) {
    log::error("plane directory scan failed", {{"dir", dir_}, {"reason", e.what()}});
  }
  timer_.run_after(poll_, [this] { tick(); });
}

std::vector<FileProblem> FilePlaneSource::problems() const {
  cg::MutexLock lk(mu_);
  return problems_;
}

void FilePlaneSource::scan_now() { scan_now(std::chrono::steady_clock::now()); }

void FilePlaneSource::scan_now(std::chrono::steady_clock::time_point now) {
  timer_.run_sync([&] { scan(now); });
}

bool FilePlaneSource::scan(std::chrono::steady_clock::time_point now) {
  std::map<std::string, std::string> contents;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    auto ext = p.extension().string();
    if (ext != ".yaml" && ext != ".yml") continue;
    if (p.filename().string().rfind('.', 0) == 0) continue;  // hidden/temporary files
    if (!it->is_regular_file(ec)) continue;
    std::ifstream f(p, std::ios::binary);
    if (!f) {
      // Vanished between listing and opening, or not readable right now (EMFILE, EACCES, EIO):
      // a file that is still there keeps its last content rather than counting as removed.
      std::error_code e2;
      auto known = files_.find(p.filename().string());
      if (fs::exists(p, e2) && known != files_.end()) {
        log::warn("plane file not readable; keeping its last content",
                  {{"file", p.filename().string()}, {"reason", std::strerror(errno)}});
        contents[known->first] = known->second.content;
      }
      continue;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    contents[p.filename().string()] = ss.str();
  }
  if (ec) {
    // An incomplete listing (e.g. no file descriptor left) must not read as "every file removed".
    log::warn("plane directory scan failed; keeping the previous state", {{"dir", dir_}, {"reason", ec.message()}});
    return false;
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
  std::set<std::string> applied;  // files whose content is (re)applied in this scan
  for (auto& [name, text] : contents) {
    auto known = files_.find(name);
    if (known != files_.end() && known->second.content == text) {  // unchanged since it was applied
      settling_.erase(name);
      continue;
    }
    if (settle_.count() > 0 && !first) {
      auto [s, fresh] = settling_.try_emplace(name, Settling{text, now});
      if (!fresh && s->second.content != text) s->second = Settling{text, now};
      if (now - s->second.since < settle_) continue;  // still settling
      settling_.erase(s);
    }
    auto& st = files_[name];
    applied.insert(name);
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
  for (auto it = settling_.begin(); it != settling_.end();) it = contents.count(it->first) ? std::next(it) : settling_.erase(it);
  {
    cg::MutexLock lk(mu_);
    // Problems of files not applied in this scan (unchanged or still settling) still stand.
    for (const auto& pr : problems_)
      if (contents.count(pr.file) && files_.count(pr.file) && !applied.count(pr.file)) new_problems.push_back(pr);
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
        log::warn("duplicate plane CR; the first definition wins", {{"cr", cr.ref.auth_key()},
                                                                    {"kind", std::string(info(cr.ref.kind).name)},
                                                                    {"first", it->second},
                                                                    {"duplicate", cr.origin}});
        continue;
      }
      seen[cr.ref] = cr.origin;
      // Generation: metadata.generation when given, else 1, bumped whenever the spec changes.
      std::string spec = to_json_text(cr.spec);
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
