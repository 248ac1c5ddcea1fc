// bench-handshake-load: many concurrent asynchronous agent clients, each looping
//   TCP connect -> TLS handshake with a client certificate -> WebSocket upgrade on
//   /ws?planeID=&planeType= -> WebSocket close
// against the gateway's agent port, and the gateway's CPU time (utime+stime from /proc/<pid>/stat)
// over the measured window. Every handshake is a full one (a fresh SSL object, no session offered).
// Prints one JSON object on stdout.
//
//   bench-handshake-load --port P --plane-id ID --cert a.crt --key a.key [--cert b.crt --key b.key ...]
//                        --concurrency 32 (--count N | --warmup 1 --duration 10) --gateway-pid PID
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/net.hpp"

using namespace cg::net;
using steady = std::chrono::steady_clock;

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string plane_type = "dataplane";
  std::string plane_id;
  std::vector<std::string> certs, keys;
  std::string server_ca;  // empty: the server certificate is not verified (the loader's CPU goes to the gateway)
  int concurrency = 16;
  long count = 0;  // >0: exactly this many handshakes, measured from first to last
  double warmup = 1, duration = 0;  // duration > 0: measure [warmup, warmup + duration)
  int gateway_pid = 0;
  std::vector<asio::ip::address> source_ips;
  bool tls_only = false;  // stop after the TLS handshake (reference runs against `openssl s_server`)
};

// utime + stime of a process, in seconds (all its threads, from /proc/<pid>/stat).
double process_cpu_seconds(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::string field;
  // Fields after the command: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
  std::vector<std::string> v;
  while (in >> field && v.size() < 13) v.push_back(field);
  if (v.size() < 13) return -1;
  const double tck = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(v[11]) + std::stod(v[12])) / tck;
}

double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Shared {
  Shared(const Options& o, asio::io_context& ioc, std::vector<std::unique_ptr<asio::ssl::context>>& ctxs, tcp::endpoint dst)
      : o(o), ioc(ioc), ctxs(ctxs), dst(std::move(dst)) {}
  const Options& o;
  asio::io_context& ioc;
  std::vector<std::unique_ptr<asio::ssl::context>>& ctxs;
  tcp::endpoint dst;
  bool measuring = false, done = false;
  long started = 0, finished = 0, ok_total = 0, ok_window = 0, reused = 0;
  std::map<std::string, long> errors;
  std::vector<double> latency_ms;  // of handshakes completed in the window
  nlohmann::json tls_info;
  long next_cert = 0;
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  Client(Shared& sh, int slot) : sh_(sh), slot_(slot), backoff_(sh.ioc) {}

  void next() {
    if (sh_.done) return;
    if (sh_.o.count > 0 && sh_.started >= sh_.o.count) return;
    ++sh_.started;
    auto& ctx = *sh_.ctxs[static_cast<size_t>(sh_.next_cert++) % sh_.ctxs.size()];
    ws_.emplace(sh_.ioc, ctx);
    begin_ = steady::now();
    auto& lowest = beast::get_lowest_layer(*ws_);
    lowest.expires_after(std::chrono::seconds(15));
    beast::error_code ec;
    if (!sh_.o.source_ips.empty()) {
      const auto& src = sh_.o.source_ips[static_cast<size_t>(slot_) % sh_.o.source_ips.size()];
      lowest.socket().open(sh_.dst.protocol(), ec);
      int one = 1;
      if (!ec) ::setsockopt(lowest.socket().native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      if (!ec) lowest.socket().bind(tcp::endpoint(src, 0), ec);
      if (ec) return fail("bind", ec);
    }
    lowest.async_connect(sh_.dst, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return self->fail("connect", ec);
      beast::error_code ig;
      beast::get_lowest_layer(*self->ws_).socket().set_option(tcp::no_delay(true), ig);
      SSL_set_tlsext_host_name(self->ws_->next_layer().native_handle(), "localhost");
      self->ws_->next_layer().async_handshake(asio::ssl::stream_base::client, [self](beast::error_code ec) {
        if (ec) return self->fail("tls", ec);
        if (self->sh_.o.tls_only) return self->on_upgraded();
        beast::get_lowest_layer(*self->ws_).expires_never();
        websocket::stream_base::timeout t{};
        t.handshake_timeout = std::chrono::seconds(10);  // also bounds the close handshake
        t.idle_timeout = websocket::stream_base::none();
        self->ws_->set_option(t);
        std::string target = "/ws?planeID=" + self->sh_.o.plane_id + "&planeType=" + self->sh_.o.plane_type;
        self->ws_->async_handshake(self->res_, "localhost", target, [self](beast::error_code ec) {
          if (ec) {
            std::string stage = "upgrade";
            if (self->res_.result_int() != 0) stage += " HTTP " + std::to_string(self->res_.result_int());
            return self->fail(stage, ec);
          }
          self->on_upgraded();
        });
      });
    });
  }

 private:
  void on_upgraded() {
    auto now = steady::now();
    ++sh_.ok_total;
    SSL* ssl = ws_->next_layer().native_handle();
    if (SSL_session_reused(ssl)) ++sh_.reused;
    if (sh_.tls_info.is_null()) {
      nlohmann::json j;
      j["version"] = SSL_get_version(ssl);
      j["cipher"] = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
      int g = SSL_get_negotiated_group(ssl);
      const char* gn = g ? OBJ_nid2sn(g & ~TLSEXT_nid_unknown) : nullptr;
      j["group"] = gn ? gn : std::to_string(g);
      int nid = 0;
      if (SSL_get_peer_signature_type_nid(ssl, &nid) == 1) j["serverSignature"] = OBJ_nid2sn(nid);
      if (SSL_get_signature_type_nid(ssl, &nid) == 1) j["clientSignature"] = OBJ_nid2sn(nid);
      sh_.tls_info = j;
    }
    if (sh_.measuring) {
      ++sh_.ok_window;
      sh_.latency_ms.push_back(std::chrono::duration<double, std::milli>(now - begin_).count());
    }
    if (sh_.o.tls_only) {
      beast::error_code ig;
      beast::get_lowest_layer(*ws_).socket().shutdown(tcp::socket::shutdown_both, ig);
      beast::get_lowest_layer(*ws_).close();
      return finish();
    }
    beast::get_lowest_layer(*ws_).expires_after(std::chrono::seconds(10));
    ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](beast::error_code) {
      // Close errors (the gateway ends TLS without close_notify, a reset) do not matter here.
      self->finish();
    });
  }

  void fail(const std::string& stage, beast::error_code ec) {
    ++sh_.errors[stage + ": " + ec.message()];
    finish(true);
  }

  void finish(bool failed = false) {
    ++sh_.finished;
    if (sh_.o.count > 0 && sh_.finished >= sh_.o.count) {
      sh_.done = true;
      return;
    }
    if (!failed) {
      asio::post(sh_.ioc, [self = shared_from_this()] { self->next(); });
      return;
    }
    // Do not loop hot on a refused or failed connection.
    backoff_.expires_after(std::chrono::milliseconds(20));
    backoff_.async_wait([self = shared_from_this()](beast::error_code) { self->next(); });
  }

  Shared& sh_;
  int slot_;
  asio::steady_timer backoff_;
  std::optional<websocket::stream<TlsStream>> ws_;
  websocket::response_type res_;
  steady::time_point begin_;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"bench-handshake-load: full mTLS handshakes + WebSocket upgrades against the gateway"};
  std::string source_ips;
  app.add_option("--host", o.host, "Gateway address")->capture_default_str();
  app.add_option("--port", o.port, "Gateway agent port")->required();
  app.add_option("--plane-type", o.plane_type)->capture_default_str();
  app.add_option("--plane-id", o.plane_id, "Plane ID (required unless --tls-only)");
  app.add_option("--cert", o.certs, "Agent certificate chain (repeat; used round-robin)")->required();
  app.add_option("--key", o.keys, "Agent key (repeat, same order as --cert)")->required();
  app.add_option("--server-ca", o.server_ca, "Verify the gateway's certificate with this CA (default: not verified)");
  app.add_option("--concurrency", o.concurrency, "Concurrent clients")->capture_default_str();
  app.add_option("--count", o.count, "Run exactly this many handshakes (measured from first to last)");
  app.add_option("--warmup", o.warmup, "Seconds before the measured window (with --duration)")->capture_default_str();
  app.add_option("--duration", o.duration, "Measured window in seconds");
  app.add_option("--gateway-pid", o.gateway_pid, "Gateway process whose CPU time is measured");
  app.add_flag("--tls-only", o.tls_only, "Count and close after the TLS handshake (no WebSocket upgrade)");
  app.add_option("--source-ip", source_ips, "Comma-separated local addresses (client i uses address i mod n)");
  CLI11_PARSE(app, argc, argv);
  if (o.certs.size() != o.keys.size()) {
    std::cerr << "bench-handshake-load: --cert and --key must come in pairs\n";
    return 2;
  }
  if ((o.count > 0) == (o.duration > 0)) {
    std::cerr << "bench-handshake-load: give exactly one of --count and --duration\n";
    return 2;
  }
  std::stringstream ss(source_ips);
  for (std::string one; std::getline(ss, one, ',');) o.source_ips.push_back(asio::ip::make_address(one));

  std::vector<std::unique_ptr<asio::ssl::context>> ctxs;
  try {
    for (size_t i = 0; i < o.certs.size(); ++i) {
      auto c = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
      SSL_CTX_set_min_proto_version(c->native_handle(), TLS1_2_VERSION);
      // No client-side session cache: every connection is a full handshake.
      SSL_CTX_set_session_cache_mode(c->native_handle(), SSL_SESS_CACHE_OFF);
      c->use_certificate_chain_file(o.certs[i]);
      c->use_private_key_file(o.keys[i], asio::ssl::context::pem);
      if (o.server_ca.empty()) {
        c->set_verify_mode(asio::ssl::verify_none);
      } else {
        c->load_verify_file(o.server_ca);
        c->set_verify_mode(asio::ssl::verify_peer);
      }
      ctxs.push_back(std::move(c));
    }
  } catch (const std::exception& e) {
    std::cerr << "bench-handshake-load: TLS setup: " << e.what() << "\n";
    return 1;
  }

  asio::io_context ioc(1);
  Shared sh(o, ioc, ctxs, tcp::endpoint(asio::ip::make_address(o.host), static_cast<uint16_t>(o.port)));
  double cpu0 = 0, cpu1 = 0, self0 = 0, self1 = 0;
  steady::time_point w0, w1;
  long ok0 = 0;

  asio::steady_timer phase(ioc);
  if (o.count > 0) {
    sh.measuring = true;
    w0 = steady::now();
    cpu0 = process_cpu_seconds(o.gateway_pid);
    self0 = self_cpu_seconds();
  } else {
    phase.expires_after(std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.warmup)));
    phase.async_wait([&](beast::error_code) {
      sh.measuring = true;
      w0 = steady::now();
      ok0 = sh.ok_total;
      cpu0 = process_cpu_seconds(o.gateway_pid);
      self0 = self_cpu_seconds();
      phase.expires_after(std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.duration)));
      phase.async_wait([&](beast::error_code) {
        w1 = steady::now();
        cpu1 = process_cpu_seconds(o.gateway_pid);
        self1 = self_cpu_seconds();
        sh.measuring = false;
        sh.done = true;
        ioc.stop();  // connections in flight are abandoned (the process exits)
      });
    });
  }
  std::vector<std::shared_ptr<Client>> clients;
  for (int i = 0; i < o.concurrency; ++i) clients.push_back(std::make_shared<Client>(sh, i));
  for (auto& c : clients) c->next();
  // A hard bound: never run for more than 10 minutes.
  asio::steady_timer guard(ioc);
  guard.expires_after(std::chrono::minutes(10));
  guard.async_wait([&](beast::error_code ec) {
    if (!ec) {
      sh.errors["bench: gave up after 10 minutes"]++;
      ioc.stop();
    }
  });
  if (o.count > 0) {
    // Poll for completion (handlers run on this one thread).
    asio::steady_timer poll(ioc);
    std::function<void()> check = [&] {
      if (sh.done) {
        w1 = steady::now();
        cpu1 = process_cpu_seconds(o.gateway_pid);
        self1 = self_cpu_seconds();
        ioc.stop();
        return;
      }
      poll.expires_after(std::chrono::milliseconds(1));
      poll.async_wait([&](beast::error_code) { check(); });
    };
    check();
    ioc.run();
  } else {
    ioc.run();
  }
  if (w1 == steady::time_point{}) {
    w1 = steady::now();
    cpu1 = process_cpu_seconds(o.gateway_pid);
    self1 = self_cpu_seconds();
  }

  const double window = std::chrono::duration<double>(w1 - w0).count();
  const long ok = o.count > 0 ? sh.ok_total : sh.ok_window;
  const double gw_cpu = cpu1 - cpu0;
  nlohmann::json out;
  out["handshakes"] = ok;
  out["windowSeconds"] = window;
  out["handshakesPerSecond"] = window > 0 ? static_cast<double>(ok) / window : 0;
  out["gatewayCpuSeconds"] = gw_cpu;
  out["gatewayCpuUtilization"] = window > 0 ? gw_cpu / window : 0;
  out["handshakesPerGatewayCpuSecond"] = gw_cpu > 0 ? static_cast<double>(ok) / gw_cpu : 0;
  out["loaderCpuSeconds"] = self1 - self0;
  out["concurrency"] = o.concurrency;
  out["certificates"] = o.certs.size();
  out["sessionsResumed"] = sh.reused;
  out["latencyMs"] = {{"p50", pct(sh.latency_ms, 50)}, {"p99", pct(sh.latency_ms, 99)}};
  out["tls"] = sh.tls_info;
  long nerr = 0;
  nlohmann::json errs = nlohmann::json::object();
  for (const auto& [k, v] : sh.errors) {
    errs[k] = v;
    nerr += v;
  }
  out["errors"] = nerr;
  out["errorKinds"] = errs;
  (void)ok0;
  std::cout << out.dump() << std::endl;
  return ok > 0 ? 0 : 1;
}
