// CaStore: loading a CR's clientCA bundle (upstream §3.3 / §3.2 step 5): PEM or base64-encoded PEM,
// every CERTIFICATE block is an anchor, other blocks and unparsable certificates are skipped.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <string>

#include "tests/support/pki.hpp"
#include "tls/ca_store.hpp"
#include "tls/verifier.hpp"

using Catch::Matchers::Contains;
using cg::testing::CertSpec;
using cg::testing::KeyType;
using cg::testing::make_ca;
using cg::testing::make_signed;
using cg::tls::Anchor;
using cg::tls::CaStore;
using cg::tls::PeerChain;

namespace {

std::shared_ptr<const CaStore> load_ok(const std::string& bundle) {
  std::string err;
  auto st = CaStore::from_bundle(bundle, err);
  INFO("error: " << err);
  REQUIRE(st != nullptr);
  return st;
}

std::string load_err(const std::string& bundle) {
  std::string err;
  auto st = CaStore::from_bundle(bundle, err);
  CHECK(st == nullptr);
  CHECK_FALSE(err.empty());
  return err;
}

cg::testing::Cert client_leaf(const cg::testing::Cert& ca) {
  CertSpec s;
  s.cn = "agent";
  return make_signed(s, ca);
}

bool is_lower_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

TEST_CASE("a single PEM certificate loads as one anchor", "[tls][ca_store]") {
  auto ca = make_ca("single-ca");
  auto st = load_ok(ca.cert_pem());
  CHECK(st->cert_count() == 1);
  CHECK(st->skipped_blocks() == 0);
  REQUIRE(st->subjects().size() == 1);
  CHECK_THAT(st->subjects()[0], Contains("CN=single-ca"));
  CHECK(st->store() != nullptr);
  CHECK(st->fingerprint().size() == 64);
  CHECK(is_lower_hex(st->fingerprint()));
}

TEST_CASE("every CERTIFICATE block in the bundle becomes an anchor", "[tls][ca_store]") {
  auto a = make_ca("ca-a");
  auto b = make_ca("ca-b", KeyType::rsa2048);
  auto st = load_ok(a.cert_pem() + "\n" + b.cert_pem());
  CHECK(st->cert_count() == 2);
  REQUIRE(st->subjects().size() == 2);
  CHECK_THAT(st->subjects()[0], Contains("ca-a"));
  CHECK_THAT(st->subjects()[1], Contains("ca-b"));

  // Leaves of either CA verify against the combined store.
  Anchor anchor{"ns/a", st, {}};
  CHECK(cg::tls::verify_one(PeerChain::from_pem(client_leaf(a).cert_pem()), anchor).ok);
  CHECK(cg::tls::verify_one(PeerChain::from_pem(client_leaf(b).cert_pem()), anchor).ok);
}

TEST_CASE("junk blocks in the bundle are skipped and the good certificates still load", "[tls][ca_store]") {
  auto good1 = make_ca("good-1");
  auto good2 = make_ca("good-2");
  const std::string private_key = good1.key_pem();
  REQUIRE_THAT(private_key, Contains("PRIVATE KEY"));
  const std::string broken_b64 = "-----BEGIN CERTIFICATE-----\n!!!this is *not* base64@@@\n-----END CERTIFICATE-----\n";
  // Valid base64 whose bytes are not a DER certificate.
  const std::string not_der =
      "-----BEGIN CERTIFICATE-----\n" + cg::testing::base64("definitely not DER") + "\n-----END CERTIFICATE-----\n";

  std::string bundle = "# comment line from an operator\nsome garbage text\n" + private_key + good1.cert_pem() +
                       "more garbage between blocks\n" + broken_b64 + not_der + good2.cert_pem() + "trailing junk";
  auto st = load_ok(bundle);
  CHECK(st->cert_count() == 2);
  CHECK(st->skipped_blocks() > 0);
  CHECK(st->skipped_blocks() == 3);  // PRIVATE KEY, broken base64, not DER
  REQUIRE(st->subjects().size() == 2);
  CHECK_THAT(st->subjects()[0], Contains("good-1"));
  CHECK_THAT(st->subjects()[1], Contains("good-2"));

  // The fingerprint covers the anchors only: the junk does not change it.
  CHECK(st->fingerprint() == load_ok(good1.cert_pem() + good2.cert_pem())->fingerprint());

  // And the store works.
  CHECK(cg::tls::verify_one(PeerChain::from_pem(client_leaf(good2).cert_pem()), Anchor{"k", st, {}}).ok);
}

TEST_CASE("a truncated certificate block is skipped", "[tls][ca_store]") {
  auto good = make_ca("good");
  auto victim = make_ca("victim").cert_pem();
  // Cut the body in half but keep the armour.
  auto body_start = victim.find('\n') + 1;
  auto end = victim.find("-----END");
  std::string truncated =
      victim.substr(0, body_start) + victim.substr(body_start, (end - body_start) / 2) + "\n" + victim.substr(end);
  auto st = load_ok(truncated + good.cert_pem());
  CHECK(st->cert_count() == 1);
  CHECK(st->skipped_blocks() == 1);
  REQUIRE(st->subjects().size() == 1);
  CHECK_THAT(st->subjects()[0], Contains("CN=good"));
}

TEST_CASE("an unterminated final block does not lose the certificates before it", "[tls][ca_store]") {
  auto good = make_ca("good");
  auto st = load_ok(good.cert_pem() + "-----BEGIN CERTIFICATE-----\nMIIB");
  CHECK(st->cert_count() == 1);
  CHECK(st->skipped_blocks() >= 1);
}

TEST_CASE("base64-encoded PEM bundles (as the CRD text describes) load like PEM", "[tls][ca_store]") {
  auto a = make_ca("b64-a");
  auto b = make_ca("b64-b");
  const std::string pem = a.cert_pem() + b.cert_pem();
  auto from_pem = load_ok(pem);

  SECTION("single line") {
    auto st = load_ok(cg::testing::base64(pem));
    CHECK(st->cert_count() == 2);
    CHECK(st->fingerprint() == from_pem->fingerprint());
  }
  SECTION("wrapped at 76 columns with a trailing newline") {
    std::string enc = cg::testing::base64(pem);
    std::string wrapped;
    for (size_t i = 0; i < enc.size(); i += 76) wrapped += enc.substr(i, 76) + "\n";
    auto st = load_ok(wrapped);
    CHECK(st->cert_count() == 2);
    CHECK(st->fingerprint() == from_pem->fingerprint());
  }
  SECTION("the decoded store verifies leaves") {
    auto st = load_ok(cg::testing::base64(pem));
    CHECK(cg::tls::verify_one(PeerChain::from_pem(client_leaf(b).cert_pem()), Anchor{"k", st, {}}).ok);
  }
}

TEST_CASE("CRLF line endings are accepted", "[tls][ca_store]") {
  auto a = make_ca("crlf");
  auto st = load_ok(replace_all(a.cert_pem(), "\n", "\r\n"));
  CHECK(st->cert_count() == 1);
  CHECK(st->fingerprint() == load_ok(a.cert_pem())->fingerprint());
}

TEST_CASE("bundles without a usable certificate are refused with an error", "[tls][ca_store]") {
  auto ca = make_ca("unused");
  SECTION("empty") { load_err(""); }
  SECTION("whitespace only") { load_err("  \n\t \n"); }
  SECTION("garbage text") { load_err("this is not a certificate bundle"); }
  SECTION("base64 of something that is not PEM") { load_err(cg::testing::base64("hello world, no PEM here")); }
  SECTION("only a private key") {
    auto err = load_err(ca.key_pem());
    CHECK_THAT(err, Contains("no usable certificate"));
  }
  SECTION("only broken certificate blocks") {
    auto err = load_err("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
    CHECK_THAT(err, Contains("no usable certificate"));
  }
  SECTION("base64 of a junk-only PEM") {
    auto err = load_err(cg::testing::base64(ca.key_pem()));
    CHECK_THAT(err, Contains("no usable certificate"));
  }
}

TEST_CASE("fingerprint identifies the bundle's certificates", "[tls][ca_store]") {
  auto a = make_ca("fp-a");
  auto b = make_ca("fp-b");
  auto fa1 = load_ok(a.cert_pem())->fingerprint();
  auto fa2 = load_ok(a.cert_pem())->fingerprint();
  auto fb = load_ok(b.cert_pem())->fingerprint();
  auto fab = load_ok(a.cert_pem() + b.cert_pem())->fingerprint();
  CHECK(fa1 == fa2);
  CHECK(fa1 != fb);
  CHECK(fa1 != fab);
  CHECK(fb != fab);
  // Formatting differences that do not change the certificates do not change the fingerprint.
  CHECK(load_ok("\n\n" + a.cert_pem() + "\n\n")->fingerprint() == fa1);
  CHECK(load_ok(cg::testing::base64(a.cert_pem()))->fingerprint() == fa1);
  // A renewed certificate with the same subject is a different bundle.
  CHECK(load_ok(make_ca("fp-a").cert_pem())->fingerprint() != fa1);
}

TEST_CASE("x509 helpers", "[tls][ca_store]") {
  auto ca = make_ca("helper-ca");
  CertSpec s;
  s.cn = "helper-agent";
  s.org = "OpenChoreo";
  s.not_after = std::chrono::hours(48);
  auto leaf = make_signed(s, ca);
  CHECK_THAT(cg::tls::x509_subject(leaf.x509()), Contains("CN=helper-agent"));
  CHECK_THAT(cg::tls::x509_subject(leaf.x509()), Contains("O=OpenChoreo"));
  CHECK_THAT(cg::tls::x509_issuer(leaf.x509()), Contains("CN=helper-ca"));
  CHECK(cg::tls::x509_subject(nullptr).empty());
  auto sha = cg::tls::x509_sha256(leaf.x509());
  CHECK(sha.size() == 64);
  CHECK(is_lower_hex(sha));
  CHECK(sha != cg::tls::x509_sha256(ca.x509()));
  auto left = cg::tls::x509_not_after(leaf.x509()) - std::chrono::system_clock::now();
  CHECK(left > std::chrono::hours(47));
  CHECK(left <= std::chrono::hours(49));
}
