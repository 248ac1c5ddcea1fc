// bench-tunnel-load: an HTTPS load client with a client certificate and keep-alive connections,
// used against the gateway's internal API (/api/proxy/... -> agent tunnel -> cluster-agent-sim's
// responder) and against bench-direct-server (the same answers, called directly).
//
//   --mode rate        open loop: request k is due at t0 + k/rate; latency is measured from the due
//                      time (so client-side queueing counts, no coordinated omission); the first
//                      --warmup-requests are not recorded.
//   --mode throughput  closed loop: each connection sends the next request when the previous answer
//                      is in; completed requests in [warmup, warmup + duration) count.
// (The simulator's per-request work in-process, without the network, is timed by bench-micro.)
// Every answer is checked: expected status and the echoed body byte for byte. Prints one JSON object.
#include <openssl/ssl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bench/json_body.hpp"
#include "common/net.hpp"
#include "common/malloc_tuning.hpp"

using namespace cg::net;
using steady = std::chrono::steady_clock;

namespace {

struct Options {
  std::string mode = "rate";
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/";
  std::string cert, key, ca;
  int connections = 16;
  double rate = 1000;
  long requests = 1000, warmup_requests = 100;
  double duration = 5, warmup = 0.5;
  size_t body_size = 1024;
  unsigned expect_status = 201;
  int server_pid = 0;
};

double process_cpu_seconds(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::vector<std::string> v;
  for (std::string x; in >> x && v.size() < 13;) v.push_back(x);
  if (v.size() < 13) return -1;
  return (std::stod(v[11]) + std::stod(v[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

using cg::bench::make_body;  // bench/json_body.hpp

struct Run;

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(asio::io_context& ioc, asio::ssl::context& ctx, Run& run) : stream_(ioc, ctx), run_(run) {}
  void open(std::function<void(beast::error_code)> done);
  void send(steady::time_point due, std::function<void(bool ok, std::string why, steady::time_point due)> done);

 private:
  TlsStream stream_;
  Run& run_;
  beast::flat_buffer buf_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

struct Run {
  const Options& o;
  asio::io_context& ioc;
  http::request<http::string_body> req;
  std::string body;
  long errors = 0;
  std::map<std::string, long> error_kinds;
};

void Conn::open(std::function<void(beast::error_code)> done) {
  auto ep = tcp::endpoint(asio::ip::make_address(run_.o.host), static_cast<uint16_t>(run_.o.port));
  beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(stream_).async_connect(ep, [self = shared_from_this(), done](beast::error_code ec) {
    if (ec) return done(ec);
    beast::error_code ig;
    beast::get_lowest_layer(self->stream_).socket().set_option(tcp::no_delay(true), ig);
    SSL_set_tlsext_host_name(self->stream_.native_handle(), "localhost");
    self->stream_.async_handshake(asio::ssl::stream_base::client, [self, done](beast::error_code ec) {
      beast::get_lowest_layer(self->stream_).expires_never();
      done(ec);
    });
  });
}

void Conn::send(steady::time_point due, std::function<void(bool, std::string, steady::time_point)> done) {
  beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(60));
  http::async_write(stream_, run_.req, [self = shared_from_this(), due, done](beast::error_code ec, size_t) {
    if (ec) return done(false, "write: " + ec.message(), due);
    self->parser_.emplace();
    self->parser_->body_limit(256u << 20);
    http::async_read(self->stream_, self->buf_, *self->parser_, [self, due, done](beast::error_code ec, size_t) {
      beast::get_lowest_layer(self->stream_).expires_never();
      if (ec) return done(false, "read: " + ec.message(), due);
      auto& res = self->parser_->get();
      if (res.result_int() != self->run_.o.expect_status)
        return done(false, "HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 200), due);
      if (res.body() != self->run_.body) return done(false, "echoed body differs", due);
      if (!res.keep_alive()) return done(false, "server closed the keep-alive connection", due);
      done(true, {}, due);
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  cg::tune_malloc_for_large_messages();  // as the servers it measures (docs/benchmarks.md)
  Options o;
  CLI::App app{"bench-tunnel-load: HTTPS keep-alive load client (mTLS) for the tunnel benchmark"};
  app.add_option("--mode", o.mode, "rate or throughput")->capture_default_str();
  app.add_option("--host", o.host)->capture_default_str();
  app.add_option("--port", o.port);
  app.add_option("--path", o.path, "Request target (POST)");
  app.add_option("--cert", o.cert, "Client certificate");
  app.add_option("--key", o.key, "Client key");
  app.add_option("--ca", o.ca, "CA for the server certificate");
  app.add_option("--connections", o.connections)->capture_default_str();
  app.add_option("--rate", o.rate, "Requests per second (rate mode)")->capture_default_str();
  app.add_option("--requests", o.requests, "Measured requests (rate mode)")->capture_default_str();
  app.add_option("--warmup-requests", o.warmup_requests, "Unrecorded requests first (rate mode)")->capture_default_str();
  app.add_option("--duration", o.duration, "Measured seconds (throughput mode)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "Unmeasured seconds first (throughput mode)")->capture_default_str();
  app.add_option("--body-size", o.body_size, "Request body bytes (echoed back)")->capture_default_str();
  app.add_option("--expect-status", o.expect_status)->capture_default_str();
  app.add_option("--server-pid", o.server_pid, "Process whose CPU time over the measured part is reported");
  CLI11_PARSE(app, argc, argv);

  if (o.mode != "rate" && o.mode != "throughput") {
    std::cerr << "bench-tunnel-load: --mode must be rate or throughput\n";
    return 2;
  }

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  try {
    ctx.use_certificate_chain_file(o.cert);
    ctx.use_private_key_file(o.key, asio::ssl::context::pem);
    ctx.load_verify_file(o.ca);
    ctx.set_verify_mode(asio::ssl::verify_peer);
  } catch (const std::exception& e) {
    std::cerr << "bench-tunnel-load: TLS setup: " << e.what() << "\n";
    return 1;
  }
  asio::io_context ioc(1);
  Run run{o, ioc, {}, make_body(o.body_size), 0, {}};
  run.req = http::request<http::string_body>(http::verb::post, o.path, 11);
  run.req.set(http::field::host, "localhost");
  run.req.set(http::field::content_type, "application/json");
  run.req.set(http::field::accept, "application/json");
  run.req.keep_alive(true);
  run.req.body() = run.body;
  run.req.prepare_payload();

  std::vector<std::shared_ptr<Conn>> conns;
  for (int i = 0; i < o.connections; ++i) conns.push_back(std::make_shared<Conn>(ioc, ctx, run));
  int opened = 0;
  bool open_failed = false;
  for (auto& c : conns)
    c->open([&](beast::error_code ec) {
      if (ec) {
        open_failed = true;
        run.error_kinds["connect: " + ec.message()]++;
      }
      ++opened;
    });
  while (opened < o.connections && ioc.run_one()) {
  }
  if (open_failed) {
    std::cout << nlohmann::json{{"mode", o.mode}, {"errors", 1}, {"errorKinds", run.error_kinds}}.dump() << std::endl;
    return 1;
  }
  ioc.restart();

  nlohmann::json out = {{"mode", o.mode}, {"connections", o.connections}, {"bodyBytes", o.body_size}};
  std::vector<double> lat;  // ms
  double cpu0 = 0, cpu1 = 0;
  steady::time_point w0, w1;
  long completed = 0, measured = 0;
  std::vector<std::shared_ptr<Conn>> idle = conns;
  asio::steady_timer guard(ioc);
  guard.expires_after(std::chrono::minutes(5));
  guard.async_wait([&](beast::error_code ec) {
    if (!ec) {
      run.error_kinds["bench: gave up after 5 minutes"]++;
      ioc.stop();
    }
  });

  if (o.mode == "rate") {
    const long total = o.warmup_requests + o.requests;
    const auto interval = std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(1.0 / o.rate));
    const auto t0 = steady::now() + std::chrono::milliseconds(20);
    long issued = 0;
    size_t alive = conns.size();
    std::deque<std::pair<long, steady::time_point>> due_q;
    asio::steady_timer tick(ioc);
    std::function<void()> dispatch = [&] {
      while (!due_q.empty() && !idle.empty()) {
        auto c = idle.back();
        idle.pop_back();
        auto [k, due] = due_q.front();
        due_q.pop_front();
        if (k == o.warmup_requests) {
          w0 = due;
          cpu0 = process_cpu_seconds(o.server_pid);
        }
        c->send(due, [&, c, k](bool ok, std::string why, steady::time_point due) {
          auto now = steady::now();
          ++completed;
          if (!ok) {
            ++run.errors;
            run.error_kinds[why]++;
          } else if (k >= o.warmup_requests) {
            ++measured;
            lat.push_back(std::chrono::duration<double, std::milli>(now - due).count());
          }
          if (ok) idle.push_back(c);  // a failed connection is not reused
          if (completed == total) {
            w1 = now;
            cpu1 = process_cpu_seconds(o.server_pid);
            ioc.stop();
            return;
          }
          if (!ok && --alive == 0) {
            ioc.stop();  // every connection failed
            return;
          }
          dispatch();
        });
      }
    };
    std::function<void()> schedule = [&] {
      tick.expires_at(t0 + interval * issued);
      tick.async_wait([&](beast::error_code) {
        auto now = steady::now();
        while (issued < total && t0 + interval * issued <= now) {
          due_q.emplace_back(issued, t0 + interval * issued);
          ++issued;
        }
        dispatch();
        if (issued < total) schedule();
      });
    };
    schedule();
    ioc.run();
    const double window = std::chrono::duration<double>(w1 - w0).count();
    out["rate"] = o.rate;
    out["requests"] = measured;
    out["windowSeconds"] = window;
    out["achievedRate"] = window > 0 ? static_cast<double>(measured) / window : 0;
    out["latencyMs"] = {{"p50", pct(lat, 50)},
                        {"p90", pct(lat, 90)},
                        {"p99", pct(lat, 99)},
                        {"max", lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end())}};
    if (o.server_pid) out["serverCpuUtilization"] = window > 0 ? (cpu1 - cpu0) / window : 0;
  } else {
    const auto t_start = steady::now();
    const auto t_w0 = t_start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.warmup));
    const auto t_w1 = t_w0 + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.duration));
    asio::steady_timer mark(ioc);
    mark.expires_at(t_w0);
    mark.async_wait([&](beast::error_code) {
      w0 = steady::now();
      cpu0 = process_cpu_seconds(o.server_pid);
    });
    int running = o.connections;
    std::function<void(std::shared_ptr<Conn>)> loop = [&](std::shared_ptr<Conn> c) {
      c->send(steady::now(), [&, c](bool ok, std::string why, steady::time_point) {
        auto now = steady::now();
        if (!ok) {
          ++run.errors;
          run.error_kinds[why]++;
        } else if (now >= t_w0 && now < t_w1) {
          ++measured;
        }
        if (now >= t_w1 || !ok) {
          if (w1 == steady::time_point{} && now >= t_w1) {
            w1 = t_w1;
            cpu1 = process_cpu_seconds(o.server_pid);
          }
          if (--running == 0) ioc.stop();
          return;
        }
        loop(c);
      });
    };
    for (auto& c : conns) loop(c);
    ioc.run();
    const double window = std::chrono::duration<double>(w1 - w0).count();
    out["requests"] = measured;
    out["windowSeconds"] = window;
    out["requestsPerSecond"] = window > 0 ? static_cast<double>(measured) / window : 0;
    out["bodyMiBPerSecond"] =
        window > 0 ? static_cast<double>(measured) * static_cast<double>(o.body_size) / window / (1024.0 * 1024.0) : 0;
    if (o.server_pid) out["serverCpuUtilization"] = window > 0 ? (cpu1 - cpu0) / window : 0;
  }
  out["errors"] = run.errors;
  out["errorKinds"] = run.error_kinds;
  std::cout << out.dump() << std::endl;
  return (measured > 0 && run.errors == 0) ? 0 : 1;
}
