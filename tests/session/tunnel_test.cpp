// session::Tunnel's callback contract with a fake agent handle: callbacks are always posted (never
// run inside a Tunnel call, even when the answer is known at once), `done` runs exactly once and a
// stream gets exactly one end event whatever races (reply, cancel, timeout, session lost, caller
// gone); one stream's events run in order, one at a time; the agent gets one close chunk.
#include <catch2/catch.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/base64.hpp"
#include "common/log.hpp"
#include "session/tunnel.hpp"
#include "tests/support/fake_handle.hpp"

using namespace cg::session;
using cg::testing::FakeHandle;
using O = TunnelReply::Outcome;
using K = StreamEvent::Kind;
using namespace std::chrono_literals;

namespace {

const bool kQuietLogs = [] {
  if (!std::getenv("CG_TEST_LOG")) cg::log::init(cg::log::Level::error, cg::log::Format::json);
  return true;
}();

const cg::SysTime T0 = cg::SysTime{} + std::chrono::hours(24 * 365 * 56);
const std::string kCr = "ns/dp";

struct Fixture {
  boost::asio::io_context ioc;
  std::unique_ptr<SessionRegistry> reg = make_local_registry();
  Tunnel tunnel;
  explicit Fixture(TunnelLimits limits = {}) : tunnel(ioc, *reg, limits) {}
  std::shared_ptr<FakeHandle> agent(uint64_t serial, std::set<std::string> crs = {kCr}, bool streams = false) {
    auto h = std::make_shared<FakeHandle>(serial, "dataplane", "p1", T0, T0);
    if (streams) h->set_capabilities({kStreamCapability});
    REQUIRE(reg->add(h, std::move(crs)));
    return h;
  }
  // Runs every handler that is ready (posted callbacks, expired timers), without blocking.
  void drain() {
    ioc.restart();
    ioc.poll();
  }
  std::string send(std::vector<TunnelReply>& out, cg::Duration timeout = 1h) {
    return tunnel.send("dataplane", "p1", kCr, TunnelRequest{"k8s", "GET", "/api", "", {}, "", "gw-1"}, timeout,
                       [&out](TunnelReply r) { out.push_back(std::move(r)); });
  }
  std::string open(std::vector<StreamEvent>& out, StreamMode mode = StreamMode::upgrade, cg::Duration first_timeout = 1h) {
    StreamRequest sr;
    sr.mode = mode;
    sr.kind = mode == StreamMode::http ? "http" : "exec";
    sr.request = TunnelRequest{"k8s", "GET", "/api/v1/pods", "watch=1", {}, "", ""};
    sr.first_timeout = first_timeout;
    sr.window = 1000;
    return tunnel.open_stream("dataplane", "p1", kCr, std::move(sr), [&out](StreamEvent e) { out.push_back(std::move(e)); });
  }
};

std::string reply_frame(const std::string& id, int status = 200) {
  return nlohmann::json({{"requestID", id}, {"statusCode", status}}).dump();
}
std::string chunk_frame(const std::string& id, const std::string& payload) {
  return nlohmann::json({{"requestID", id}, {"data", cg::base64_encode(payload)}}).dump();
}
size_t count_close_chunks(const FakeHandle& h, const std::string& id) {
  size_t n = 0;
  for (const auto& f : h.frames()) {
    auto j = nlohmann::json::parse(f);
    if (j.value("requestID", "") == id && j.value("isClose", false)) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("send: an immediate failure is posted, never run inline", "[session][tunnel]") {
  Fixture fx(TunnelLimits{0, 100});  // no pending request allowed: "overloaded"
  std::vector<TunnelReply> out;
  SECTION("no agent") {
    CHECK(fx.send(out).empty());
    CHECK(out.empty());  // not inside send()
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::no_agent);
  }
  SECTION("not authorized") {
    fx.agent(1, {"other/cr"});
    CHECK(fx.send(out).empty());
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::not_authorized);
  }
  SECTION("overloaded") {
    fx.agent(1);
    CHECK(fx.send(out).empty());
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::overloaded);
  }
}

TEST_CASE("send: a failed send is posted", "[session][tunnel]") {
  Fixture fx;
  auto h = fx.agent(1);
  h->set_refuse_sends(true);  // as with a full write queue
  std::vector<TunnelReply> out;
  CHECK_FALSE(fx.send(out).empty());
  CHECK(out.empty());
  fx.drain();
  REQUIRE(out.size() == 1);
  CHECK(out[0].outcome == O::send_failed);
  CHECK(fx.tunnel.pending() == 0);
}

TEST_CASE("send: exactly one reply whichever of reply, cancel, session loss and timeout comes first", "[session][tunnel]") {
  Fixture fx;
  auto h = fx.agent(1);
  std::vector<TunnelReply> out;
  SECTION("the agent's reply, then the rest") {
    auto id = fx.send(out);
    fx.tunnel.on_text(*h, reply_frame(id, 201));
    CHECK(out.empty());  // not inside on_text()
    fx.tunnel.cancel(id);
    fx.tunnel.on_closed(*h);
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::response);
    CHECK(out[0].status_code == 201);
    CHECK(out[0].request_id == id);
  }
  SECTION("cancel, then the rest") {
    auto id = fx.send(out);
    fx.tunnel.cancel(id);
    CHECK(out.empty());  // not inside cancel()
    fx.tunnel.on_text(*h, reply_frame(id));
    fx.tunnel.on_closed(*h);
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::cancelled);
  }
  SECTION("session lost, then the rest") {
    auto id = fx.send(out);
    fx.tunnel.on_closed(*h);
    CHECK(out.empty());  // not inside on_closed()
    fx.tunnel.cancel(id);
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::connection_closed);
  }
  SECTION("timeout, then the rest") {
    auto id = fx.send(out, 0s);
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::timeout);
    fx.tunnel.on_text(*h, reply_frame(id));
    fx.tunnel.cancel(id);
    fx.tunnel.on_closed(*h);
    fx.drain();
    CHECK(out.size() == 1);
  }
  CHECK(fx.tunnel.pending() == 0);
}

TEST_CASE("send: exactly once when reply, cancel, session loss and timeout race on threads", "[session][tunnel]") {
  Fixture fx;
  auto guard = boost::asio::make_work_guard(fx.ioc);
  std::thread io1([&] { fx.ioc.run(); }), io2([&] { fx.ioc.run(); });
  constexpr int kRounds = 300;
  std::vector<std::atomic<int>> calls(kRounds);
  for (int i = 0; i < kRounds; ++i) {
    auto h = fx.agent(100 + i);
    const std::string id = fx.tunnel.send("dataplane", "p1", kCr, TunnelRequest{"k8s", "GET", "/x", "", {}, "", ""},
                                          i % 2 ? 0ms : 1h, [&calls, i](TunnelReply) { ++calls[i]; });
    REQUIRE_FALSE(id.empty());
    std::thread a([&] { fx.tunnel.cancel(id); });
    std::thread b([&] { fx.tunnel.on_closed(*h); });
    std::thread c([&] { fx.tunnel.on_text(*h, reply_frame(id)); });
    a.join();
    b.join();
    c.join();
    fx.reg->remove(*h);
  }
  guard.reset();  // run() returns once every posted callback and timer has run
  io1.join();
  io2.join();
  for (int i = 0; i < kRounds; ++i) {
    INFO(i);
    CHECK(calls[i].load() == 1);
  }
  CHECK(fx.tunnel.pending() == 0);
}

TEST_CASE("open_stream: an immediate failure is posted, never run inline", "[session][tunnel]") {
  Fixture fx(TunnelLimits{1000, 0});
  std::vector<StreamEvent> out;
  SECTION("no agent") {
    CHECK(fx.open(out).empty());
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].kind == K::end);
    CHECK(out[0].outcome == O::no_agent);
  }
  SECTION("no agent with the streaming capability") {
    fx.agent(1);
    CHECK(fx.open(out, StreamMode::http).empty());
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::not_capable);
  }
  SECTION("too many streams") {
    fx.agent(1);
    CHECK(fx.open(out).empty());
    CHECK(out.empty());
    fx.drain();
    REQUIRE(out.size() == 1);
    CHECK(out[0].outcome == O::overloaded);
  }
}

TEST_CASE("open_stream: send failure is posted", "[session][tunnel]") {
  Fixture fx;
  auto h = fx.agent(1);
  h->set_refuse_sends(true);
  std::vector<StreamEvent> out;
  CHECK(fx.open(out).empty());
  CHECK(out.empty());
  fx.drain();
  REQUIRE(out.size() == 1);
  CHECK(out[0].outcome == O::send_failed);
  CHECK(fx.tunnel.streams() == 0);
}

TEST_CASE("stream: events are posted in order, the caller closing sends one close chunk and mutes the stream",
          "[session][tunnel]") {
  Fixture fx;
  auto h = fx.agent(1, {kCr}, true);
  std::vector<StreamEvent> out;
  auto id = fx.open(out, StreamMode::http);
  REQUIRE_FALSE(id.empty());
  auto req = nlohmann::json::parse(h->frames().at(0));
  CHECK(req["requestID"] == id);
  CHECK(req["stream"] == true);
  CHECK(req["window"] == 1000);
  fx.tunnel.on_text(*h, nlohmann::json({{"requestID", id}, {"statusCode", 200}, {"stream", true}}).dump());
  fx.tunnel.on_text(*h, chunk_frame(id, "one"));
  fx.tunnel.on_text(*h, chunk_frame(id, "two"));
  CHECK(out.empty());  // not inside on_text()
  fx.drain();
  REQUIRE(out.size() == 3);
  CHECK(out[0].kind == K::head);
  CHECK(out[1].data == "one");
  CHECK(out[2].data == "two");

  SECTION("credit after the caller consumed a quarter window") {
    fx.tunnel.stream_consumed(id, 6);
    CHECK(h->frames().size() == 1);
    fx.tunnel.stream_consumed(id, 250);
    auto credit = nlohmann::json::parse(h->frames().back());
    CHECK(credit == nlohmann::json({{"requestID", id}, {"credit", 256}}));
  }
  SECTION("stream_close: one close chunk, no event, not even one already posted") {
    fx.tunnel.on_text(*h, chunk_frame(id, "three"));  // posted, not yet run
    fx.tunnel.stream_close(id);
    fx.tunnel.stream_close(id);
    fx.tunnel.on_text(*h, chunk_frame(id, "four"));  // unknown stream now: dropped
    fx.tunnel.on_closed(*h);
    fx.drain();
    CHECK(out.size() == 3);
    CHECK(count_close_chunks(*h, id) == 1);
    CHECK(fx.tunnel.streams() == 0);
  }
  SECTION("the agent's close chunk: one end event, no close chunk back") {
    fx.tunnel.on_text(*h, nlohmann::json({{"requestID", id}, {"data", nullptr}, {"isClose", true}}).dump());
    fx.tunnel.stream_close(id);
    fx.tunnel.on_closed(*h);
    fx.drain();
    REQUIRE(out.size() == 4);
    CHECK(out[3].kind == K::end);
    CHECK(out[3].error.empty());
    CHECK(count_close_chunks(*h, id) == 0);
  }
}

TEST_CASE("stream: the first-answer timeout ends the stream once and tells the agent", "[session][tunnel]") {
  Fixture fx;
  auto h = fx.agent(1);
  std::vector<StreamEvent> out;
  auto id = fx.open(out, StreamMode::upgrade, 0s);
  REQUIRE_FALSE(id.empty());
  fx.drain();
  REQUIRE(out.size() == 1);
  CHECK(out[0].outcome == O::timeout);
  CHECK(count_close_chunks(*h, id) == 1);
  fx.tunnel.on_closed(*h);
  fx.tunnel.stream_close(id);
  fx.drain();
  CHECK(out.size() == 1);
  CHECK(count_close_chunks(*h, id) == 1);
}

TEST_CASE("stream: exactly one end event when timeout, session loss and agent close race on threads", "[session][tunnel]") {
  Fixture fx;
  auto guard = boost::asio::make_work_guard(fx.ioc);
  std::thread io1([&] { fx.ioc.run(); }), io2([&] { fx.ioc.run(); });
  constexpr int kRounds = 200;
  struct Round {
    std::atomic<int> ends{0}, after_end{0}, inside{0}, overlap{0};
  };
  std::vector<Round> rounds(kRounds);
  std::vector<std::shared_ptr<FakeHandle>> agents;
  std::vector<std::string> ids;
  for (int i = 0; i < kRounds; ++i) {
    auto h = fx.agent(1000 + i);
    agents.push_back(h);
    StreamRequest sr;
    sr.mode = StreamMode::upgrade;
    sr.request = TunnelRequest{"k8s", "POST", "/exec", "", {}, "", ""};
    sr.first_timeout = i % 2 ? 0ms : 1h;
    auto& r = rounds[i];
    const std::string id = fx.tunnel.open_stream("dataplane", "p1", kCr, std::move(sr), [&r](StreamEvent e) {
      if (r.inside++ != 0) ++r.overlap;  // a stream's events never run concurrently
      if (r.ends.load() > 0) ++r.after_end;
      if (e.kind == K::end) ++r.ends;
      --r.inside;
    });
    REQUIRE_FALSE(id.empty());
    ids.push_back(id);
    std::thread a([&] {
      for (int k = 0; k < 5; ++k) fx.tunnel.on_text(*h, chunk_frame(id, "x"));
      fx.tunnel.on_text(*h, nlohmann::json({{"requestID", id}, {"data", "ZXJy"}, {"isClose", true}}).dump());
    });
    std::thread b([&] { fx.tunnel.on_closed(*h); });
    a.join();
    b.join();
    fx.reg->remove(*h);
  }
  guard.reset();
  io1.join();
  io2.join();
  for (int i = 0; i < kRounds; ++i) {
    INFO(i);
    CHECK(rounds[i].ends.load() == 1);
    CHECK(rounds[i].after_end.load() == 0);
    CHECK(rounds[i].overlap.load() == 0);
    CHECK(count_close_chunks(*agents[i], ids[i]) <= 1);
  }
  CHECK(fx.tunnel.streams() == 0);
}
