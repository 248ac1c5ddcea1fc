// FileStatusSink: status files named <Kind>.<namespace or _cluster>.<name>.json, built only from
// valid Kubernetes names. A NUL in a name used to cut the path at the C string boundary, so a CR
// named "wp.json\0x" overwrote the status file of the CR "wp".
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/log.hpp"
#include "k8s_status_writer/file_sink.hpp"

namespace fs = std::filesystem;
using cg::plane::CrRef;
using cg::plane::Kind;
using cg::status::FileStatusSink;
using cg::status::PlaneStatus;
using cg::status::WriteResult;

namespace {

fs::path temp_dir() {
  std::random_device rd;
  std::ostringstream name;
  name << "cg-file-sink-test-" << std::hex << rd() << rd();
  return fs::temp_directory_path() / name.str();
}

struct Dir {
  fs::path path = temp_dir();
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::set<std::string> files() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.insert(e.path().filename().string());
    return out;
  }
  std::string read(const std::string& name) const {
    std::ifstream f(path / name);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
};

PlaneStatus status(int64_t gen) {
  PlaneStatus s;
  s.observed_generation = gen;
  return s;
}

WriteResult write(FileStatusSink& sink, const CrRef& ref, const PlaneStatus& st) {
  WriteResult out;
  bool called = false;
  sink.write(ref, st, [&](WriteResult r) {
    out = r;
    called = true;
  });
  REQUIRE(called);  // the file sink answers synchronously
  return out;
}

}  // namespace

TEST_CASE("FileStatusSink writes, reads and removes status files of valid names", "[status][file_sink]") {
  Dir d;
  FileStatusSink sink(d.path.string());
  const CrRef wp{Kind::WorkflowPlane, "team-a", "wp.eu-1"};
  const CrRef cwp{Kind::ClusterWorkflowPlane, "", "shared"};
  REQUIRE(write(sink, wp, status(3)).ok);
  REQUIRE(write(sink, cwp, status(5)).ok);
  CHECK(d.files() == std::set<std::string>{"WorkflowPlane.team-a.wp.eu-1.json", "ClusterWorkflowPlane._cluster.shared.json"});
  CHECK(sink.path_for(wp) == (d.path / "WorkflowPlane.team-a.wp.eu-1.json").string());
  REQUIRE(sink.read(wp).has_value());
  CHECK(sink.read(wp)->observed_generation == 3);
  CHECK(sink.read(cwp)->observed_generation == 5);
  sink.remove(wp);
  CHECK(d.files() == std::set<std::string>{"ClusterWorkflowPlane._cluster.shared.json"});
}

TEST_CASE("FileStatusSink refuses names that are not valid Kubernetes names", "[status][file_sink][names]") {
  Dir d;
  FileStatusSink sink(d.path.string());
  // Another CR's status file, which a crafted name must not reach.
  const CrRef victim{Kind::DataPlane, "team-a", "wp"};
  REQUIRE(write(sink, victim, status(7)).ok);
  const std::string victim_file = "DataPlane.team-a.wp.json";
  const std::string before = d.read(victim_file);

  struct Case {
    const char* what;
    CrRef ref;
  };
  auto c = GENERATE(values<Case>({
      {"NUL cutting the path onto another CR's file", {Kind::DataPlane, "team-a", std::string("wp.json\0x", 9)}},
      {"NUL in the namespace", {Kind::DataPlane, std::string("team-a.wp.json\0", 15), "x"}},
      {"slash", {Kind::DataPlane, "team-a", "a/b"}},
      {"dot-dot", {Kind::DataPlane, "team-a", ".."}},
      {"path traversal in the name", {Kind::ClusterDataPlane, "", "../../escape"}},
      {"path traversal in the namespace", {Kind::DataPlane, "../..", "escape"}},
      {"namespace with a dot", {Kind::DataPlane, "team-a.wp", "json"}},
      {"empty name", {Kind::DataPlane, "team-a", ""}},
      {"upper case", {Kind::DataPlane, "team-a", "WP"}},
  }));
  CAPTURE(c.what);
  std::ostringstream logs;
  cg::log::set_output_for_tests(&logs);

  CHECK_FALSE(sink.path_for(c.ref).has_value());
  WriteResult r = write(sink, c.ref, status(99));
  CHECK_FALSE(r.ok);
  CHECK(r.gone);  // never retried
  CHECK_FALSE(r.error.empty());
  CHECK_FALSE(sink.read(c.ref).has_value());
  sink.remove(c.ref);
  // Nothing written, renamed or removed: only the victim's file, unchanged.
  CHECK(d.files() == std::set<std::string>{victim_file});
  CHECK(d.read(victim_file) == before);
  CHECK_FALSE(fs::exists(d.path.parent_path() / "escape"));

  // Each refusal is logged (path_for, write, read, remove) with the reason.
  cg::log::set_output_for_tests(nullptr);
  std::istringstream in(logs.str());
  int refusals = 0;
  for (std::string line; std::getline(in, line);) {
    INFO(line);
    auto j = nlohmann::json::parse(line);
    CHECK(j["msg"] == "status file name refused");
    CHECK_THAT(j["reason"].get<std::string>(), Catch::Matchers::Contains("is invalid"));
    ++refusals;
  }
  CHECK(refusals == 4);
}
