// The command line as upstream's Go gateway reads it: Go's flag syntax and value parsers (expected
// values below were produced by Go 1.19's flag, strconv, time and fmt packages on the same inputs),
// upstream's environment rules, and the gateway's own flag table (gateway/cli.cpp).
#include <catch2/catch.hpp>

#include <map>
#include <sstream>

#include "gateway/config.hpp"
#include "gateway/go_flag.hpp"

using namespace cg;
using namespace cg::goflag;
using namespace std::chrono_literals;

namespace {

const char* err_name(NumError e) { return e == NumError::none ? "ok" : e == NumError::syntax ? "syntax" : "range"; }

}  // namespace

TEST_CASE("parse_int is strconv.ParseInt(s, 0, 64)", "[cli]") {
  struct Row {
    const char* in;
    const char* err;
    int64_t v;
  };
  const Row rows[] = {
      {"0", "ok", 0},
      {"8443", "ok", 8443},
      {"-1", "ok", -1},
      {"+5", "ok", 5},
      {"010", "ok", 8},
      {"0x1F", "ok", 31},
      {"0X1f", "ok", 31},
      {"0o17", "ok", 15},
      {"0O17", "ok", 15},
      {"0b101", "ok", 5},
      {"0x", "syntax", 0},
      {"0b", "syntax", 0},
      {"0o", "syntax", 0},
      {"08", "syntax", 0},
      {"09", "syntax", 0},
      {"1_000", "ok", 1000},
      {"0x_1F", "ok", 31},
      {"1__0", "syntax", 0},
      {"_1", "syntax", 0},
      {"1_", "syntax", 0},
      {"-0x10", "ok", -16},
      {"9223372036854775807", "ok", INT64_MAX},
      {"9223372036854775808", "range", INT64_MAX},
      {"-9223372036854775808", "ok", INT64_MIN},
      {"-9223372036854775809", "range", INT64_MIN},
      {"99999999999999999999", "range", INT64_MAX},
      {"99999999999999999999x", "range", INT64_MAX},
      {"", "syntax", 0},
      {" 1", "syntax", 0},
      {"1 ", "syntax", 0},
      {"1.0", "syntax", 0},
      {"1e3", "syntax", 0},
      {"abc", "syntax", 0},
      {"+", "syntax", 0},
      {"-", "syntax", 0},
      {"0_7", "ok", 7},
      {"00", "ok", 0},
      {"0x1g", "syntax", 0},
  };
  for (const auto& r : rows) {
    INFO(r.in);
    int64_t v = -42;
    CHECK(std::string(err_name(parse_int(r.in, v))) == r.err);
    CHECK(v == r.v);
  }
}

TEST_CASE("parse_uint is strconv.ParseUint(s, 0, 64)", "[cli]") {
  struct Row {
    const char* in;
    const char* err;
    uint64_t v;
  };
  const Row rows[] = {{"0", "ok", 0},
                      {"5", "ok", 5},
                      {"-1", "syntax", 0},
                      {"18446744073709551615", "ok", UINT64_MAX},
                      {"18446744073709551616", "range", UINT64_MAX},
                      {"0x10", "ok", 16},
                      {"1_0", "ok", 10},
                      {"+1", "syntax", 0}};
  for (const auto& r : rows) {
    INFO(r.in);
    uint64_t v = 42;
    CHECK(std::string(err_name(parse_uint(r.in, v))) == r.err);
    CHECK(v == r.v);
  }
}

TEST_CASE("parse_bool is strconv.ParseBool", "[cli]") {
  const std::map<std::string, std::optional<bool>> rows = {{"1", true},
                                                           {"t", true},
                                                           {"T", true},
                                                           {"TRUE", true},
                                                           {"true", true},
                                                           {"True", true},
                                                           {"0", false},
                                                           {"f", false},
                                                           {"F", false},
                                                           {"FALSE", false},
                                                           {"false", false},
                                                           {"False", false},
                                                           {"yes", std::nullopt},
                                                           {"tRUE", std::nullopt},
                                                           {"", std::nullopt},
                                                           {"on", std::nullopt},
                                                           {" true", std::nullopt}};
  for (const auto& [in, want] : rows) {
    INFO(in);
    CHECK(parse_bool(in) == want);
  }
}

TEST_CASE("parse_float is strconv.ParseFloat(s, 64)", "[cli]") {
  struct Row {
    const char* in;
    const char* err;
    double v;
  };
  const Row rows[] = {{"20", "ok", 20},
                      {"0.5", "ok", 0.5},
                      {".5", "ok", 0.5},
                      {"5.", "ok", 5},
                      {"1e3", "ok", 1000},
                      {"1E-2", "ok", 0.01},
                      {"1_000.5", "ok", 1000.5},
                      {"1__0", "syntax", 0},
                      {"inf", "ok", HUGE_VAL},
                      {"+Inf", "ok", HUGE_VAL},
                      {"-infinity", "ok", -HUGE_VAL},
                      {"infin", "syntax", 0},
                      {"+nan", "syntax", 0},
                      {"0x1p-2", "ok", 0.25},
                      {"0x1", "syntax", 0},
                      {"0x1.8p1", "ok", 3},
                      {"1e", "syntax", 0},
                      {"1e+", "syntax", 0},
                      {"abc", "syntax", 0},
                      {"", "syntax", 0},
                      {"1e400", "range", HUGE_VAL},
                      {"-1e400", "range", -HUGE_VAL},
                      {"1e-400", "ok", 0},
                      {".", "syntax", 0},
                      {"1.2.3", "syntax", 0},
                      {"0x_1p0", "ok", 1}};
  for (const auto& r : rows) {
    INFO(r.in);
    double v = -42;
    CHECK(std::string(err_name(parse_float(r.in, v))) == r.err);
    if (std::string(r.err) != "syntax") CHECK(v == r.v);
  }
  double v = 0;
  CHECK(parse_float("nan", v) == NumError::none);
  CHECK(std::isnan(v));
  CHECK(parse_float("NaN", v) == NumError::none);
}

TEST_CASE("parse_duration is time.ParseDuration, negative values included", "[cli]") {
  struct Row {
    const char* in;
    std::optional<int64_t> ns;
  };
  const Row rows[] = {{"0", 0},
                      {"-0", 0},
                      {"+0", 0},
                      {"30s", 30000000000},
                      {"1m30s", 90000000000},
                      {"1.5h", 5400000000000},
                      {"-5s", -5000000000},
                      {"+5s", 5000000000},
                      {"500ms", 500000000},
                      {"1us", 1000},
                      {"1\xC2\xB5s", 1000},
                      {"1\xCE\xBCs", 1000},
                      {"1ns", 1},
                      {"5", std::nullopt},
                      {"", std::nullopt},
                      {"-", std::nullopt},
                      {"s", std::nullopt},
                      {".s", std::nullopt},
                      {"1.s", 1000000000},
                      {".5s", 500000000},
                      {"1h-5m", std::nullopt},
                      {"1d", std::nullopt},
                      {"2h45m", 9900000000000},
                      {"9223372036854775807ns", INT64_MAX},
                      {"9223372036854775808ns", std::nullopt},
                      {"-9223372036854775808ns", INT64_MIN},
                      {"2562047h47m16.854775807s", INT64_MAX},
                      {"2562048h", std::nullopt},
                      {"1.0000000000000000000001s", 1000000000},
                      {"3m0.5s", 180500000000},
                      {"1e3s", std::nullopt},
                      {"1 s", std::nullopt},
                      {" 1s", std::nullopt},
                      {"0.0000000001s", 0},
                      {"00s", 0}};
  for (const auto& r : rows) {
    INFO(r.in);
    auto d = parse_duration(r.in);
    REQUIRE(d.has_value() == r.ns.has_value());
    if (d) CHECK(d->count() == *r.ns);
  }
}

TEST_CASE("format_duration is time.Duration.String", "[cli]") {
  const std::pair<int64_t, const char*> rows[] = {{0, "0s"},
                                                  {1, "1ns"},
                                                  {999, "999ns"},
                                                  {1000, "1\xC2\xB5s"},
                                                  {1500, "1.5\xC2\xB5s"},
                                                  {1000000, "1ms"},
                                                  {1500000, "1.5ms"},
                                                  {999999999, "999.999999ms"},
                                                  {1000000000, "1s"},
                                                  {1500000000, "1.5s"},
                                                  {60000000000, "1m0s"},
                                                  {90000000000, "1m30s"},
                                                  {120000000000, "2m0s"},
                                                  {3600000000000, "1h0m0s"},
                                                  {3661000000000, "1h1m1s"},
                                                  {100000000000000, "27h46m40s"},
                                                  {-30000000000, "-30s"},
                                                  {30500000000, "30.5s"}};
  for (const auto& [ns, want] : rows) {
    INFO(ns);
    CHECK(format_duration(Duration(ns)) == want);
  }
}

TEST_CASE("quote is strconv.Quote", "[cli]") {
  const std::pair<std::string, std::string> rows[] = {{"abc", R"("abc")"},   {"a\"b", R"("a\"b")"},
                                                      {"a\\b", R"("a\\b")"}, {"tab\there", R"("tab\there")"},
                                                      {"nl\n", R"("nl\n")"}, {std::string(1, '\0'), R"("\x00")"},
                                                      {"\x7f", R"("\x7f")"}, {"\xC3\xA9", "\"\xC3\xA9\""},
                                                      {"\xff", R"("\xff")"}, {"\xc3", R"("\xc3")"}};
  for (const auto& [in, want] : rows) CHECK(quote(in) == want);
}

TEST_CASE("env_int is upstream's GetEnvInt (fmt.Sscanf %d)", "[cli]") {
  const std::pair<std::string, std::optional<int64_t>> rows[] = {{"8443", 8443},
                                                                 {"abc", std::nullopt},
                                                                 {"8443abc", 8443},
                                                                 {" 8443", 8443},
                                                                 {"\t8443", 8443},
                                                                 {"+8443", 8443},
                                                                 {"-1", -1},
                                                                 {"08443", 8443},
                                                                 {"0x10", 0},
                                                                 {"\n8443", std::nullopt},
                                                                 {"\r\n8443", std::nullopt},
                                                                 {"\r8443", 8443},
                                                                 {"  ", std::nullopt},
                                                                 {"-", std::nullopt},
                                                                 {"+", std::nullopt},
                                                                 {"99999999999999999999", std::nullopt},
                                                                 {"9223372036854775807", INT64_MAX},
                                                                 {"-9223372036854775808", INT64_MIN},
                                                                 {"1_000", 1},
                                                                 {"1.5", 1},
                                                                 {"\xC2\xA0"
                                                                  "8443",
                                                                  8443},
                                                                 {"\xE2\x80\x83"
                                                                  "8443",
                                                                  8443},
                                                                 {"\xff"
                                                                  "8443",
                                                                  std::nullopt},
                                                                 {"8 443", 8},
                                                                 {"\v8443", 8443}};
  for (const auto& [in, want] : rows) {
    INFO(quote(in));
    CHECK(env_int(in) == want);
  }
}

TEST_CASE("env_bool is upstream's GetEnvBool: only `true` and `1` are true", "[cli]") {
  CHECK(env_bool("true"));
  CHECK(env_bool("1"));
  for (const char* v : {"TRUE", "True", "t", "yes", "on", "false", "0", " true", "true "}) {
    INFO(v);
    CHECK_FALSE(env_bool(v));
  }
}

namespace {

// A small flag set like the Go program that produced the expectations (port int, b bool, s string
// "def", d duration, u uint64); each row: args, then Go's outcome and values.
struct Probe {
  int64_t port = 0;
  bool b = false;
  std::string s = "def";
  Duration d{};
  uint64_t u = 0;
  std::vector<Flag> flags() {
    return {{"port", "", "0", std::function<void(int64_t)>([this](int64_t v) { port = v; })},
            {"b", "", "false", std::function<void(bool)>([this](bool v) { b = v; })},
            {"s", "", "def", std::function<void(const std::string&)>([this](const std::string& v) { s = v; })},
            {"d", "", "0s", std::function<void(Duration)>([this](Duration v) { d = v; })},
            {"u", "", "0", std::function<void(uint64_t)>([this](uint64_t v) { u = v; })}};
  }
};

}  // namespace

TEST_CASE("parse follows Go's flag syntax", "[cli]") {
  struct Row {
    std::vector<std::string> args;
    std::string outcome;  // ok | help | the error message
    int64_t port = 0;
    bool b = false;
    std::string s = "def";
    int64_t d = 0;
    std::vector<std::string> rest = {};
  };
  const std::vector<Row> rows = {
      {{"-port=1"}, "ok", 1},
      {{"--port=1"}, "ok", 1},
      {{"-port", "1"}, "ok", 1},
      {{"--port", "1"}, "ok", 1},
      {{"-port=1", "-port=2"}, "ok", 2},  // the last wins
      {{"-b"}, "ok", 0, true},
      {{"--b"}, "ok", 0, true},
      {{"-b=false"}, "ok", 0, false},
      {{"-b", "false", "-port=3"}, "ok", 0, true, "def", 0, {"false", "-port=3"}},  // never `-b false`
      {{"-b=TRUE"}, "ok", 0, true},
      {{"-b=yes"}, "invalid boolean value \"yes\" for -b: parse error"},
      {{"-b=0"}, "ok", 0, false},
      {{"--", "-port=3"}, "ok", 0, false, "def", 0, {"-port=3"}},
      {{"-", "-port=3"}, "ok", 0, false, "def", 0, {"-", "-port=3"}},
      {{"pos", "-port=3"}, "ok", 0, false, "def", 0, {"pos", "-port=3"}},
      {{"---port=3"}, "bad flag syntax: ---port=3"},
      {{"-=3"}, "bad flag syntax: -=3"},
      {{"--=3"}, "bad flag syntax: --=3"},
      {{"-nope"}, "flag provided but not defined: -nope"},
      {{"--nope=1"}, "flag provided but not defined: -nope"},
      {{"-h"}, "help"},
      {{"-help"}, "help"},
      {{"--help"}, "help"},
      {{"--help=false"}, "help"},
      {{"-port"}, "flag needs an argument: -port"},
      {{"-port=abc"}, "invalid value \"abc\" for flag -port: parse error"},
      {{"-port=99999999999999999999"}, "invalid value \"99999999999999999999\" for flag -port: value out of range"},
      {{"-s="}, "ok", 0, false, ""},
      {{"-s", "-port=5"}, "ok", 0, false, "-port=5"},
      {{"-d=10"}, "invalid value \"10\" for flag -d: parse error"},
      {{"-d=-5s"}, "ok", 0, false, "def", -5000000000},
      {{"-port", "--", "-port=9"}, "invalid value \"--\" for flag -port: parse error"},
      {{"-b=", "x"}, "invalid boolean value \"\" for -b: parse error"},
      {{"-s=a=b"}, "ok", 0, false, "a=b"},
      {{"-port=1", "--", "x"}, "ok", 1, false, "def", 0, {"x"}},
      {{"-u=-1"}, "invalid value \"-1\" for flag -u: parse error"},
  };
  for (const auto& r : rows) {
    std::string joined;
    for (const auto& a : r.args) joined += a + " ";
    INFO(joined);
    Probe p;
    Result res = parse(p.flags(), r.args);
    const std::string outcome = res.outcome == Outcome::ok ? "ok" : res.outcome == Outcome::help ? "help" : res.error;
    CHECK(outcome == r.outcome);
    if (res.outcome != Outcome::ok) continue;
    CHECK(p.port == r.port);
    CHECK(p.b == r.b);
    CHECK(p.s == r.s);
    CHECK(p.d.count() == r.d);
    CHECK(res.args == r.rest);
  }
}

TEST_CASE("parse lists the flags given, in order, and refuses a flag defined twice", "[cli]") {
  Probe p;
  auto res = parse(p.flags(), {"-port=1", "--b", "-port", "2"});
  CHECK(res.set == std::vector<std::string>{"port", "b", "port"});
  auto flags = p.flags();
  flags.push_back(flags[0]);
  CHECK_THROWS_AS(parse(flags, {}), std::logic_error);
}

TEST_CASE("usage is Go's PrintDefaults", "[cli]") {
  // Produced by Go 1.19 for the same flag set (prog -h).
  auto noop = [](auto) {};
  std::vector<Flag> flags = {
      {"port", "Port to use (env PORT)", "8443", std::function<void(int64_t)>(noop)},
      {"zero", "Zero int", "0", std::function<void(int64_t)>(noop)},
      {"b", "Bool b", "true", std::function<void(bool)>(noop)},
      {"x", "Short bool", "false", std::function<void(bool)>(noop)},
      {"verbose", "Long bool", "false", std::function<void(bool)>(noop)},
      {"s", "Path", "/certs/tls.crt", std::function<void(const std::string&)>([](const std::string&) {})},
      {"empty", "Empty string with a `file` name", "", std::function<void(const std::string&)>([](const std::string&) {})},
      {"d", "Duration\nsecond line", "30s", std::function<void(Duration)>(noop)},
      {"d0", "Zero duration", "0s", std::function<void(Duration)>(noop)},
      {"u", "Uint", "64", std::function<void(uint64_t)>(noop)},
      {"f", "Float", "20", std::function<void(double)>(noop)},
      {"f2", "Float 2", "0.5", std::function<void(double)>(noop)},
  };
  const std::string want =
      "Usage of prog:\n"
      "  -b\tBool b (default true)\n"
      "  -d duration\n    \tDuration\n    \tsecond line (default 30s)\n"
      "  -d0 duration\n    \tZero duration\n"
      "  -empty file\n    \tEmpty string with a file name\n"
      "  -f float\n    \tFloat (default 20)\n"
      "  -f2 float\n    \tFloat 2 (default 0.5)\n"
      "  -port int\n    \tPort to use (env PORT) (default 8443)\n"
      "  -s string\n    \tPath (default \"/certs/tls.crt\")\n"
      "  -u uint\n    \tUint (default 64)\n"
      "  -verbose\n    \tLong bool\n"
      "  -x\tShort bool\n"
      "  -zero int\n    \tZero int\n";
  CHECK(usage(flags, "prog") == want);
}

// ---- the gateway's own table ---------------------------------------------------------------------

namespace {

struct Run {
  gateway::Config cfg;
  gateway::CliResult res;
  std::string out, err;
};

Run run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  Run r;
  std::ostringstream out, err;
  r.res = gateway::parse_cli(
      args,
      [&env](const char* name) -> std::optional<std::string> {
        auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
      },
      r.cfg, out, err, "cluster-gateway");
  r.out = out.str();
  r.err = err.str();
  return r;
}

// Flags every run below needs to be valid without a Kubernetes API or an internal CA.
std::vector<std::string> base(std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"--planes-dir=/tmp/p", "--internal-mtls=false"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

bool has_warning(const gateway::CliResult& r, const std::string& part) {
  for (const auto& w : r.warnings)
    if (w.find(part) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("without flags or environment the configuration is Config's defaults", "[cli]") {
  auto r = run({"--internal-mtls=false"});
  REQUIRE(r.res.action == gateway::CliAction::run);
  const gateway::Config d;
  CHECK(r.cfg.port == d.port);
  CHECK(r.cfg.port == 8443);
  CHECK(r.cfg.internal_port == 8444);
  CHECK(r.cfg.health_port == 8080);
  CHECK(r.cfg.heartbeat_interval == 30s);
  CHECK(r.cfg.heartbeat_timeout == 90s);
  CHECK(r.cfg.idle_timeout == 120s);
  CHECK(r.cfg.agent_auth_mode == gateway::AgentAuthMode::mtls);
  CHECK(r.cfg.agent_auth_forwarded_header == "X-Forwarded-Client-Cert");
  CHECK(r.cfg.write_status);
  CHECK(r.cfg.log_level == log::Level::info);
  CHECK(r.cfg.max_concurrent_handshakes == 0);
  CHECK(r.res.warnings.empty());
  CHECK(r.err.empty());
}

TEST_CASE("upstream's Helm chart arguments (PR #4340) are accepted as they are rendered", "[cli]") {
  auto r = run({"--port=8443", "--internal-port=8444", "--server-cert=/certs/tls.crt", "--server-key=/certs/tls.key",
                "--heartbeat-interval=30s", "--heartbeat-timeout=90s", "--internal-mtls=true",
                "--internal-client-ca-cert=/internal-ca/ca.crt", "--agent-auth-mode=forwarded-header",
                "--agent-auth-forwarded-header=X-Amzn-Mtls-Clientcert", "--log-level=info"});
  REQUIRE(r.res.action == gateway::CliAction::run);
  CHECK(r.cfg.internal_mtls);
  CHECK(r.cfg.internal_client_ca == "/internal-ca/ca.crt");
  CHECK(r.cfg.agent_auth_mode == gateway::AgentAuthMode::forwarded_header);
  CHECK(r.cfg.agent_auth_forwarded_header == "X-Amzn-Mtls-Clientcert");
  auto m = run(base({"--agent-auth-mode=mtls"}));
  REQUIRE(m.res.action == gateway::CliAction::run);
  CHECK(m.cfg.agent_auth_mode == gateway::AgentAuthMode::mtls);
}

TEST_CASE("every syntax form reaches the gateway's flags and the last occurrence wins", "[cli]") {
  const std::vector<std::vector<std::string>> forms = {
      {"-port=9000"},   {"--port=9000"}, {"-port", "9000"}, {"--port", "9000"}, {"--port=1", "-port=9000"},
      {"-port=0x2328"}, {"-port=021450"}};
  for (const auto& f : forms) {
    INFO(f[0]);
    auto r = run(base(f));
    REQUIRE(r.res.action == gateway::CliAction::run);
    CHECK(r.cfg.port == 9000);
  }
  auto b = run(base({"-write-status", "--write-status=0", "-write-status=T"}));
  CHECK(b.cfg.write_status);
  auto f = run(base({"--write-status=false"}));
  CHECK_FALSE(f.cfg.write_status);
  auto d = run(base({"-shutdown-timeout", "1m30s", "-heartbeat-interval=1.5s"}));
  CHECK(d.cfg.shutdown_timeout == 90s);
  CHECK(d.cfg.heartbeat_interval == 1500ms);
  auto q = run(base({"-kube-api-qps=0.5", "-max-agent-sessions=0x10"}));
  CHECK(q.cfg.kube_api_qps == 0.5);
  CHECK(q.cfg.max_sessions == 16);
}

TEST_CASE("a bool flag never takes the next argument: `-internal-mtls false` ends the flags", "[cli]") {
  auto r = run({"--planes-dir=/tmp/p", "--internal-mtls=false", "-skip-client-cert-verify", "false", "--port=1"});
  REQUIRE(r.res.action == gateway::CliAction::run);
  CHECK(r.cfg.skip_client_cert_verify);
  CHECK(r.cfg.port == 8443);  // after "false": not a flag any more
  CHECK(has_warning(r.res, "arguments after the flags are ignored"));
  CHECK(has_warning(r.res, "\"false\" \"--port=1\""));
}

TEST_CASE("help flags (-h, -help, --help) print Go's usage on stderr and exit 0", "[cli]") {
  for (const char* h : {"-h", "-help", "--help", "--help=false"}) {
    INFO(h);
    auto r = run({"--port=1", h, "--no-such-flag"});
    CHECK(r.res.action == gateway::CliAction::exit_ok);
    CHECK(r.res.exit_code() == 0);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("Usage of cluster-gateway:\n", 0) == 0);
    CHECK(r.err.find("  -port int\n    \tPublic server port") != std::string::npos);
    CHECK(r.err.find("(env AGENT_SERVER_PORT) (default 8443)\n") != std::string::npos);
    CHECK(r.err.find("  -internal-mtls\n") != std::string::npos);
    CHECK(r.err.find("(env INTERNAL_MTLS_ENABLED) (default true)\n") != std::string::npos);
    CHECK(r.err.find("  -heartbeat-interval duration\n") != std::string::npos);
    CHECK(r.err.find("  -agent-auth-mode string\n") != std::string::npos);
    CHECK(r.err.find("(env AGENT_AUTH_MODE) (default \"mtls\")\n") != std::string::npos);
    CHECK(r.err.find("(default \"X-Forwarded-Client-Cert\")") != std::string::npos);
    CHECK(r.err.find("  -write-status\n") != std::string::npos);
  }
}

TEST_CASE("the usage shows each default as Config holds it", "[cli]") {
  auto r = run({"-h"});
  const gateway::Config d;
  CHECK(r.err.find("Drop an agent when no pong arrives within this time (> 0) (default " + format_duration(d.heartbeat_timeout) +
                   ")") != std::string::npos);
  CHECK(r.err.find("(default " + std::to_string(d.max_sessions) + ")") != std::string::npos);
  CHECK(r.err.find("(0: 64 per io thread) (env MAX_CONCURRENT_HANDSHAKES)\n") != std::string::npos);  // 0: no default shown
  CHECK(r.err.find("(default \"" + d.server_cert + "\")") != std::string::npos);
}

TEST_CASE("a usage error prints Go's message then the usage, and exits 2", "[cli]") {
  struct Row {
    std::vector<std::string> args;
    std::string first_line;
  };
  const Row rows[] = {
      {{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
      {{"-port=abc"}, "invalid value \"abc\" for flag -port: parse error"},
      {{"--heartbeat-timeout", "10"}, "invalid value \"10\" for flag -heartbeat-timeout: parse error"},
      {{"--internal-mtls=yes"}, "invalid boolean value \"yes\" for -internal-mtls: parse error"},
      {{"--port"}, "flag needs an argument: -port"},
      {{"---port=1"}, "bad flag syntax: ---port=1"},
      {{"--max-agent-sessions=-1"}, "invalid value \"-1\" for flag -max-agent-sessions: parse error"},
  };
  for (const auto& r : rows) {
    INFO(r.first_line);
    auto res = run(base(r.args));
    CHECK(res.res.action == gateway::CliAction::exit_usage);
    CHECK(res.res.exit_code() == 2);
    CHECK(res.err.rfind(r.first_line + "\nUsage of cluster-gateway:\n", 0) == 0);
  }
}

TEST_CASE("a value out of range exits 2 with one line naming the flag", "[cli]") {
  struct Row {
    std::vector<std::string> args;
    std::string line;
  };
  const Row rows[] = {
      {{"--port=70000"}, "cluster-gateway: --port: 70000 is not a port number (0 to 65535)\n"},
      {{"--internal-port=-1"}, "cluster-gateway: --internal-port: -1 is not a port number (0 to 65535)\n"},
      {{"--heartbeat-interval=0s"}, "cluster-gateway: --heartbeat-interval must be greater than 0 (got 0s)\n"},
      {{"--shutdown-timeout", "-5s"}, "cluster-gateway: --shutdown-timeout must not be negative (got -5s)\n"},
      {{"--log-format=xml"}, "cluster-gateway: --log-format: \"xml\" is not one of json, text\n"},
      {{"--agent-auth-mode=MTLS"},
       "cluster-gateway: --agent-auth-mode: invalid agent auth mode \"MTLS\": must be \"mtls\" or \"forwarded-header\"\n"},
      {{"--agent-auth-forwarded-header=X Bad"},
       "cluster-gateway: --agent-auth-forwarded-header: \"X Bad\" is not an HTTP header name\n"},
      {{"--agent-auth-trusted-proxies=10.0.0.0/33"},
       "cluster-gateway: --agent-auth-trusted-proxies: '10.0.0.0/33': prefix length must be 0 to 32\n"},
      {{"--agent-auth-mode=forwarded-header", "--agent-auth-trusted-proxies="},
       "cluster-gateway: --agent-auth-trusted-proxies is empty: with --agent-auth-mode=forwarded-header every agent "
       "would be refused\n"},
      {{"--max-message-size=10"}, "cluster-gateway: --max-message-size must be at least 1024\n"},
      {{"--max-agents-per-plane=0"}, "cluster-gateway: --max-agents-per-plane must be at least 1\n"},
      {{"--kube-api-qps=nan"}, "cluster-gateway: --kube-api-qps must be a number of at least 0\n"},
      {{"--kube-api-burst=0"}, "cluster-gateway: --kube-api-burst must be at least 1\n"},
      {{"--io-threads=-1"}, "cluster-gateway: --io-threads must be 0 to 1024\n"},
  };
  for (const auto& r : rows) {
    INFO(r.line);
    auto res = run(base(r.args));
    CHECK(res.res.exit_code() == 2);
    CHECK(res.err == r.line);
  }
  auto ca = run({"--planes-dir=/tmp/p"});
  CHECK(ca.res.exit_code() == 2);
  CHECK(ca.err.find("--internal-client-ca-cert is required") != std::string::npos);
  auto sd = run({"--internal-mtls=false", "--status-dir=/tmp/s"});
  CHECK(sd.err.find("--status-dir goes with --planes-dir") != std::string::npos);
}

TEST_CASE("environment variables follow upstream's rules and a flag overrides them", "[cli]") {
  struct Row {
    std::map<std::string, std::string> env;
    std::function<bool(const gateway::Config&)> check;
    std::string warning;  // part of a warning expected ("" for none)
  };
  const std::vector<Row> rows = {
      {{{"AGENT_SERVER_PORT", "9000"}}, [](auto& c) { return c.port == 9000; }, ""},
      {{{"AGENT_SERVER_PORT", "abc"}}, [](auto& c) { return c.port == 8443; }, "AGENT_SERVER_PORT=\"abc\" is not a number"},
      {{{"AGENT_SERVER_PORT", "9000abc"}}, [](auto& c) { return c.port == 9000; }, "is read as 9000"},
      {{{"AGENT_SERVER_PORT", " 9000"}}, [](auto& c) { return c.port == 9000; }, "is read as 9000"},
      {{{"AGENT_SERVER_PORT", "0x10"}}, [](auto& c) { return c.port == 0; }, "is read as 0"},
      {{{"AGENT_SERVER_PORT", ""}}, [](auto& c) { return c.port == 8443; }, ""},
      {{{"AGENT_INTERNAL_PORT", "9001"}}, [](auto& c) { return c.internal_port == 9001; }, ""},
      {{{"INTERNAL_MTLS_ENABLED", "yes"}}, [](auto& c) { return !c.internal_mtls; }, "is read as false"},
      {{{"INTERNAL_MTLS_ENABLED", "TRUE"}}, [](auto& c) { return !c.internal_mtls; }, "is read as false"},
      {{{"INTERNAL_MTLS_ENABLED", "0"}}, [](auto& c) { return !c.internal_mtls; }, ""},
      {{{"SKIP_CLIENT_CERT_VERIFY", "1"}}, [](auto& c) { return c.skip_client_cert_verify; }, "deprecated"},
      {{{"SERVER_CERT_PATH", "/x.crt"}, {"SERVER_KEY_PATH", "/x.key"}},
       [](auto& c) { return c.server_cert == "/x.crt" && c.server_key == "/x.key"; },
       ""},
      {{{"LOG_LEVEL", "debug"}}, [](auto& c) { return c.log_level == log::Level::debug; }, ""},
      {{{"LOG_LEVEL", "DEBUG"}}, [](auto& c) { return c.log_level == log::Level::info; }, "--log-level \"DEBUG\""},
      {{{"LOG_LEVEL", "warning"}}, [](auto& c) { return c.log_level == log::Level::info; }, "info is used (as upstream)"},
      {{{"AGENT_AUTH_MODE", "forwarded-header"}, {"AGENT_AUTH_FORWARDED_HEADER", "X-Amzn-Mtls-Clientcert"}},
       [](auto& c) {
         return c.agent_auth_mode == gateway::AgentAuthMode::forwarded_header &&
                c.agent_auth_forwarded_header == "X-Amzn-Mtls-Clientcert";
       },
       ""},
      {{{"AGENT_AUTH_TRUSTED_PROXIES", "192.0.2.0/24"}},
       [](auto& c) { return c.agent_auth_trusted_proxies == "192.0.2.0/24"; },
       ""},
      {{{"MAX_AGENT_SESSIONS", "5"}}, [](auto& c) { return c.max_sessions == 5; }, ""},
      {{{"MAX_AGENT_SESSIONS", "lots"}}, [](auto& c) { return c.max_sessions == 100000; }, "MAX_AGENT_SESSIONS=\"lots\""},
      {{{"MAX_CONCURRENT_HANDSHAKES", "-3"}}, [](auto& c) { return c.max_concurrent_handshakes == 0; }, "at least 0"},
  };
  for (const auto& r : rows) {
    INFO(r.env.begin()->first + "=" + r.env.begin()->second);
    auto res = run({"--planes-dir=/tmp/p", "--internal-client-ca-cert=/ca.crt"}, r.env);
    REQUIRE(res.res.action == gateway::CliAction::run);
    CHECK(r.check(res.cfg));
    if (r.warning.empty()) CHECK(res.res.warnings.empty());
    else CHECK(has_warning(res.res, r.warning));
  }
  // The command line wins over the environment, and then nothing is said about the variable.
  auto o = run(base({"--port=7000", "--log-level=error"}), {{"AGENT_SERVER_PORT", "abc"}, {"LOG_LEVEL", "error"}});
  CHECK(o.cfg.port == 7000);
  CHECK(o.cfg.log_level == log::Level::error);
  CHECK(o.res.warnings.empty());
  auto m =
      run({"--planes-dir=/tmp/p", "--internal-mtls"}, {{"INTERNAL_MTLS_ENABLED", "false"}, {"INTERNAL_CLIENT_CA_PATH", "/ca"}});
  CHECK(m.cfg.internal_mtls);
  CHECK(m.cfg.internal_client_ca == "/ca");
  // An env value that a flag's own check refuses is refused like the flag.
  auto p = run(base(), {{"AGENT_SERVER_PORT", "70000"}});
  CHECK(p.res.exit_code() == 2);
  CHECK(p.err == "cluster-gateway: --port: 70000 is not a port number (0 to 65535)\n");
  auto a = run(base(), {{"AGENT_AUTH_MODE", "bogus"}});
  CHECK(a.res.exit_code() == 2);
}

TEST_CASE("an empty --agent-auth-mode or header means upstream's defaults", "[cli]") {
  auto r = run(base({"--agent-auth-mode=", "--agent-auth-forwarded-header="}));
  REQUIRE(r.res.action == gateway::CliAction::run);
  CHECK(r.cfg.agent_auth_mode == gateway::AgentAuthMode::mtls);
  CHECK(r.cfg.agent_auth_forwarded_header == "X-Forwarded-Client-Cert");
}

TEST_CASE("the version flag prints the version on stdout and exits 0", "[cli]") {
  for (const char* v : {"-version", "--version", "--version=true"}) {
    auto r = run({v});
    CHECK(r.res.exit_code() == 0);
    CHECK(r.res.action == gateway::CliAction::exit_ok);
    CHECK(r.out == std::string("cluster-gateway ") + CG_VERSION + "\n");
  }
  auto f = run(base({"--version=false"}));
  CHECK(f.res.action == gateway::CliAction::run);
}

TEST_CASE("effective values: io threads and the handshake admission limit come from one place", "[cli]") {
  gateway::Config c;
  c.io_threads = 3;
  CHECK(gateway::effective_io_threads(c) == 3);
  CHECK(gateway::effective_max_concurrent_handshakes(c) == 3 * gateway::kHandshakesPerIoThread);
  c.max_concurrent_handshakes = 7;
  CHECK(gateway::effective_max_concurrent_handshakes(c) == 7);
  c.io_threads = 0;
  CHECK(gateway::effective_io_threads(c) >= 1);
}
