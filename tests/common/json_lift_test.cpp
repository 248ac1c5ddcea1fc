// lift_long_strings / classify_agent_frame with lifting: the same result as a full JSON parse.
#include <catch2/catch.hpp>

#include <string>

#include "common/json_lift.hpp"

using cg::dump_with_plain_member;
using cg::lift_long_strings;
using cg::LiftedJson;
using cg::restore_lifted;
using json = nlohmann::json;

namespace {
// Parses `text` through lifting (threshold `from`) and checks it against a full parse.
json via_lift(const std::string& text, size_t from, bool expect_lifted) {
  LiftedJson l;
  const bool lifted = lift_long_strings(text, from, l);
  CHECK(lifted == expect_lifted);
  json full = json::parse(text, nullptr, false);
  if (!lifted) return full;
  json j = json::parse(l.rest, nullptr, false);
  CHECK(j.is_discarded() == full.is_discarded());
  if (j.is_discarded()) return j;
  restore_lifted(j, l);
  CHECK(j == full);
  return j;
}
}  // namespace

TEST_CASE("long plain strings are lifted and restored exactly", "[common][json_lift]") {
  const std::string body(5000, 'A');
  const std::string text =
      R"({"requestID":"r1","statusCode":200,"headers":{"X":["a\"}"]},"body":")" + body + R"(","n":[1,{"body":"x"}]})";
  LiftedJson l;
  REQUIRE(lift_long_strings(text, 1024, l));
  REQUIRE(l.members.size() == 1);
  CHECK(l.members[0].first == "body");
  CHECK(l.members[0].second == body);
  CHECK(l.rest.size() == text.size() - body.size());
  CHECK(l.rest.find(R"("body":"")") != std::string::npos);
  auto j = via_lift(text, 1024, true);
  CHECK(j["body"] == body);
  CHECK(j["headers"]["X"][0] == "a\"}");
}

TEST_CASE("strings that need unescaping or are short stay with the parser", "[common][json_lift]") {
  const std::string long_escaped = std::string(2000, 'a') + "\\n" + std::string(10, 'b');
  via_lift(R"({"body":")" + long_escaped + R"("})", 1024, false);
  via_lift(R"({"body":")" + std::string(2000, 'a') + "\xc3\xa9" + R"("})", 1024, false);  // non-ASCII
  via_lift(R"({"body":"short"})", 1024, false);
  via_lift(R"({"body":"short"})", 0, true);  // threshold 0: every plain string
  via_lift(R"({"a":"","b":"x y"})", 0, true);
}

TEST_CASE("anything the scanner cannot take apart exactly is left to the parser", "[common][json_lift]") {
  const std::string big(2000, 'Q');
  // A key given twice (the parser decides which wins), escaped keys, non-objects, malformed text.
  via_lift(R"({"body":")" + big + R"(","body":"x"})", 1024, false);
  via_lift(R"({"bo\u0064y":")" + big + R"("})", 1024, false);
  via_lift(R"([")" + big + R"("])", 1024, false);
  via_lift(R"({"body":")" + big, 1024, false);
  via_lift(R"({"body" ")" + big + R"("})", 1024, false);
  via_lift(R"({"a":1 "body":")" + big + R"("})", 1024, false);
  via_lift(R"({"body":")" + big + R"(",})", 1024, false);
  via_lift("", 0, false);
  via_lift("{}", 0, false);
  // Malformed elsewhere: lifted, and the rest is exactly as malformed as the original.
  via_lift(R"({"x":[1,2},"body":")" + big + R"("})", 1024, true);
  via_lift(R"({"x":tru,"body":")" + big + R"("})", 1024, true);
  via_lift(R"(  {"x" : {"y":["]"]} , "body" : ")" + big + "\"\n}\n", 1024, true);
}

TEST_CASE("dump_with_plain_member writes what dump would", "[common][json_lift]") {
  const std::string b64(3000, 'B');
  json base = {{"requestID", "r"}, {"statusCode", 201}, {"headers", {{"A", {"\"q\""}}}}};
  json full = base;
  full["body"] = b64;
  CHECK(json::parse(dump_with_plain_member(base, "body", b64)) == full);
  CHECK(dump_with_plain_member(json::object(), "body", "QQ==") == R"({"body":"QQ=="})");
}

TEST_CASE("a byte that needs the parser is found at every position of the word-wise scan", "[common][json_lift]") {
  for (size_t len : {1u, 7u, 8u, 9u, 16u, 23u, 40u}) {
    for (size_t pos = 0; pos < len; ++pos) {
      for (int c : {0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xff, int{0x5c}}) {
        std::string s(len, 'a');
        s[pos] = static_cast<char>(c);
        LiftedJson l;
        INFO("len " << len << " pos " << pos << " byte " << int(c));
        CHECK_FALSE(lift_long_strings("{\"k\":\"" + s + "\"}", 0, l));
      }
      std::string edge(len, 'a');
      edge[pos] = pos % 2 ? '\x20' : '\x7e';  // the ends of the plain range
      LiftedJson l;
      CHECK(lift_long_strings("{\"k\":\"" + edge + "\"}", 0, l));
    }
  }
}
