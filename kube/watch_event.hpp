// Decoding of the Kubernetes API server's list answers and watch-stream lines, separated from the
// informer's I/O (kube/informer.cpp) so it can be tested and fuzzed. Pure: no I/O, no
// logging, and it never throws whatever the server sends.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace cg::kube {

// One line of a watch stream ({"type":…,"object":…}).
// NOLINTNEXTLINE(bugprone-exception-escape): the check sees throws inside nlohmann::json's noexcept moves
struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR or whatever the server sent
  nlohmann::json object;  // the event's object: an object whenever `error` is empty and `gone` false
  std::string resource_version;  // object.metadata.resourceVersion when it is a string, else empty
  bool gone = false;  // an ERROR event with code 410 (Gone): relist
  std::string error;  // non-empty: the watch must end (unreadable line, ERROR event, no object)
};
WatchEvent decode_watch_event(std::string_view line);

// A LIST answer ({"metadata":{"resourceVersion":…,"continue":…},"items":[…]}); "items": null is an
// empty list.
struct ListAnswer {
  std::vector<nlohmann::json> items;  // as sent (the caller fills in apiVersion and kind)
  std::string resource_version;  // metadata.resourceVersion when it is a string, else empty
  std::string continue_token;  // metadata.continue when it is a string: more pages follow
  std::string error;  // non-empty: the answer is unreadable
};
ListAnswer decode_list_answer(std::string_view body);

// obj.metadata.<field> when it is a string, else empty.
std::string meta_string(const nlohmann::json& obj, const char* field);

}  // namespace cg::kube
