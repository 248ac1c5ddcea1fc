// classify_agent_frame: how the gateway classifies a text frame from an agent (upstream §4.3).
#include <catch2/catch.hpp>

#include <string>

#include "common/base64.hpp"
#include "session/frames.hpp"
#include "session/tunnel.hpp"

using Catch::Matchers::Contains;
using cg::session::classify_agent_frame;
using cg::session::FrameKind;

namespace {
std::string nested_arrays(int depth) {
  return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']');
}
}  // namespace

TEST_CASE("stream chunks", "[session][frames]") {
  SECTION("data with content") {
    auto f = classify_agent_frame(R"({"requestID":"r1","data":"aGVsbG8="})");
    CHECK(f.kind == FrameKind::stream_chunk);
    CHECK(f.request_id == "r1");
    CHECK(f.data_b64 == "aGVsbG8=");
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
    CHECK(f.is_close);
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
    CHECK(f.status_code_value == 200);
    REQUIRE(f.header_list.size() == 1);
    CHECK(f.header_list[0].first == "Content-Type");
    CHECK(f.body_b64 == "e30=");
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
  SECTION("just a requestID") { CHECK(classify_agent_frame(R"({"requestID":"only"})").kind == FrameKind::response); }
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
    for (const char* text :
         {"", "not json", "{", R"({"requestID":"r1",})", R"({"requestID":"r1"} trailing)", "{'requestID':'r1'}"}) {
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

namespace {
cg::session::TunnelReply decode_ok(const std::string& text) {
  auto f = classify_agent_frame(text);
  REQUIRE(f.kind == FrameKind::response);
  cg::session::TunnelReply r;
  std::string err;
  INFO(text);
  REQUIRE(cg::session::decode_tunnel_response(f, r, err));
  return r;
}
std::string decode_error(const std::string& text) {
  auto f = classify_agent_frame(text);
  REQUIRE(f.kind == FrameKind::response);
  cg::session::TunnelReply r;
  std::string err;
  INFO(text);
  CHECK_FALSE(cg::session::decode_tunnel_response(f, r, err));
  CHECK_FALSE(err.empty());
  return err;
}
}  // namespace

TEST_CASE("long bodies stay base64 text until decoded", "[session][frames]") {
  const std::string raw(300000, '\x01');
  const std::string big = cg::base64_encode(raw);
  auto f = classify_agent_frame(R"({"requestID":"r1","statusCode":200,"body":")" + big + "\"}");
  REQUIRE(f.kind == FrameKind::response);
  CHECK(f.body_b64 == big);
  cg::session::TunnelReply r;
  std::string err;
  REQUIRE(cg::session::decode_tunnel_response(f, r, err));
  CHECK(r.body == raw);
  auto c = classify_agent_frame(R"({"data":")" + big + R"(","requestID":"r2"})");
  CHECK(c.kind == FrameKind::stream_chunk);
  CHECK(c.request_id == "r2");
  CHECK(c.data_b64 == big);
}

TEST_CASE("members of the wrong type never throw and are reported", "[session][frames]") {
  // Each of these once reached nlohmann's value()/get<> with the wrong type (std::domain_error).
  auto f = classify_agent_frame(R"({"requestID":"r1","data":"eA==","isClose":"yes","stream":1,"streamId":"x"})");
  CHECK(f.kind == FrameKind::stream_chunk);
  CHECK_FALSE(f.is_close);
  CHECK_FALSE(f.stream);
  CHECK(f.stream_id == 0);
  auto e = classify_agent_frame(R"({"requestID":"r1","statusCode":500,"error":{"message":42}})");
  CHECK(e.error_message.empty());
  auto m = classify_agent_frame(R"({"requestID":"r1","statusCode":500,"error":{"message":"boom","x":[1,{}]}})");
  CHECK(m.error_message == "boom");
  CHECK(classify_agent_frame(R"({"requestID":"r1","streamId":99999999999})").stream_id == 0);
  CHECK(classify_agent_frame(R"({"requestID":"r1","streamId":2})").stream_id == 2);
  // The last occurrence of a member wins, as in a DOM parse.
  auto d = classify_agent_frame(R"({"requestID":"a","requestID":"b","statusCode":"x","statusCode":201})");
  CHECK(d.request_id == "b");
  CHECK(d.status_code_value == 201);
  CHECK(classify_agent_frame(R"({"requestID":"a","requestID":7})").kind == FrameKind::invalid);
}

TEST_CASE("a response that breaks HTTP is refused (the caller gets 502)", "[session][frames]") {
  CHECK(decode_error(R"({"requestID":"r","statusCode":204,"body":"eA=="})").find("must not carry a body") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":304,"body":"eA=="})").find("must not carry a body") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":101})").find("informational") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":100,"body":"eA=="})").find("informational") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":99})").find("statusCode") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":1000})").find("statusCode") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200.5})").find("statusCode") != std::string::npos);
  CHECK(
      decode_error(R"({"requestID":"r","statusCode":200,"headers":{"X":["a\r\nSet-Cookie: x=1"]}})").find("control character") !=
      std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"X":["a\nb"]}})").find("control character") !=
        std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"X":["a\u0000b"]}})").find("control character") !=
        std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"Bad Name":["v"]}})").find("token") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"X\r\nY":["v"]}})").find("token") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"":["v"]}})").find("token") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"X":"v"}})").find("arrays") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":[]})").find("not an object") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"body":7})").find("base64") != std::string::npos);
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"body":"%%%"})").find("base64") != std::string::npos);
  // A 64 KiB header name, or headers over the total cap, or too many fields.
  const std::string long_name(64 * 1024, 'a');
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{")" + long_name + R"(":["v"]}})").find("exceed") !=
        std::string::npos);
  const std::string long_value(40 * 1024, 'v');
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{"A":[")" + long_value + R"("],"B":[")" + long_value +
                     R"("]}})")
            .find("exceed") != std::string::npos);
  std::string many = R"({"requestID":"r","statusCode":200,"headers":{)";
  for (size_t i = 0; i <= cg::session::kMaxAgentHeaderCount; ++i)
    many += (i ? "," : "") + std::string("\"H") + std::to_string(i) + "\":[\"v\"]";
  many += "}}";
  CHECK(decode_error(many).find("exceed") != std::string::npos);
}

TEST_CASE("well-formed responses pass through unchanged", "[session][frames]") {
  auto r = decode_ok(R"({"requestID":"r","statusCode":204})");
  CHECK(r.status_code == 204);
  CHECK(r.body.empty());
  r = decode_ok(R"({"requestID":"r","statusCode":200,"headers":{"A":["1","2"],"B":[3,"x",null],"C":[]},"body":"aGk="})");
  CHECK(r.body == "hi");
  REQUIRE(r.headers.size() == 3);
  CHECK(r.headers[0] == std::pair<std::string, std::string>{"A", "1"});
  CHECK(r.headers[1] == std::pair<std::string, std::string>{"A", "2"});
  CHECK(r.headers[2] == std::pair<std::string, std::string>{"B", "x"});
  r = decode_ok(R"({"requestID":"r","statusCode":200,"headers":{"X":["tab\tand obs-text \u00e9"]},"body":null,"headers2":1})");
  CHECK(r.headers.size() == 1);
  r = decode_ok(R"({"requestID":"r","statusCode":404,"error":{"message":"unknown target: x"}})");
  CHECK(r.agent_error == "unknown target: x");
}

TEST_CASE("a header name over the name cap is refused even when the total is small", "[session][frames]") {
  const std::string name(cg::session::kMaxAgentHeaderName + 1, 'n');
  CHECK(decode_error(R"({"requestID":"r","statusCode":200,"headers":{")" + name + R"(":["v"]}})").find("exceed") !=
        std::string::npos);
  const std::string ok_name(cg::session::kMaxAgentHeaderName, 'n');
  auto r = decode_ok(R"({"requestID":"r","statusCode":200,"headers":{")" + ok_name + R"(":["v"]}})");
  CHECK(r.headers.size() == 1);
}
