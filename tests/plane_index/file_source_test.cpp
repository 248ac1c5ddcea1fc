// FilePlaneSource on a temporary directory, driven with scan_now() (run on a test control thread; no polling, no sleeps).
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "plane_index/file_source.hpp"
#include "plane_index/objects.hpp"
#include "tests/support/control_thread.hpp"
#include "tests/support/pki.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using cg::plane::CrRef;
using cg::plane::FilePlaneSource;
using cg::plane::FileProblem;
using cg::plane::Kind;
using cg::plane::PlaneIndex;

namespace {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::ostringstream name;
      name << "cg-file-source-test-" << std::hex << gen();
      fs::path p = fs::temp_directory_path() / name.str();
      std::error_code ec;
      if (fs::create_directory(p, ec)) {
        path_ = p;
        return;
      }
    }
    throw std::runtime_error("cannot create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  void write(const std::string& name, const std::string& content) const {
    cg::testing::write_file((path_ / name).string(), content);
  }
  void remove(const std::string& name) const { fs::remove(path_ / name); }

 private:
  fs::path path_;
};

std::string indent(const std::string& text, const std::string& pad) {
  std::string out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out += pad + line + "\n";
  return out;
}

std::string secret_yaml(const std::string& ns, const std::string& name, const std::string& pem) {
  return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
         "\ntype: Opaque\nstringData:\n  ca.crt: |\n" + indent(pem, "    ");
}

std::string cwp_yaml(const std::string& name, const std::string& plane_id, const std::string& secret_ns,
                     const std::string& secret_name, const std::string& extra_meta = "") {
  return "apiVersion: openchoreo.dev/v1alpha1\nkind: ClusterWorkflowPlane\nmetadata:\n  name: " + name + "\n" + extra_meta +
         "spec:\n  planeID: " + plane_id + "\n  clusterAgent:\n    clientCA:\n      secretKeyRef:\n        name: " + secret_name +
         "\n        namespace: " + secret_ns + "\n        key: ca.crt\n";
}

std::string wp_yaml(const std::string& ns, const std::string& name, const std::string& plane_id, const std::string& pem,
                    const std::string& extra_meta = "") {
  return "apiVersion: openchoreo.dev/v1alpha1\nkind: WorkflowPlane\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n" +
         extra_meta + "spec:\n  planeID: " + plane_id + "\n  clusterAgent:\n    clientCA:\n      value: |\n" +
         indent(pem, "        ");
}

std::shared_ptr<const cg::plane::CrEntry> must_find(const PlaneIndex& idx, const CrRef& ref) {
  auto e = idx.find(ref);
  INFO(ref.id());
  REQUIRE(e != nullptr);
  return e;
}

const CrRef kCwp{Kind::ClusterWorkflowPlane, "", "shared"};
const CrRef kWp{Kind::WorkflowPlane, "team-a", "wp"};

}  // namespace

TEST_CASE("parse_yaml_documents", "[plane_index][file_source]") {
  SECTION("multiple documents, empty ones skipped") {
    auto fp = cg::plane::parse_yaml_documents(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n---\n---\n"
        "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n  name: dp\n");
    CHECK(fp.file_error.empty());
    REQUIRE(fp.docs.size() == 2);
    CHECK(fp.docs[0].secret.has_value());
    REQUIRE(fp.docs[1].cr.has_value());
    CHECK(fp.docs[1].cr->ref.kind == Kind::DataPlane);
  }
  SECTION("scalars: quoted strings stay strings, unquoted numbers are numbers") {
    auto quoted = cg::plane::parse_yaml_documents(
        "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n  name: dp\n  generation: 3\nspec:\n  planeID: "
        "\"123\"\n");
    REQUIRE(quoted.docs.size() == 1);
    REQUIRE(quoted.docs[0].cr.has_value());
    CHECK(quoted.docs[0].cr->plane_id == "123");
    CHECK(quoted.docs[0].cr->generation == 3);

    auto number = cg::plane::parse_yaml_documents(
        "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n  name: dp\nspec:\n  planeID: 123\n");
    REQUIRE(number.docs.size() == 1);
    CHECK_FALSE(number.docs[0].cr.has_value());
    CHECK_THAT(number.docs[0].error, Contains("spec.planeID"));
  }
  SECTION("a document that is not a mapping") {
    auto fp = cg::plane::parse_yaml_documents("- a\n- b\n");
    CHECK(fp.file_error.empty());
    REQUIRE(fp.docs.size() == 1);
    CHECK_FALSE(fp.docs[0].error.empty());
  }
  SECTION("YAML syntax error") {
    auto fp = cg::plane::parse_yaml_documents("kind: DataPlane\nmetadata: [unclosed\n");
    CHECK_FALSE(fp.file_error.empty());
    CHECK(fp.docs.empty());
  }
  SECTION("deep nesting is refused, not a crash") {
    std::string deep =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nextra: " + std::string(200, '[') + std::string(200, ']') + "\n";
    auto fp = cg::plane::parse_yaml_documents(deep);
    REQUIRE(fp.file_error.empty());
    REQUIRE(fp.docs.size() == 1);
    CHECK_FALSE(fp.docs[0].secret.has_value());
    CHECK_THAT(fp.docs[0].error, Contains("deeper"));
  }
}

TEST_CASE("FilePlaneSource loads multi-document YAML", "[plane_index][file_source]") {
  TempDir dir;
  auto ca = cg::testing::make_ca("file-ca");
  const auto pem = ca.cert_pem();
  dir.write("planes.yaml", "# plane definitions\n" + secret_yaml("infra", "agent-ca", pem) + "---\n" +
                               cwp_yaml("shared", "p1", "infra", "agent-ca") + "---\n" + wp_yaml("team-a", "wp", "p1", pem) +
                               "---\n");
  dir.write("notes.txt", "kind: DataPlane\n");  // ignored: not .yaml/.yml
  dir.write(".hidden.yaml", wp_yaml("team-h", "hidden", "p1", pem));  // ignored: hidden

  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  CHECK_FALSE(idx.synced());
  src.scan_now();
  CHECK(idx.synced());
  CHECK(src.problems().empty());
  CHECK(idx.all().size() == 2);

  auto cwp = must_find(idx, kCwp);
  auto wp = must_find(idx, kWp);
  CHECK(cwp->ca != nullptr);
  CHECK(cwp->ca_error.empty());
  CHECK(wp->ca != nullptr);
  CHECK(cwp->ca->fingerprint() == wp->ca->fingerprint());
  CHECK(cwp->cr.origin == "planes.yaml#1");
  CHECK(wp->cr.origin == "planes.yaml#2");
  auto anchors = idx.anchors("workflowplane", "p1");
  REQUIRE(anchors.size() == 2);
  CHECK(anchors[0].key == "/shared");
  CHECK(anchors[1].key == "team-a/wp");

  SECTION(".yml files are read too") {
    dir.write("more.yml", wp_yaml("team-b", "wp", "p1", pem));
    src.scan_now();
    CHECK(idx.all().size() == 3);
    CHECK(idx.find({Kind::WorkflowPlane, "team-b", "wp"}) != nullptr);
  }
  SECTION("an unchanged directory does not bump the index version") {
    auto v = idx.version();
    src.scan_now();
    src.scan_now();
    CHECK(idx.version() == v);
  }
}

TEST_CASE("a malformed document keeps its last good version", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  dir.write("planes.yaml", secret_yaml("infra", "agent-ca", pem) + "---\n" + cwp_yaml("shared", "p1", "infra", "agent-ca") +
                               "---\n" + wp_yaml("team-a", "wp", "p1", pem));
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();
  REQUIRE(src.problems().empty());
  REQUIRE(must_find(idx, kWp)->cr.plane_id == "p1");

  // Document 1 broken (unknown kind), document 2 changed (new planeID).
  std::string broken = cwp_yaml("shared", "p2", "infra", "agent-ca");
  broken.replace(broken.find("ClusterWorkflowPlane"), std::string("ClusterWorkflowPlane").size(), "ClusterWorkflowPlan");
  dir.write("planes.yaml",
            secret_yaml("infra", "agent-ca", pem) + "---\n" + broken + "---\n" + wp_yaml("team-a", "wp", "p2", pem));
  src.scan_now();

  auto problems = src.problems();
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].file == "planes.yaml");
  CHECK(problems[0].document == 1);
  CHECK_THAT(problems[0].reason, Contains("ClusterWorkflowPlan"));
  // The broken document's last good version stays in force; the good document is updated.
  CHECK(must_find(idx, kCwp)->cr.plane_id == "p1");
  CHECK(must_find(idx, kWp)->cr.plane_id == "p2");

  SECTION("problems persist while the file is unchanged") {
    src.scan_now();
    REQUIRE(src.problems().size() == 1);
    CHECK(src.problems()[0].document == 1);
    CHECK(must_find(idx, kCwp)->cr.plane_id == "p1");
  }
  SECTION("fixing the document applies it and clears the problem") {
    dir.write("planes.yaml", secret_yaml("infra", "agent-ca", pem) + "---\n" + cwp_yaml("shared", "p2", "infra", "agent-ca") +
                                 "---\n" + wp_yaml("team-a", "wp", "p2", pem));
    src.scan_now();
    CHECK(src.problems().empty());
    CHECK(must_find(idx, kCwp)->cr.plane_id == "p2");
  }
  SECTION("a malformed document with no previous good version contributes nothing") {
    dir.write("new.yaml", "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n  namespace: x\n");
    src.scan_now();
    auto ps = src.problems();
    REQUIRE(ps.size() == 2);
    bool found = false;
    for (const auto& p : ps)
      if (p.file == "new.yaml") {
        found = true;
        CHECK(p.document == 0);
        CHECK_THAT(p.reason, Contains("metadata.name"));
      }
    CHECK(found);
    CHECK(idx.all().size() == 2);
  }
}

TEST_CASE("documents with invalid Kubernetes names are reported, the others in the file still load",
          "[plane_index][file_source][names]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  auto dp = [&](const std::string& meta) {
    return "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n" + meta +
           "spec:\n  clusterAgent:\n    clientCA:\n      value: |\n" + indent(pem, "        ");
  };
  // Double-quoted YAML: "\0" is a NUL and "\n" a newline inside the name.
  dir.write("planes.yaml", wp_yaml("team-a", "wp", "p1", pem) + "---\n" +  // 0: good
                               dp("  name: \"wp\\0evil\"\n  namespace: team-a\n") + "---\n" +  // 1: NUL
                               dp("  name: a/b\n  namespace: team-a\n") + "---\n" +  // 2: slash
                               dp("  name: ..\n  namespace: team-a\n") + "---\n" +  // 3: dot-dot
                               dp("  name: ok\n  namespace: ../team-a\n") + "---\n" +  // 4: namespace
                               dp("  name: \"x\\ny\"\n") + "---\n" +  // 5: newline
                               secret_yaml("infra", "Agent_CA", pem) + "---\n" +  // 6: Secret name
                               cwp_yaml("shared", "p1", "infra", "agent-ca") + "---\n" +  // 7: good
                               secret_yaml("infra", "agent-ca", pem));  // 8: good
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();

  auto problems = src.problems();
  REQUIRE(problems.size() == 6);
  const std::vector<std::pair<int, std::string>> expect = {{1, "metadata.name"},      {2, "metadata.name"}, {3, "metadata.name"},
                                                           {4, "metadata.namespace"}, {5, "metadata.name"}, {6, "metadata.name"}};
  for (size_t i = 0; i < expect.size(); ++i) {
    INFO(problems[i].reason);
    CHECK(problems[i].file == "planes.yaml");
    CHECK(problems[i].document == expect[i].first);
    CHECK_THAT(problems[i].reason, Contains(expect[i].second + " '"));
    CHECK_THAT(problems[i].reason, Contains("RFC 1123"));
    CHECK(problems[i].reason.find('\0') == std::string::npos);
    CHECK(problems[i].reason.find('\n') == std::string::npos);
  }
  CHECK_THAT(problems[0].reason, Contains("'wp\\x00evil'"));
  // Only the good documents are in the index: the two CRs, and the CA from the good Secret.
  CHECK(idx.all().size() == 2);
  auto wp = must_find(idx, kWp);
  CHECK(wp->cr.origin == "planes.yaml#0");
  auto cwp = must_find(idx, kCwp);
  CHECK(cwp->cr.origin == "planes.yaml#7");
  CHECK(cwp->ca != nullptr);
  for (const auto& e : idx.all()) {
    CHECK(cg::plane::is_dns1123_subdomain(e->cr.ref.name));
    CHECK(e->cr.ref.ns.find('/') == std::string::npos);
  }
}

TEST_CASE("a YAML syntax error keeps the whole file's last good documents", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  const std::string good = secret_yaml("infra", "agent-ca", pem) + "---\n" + cwp_yaml("shared", "p1", "infra", "agent-ca") +
                           "---\n" + wp_yaml("team-a", "wp", "p1", pem);
  dir.write("planes.yaml", good);
  dir.write("other.yaml", wp_yaml("team-b", "wp", "p9", pem));
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();
  REQUIRE(idx.all().size() == 3);
  auto version = idx.version();

  dir.write("planes.yaml", "apiVersion: openchoreo.dev/v1alpha1\nkind: [DataPlane\nmetadata: {name: x\n");
  src.scan_now();
  auto ps = src.problems();
  REQUIRE(ps.size() == 1);
  CHECK(ps[0].file == "planes.yaml");
  CHECK(ps[0].document == -1);
  CHECK_FALSE(ps[0].reason.empty());
  CHECK(idx.all().size() == 3);
  auto cwp = must_find(idx, kCwp);
  CHECK(cwp->cr.plane_id == "p1");
  CHECK(cwp->ca != nullptr);  // the secret from the same file is still in force
  CHECK(idx.version() == version);

  SECTION("still reported on the next scan") {
    src.scan_now();
    REQUIRE(src.problems().size() == 1);
    CHECK(src.problems()[0].document == -1);
  }
  SECTION("restoring the file clears the problem") {
    dir.write("planes.yaml", good);
    src.scan_now();
    CHECK(src.problems().empty());
    CHECK(idx.all().size() == 3);
  }
}

TEST_CASE("generation starts at metadata.generation or 1 and follows spec changes", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  auto pem2 = cg::testing::make_ca("ca2").cert_pem();
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);

  SECTION("without metadata.generation") {
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p1", pem));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 1);

    // Unchanged content on rescan: same generation.
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 1);

    // Metadata-only edit (annotation): the spec did not change.
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p1", pem, "  annotations:\n    openchoreo.dev/display-name: WP\n"));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 1);
    CHECK(must_find(idx, kWp)->cr.display_name() == "WP");

    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 2);

    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem2));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 3);

    // Whitespace/comment-only edits do not change the spec.
    dir.write("wp.yaml", "# a comment\n" + wp_yaml("team-a", "wp", "p2", pem2) + "\n\n");
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 3);
  }
  SECTION("with metadata.generation") {
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p1", pem, "  generation: 7\n"));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 7);
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem, "  generation: 7\n"));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 8);
  }
  SECTION("generation restarts after the CR was deleted") {
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p1", pem));
    src.scan_now();
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem));
    src.scan_now();
    REQUIRE(must_find(idx, kWp)->cr.generation == 2);
    dir.remove("wp.yaml");
    src.scan_now();
    CHECK(idx.find(kWp) == nullptr);
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p3", pem));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.generation == 1);
  }
}

TEST_CASE("deleting a file removes its CRs and secrets", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  dir.write("secret.yaml", secret_yaml("infra", "agent-ca", pem));
  dir.write("cwp.yaml", cwp_yaml("shared", "p1", "infra", "agent-ca"));
  dir.write("wp.yaml", wp_yaml("team-a", "wp", "p1", pem));
  PlaneIndex idx;
  std::vector<cg::plane::IndexChange> changes;
  idx.add_listener([&](const cg::plane::IndexChange& c) { changes.push_back(c); });
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();
  REQUIRE(idx.all().size() == 2);
  REQUIRE(must_find(idx, kCwp)->ca != nullptr);

  dir.remove("wp.yaml");
  src.scan_now();
  CHECK(idx.find(kWp) == nullptr);
  CHECK(idx.all().size() == 1);
  REQUIRE_FALSE(changes.empty());
  CHECK(changes.back().removed == std::set<CrRef>{kWp});

  // Removing the secret's file breaks the CA of the CR that references it.
  dir.remove("secret.yaml");
  src.scan_now();
  auto cwp = must_find(idx, kCwp);
  CHECK(cwp->ca == nullptr);
  CHECK_THAT(cwp->ca_error, Contains("not found"));

  dir.remove("cwp.yaml");
  src.scan_now();
  CHECK(idx.all().empty());
  CHECK(src.problems().empty());
}

TEST_CASE("problems of a deleted file are dropped", "[plane_index][file_source]") {
  TempDir dir;
  dir.write("bad.yaml", "kind: [\n");
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();
  REQUIRE(src.problems().size() == 1);
  CHECK(src.problems()[0].file == "bad.yaml");
  CHECK(idx.synced());  // the first scan is applied even when nothing is usable
  dir.remove("bad.yaml");
  src.scan_now();
  CHECK(src.problems().empty());
}

TEST_CASE("duplicate CR definitions: the first one wins", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  dir.write("a.yaml", wp_yaml("team-a", "wp", "first", pem));
  dir.write("b.yaml", wp_yaml("team-a", "wp", "second", pem));
  PlaneIndex idx;
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), dir.str(), idx);
  src.scan_now();
  CHECK(idx.all().size() == 1);
  CHECK(must_find(idx, kWp)->cr.plane_id == "first");
  CHECK(must_find(idx, kWp)->cr.origin == "a.yaml#0");
}

TEST_CASE("start() refuses a missing directory", "[plane_index][file_source]") {
  PlaneIndex idx;
  fs::path missing = fs::temp_directory_path() / "cg-file-source-test-does-not-exist-5b1e";
  cg::testing::ControlThread control;
  FilePlaneSource src(control.executor(), missing.string(), idx);
  CHECK_THROWS(src.start());
  CHECK_FALSE(idx.synced());
}

TEST_CASE("with a settle time a changed file is applied only once it stops changing", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  const std::string good = wp_yaml("team-a", "wp", "p1", pem);
  dir.write("wp.yaml", good);
  PlaneIndex idx;

  // The production settle time (gateway.cpp: 500 ms) on a manual clock: scan_now(t) scans as if
  // the clock read t, so every step below is exact and nothing sleeps.
  constexpr auto kSettle = std::chrono::milliseconds(500);
  using ms = std::chrono::milliseconds;

  SECTION("the first scan applies what is there at once; a half-written change is never loaded") {
    cg::testing::ControlThread control;
    FilePlaneSource src(control.executor(), dir.str(), idx, std::chrono::milliseconds(250), kSettle);
    const auto t0 = std::chrono::steady_clock::now();
    src.scan_now(t0);
    REQUIRE(must_find(idx, kWp)->cr.plane_id == "p1");
    const auto v = idx.version();
    const std::string next = wp_yaml("team-a", "wp", "p2", pem);
    // Written in place in three steps 200 ms apart (as test_limits_reload.py test_3 does): cut inside
    // the CA value, then inside the YAML structure, then complete. Each step is scanned when it
    // appears and again 1 ms before it would have settled: none of the partial states is loaded.
    auto t = t0;
    for (size_t cut : {next.size() - 40, next.find("clientCA") + 3}) {
      t += ms(200);
      dir.write("wp.yaml", next.substr(0, cut));
      src.scan_now(t);
      src.scan_now(t + ms(199));
      CHECK(idx.version() == v);
      CHECK(src.problems().empty());
      CHECK(must_find(idx, kWp)->cr.plane_id == "p1");
    }
    // The complete file, 200 ms after the last partial state: still held until it has been
    // unchanged for the settle time (a clock that is not restarted by each change would apply it
    // 500 ms after the first partial state was seen, i.e. at t + 300 ms here).
    t += ms(200);
    dir.write("wp.yaml", next);
    src.scan_now(t);
    src.scan_now(t + kSettle - ms(1));
    CHECK(idx.version() == v);
    CHECK(src.problems().empty());
    CHECK(must_find(idx, kWp)->cr.plane_id == "p1");
    // The complete file, unchanged for the settle time, is applied.
    src.scan_now(t + kSettle);
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");
    CHECK(src.problems().empty());
    // A new file is held back the same way.
    t += kSettle;
    dir.write("new.yaml", wp_yaml("team-b", "wp2", "p3", pem));
    src.scan_now(t);
    src.scan_now(t + kSettle - ms(1));
    CHECK(idx.all().size() == 1);
    src.scan_now(t + kSettle);
    CHECK(idx.all().size() == 2);
    // A removal is applied at once.
    t += kSettle;
    dir.remove("wp.yaml");
    dir.remove("new.yaml");
    src.scan_now(t);
    CHECK(idx.all().empty());
  }
  SECTION("a new change restarts the settle clock") {
    cg::testing::ControlThread control;
    FilePlaneSource src(control.executor(), dir.str(), idx, std::chrono::milliseconds(250), kSettle);
    const auto t0 = std::chrono::steady_clock::now();
    src.scan_now(t0);
    REQUIRE(must_find(idx, kWp)->cr.plane_id == "p1");
    const std::string next = wp_yaml("team-a", "wp", "p2", pem);
    // A partial state first seen at t0 + 100 ms, changed again at t0 + 400 ms.
    dir.write("wp.yaml", next.substr(0, next.size() - 40));
    src.scan_now(t0 + ms(100));
    dir.write("wp.yaml", next);
    src.scan_now(t0 + ms(400));
    // 600 ms after the first change was seen but only 200 ms after the last one: a clock that was
    // not restarted would apply the file now.
    src.scan_now(t0 + ms(700));
    CHECK(must_find(idx, kWp)->cr.plane_id == "p1");
    src.scan_now(t0 + ms(400) + kSettle - ms(1));
    CHECK(must_find(idx, kWp)->cr.plane_id == "p1");
    src.scan_now(t0 + ms(400) + kSettle);
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");
  }
  SECTION("a change that stays the same for the settle time is applied, and its problems reported") {
    cg::testing::ControlThread control;
    FilePlaneSource src(control.executor(), dir.str(), idx, std::chrono::milliseconds(250), kSettle);
    const auto t0 = std::chrono::steady_clock::now();
    src.scan_now(t0);
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem));
    src.scan_now(t0 + ms(10));
    CHECK(must_find(idx, kWp)->cr.plane_id == "p1");  // seen, settling
    src.scan_now(t0 + ms(10) + kSettle);
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");
    const auto t1 = t0 + ms(10) + kSettle;
    dir.write("wp.yaml", "spec: [unclosed\n");
    src.scan_now(t1);
    CHECK(src.problems().empty());  // settling: not parsed yet
    src.scan_now(t1 + kSettle);
    REQUIRE(src.problems().size() == 1);
    CHECK(src.problems()[0].document == -1);
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");  // the last good version stays in force
    src.scan_now(t1 + kSettle + ms(250));
    CHECK(src.problems().size() == 1);  // still reported while the file is unchanged
  }
}
