// FilePlaneSource on a temporary directory, driven with scan_now() (no polling thread, no sleeps).
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "plane_index/file_source.hpp"
#include "tests/support/pki.hpp"

namespace fs = std::filesystem;
using cg::plane::CrRef;
using cg::plane::FilePlaneSource;
using cg::plane::FileProblem;
using cg::plane::Kind;
using cg::plane::PlaneIndex;
using Catch::Matchers::Contains;

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
         "spec:\n  planeID: " + plane_id +
         "\n  clusterAgent:\n    clientCA:\n      secretKeyRef:\n        name: " + secret_name + "\n        namespace: " +
         secret_ns + "\n        key: ca.crt\n";
}

std::string wp_yaml(const std::string& ns, const std::string& name, const std::string& plane_id, const std::string& pem,
                    const std::string& extra_meta = "") {
  return "apiVersion: openchoreo.dev/v1alpha1\nkind: WorkflowPlane\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
         "\n" + extra_meta + "spec:\n  planeID: " + plane_id + "\n  clusterAgent:\n    clientCA:\n      value: |\n" +
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
        "apiVersion: openchoreo.dev/v1alpha1\nkind: DataPlane\nmetadata:\n  name: dp\n  generation: 3\nspec:\n  planeID: \"123\"\n");
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
    std::string deep = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nextra: " + std::string(200, '[') +
                       std::string(200, ']') + "\n";
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
                               cwp_yaml("shared", "p1", "infra", "agent-ca") + "---\n" +
                               wp_yaml("team-a", "wp", "p1", pem) + "---\n");
  dir.write("notes.txt", "kind: DataPlane\n");  // ignored: not .yaml/.yml
  dir.write(".hidden.yaml", wp_yaml("team-h", "hidden", "p1", pem));  // ignored: hidden

  PlaneIndex idx;
  FilePlaneSource src(dir.str(), idx);
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
  FilePlaneSource src(dir.str(), idx);
  src.scan_now();
  REQUIRE(src.problems().empty());
  REQUIRE(must_find(idx, kWp)->cr.plane_id == "p1");

  // Document 1 broken (unknown kind), document 2 changed (new planeID).
  std::string broken = cwp_yaml("shared", "p2", "infra", "agent-ca");
  broken.replace(broken.find("ClusterWorkflowPlane"), std::string("ClusterWorkflowPlane").size(), "ClusterWorkflowPlan");
  dir.write("planes.yaml", secret_yaml("infra", "agent-ca", pem) + "---\n" + broken + "---\n" +
                               wp_yaml("team-a", "wp", "p2", pem));
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

TEST_CASE("a YAML syntax error keeps the whole file's last good documents", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  const std::string good = secret_yaml("infra", "agent-ca", pem) + "---\n" + cwp_yaml("shared", "p1", "infra", "agent-ca") +
                           "---\n" + wp_yaml("team-a", "wp", "p1", pem);
  dir.write("planes.yaml", good);
  dir.write("other.yaml", wp_yaml("team-b", "wp", "p9", pem));
  PlaneIndex idx;
  FilePlaneSource src(dir.str(), idx);
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
  FilePlaneSource src(dir.str(), idx);

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
  FilePlaneSource src(dir.str(), idx);
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
  FilePlaneSource src(dir.str(), idx);
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
  FilePlaneSource src(dir.str(), idx);
  src.scan_now();
  CHECK(idx.all().size() == 1);
  CHECK(must_find(idx, kWp)->cr.plane_id == "first");
  CHECK(must_find(idx, kWp)->cr.origin == "a.yaml#0");
}

TEST_CASE("start() refuses a missing directory", "[plane_index][file_source]") {
  PlaneIndex idx;
  fs::path missing = fs::temp_directory_path() / "cg-file-source-test-does-not-exist-5b1e";
  FilePlaneSource src(missing.string(), idx);
  CHECK_THROWS(src.start());
  CHECK_FALSE(idx.synced());
}

TEST_CASE("with a settle time a changed file is applied only once it stops changing", "[plane_index][file_source]") {
  TempDir dir;
  auto pem = cg::testing::make_ca("ca").cert_pem();
  const std::string good = wp_yaml("team-a", "wp", "p1", pem);
  dir.write("wp.yaml", good);
  PlaneIndex idx;

  SECTION("the first scan applies what is there at once; a half-written change is never loaded") {
    FilePlaneSource src(dir.str(), idx, std::chrono::milliseconds(250), std::chrono::hours(1));
    src.scan_now();
    REQUIRE(must_find(idx, kWp)->cr.plane_id == "p1");
    const auto v = idx.version();
    const std::string next = wp_yaml("team-a", "wp", "p2", pem);
    // Caught mid-write: cut inside the CA value, then inside the YAML structure, then complete.
    for (size_t cut : {next.size() - 40, next.find("clientCA") + 3, next.size()}) {
      dir.write("wp.yaml", next.substr(0, cut));
      src.scan_now();
      src.scan_now();
      CHECK(idx.version() == v);
      CHECK(src.problems().empty());
      CHECK(must_find(idx, kWp)->cr.plane_id == "p1");
    }
    // A new file is held back the same way.
    dir.write("new.yaml", wp_yaml("team-b", "wp2", "p3", pem));
    src.scan_now();
    CHECK(idx.all().size() == 1);
    // A removal is applied at once.
    dir.remove("wp.yaml");
    dir.remove("new.yaml");
    src.scan_now();
    CHECK(idx.all().empty());
  }
  SECTION("a change that stays the same for the settle time is applied, and its problems reported") {
    FilePlaneSource src(dir.str(), idx, std::chrono::milliseconds(250), std::chrono::milliseconds(50));
    src.scan_now();
    dir.write("wp.yaml", wp_yaml("team-a", "wp", "p2", pem));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.plane_id == "p1");  // seen, settling
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    src.scan_now();
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");
    dir.write("wp.yaml", "spec: [unclosed\n");
    src.scan_now();
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    src.scan_now();
    REQUIRE(src.problems().size() == 1);
    CHECK(src.problems()[0].document == -1);
    CHECK(must_find(idx, kWp)->cr.plane_id == "p2");  // the last good version stays in force
    src.scan_now();
    CHECK(src.problems().size() == 1);  // still reported while the file is unchanged
  }
}
