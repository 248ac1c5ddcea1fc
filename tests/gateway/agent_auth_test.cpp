// --agent-auth-mode=forwarded-header's pure parts (gateway/agent_auth.*): the header value as
// upstream's parseForwardedCertChain reads it (rows mirror upstream's agent_auth_test.go), the
// trusted proxy ranges, and that a forwarded chain verifies per CR exactly as the same chain from a
// TLS handshake does (tls::verify_all on the same PeerChain).
#include <catch2/catch.hpp>

#include <openssl/x509.h>

#include "gateway/agent_auth.hpp"
#include "tests/support/pki.hpp"
#include "tls/ca_store.hpp"
#include "tls/verifier.hpp"

using namespace cg;
using namespace cg::gateway;
namespace t = cg::testing;

namespace {

// Go's url.PathEscape (what upstream's tests use to build an ALB value).
std::string path_escape(const std::string& s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    const bool keep = std::isalnum(c) || std::string_view("-_.~$&+,:;=@").find(static_cast<char>(c)) != std::string_view::npos;
    if (keep) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// Every byte but letters and digits escaped (some proxies escape '+', '/' and '=' too).
std::string escape_all(const std::string& s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string xfcc(const std::string& leaf_pem, const std::string& chain_pem = "") {
  std::string el = "Hash=0123abcd;Cert=\"" + path_escape(leaf_pem) + "\"";
  if (!chain_pem.empty()) el += ";Chain=\"" + path_escape(chain_pem) + "\"";
  return el + ";Subject=\"CN=Test Client\"";
}

// The certificates of a parsed chain, as PEM, leaf first.
std::vector<std::string> certs_of(const ForwardedChain& fc) {
  REQUIRE(fc.error.empty());
  tls::PeerChain pc = tls::PeerChain::from_pem(fc.pem);
  std::vector<std::string> out;
  auto pem = [](X509* x) {
    t::Cert c(std::shared_ptr<X509>(X509_dup(x), X509_free), nullptr);
    return c.cert_pem();
  };
  if (pc.leaf()) out.push_back(pem(pc.leaf()));
  for (X509* x : pc.intermediates()) out.push_back(pem(x));
  return out;
}

struct Pki {
  t::Cert ca = t::make_ca("forwarded-ca");
  t::Cert leaf = t::make_signed(
      [] {
        t::CertSpec s;
        s.cn = "agent";
        return s;
      }(),
      ca);
  t::Cert other = t::make_signed(
      [] {
        t::CertSpec s;
        s.cn = "agent-2";
        return s;
      }(),
      ca);
};

}  // namespace

TEST_CASE("forwarded header: AWS ALB's URL-encoded PEM, with and without intermediates", "[agent_auth]") {
  Pki p;
  CHECK(certs_of(parse_forwarded_cert_chain(path_escape(p.leaf.cert_pem()))) == std::vector{p.leaf.cert_pem()});
  CHECK(certs_of(parse_forwarded_cert_chain(escape_all(p.leaf.cert_pem()))) == std::vector{p.leaf.cert_pem()});
  CHECK(certs_of(parse_forwarded_cert_chain(path_escape(p.leaf.cert_pem() + p.ca.cert_pem()))) ==
        std::vector{p.leaf.cert_pem(), p.ca.cert_pem()});
  // Already-decoded PEM passes through (PathUnescape leaves it; '+' is never a space).
  CHECK(certs_of(parse_forwarded_cert_chain(p.leaf.cert_pem())) == std::vector{p.leaf.cert_pem()});
  // An invalid %-escape: the value is taken as it is, and text after the block is ignored.
  CHECK(certs_of(parse_forwarded_cert_chain(p.leaf.cert_pem() + "%zz")) == std::vector{p.leaf.cert_pem()});
  // Other PEM blocks are skipped.
  CHECK(certs_of(parse_forwarded_cert_chain(path_escape(p.leaf.cert_pem() + p.leaf.key_pem()))) ==
        std::vector{p.leaf.cert_pem()});
}

TEST_CASE("forwarded header: Envoy's XFCC", "[agent_auth]") {
  Pki p;
  SECTION("Cert element") {
    CHECK(certs_of(parse_forwarded_cert_chain(xfcc(p.leaf.cert_pem()))) == std::vector{p.leaf.cert_pem()});
  }
  SECTION("Chain is preferred over Cert") {
    CHECK(certs_of(parse_forwarded_cert_chain(xfcc(p.leaf.cert_pem(), p.other.cert_pem() + p.ca.cert_pem()))) ==
          std::vector{p.other.cert_pem(), p.ca.cert_pem()});
  }
  SECTION("several hops: the first (client-facing) element") {
    CHECK(certs_of(parse_forwarded_cert_chain(xfcc(p.leaf.cert_pem()) + "," + xfcc(p.other.cert_pem()))) ==
          std::vector{p.leaf.cert_pem()});
  }
  SECTION("a quoted comma before Cert does not end the element") {
    CHECK(certs_of(parse_forwarded_cert_chain("Subject=\"CN=Test, OU=Eng\";" + xfcc(p.leaf.cert_pem()))) ==
          std::vector{p.leaf.cert_pem()});
  }
  SECTION("a quoted ;Cert= inside Subject cannot inject a certificate") {
    CHECK(certs_of(parse_forwarded_cert_chain(xfcc(p.leaf.cert_pem()) + ";Subject=\"CN=evil;Cert=bogus\"")) ==
          std::vector{p.leaf.cert_pem()});
  }
  SECTION("an escaped quote inside a quoted value keeps it quoted") {
    CHECK(certs_of(parse_forwarded_cert_chain("Subject=\"CN=\\\"a, b\\\", OU=Eng\";" + xfcc(p.leaf.cert_pem()))) ==
          std::vector{p.leaf.cert_pem()});
  }
  SECTION("pairs without '=' are ignored; keys are case-insensitive") {
    CHECK(certs_of(parse_forwarded_cert_chain("malformed;" + xfcc(p.leaf.cert_pem()))) == std::vector{p.leaf.cert_pem()});
    CHECK(certs_of(parse_forwarded_cert_chain(" cErT = \"" + path_escape(p.leaf.cert_pem()) + "\"")) ==
          std::vector{p.leaf.cert_pem()});
  }
}

TEST_CASE("forwarded header: malformed values are refused with a reason", "[agent_auth]") {
  Pki p;
  struct Row {
    std::string value;
    std::string error;
  };
  std::string der_garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  const Row rows[] = {
      {"-----BEGIN CERTIFICATE-----\nnot-base64\n-----END CERTIFICATE-----", "no certificates found in PEM data"},
      {"Hash=abc;Subject=\"CN=x\"", "XFCC header has no Cert or Chain element"},
      {"Cert=\"\"", "XFCC header has no Cert or Chain element"},
      {"Cert=\"garbage\"", "no certificates found in PEM data"},
      {path_escape(der_garbage), "failed to parse certificate"},
      {path_escape(p.leaf.key_pem()), "no certificates found in PEM data"},
      {"-----BEGIN CERTIFICATE-----", "no certificates found in PEM data"},
  };
  for (const auto& r : rows) {
    INFO(r.value);
    auto fc = parse_forwarded_cert_chain(r.value);
    CHECK(fc.pem.empty());
    CHECK(fc.error.find(r.error) != std::string::npos);
  }
  // A certificate block that does not parse spoils the whole value, even after a good one.
  auto fc = parse_forwarded_cert_chain(path_escape(p.leaf.cert_pem() + der_garbage));
  CHECK(fc.pem.empty());
  CHECK(fc.error.find("failed to parse certificate") != std::string::npos);
}

TEST_CASE("path_unescape is url.PathUnescape", "[agent_auth]") {
  CHECK(path_unescape("a%20b+c%2Fd") == "a b+c/d");
  CHECK(path_unescape("%41%4a%4A") == "AJJ");
  CHECK(path_unescape("") == "");
  CHECK_FALSE(path_unescape("%"));
  CHECK_FALSE(path_unescape("%4"));
  CHECK_FALSE(path_unescape("abc%zz"));
  CHECK_FALSE(path_unescape("%g0"));
}

TEST_CASE("trusted proxy ranges", "[agent_auth]") {
  std::string err;
  auto r = parse_ip_ranges(" 10.0.0.0/8, 192.168.1.5 ,fc00::/7,::1, 172.16.5.9/12 ,", err);
  REQUIRE(r);
  CHECK(r->size() == 5);
  struct Row {
    const char* addr;
    bool in;
  };
  const Row rows[] = {{"10.1.2.3", true},
                      {"11.0.0.1", false},
                      {"192.168.1.5", true},
                      {"192.168.1.6", false},
                      {"fd12::1", true},
                      {"fe80::1", false},
                      {"::1", true},
                      {"::2", false},
                      {"::ffff:10.9.9.9", true},
                      {"::ffff:8.8.8.8", false},
                      {"172.31.255.255", true},
                      {"172.32.0.0", false},
                      {"not an address", false},
                      {"", false}};
  for (const auto& row : rows) {
    INFO(row.addr);
    CHECK(ip_in_ranges(*r, row.addr) == row.in);
  }
  auto all = parse_ip_ranges("0.0.0.0/0,::/0", err);
  REQUIRE(all);
  CHECK(ip_in_ranges(*all, "203.0.113.7"));
  CHECK(ip_in_ranges(*all, "2001:db8::1"));
  auto none = parse_ip_ranges("", err);
  REQUIRE(none);
  CHECK(none->empty());
  CHECK_FALSE(ip_in_ranges(*none, "127.0.0.1"));
  for (const char* bad :
       {"10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/x", "host.example", "10.0.0.0/08", "::ffff:10.0.0.0/104"}) {
    INFO(bad);
    CHECK_FALSE(parse_ip_ranges(bad, err));
    CHECK(err.find(bad) != std::string::npos);
  }
  // The default of --agent-auth-trusted-proxies: loopback, private and shared ranges.
  auto def = parse_ip_ranges("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,127.0.0.0/8,::1/128,fc00::/7", err);
  REQUIRE(def);
  for (const char* a : {"127.0.0.1", "10.244.1.7", "100.64.3.4", "fd00::5"}) CHECK(ip_in_ranges(*def, a));
  for (const char* a : {"8.8.8.8", "100.128.0.1", "2001:db8::1"}) CHECK_FALSE(ip_in_ranges(*def, a));
}

TEST_CASE("agent auth modes by name, as upstream", "[agent_auth]") {
  CHECK(parse_agent_auth_mode("mtls") == AgentAuthMode::mtls);
  CHECK(parse_agent_auth_mode("") == AgentAuthMode::mtls);
  CHECK(parse_agent_auth_mode("forwarded-header") == AgentAuthMode::forwarded_header);
  CHECK_FALSE(parse_agent_auth_mode("MTLS"));
  CHECK_FALSE(parse_agent_auth_mode("forwarded_header"));
  CHECK(std::string(to_string(AgentAuthMode::forwarded_header)) == "forwarded-header");
}

TEST_CASE("a forwarded chain is verified per CR exactly as the handshake's", "[agent_auth]") {
  Pki p;
  t::Cert stranger_ca = t::make_ca("stranger");
  auto store = [](const t::Cert& ca) {
    std::string error;
    auto s = tls::CaStore::from_bundle(ca.cert_pem(), error);
    REQUIRE(s);
    return s;
  };
  std::vector<tls::Anchor> anchors = {{"ns/good", store(p.ca), ""}, {"ns/other", store(stranger_ca), ""}};
  tls::PeerChain direct = tls::PeerChain::from_pem(p.leaf.cert_pem());
  tls::PeerChain forwarded = tls::PeerChain::from_pem(parse_forwarded_cert_chain(path_escape(p.leaf.cert_pem())).pem);
  auto a = tls::verify_all(direct, anchors);
  auto b = tls::verify_all(forwarded, anchors);
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(a[i].key == b[i].key);
    CHECK(a[i].ok == b[i].ok);
    CHECK(a[i].reason == b[i].reason);
  }
  CHECK(b[0].ok);
  CHECK_FALSE(b[1].ok);
}
