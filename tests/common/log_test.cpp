// common/log: one event is one line in both formats, whatever bytes peers put into messages and
// fields (a decoded %0A in a path, a '\n' in an agent's requestID, bytes that are not UTF-8).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/log.hpp"

using cg::log::escape_text;
using cg::log::Format;
using cg::log::Level;
using json = nlohmann::json;

namespace {

// Routes the logger to a string for the test's lifetime; restores stdout and quiet JSON logs after.
struct Capture {
  std::ostringstream out;
  explicit Capture(Format f) {
    cg::log::init(Level::debug, f);
    cg::log::set_output_for_tests(&out);
  }
  ~Capture() {
    cg::log::set_output_for_tests(nullptr);
    cg::log::init(Level::error, Format::json);
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
};

const std::string kForgedPath = "/api/v1/x\n2030-01-01T00:00:00.000Z info  agent registered planeID=victim";
const std::string kForgedRequestID = "r1\r\n2030-01-01T00:00:00.000Z error forged\x1b[2J\x7f";
const std::string kNotUtf8 = std::string("a\xff\xfe") + "b\xc3" + "\xe2\x82";  // invalid bytes, truncated sequences
const std::string kLineSeparators = "x\xe2\x80\xa8y\xe2\x80\xa9z\xc2\x85w";  // U+2028, U+2029, U+0085 (NEL)

}  // namespace

TEST_CASE("escape_text: controls, backslashes and non-UTF-8 bytes are escaped, UTF-8 text is kept", "[log]") {
  CHECK(escape_text("plain text") == "plain text");
  CHECK(escape_text("a\nb\rc\td") == "a\\nb\\rc\\td");
  CHECK(escape_text("back\\slash") == "back\\\\slash");
  CHECK(escape_text(std::string("nul\0x", 5)) == "nul\\x00x");
  CHECK(escape_text("esc\x1b[0m del\x7f") == "esc\\x1b[0m del\\x7f");
  CHECK(escape_text(kNotUtf8) == "a\\xff\\xfeb\\xc3\\xe2\\x82");
  CHECK(escape_text("\xc0\xaf") == "\\xc0\\xaf");  // overlong '/'
  CHECK(escape_text("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate
  CHECK(escape_text(kLineSeparators) == "x\\u2028y\\u2029z\\u0085w");
  CHECK(escape_text("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80") == "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");

  SECTION("values are quoted when they hold a space, '=' or '\"', or are empty") {
    CHECK(escape_text("simple", true) == "simple");
    CHECK(escape_text("", true) == "\"\"");
    CHECK(escape_text("two words", true) == "\"two words\"");
    CHECK(escape_text("a=b", true) == "\"a=b\"");
    CHECK(escape_text("say \"hi\"", true) == "\"say \\\"hi\\\"\"");
    CHECK(escape_text("x reason=forged", true) == "\"x reason=forged\"");
    CHECK(escape_text("line\nbreak", true) == "line\\nbreak");
  }
}

TEST_CASE("text log format (--log-format text): hostile fields cannot forge log lines", "[log]") {
  Capture cap(Format::text);
  cg::log::warn("caller request rejected", {{"path", kForgedPath}, {"requestID", kForgedRequestID}});
  cg::log::info(
      "agent frame",
      {{"requestID", kNotUtf8}, {"note", kLineSeparators}, {"count", 3}, {"obj", {{"k", "v\n"}, {"u", "\xe2\x80\xa8"}}}});
  cg::log::error("message with\na newline", {{"reason", "x reason=forged"}});

  auto lines = cap.lines();
  REQUIRE(lines.size() == 3);  // one line per event, nothing forged
  const std::regex head(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (warning|info|error)\s+\S)");
  for (const auto& l : lines) {
    INFO(l);
    CHECK(std::regex_search(l, head));
    CHECK(l.find('\r') == std::string::npos);
    CHECK(l.find('\x1b') == std::string::npos);
    CHECK(l.find("\xe2\x80\xa8") == std::string::npos);
    bool controls = false;
    for (unsigned char c : l) controls = controls || c < 0x20 || c == 0x7f;
    CHECK_FALSE(controls);
  }
  CHECK_THAT(lines[0],
             Catch::Matchers::Contains("path=\"/api/v1/x\\n2030-01-01T00:00:00.000Z info  agent registered planeID=victim\""));
  CHECK_THAT(lines[0], Catch::Matchers::Contains("requestID=\"r1\\r\\n2030-01-01T00:00:00.000Z error forged\\x1b[2J\\x7f\""));
  CHECK_THAT(lines[1], Catch::Matchers::Contains("requestID=a\\xff\\xfeb\\xc3\\xe2\\x82"));
  CHECK_THAT(lines[1], Catch::Matchers::Contains("note=x\\u2028y\\u2029z\\u0085w"));
  CHECK_THAT(lines[1], Catch::Matchers::Contains("count=3"));
  CHECK_THAT(lines[1], Catch::Matchers::Contains(R"(obj={"k":"v\n","u":"\u2028"})"));
  CHECK_THAT(lines[2], Catch::Matchers::Contains("message with\\na newline reason=\"x reason=forged\""));
}

TEST_CASE("JSON format: the same events are one parseable object per line with the exact text", "[log]") {
  Capture cap(Format::json);
  cg::log::warn("caller request rejected", {{"path", kForgedPath}, {"requestID", kForgedRequestID}});
  cg::log::info("agent frame", {{"note", kLineSeparators}});
  cg::log::info("bad bytes", {{"requestID", kNotUtf8}});

  auto lines = cap.lines();
  REQUIRE(lines.size() == 3);
  auto j0 = json::parse(lines[0]);
  CHECK(j0["msg"] == "caller request rejected");
  CHECK(j0["level"] == "warning");
  CHECK(j0["path"] == kForgedPath);
  CHECK(j0["requestID"] == kForgedRequestID);
  CHECK(json::parse(lines[1])["note"] == kLineSeparators);
  // Not UTF-8: replaced (U+FFFD), never an exception.
  CHECK(json::parse(lines[2])["requestID"].get<std::string>().find("\xef\xbf\xbd") != std::string::npos);
}
