// session::StreamMachine, the per-stream decisions of session::Tunnel, driven input by input with a
// manual clock: every transition, flow-control accounting, protocol faults and "nothing after end".
#include <catch2/catch.hpp>

#include "common/base64.hpp"
#include "session/frames.hpp"
#include "session/stream_machine.hpp"
#include "session/tunnel.hpp"

using namespace cg::session;
using Clock = std::chrono::steady_clock;
using O = TunnelReply::Outcome;
using K = StreamEvent::Kind;
using namespace std::chrono_literals;

namespace {

const Clock::time_point T0 = Clock::time_point{} + 1000h;  // the manual clock's "now" at open

StreamConfig config(StreamMode mode, bool flow_controlled, size_t window = 1000, size_t max_unconsumed = 4000) {
  StreamConfig c;
  c.mode = mode;
  c.flow_controlled = flow_controlled;
  c.window = window;
  c.max_unconsumed = max_unconsumed;
  c.deadline = T0 + 30s;
  c.connection_id = "conn-7";
  return c;
}

// What Tunnel::on_stream_frame does with a frame's text: classify, decode (unlocked), then feed.
StreamActions feed(StreamMachine& m, const std::string& text) {
  AgentFrame f = classify_agent_frame(text);
  REQUIRE(f.kind != FrameKind::invalid);
  if (f.kind == FrameKind::stream_chunk) return m.on_chunk(decode_stream_chunk(f));
  TunnelReply r;
  std::string err;
  if (!decode_tunnel_response(f, r, err)) return m.on_malformed_response(err);
  return m.on_response(std::move(r), f.stream);
}
std::string chunk(const std::string& payload, int stream_id = 0) {
  std::string s = R"({"requestID":"r1","data":")" + cg::base64_encode(payload) + "\"";
  if (stream_id) s += ",\"streamId\":" + std::to_string(stream_id);
  return s + "}";
}
std::string close_with(const std::string& error) {
  return R"({"requestID":"r1","data":")" + cg::base64_encode(error) + R"(","isClose":true})";
}
const std::string kHead = R"({"requestID":"r1","statusCode":200,"headers":{"Content-Type":["application/json"]},"stream":true})";
const std::string kClose = R"({"requestID":"r1","data":null,"isClose":true})";

StreamMachine open_http(bool flow_controlled = true, size_t window = 1000, size_t max_unconsumed = 4000) {
  StreamMachine m(config(StreamMode::http, flow_controlled, window, max_unconsumed));
  auto a = feed(m, kHead);
  REQUIRE(a.started);
  REQUIRE(m.state() == StreamState::open);
  return m;
}

// An ended machine ignores every input: no event, no frame for the agent, no second end.
void check_inert(StreamMachine& m) {
  REQUIRE(m.state() == StreamState::ended);
  std::vector<StreamActions> all;
  all.push_back(feed(m, kHead));
  all.push_back(feed(m, chunk("late")));
  all.push_back(feed(m, kClose));
  all.push_back(feed(m, close_with("late error")));
  all.push_back(feed(m, R"({"requestID":"r1","data":"%%%"})"));
  all.push_back(feed(m, R"({"requestID":"r1","statusCode":42})"));
  all.push_back(m.on_consumed(1u << 20));
  all.push_back(m.on_timer(T0 + 1000h));
  all.push_back(m.on_session_lost());
  all.push_back(m.on_send_failed());
  all.push_back(m.on_caller_gone());
  for (const auto& a : all) {
    CHECK(a.events.empty());
    CHECK_FALSE(a.ended);
    CHECK_FALSE(a.close_chunk);
    CHECK(a.credit == 0);
    CHECK_FALSE(a.started);
    CHECK_FALSE(a.dropped);
  }
  CHECK(m.state() == StreamState::ended);
}

const StreamEvent& end_event(const StreamActions& a) {
  REQUIRE(a.ended);
  REQUIRE_FALSE(a.events.empty());
  REQUIRE(a.events.back().kind == K::end);
  return a.events.back();
}

}  // namespace

TEST_CASE("http stream: head, data, close chunk, then nothing", "[session][stream_machine]") {
  StreamMachine m(config(StreamMode::http, true));
  CHECK(m.state() == StreamState::awaiting_first);
  auto a = feed(m, kHead);
  CHECK(a.started);
  CHECK_FALSE(a.ended);
  CHECK_FALSE(a.close_chunk);
  REQUIRE(a.events.size() == 1);
  CHECK(a.events[0].kind == K::head);
  CHECK(a.events[0].status_code == 200);
  CHECK(a.events[0].connection_id == "conn-7");
  REQUIRE(a.events[0].headers.size() == 1);
  CHECK(a.events[0].headers[0] == std::pair<std::string, std::string>{"Content-Type", "application/json"});
  CHECK(m.state() == StreamState::open);

  a = feed(m, chunk("hello", 3));
  CHECK_FALSE(a.started);
  REQUIRE(a.events.size() == 1);
  CHECK(a.events[0].kind == K::data);
  CHECK(a.events[0].data == "hello");
  CHECK(a.events[0].stream_id == 3);
  CHECK(m.received() == 5);

  a = feed(m, kClose);
  const auto& e = end_event(a);
  CHECK(a.events.size() == 1);
  CHECK(*a.ended == StreamEnd::completed);
  CHECK(e.outcome == O::response);
  CHECK(e.error.empty());
  CHECK(e.connection_id == "conn-7");
  CHECK_FALSE(a.close_chunk);  // the agent closed: it needs no close chunk back
  check_inert(m);
}

TEST_CASE("a close chunk with text is the agent's error", "[session][stream_machine]") {
  SECTION("after the head: the caller sees the text, outcome stays response") {
    auto m = open_http();
    auto a = feed(m, close_with("pod gone"));
    CHECK(*a.ended == StreamEnd::agent_error);
    CHECK(end_event(a).error == "pod gone");
    CHECK(end_event(a).outcome == O::response);
    CHECK_FALSE(a.close_chunk);
    check_inert(m);
  }
  SECTION("before the head: a failure (502)") {
    StreamMachine m(config(StreamMode::http, true));
    auto a = feed(m, close_with("no such pod"));
    CHECK(a.started);
    CHECK(*a.ended == StreamEnd::agent_error);
    CHECK(end_event(a).outcome == O::send_failed);
    CHECK(end_event(a).error == "no such pod");
    CHECK_FALSE(a.close_chunk);
    check_inert(m);
  }
  SECTION("an empty close before the head ends the stream as completed") {
    StreamMachine m(config(StreamMode::http, true));
    auto a = feed(m, kClose);
    CHECK(*a.ended == StreamEnd::completed);
    CHECK(end_event(a).outcome == O::response);
    CHECK(end_event(a).error.empty());
    check_inert(m);
  }
}

TEST_CASE("a complete answer instead of a head: head, body, end, its body is credited", "[session][stream_machine]") {
  StreamMachine m(config(StreamMode::http, true, 1000));
  auto a = feed(m, R"({"requestID":"r1","statusCode":404,"body":")" + cg::base64_encode(std::string(3000, 'x')) + "\"}");
  CHECK(a.started);
  REQUIRE(a.events.size() == 3);
  CHECK(a.events[0].kind == K::head);
  CHECK(a.events[0].status_code == 404);
  CHECK(a.events[1].kind == K::data);
  CHECK(a.events[1].data.size() == 3000);  // over the window: not sent under credit
  CHECK(a.events[1].stream_id == 0);
  CHECK(a.events[2].kind == K::end);
  CHECK(a.events[2].outcome == O::response);
  CHECK(a.events[2].error.empty());
  CHECK(*a.ended == StreamEnd::completed);
  CHECK_FALSE(a.close_chunk);
  CHECK(m.received() == 3000);
  CHECK(m.granted() == 1000 + 3000);
  check_inert(m);
}

TEST_CASE("204 and 304: a complete answer, never a stream head", "[session][stream_machine]") {
  for (int status : {204, 304}) {
    INFO(status);
    StreamMachine complete(config(StreamMode::http, true));
    auto a = feed(complete, R"({"requestID":"r1","statusCode":)" + std::to_string(status) + "}");
    REQUIRE(a.events.size() == 2);
    CHECK(a.events[0].kind == K::head);
    CHECK(a.events[0].status_code == status);
    CHECK(*a.ended == StreamEnd::completed);
    check_inert(complete);

    StreamMachine streamed(config(StreamMode::http, true));
    a = feed(streamed, R"({"requestID":"r1","statusCode":)" + std::to_string(status) + R"(,"stream":true})");
    REQUIRE(a.events.size() == 1);  // no head: only the failure
    CHECK(*a.ended == StreamEnd::agent_error);
    CHECK(end_event(a).outcome == O::send_failed);
    CHECK(end_event(a).error == "malformed response from agent: status " + std::to_string(status) + " cannot start a stream");
    CHECK(a.close_chunk);
    check_inert(streamed);
  }
}

TEST_CASE("a malformed head ends the stream: 502 for the caller, a close chunk for the agent", "[session][stream_machine]") {
  for (const std::string& text :
       {std::string(R"({"requestID":"r1","statusCode":99,"stream":true})"),
        std::string(R"({"requestID":"r1","statusCode":200,"headers":{"Bad Name":["x"]},"stream":true})"),
        std::string(R"({"requestID":"r1","statusCode":204,"body":"eA=="})"),
        std::string(R"({"requestID":"r1","statusCode":200,"body":"%%%"})")}) {
    INFO(text);
    StreamMachine m(config(StreamMode::http, true));
    auto a = feed(m, text);
    REQUIRE(a.events.size() == 1);
    CHECK(*a.ended == StreamEnd::agent_error);
    CHECK(end_event(a).outcome == O::send_failed);
    CHECK(end_event(a).error.rfind("malformed response from agent: ", 0) == 0);
    CHECK(a.close_chunk);
    check_inert(m);
  }
}

TEST_CASE("data before the head is a protocol fault", "[session][stream_machine]") {
  StreamMachine m(config(StreamMode::http, true));
  auto a = feed(m, chunk("early"));
  REQUIRE(a.events.size() == 1);  // the data is not delivered
  CHECK(*a.ended == StreamEnd::agent_error);
  CHECK(end_event(a).outcome == O::send_failed);
  CHECK(end_event(a).error == "agent sent stream data before the response head");
  CHECK(a.close_chunk);
  check_inert(m);
}

TEST_CASE("a chunk whose data is not base64 text ends the stream", "[session][stream_machine]") {
  for (const std::string& text :
       {std::string(R"({"requestID":"r1","data":"%%%"})"), std::string(R"({"requestID":"r1","data":7})"),
        std::string(R"({"requestID":"r1","data":"%%%","isClose":true})")}) {
    INFO(text);
    auto m = open_http();
    auto a = feed(m, text);
    REQUIRE(a.events.size() == 1);
    CHECK(*a.ended == StreamEnd::agent_error);
    CHECK(end_event(a).outcome == O::send_failed);
    CHECK(a.close_chunk);
    check_inert(m);
  }
}

TEST_CASE("frames that do not fit the stream are dropped without a state change", "[session][stream_machine]") {
  SECTION("a second head") {
    auto m = open_http();
    auto a = feed(m, kHead);
    CHECK(a.dropped);
    CHECK(a.events.empty());
    CHECK_FALSE(a.ended);
    a = feed(m, R"({"requestID":"r1","statusCode":42})");  // malformed too: still only dropped
    CHECK(a.dropped);
    CHECK_FALSE(a.ended);
    CHECK(m.state() == StreamState::open);
  }
  SECTION("any response frame in upgrade mode") {
    StreamMachine m(config(StreamMode::upgrade, false));
    CHECK(feed(m, kHead).dropped);
    CHECK(feed(m, R"({"requestID":"r1","statusCode":42})").dropped);
    CHECK(m.state() == StreamState::awaiting_first);
  }
}

TEST_CASE("upgrade mode: the first chunk starts the stream", "[session][stream_machine]") {
  StreamMachine m(config(StreamMode::upgrade, false));
  auto a = feed(m, chunk("\x01stdout", 1));
  CHECK(a.started);
  REQUIRE(a.events.size() == 1);
  CHECK(a.events[0].kind == K::data);
  CHECK(a.events[0].stream_id == 1);
  CHECK(m.state() == StreamState::open);
  CHECK(m.on_timer(T0 + 1h).events.empty());  // the first-answer deadline no longer applies
  a = feed(m, kClose);
  CHECK(*a.ended == StreamEnd::completed);
  check_inert(m);
}

TEST_CASE("flow control: credit after consumption, a quarter window at a time", "[session][stream_machine]") {
  auto m = open_http(true, 1000);
  CHECK(m.granted() == 1000);
  CHECK(feed(m, chunk(std::string(600, 'a'))).events.size() == 1);
  CHECK(feed(m, chunk(std::string(400, 'b'))).events.size() == 1);  // exactly the window
  CHECK(m.on_consumed(200).credit == 0);  // under a quarter window
  auto a = m.on_consumed(100);
  CHECK(a.credit == 300);
  CHECK(a.events.empty());
  CHECK(m.granted() == 1300);
  CHECK(m.consumed() == 300);
  CHECK(feed(m, chunk(std::string(300, 'c'))).events.size() == 1);  // within the new credit
  CHECK(m.on_consumed(249).credit == 0);
  CHECK(m.on_consumed(1).credit == 250);
  CHECK(m.state() == StreamState::open);
}

TEST_CASE("flow control: a byte over the granted window ends the stream", "[session][stream_machine]") {
  auto m = open_http(true, 1000);
  CHECK(feed(m, chunk(std::string(1000, 'a'))).events.size() == 1);
  auto a = feed(m, chunk("x"));
  REQUIRE(a.events.size() == 1);  // the overrunning data is not delivered
  CHECK(*a.ended == StreamEnd::flow_control);
  CHECK(end_event(a).outcome == O::send_failed);
  CHECK(end_event(a).error == "agent exceeded the stream's flow-control window");
  CHECK(a.close_chunk);
  check_inert(m);
}

TEST_CASE("without credit: the caller may fall max_unconsumed behind, then the stream ends", "[session][stream_machine]") {
  auto m = open_http(false, 1000, 4000);
  CHECK(feed(m, chunk(std::string(3000, 'a'))).events.size() == 1);  // over the window: no credit needed
  CHECK(m.on_consumed(2000).credit == 0);  // never credit frames
  CHECK(feed(m, chunk(std::string(3000, 'b'))).events.size() == 1);  // 4000 unconsumed: at the limit
  auto a = feed(m, chunk("x"));
  REQUIRE(a.events.size() == 1);
  CHECK(*a.ended == StreamEnd::too_slow);
  CHECK(end_event(a).outcome == O::overloaded);
  CHECK(end_event(a).error == "caller too slow: 4001 bytes not yet consumed");
  CHECK(a.close_chunk);
  check_inert(m);
}

TEST_CASE("without credit: the limit is at least the window", "[session][stream_machine]") {
  auto m = open_http(false, 5000, 100);
  CHECK(feed(m, chunk(std::string(5000, 'a'))).events.size() == 1);
  CHECK(*feed(m, chunk("x")).ended == StreamEnd::too_slow);
}

TEST_CASE("the first-answer deadline, on a manual clock", "[session][stream_machine]") {
  for (auto mode : {StreamMode::http, StreamMode::upgrade}) {
    INFO(static_cast<int>(mode));
    StreamMachine m(config(mode, true));
    CHECK(m.deadline() == T0 + 30s);
    auto a = m.on_timer(T0 + 30s - 1ns);  // early (a timer never fires early, but the machine does not rely on it)
    CHECK(a.events.empty());
    CHECK_FALSE(a.ended);
    a = m.on_timer(T0 + 30s);
    CHECK(*a.ended == StreamEnd::timeout);
    CHECK(end_event(a).outcome == O::timeout);
    CHECK(end_event(a).error == "no answer from the agent in time");
    CHECK(a.close_chunk);
    check_inert(m);
  }
  SECTION("a timer that fires after the head arrived does nothing") {
    auto m = open_http();
    auto a = m.on_timer(T0 + 31s);
    CHECK(a.events.empty());
    CHECK_FALSE(a.ended);
    CHECK(m.state() == StreamState::open);
  }
}

TEST_CASE("the caller going away: one close chunk for the agent, no event for the caller", "[session][stream_machine]") {
  SECTION("while open") {
    auto m = open_http();
    auto a = m.on_caller_gone();
    CHECK(a.events.empty());
    CHECK(*a.ended == StreamEnd::caller_gone);
    CHECK(a.close_chunk);
    check_inert(m);  // includes a second on_caller_gone: no second close chunk
  }
  SECTION("before the head") {
    StreamMachine m(config(StreamMode::http, true));
    auto a = m.on_caller_gone();
    CHECK(a.events.empty());
    CHECK(a.close_chunk);
    check_inert(m);
  }
  SECTION("after the agent ended the stream: nothing") {
    auto m = open_http();
    feed(m, kClose);
    auto a = m.on_caller_gone();
    CHECK_FALSE(a.close_chunk);
    CHECK_FALSE(a.ended);
  }
}

TEST_CASE("the session ending or the request not going out ends the stream without a close chunk", "[session][stream_machine]") {
  SECTION("session lost while open") {
    auto m = open_http();
    auto a = m.on_session_lost();
    CHECK(*a.ended == StreamEnd::connection_closed);
    CHECK(end_event(a).outcome == O::connection_closed);
    CHECK(end_event(a).error == "agent connection closed");
    CHECK(end_event(a).connection_id == "conn-7");
    CHECK_FALSE(a.close_chunk);
    check_inert(m);
  }
  SECTION("send failed") {
    StreamMachine m(config(StreamMode::upgrade, false));
    auto a = m.on_send_failed();
    CHECK(*a.ended == StreamEnd::send_failed);
    CHECK(end_event(a).outcome == O::send_failed);
    CHECK_FALSE(a.close_chunk);
    check_inert(m);
  }
}

TEST_CASE("StreamEnd names are the metric labels", "[session][stream_machine]") {
  CHECK(std::string(to_string(StreamEnd::completed)) == "completed");
  CHECK(std::string(to_string(StreamEnd::flow_control)) == "flow_control");
  CHECK(std::string(to_string(StreamEnd::too_slow)) == "too_slow");
  CHECK(std::string(to_string(StreamEnd::caller_gone)) == "caller_gone");
}
