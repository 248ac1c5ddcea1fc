#include "kube/watch_event.hpp"

#include <catch2/catch.hpp>

using namespace cg::kube;

TEST_CASE("watch event: ADDED, MODIFIED, DELETED and BOOKMARK carry their object and resourceVersion") {
  for (std::string type : {"ADDED", "MODIFIED", "DELETED", "BOOKMARK"}) {
    auto ev = decode_watch_event(R"({"type":")" + type +
                                 R"(","object":{"kind":"DataPlane","metadata":{"name":"dp","resourceVersion":"42"}}})");
    CHECK(ev.error.empty());
    CHECK_FALSE(ev.gone);
    CHECK(ev.type == type);
    CHECK(ev.object["metadata"]["name"] == "dp");
    CHECK(ev.resource_version == "42");
  }
}

TEST_CASE("watch event: an unknown type with an object is decoded and the informer ignores it") {
  auto ev = decode_watch_event(R"({"type":"SYNC","object":{"metadata":{"resourceVersion":7}}})");
  CHECK(ev.error.empty());
  CHECK(ev.type == "SYNC");
  CHECK(ev.resource_version.empty());  // not a string
  auto none = decode_watch_event(R"({"object":{}})");
  CHECK(none.error.empty());
  CHECK(none.type.empty());
}

TEST_CASE("watch event: ERROR 410 means Gone, other ERRORs end the watch with the Status message") {
  auto gone = decode_watch_event(
      R"({"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"too old resource version","code":410}})");
  CHECK(gone.gone);
  CHECK(gone.error.empty());

  auto e500 = decode_watch_event(R"({"type":"ERROR","object":{"kind":"Status","message":"internal error","code":500}})");
  CHECK_FALSE(e500.gone);
  CHECK(e500.error == "watch ERROR event: internal error");

  // Without a string message: the whole object; without an object: the whole event.
  auto nomsg = decode_watch_event(R"({"type":"ERROR","object":{"code":"410","message":null}})");
  CHECK_FALSE(nomsg.gone);
  CHECK(nomsg.error == R"(watch ERROR event: {"code":"410","message":null})");
  auto noobj = decode_watch_event(R"({"type":"ERROR","object":[1]})");
  CHECK(noobj.error == R"(watch ERROR event: {"object":[1],"type":"ERROR"})");
}

TEST_CASE("watch event: unreadable lines and events without an object end the watch, never throw") {
  CHECK(decode_watch_event("{\"type\":").error.rfind("unreadable watch event: ", 0) == 0);
  CHECK(decode_watch_event("").error.rfind("unreadable watch event: ", 0) == 0);
  CHECK(decode_watch_event(R"({"type":"ADDED"})").error == "watch event without an object");
  CHECK(decode_watch_event(R"({"type":"MODIFIED","object":"x"})").error == "watch event without an object");
  // These used to throw out of the watch callback (json::value on a non-object or a non-string).
  CHECK(decode_watch_event(R"([{"type":"ADDED"}])").error == "watch event is not a JSON object");
  CHECK(decode_watch_event("42").error == "watch event is not a JSON object");
  CHECK(decode_watch_event(R"({"type":5,"object":{}})").error == "watch event type is not a string");
  CHECK(decode_watch_event(R"({"type":"ERROR","object":{"message":5,"code":500}})").error ==
        R"(watch ERROR event: {"code":500,"message":5})");
}

TEST_CASE("list answer: items, resourceVersion, null items, and unreadable answers") {
  auto ok = decode_list_answer(
      R"({"kind":"DataPlaneList","metadata":{"resourceVersion":"100"},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]})");
  CHECK(ok.error.empty());
  CHECK(ok.resource_version == "100");
  REQUIRE(ok.items.size() == 2);
  CHECK(ok.items[1]["metadata"]["name"] == "b");

  auto null_items = decode_list_answer(R"({"metadata":{"resourceVersion":"5"},"items":null})");
  CHECK(null_items.error.empty());
  CHECK(null_items.items.empty());
  CHECK(null_items.resource_version == "5");

  CHECK(decode_list_answer(R"({"metadata":{"resourceVersion":"5"}})").error == "no items");
  CHECK(decode_list_answer(R"({"items":{}})").error == "no items");
  CHECK(decode_list_answer(R"([1,2])").error == "no items");
  auto bad = decode_list_answer("<html>502</html>");
  CHECK_FALSE(bad.error.empty());
  CHECK(bad.items.empty());
}

TEST_CASE("list answer: a page's continue token") {
  auto page = decode_list_answer(
      R"({"metadata":{"resourceVersion":"7","continue":"eyJ2Ijoi","remainingItemCount":3},"items":[{"metadata":{"name":"a"}}]})");
  CHECK(page.error.empty());
  CHECK(page.continue_token == "eyJ2Ijoi");
  CHECK(page.resource_version == "7");
  CHECK(decode_list_answer(R"({"metadata":{"resourceVersion":"7"},"items":[]})").continue_token.empty());
  CHECK(decode_list_answer(R"({"metadata":{"continue":""},"items":[]})").continue_token.empty());
  CHECK(decode_list_answer(R"({"metadata":{"continue":5},"items":[]})").continue_token.empty());
}

TEST_CASE("meta_string reads metadata string fields only") {
  nlohmann::json o = {{"metadata", {{"name", "n"}, {"generation", 3}}}};
  CHECK(meta_string(o, "name") == "n");
  CHECK(meta_string(o, "generation").empty());
  CHECK(meta_string(o, "namespace").empty());
  CHECK(meta_string(nlohmann::json::array(), "name").empty());
  CHECK(meta_string(nlohmann::json{{"metadata", "x"}}, "name").empty());
}
