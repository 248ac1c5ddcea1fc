#include "kube/watch_event.hpp"
#include "common/json_text.hpp"

#include <stdexcept>

namespace cg::kube {
using json = nlohmann::json;

std::string meta_string(const json& obj, const char* field) {
  if (!obj.is_object()) return {};
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->is_object()) return {};
  auto f = m->find(field);
  return f != m->end() && f->is_string() ? f->get<std::string>() : std::string();
}

WatchEvent decode_watch_event(std::string_view line) {
  WatchEvent out;
  json ev;
  try {
    ev = json::parse(line);
  } catch (const std::exception& e) {
    out.error = std::string("unreadable watch event: ") + e.what();
    return out;
  }
  if (!ev.is_object()) {
    out.error = "watch event is not a JSON object";
    return out;
  }
  if (auto t = ev.find("type"); t != ev.end() && !t->is_null()) {
    if (!t->is_string()) {
      out.error = "watch event type is not a string";
      return out;
    }
    out.type = t->get<std::string>();
  }
  auto o = ev.find("object");
  if (out.type == "ERROR") {
    // A Status object: 410 Gone means the resourceVersion is too old (relist); anything else ends the watch.
    const json none;
    const json& obj = o != ev.end() ? *o : none;
    auto code = obj.is_object() ? obj.find("code") : obj.end();
    if (obj.is_object() && code != obj.end() && code->is_number_integer() && code->get<int64_t>() == 410) {
      out.gone = true;
      return out;
    }
    std::string message;
    if (!obj.is_object()) message = to_json_text(ev);
    else if (auto m = obj.find("message"); m != obj.end() && m->is_string()) message = m->get<std::string>();
    else message = to_json_text(obj);
    out.error = "watch ERROR event: " + message;
    return out;
  }
  if (o != ev.end()) out.object = std::move(*o);
  const json& obj = out.object;
  if (!obj.is_object()) {
    out.error = "watch event without an object";
    return out;
  }
  out.resource_version = meta_string(obj, "resourceVersion");
  return out;
}

ListAnswer decode_list_answer(std::string_view body) {
  ListAnswer out;
  try {
    json j = json::parse(body);
    std::string rv = meta_string(j, "resourceVersion");
    auto it = j.is_object() ? j.find("items") : j.end();
    if (j.is_object() && it != j.end() && it->is_array()) {
      out.items.reserve(it->size());
      for (auto& item : *it) out.items.push_back(std::move(item));
    } else if (!(j.is_object() && it != j.end() && it->is_null())) {
      throw std::runtime_error("no items");
    }
    out.resource_version = std::move(rv);
    out.continue_token = meta_string(j, "continue");
  } catch (const std::exception& e) {
    out.items.clear();
    out.error = e.what();
  }
  return out;
}

}  // namespace cg::kube
