// classify_agent_frame: how the gateway classifies a text frame from an agent (upstream §4.3).
#include <catch2/catch.hpp>

#include <string>

#include "common/base64.hpp"
#include "session/frames.hpp"
#include "session/tunnel.hpp"

using cg::session::classify_agent_frame;
using cg::session::FrameKind;
using Catch::Matchers::Contains;

namespace {
std::string nested_arrays(int depth) { return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']'); }
}  // namespace

TEST_CASE("stream chunks", "[session][frames]") {
  SECTION("data with content") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":"aGVsbG8="})");
    CHECK(f.kind == FrameKind::stream_chunk);
    CHECK(f.request_id == "r1");
    CHECK(f.body["data"] == "aGVsbG8=");
    CHECK(f.error.empty());
  }
  SECTION("empty data string counts as present") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":""})");
    CHECK(f.kind == FrameKind::stream_chunk);
    CHECK(f.request_id == "r1");
  }
  SECTION("data null with isClose true") {
    auto f = classify_agent_frame(R"({"requestID":"r2","data":null,"isClose":true})");
    CHECK(f.kind == FrameKind::stream_chunk);
    CHECK(f.request_id == "r2");
    CHECK(f.body["isClose"] == true);
  }
  SECTION("isClose true without data") {
    auto f = classify_agent_frame(R"({"requestID":"r3","isClose":true})");
    CHECK(f.kind == FrameKind::stream_chunk);
  }
  SECTION("non-string data (any non-null value) is present") {
    CHECK(classify_agent_frame(R"({"requestID":"r4","data":{"x":1}})").kind == FrameKind::stream_chunk);
    CHECK(classify_agent_frame(R"({"requestID":"r4","data":0})").kind == FrameKind::stream_chunk);
    CHECK(classify_agent_frame(R"({"requestID":"r4","data":false})").kind == FrameKind::stream_chunk);
  }
  SECTION("data and isClose false") {
    CHECK(classify_agent_frame(R"({"requestID":"r5","data":"eA==","isClose":false})").kind == FrameKind::stream_chunk);
  }
}

TEST_CASE("responses", "[session][frames]") {
  SECTION("HTTP tunnel response") {
    auto f = classify_agent_frame(
        R"({"requestID":"abc","statusCode":200,"headers":{"Content-Type":["application/json"]},"body":"e30="})");
    CHECK(f.kind == FrameKind::response);
    CHECK(f.request_id == "abc");
    CHECK(f.body["statusCode"] == 200);
    CHECK(f.error.empty());
  }
  SECTION("data null without isClose is a response") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":null})");
    CHECK(f.kind == FrameKind::response);
    CHECK(f.request_id == "r1");
  }
  SECTION("data null with isClose false is a response") {
    CHECK(classify_agent_frame(R"({"requestID":"r1","data":null,"isClose":false})").kind == FrameKind::response);
  }
  SECTION("just a requestID") {
    CHECK(classify_agent_frame(R"({"requestID":"only"})").kind == FrameKind::response);
  }
  SECTION("surrounding whitespace is fine") {
    CHECK(classify_agent_frame(" \n{\"requestID\":\"ws\",\"statusCode\":204}\n ").kind == FrameKind::response);
  }
}

TEST_CASE("invalid frames", "[session][frames]") {
  SECTION("missing requestID") {
    auto f = classify_agent_frame(R"({"statusCode":200})");
    CHECK(f.kind == FrameKind::invalid);
    CHECK_THAT(f.error, Contains("requestID"));
  }
  SECTION("missing requestID with data") {
    auto f = classify_agent_frame(R"({"data":"eA==","isClose":true})");
    CHECK(f.kind == FrameKind::invalid);
    CHECK_THAT(f.error, Contains("requestID"));
  }
  SECTION("empty requestID") {
    auto f = classify_agent_frame(R"({"requestID":"","data":"eA=="})");
    CHECK(f.kind == FrameKind::invalid);
    CHECK_THAT(f.error, Contains("requestID"));
  }
  SECTION("requestID that is not a string") {
    CHECK(classify_agent_frame(R"({"requestID":42,"statusCode":200})").kind == FrameKind::invalid);
    CHECK(classify_agent_frame(R"({"requestID":null,"data":"x"})").kind == FrameKind::invalid);
  }
  SECTION("invalid JSON") {
    for (const char* text : {"", "not json", "{", R"({"requestID":"r1",})", R"({"requestID":"r1"} trailing)",
                             "{'requestID':'r1'}"}) {
      CAPTURE(text);
      auto f = classify_agent_frame(text);
      CHECK(f.kind == FrameKind::invalid);
      CHECK_THAT(f.error, Contains("invalid JSON"));
    }
  }
  SECTION("JSON that is not an object") {
    for (const char* text : {"[]", R"(["requestID","r1"])", "42", "\"requestID\"", "null", "true"}) {
      CAPTURE(text);
      auto f = classify_agent_frame(text);
      CHECK(f.kind == FrameKind::invalid);
      CHECK_THAT(f.error, Contains("not a JSON object"));
    }
  }
}

TEST_CASE("deep nesting is refused without crashing", "[session][frames]") {
  SECTION("depth 100 inside data") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":)" + nested_arrays(100) + "}");
    CHECK(f.kind == FrameKind::invalid);
    CHECK_THAT(f.error, Contains("64"));
  }
  SECTION("depth 100 of objects") {
    std::string text;
    for (int i = 0; i < 100; ++i) text += R"({"a":)";
    text += "1";
    for (int i = 0; i < 100; ++i) text += "}";
    auto f = classify_agent_frame(text);
    CHECK(f.kind == FrameKind::invalid);
    CHECK_FALSE(f.error.empty());
  }
  SECTION("a very deep bare array") {
    auto f = classify_agent_frame(nested_arrays(200000));
    CHECK(f.kind == FrameKind::invalid);
    CHECK_FALSE(f.error.empty());
  }
  SECTION("deep and unterminated") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":)" + std::string(100000, '['));
    CHECK(f.kind == FrameKind::invalid);
  }
  SECTION("moderate nesting is accepted") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":)" + nested_arrays(30) + "}");
    CHECK(f.kind == FrameKind::stream_chunk);
    CHECK(f.request_id == "r1");
  }
}

TEST_CASE("encode_tunnel_request writes upstream's HTTPTunnelRequest with the body as base64", "[session][tunnel]") {
  cg::session::TunnelRequest r;
  r.target = "k8s";
  r.method = "POST";
  r.path = "/api/v1/namespaces/a/pods";
  r.query = "dryRun=All";
  r.headers = {{"Content-Type", "application/json"}, {"Accept", "a"}, {"Accept", "b"}};
  r.gateway_request_id = "gw-1";
  r.body = std::string("{\"x\":\"\xff\x00\"}", 10);
  auto j = nlohmann::json::parse(cg::session::encode_tunnel_request("id-1", r));
  CHECK(j["requestID"] == "id-1");
  CHECK(j["gatewayRequestID"] == "gw-1");
  CHECK(j["query"] == "dryRun=All");
  CHECK(j["headers"]["Accept"] == nlohmann::json::array({"a", "b"}));
  CHECK(cg::base64_decode(j["body"].get<std::string>()).value() == r.body);
  r.body.clear();
  r.query.clear();
  auto k = nlohmann::json::parse(cg::session::encode_tunnel_request("id-2", r));
  CHECK_FALSE(k.contains("body"));
  CHECK_FALSE(k.contains("query"));
}

TEST_CASE("frames with long bodies classify the same with and without lifting", "[session][frames]") {
  const std::string big = cg::base64_encode(std::string(300000, '\x01'));
  for (const std::string& text :
       {R"({"requestID":"r1","statusCode":200,"headers":{"A":["b"]},"body":")" + big + "\"}",
        R"({"requestID":"r1","data":")" + big + "\"}", R"({"requestID":"","body":")" + big + "\"}",
        R"({"requestID":"r1","data":null,"body":")" + big + "\"}", R"({"body":")" + big + R"(","requestID":"r2"})",
        R"({"requestID":"r1","body":")" + big + R"(","x":)" + nested_arrays(70) + "}",
        R"({"requestID":"r1","body":")" + big + R"(",})"}) {
    auto a = classify_agent_frame(text, 0), b = classify_agent_frame(text, SIZE_MAX);
    CHECK(a.kind == b.kind);
    CHECK(a.request_id == b.request_id);
    CHECK(a.error.empty() == b.error.empty());
    if (a.kind != FrameKind::invalid) CHECK(a.body == b.body);
  }
  auto f = classify_agent_frame(R"({"requestID":"r1","statusCode":200,"body":")" + big + "\"}");
  REQUIRE(f.kind == FrameKind::response);
  cg::session::TunnelReply r;
  std::string err;
  REQUIRE(cg::session::decode_tunnel_response(f.body, r, err));
  CHECK(r.body == std::string(300000, '\x01'));
}
