#include "session/frames.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <algorithm>
#include <limits>
#include <vector>

namespace cg::session {
namespace {
namespace bj = boost::json;

constexpr size_t kMaxDepth = 64;
constexpr size_t kMaxKnownKey = 32;  // longer keys at the top level or in "error" are never ones we read

enum class Ctx : uint8_t { top, headers, header_values, error_obj, skip };
enum class TopKey : uint8_t { other, request_id, status_code, headers, body, data, is_close, stream, stream_id, error };
enum class Root : uint8_t { none, object, other };

TopKey top_key_of(std::string_view k) {
  if (k == "requestID") return TopKey::request_id;
  if (k == "statusCode") return TopKey::status_code;
  if (k == "headers") return TopKey::headers;
  if (k == "body") return TopKey::body;
  if (k == "data") return TopKey::data;
  if (k == "isClose") return TopKey::is_close;
  if (k == "stream") return TopKey::stream;
  if (k == "streamId") return TopKey::stream_id;
  if (k == "error") return TopKey::error;
  return TopKey::other;
}

// Collects the members the gateway reads; everything else is parsed for syntax only.
class Handler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  explicit Handler(AgentFrame& f) : f_(f) { stack_.reserve(8); }

  Root root = Root::none;
  bool request_id_ok = false;

  bool on_document_begin(bj::error_code&) { return true; }
  bool on_document_end(bj::error_code&) { return true; }

  bool on_object_begin(bj::error_code&) {
    if (stack_.empty()) {
      if (root == Root::none) root = Root::object;
      stack_.push_back(Ctx::top);
      return true;
    }
    switch (stack_.back()) {
      case Ctx::top:
        switch (member_) {
          case TopKey::headers:
            f_.headers = Member::value;
            f_.header_list.clear();
            f_.header_member_not_array = false;
            header_bytes_ = 0;
            stack_.push_back(Ctx::headers);
            return true;
          case TopKey::error:
            f_.error_message.clear();
            stack_.push_back(Ctx::error_obj);
            return true;
          default: scalar_at_top(Kind::container); break;
        }
        break;
      case Ctx::headers: f_.header_member_not_array = true; break;
      default: break;
    }
    stack_.push_back(Ctx::skip);
    return true;
  }
  bool on_object_end(std::size_t, bj::error_code&) { return pop(); }

  bool on_array_begin(bj::error_code&) {
    if (stack_.empty()) {
      if (root == Root::none) root = Root::other;
      stack_.push_back(Ctx::skip);
      return true;
    }
    switch (stack_.back()) {
      case Ctx::top: scalar_at_top(Kind::container); break;
      case Ctx::headers: stack_.push_back(Ctx::header_values); return true;
      default: break;
    }
    stack_.push_back(Ctx::skip);
    return true;
  }
  bool on_array_end(std::size_t, bj::error_code&) { return pop(); }

  bool on_key_part(bj::string_view s, std::size_t, bj::error_code&) { return key_append(s); }
  bool on_key(bj::string_view s, std::size_t, bj::error_code&) {
    key_append(s);
    if (stack_.empty()) return true;
    switch (stack_.back()) {
      case Ctx::top: member_ = key_overflow_ ? TopKey::other : top_key_of(key_); break;
      case Ctx::headers:
        header_name_ = key_overflow_ ? std::string() : std::move(key_);
        header_name_over_ = key_overflow_;
        if (key_overflow_) f_.headers_over_limit = true;
        break;
      case Ctx::error_obj: error_key_is_message_ = !key_overflow_ && key_ == "message"; break;
      default: break;
    }
    key_.clear();
    key_overflow_ = false;
    return true;
  }

  bool on_string_part(bj::string_view s, std::size_t, bj::error_code&) { return string_append(s); }
  bool on_string(bj::string_view s, std::size_t, bj::error_code&) {
    string_append(s);
    if (stack_.empty()) {
      if (root == Root::none) root = Root::other;
    } else if (stack_.back() == Ctx::headers) {
      f_.header_member_not_array = true;
    } else if (stack_.back() == Ctx::header_values) {
      if (!dest_over_) add_header();
      value_.clear();
    } else if (stack_.back() == Ctx::top && member_ == TopKey::request_id) {
      request_id_ok = true;
    } else if (stack_.back() == Ctx::error_obj && error_key_is_message_) {
      f_.error_message = std::move(value_);
      value_.clear();
    }
    string_started_ = false;
    dest_ = nullptr;
    dest_over_ = false;
    return true;
  }

  bool on_number_part(bj::string_view, bj::error_code&) { return true; }
  bool on_int64(int64_t i, bj::string_view, bj::error_code&) { return number(Kind::integer, i); }
  bool on_uint64(uint64_t u, bj::string_view, bj::error_code&) {
    return number(Kind::integer, u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                                     ? std::numeric_limits<int64_t>::max()
                                     : static_cast<int64_t>(u));
  }
  bool on_double(double, bj::string_view, bj::error_code&) { return number(Kind::floating, 0); }
  bool on_bool(bool b, bj::error_code&) {
    if (at_root_scalar() || in_headers_object()) return true;
    if (stack_.back() != Ctx::top) return true;
    if (member_ == TopKey::is_close) f_.is_close = b;
    else if (member_ == TopKey::stream) f_.stream = b;
    else scalar_at_top(Kind::boolean);
    return true;
  }
  bool on_null(bj::error_code&) {
    if (at_root_scalar() || in_headers_object()) return true;
    if (stack_.back() == Ctx::top) scalar_at_top(Kind::null);
    return true;
  }
  bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
  bool on_comment(bj::string_view, bj::error_code&) { return true; }

 private:
  enum class Kind : uint8_t { null, boolean, integer, floating, string, container };

  bool pop() {
    stack_.pop_back();
    return true;
  }

  bool at_root_scalar() {
    if (!stack_.empty()) return false;
    if (root == Root::none) root = Root::other;
    return true;
  }

  // A scalar directly in "headers" (a member that is not an array).
  bool in_headers_object() {
    if (stack_.back() != Ctx::headers) return false;
    f_.header_member_not_array = true;
    return true;
  }

  bool key_append(bj::string_view s) {
    if (key_overflow_) return true;
    const size_t cap = !stack_.empty() && stack_.back() == Ctx::headers ? kMaxAgentHeaderName : kMaxKnownKey;
    if (stack_.empty() || stack_.back() == Ctx::skip || stack_.back() == Ctx::header_values) return true;
    if (key_.size() + s.size() > cap) {
      key_overflow_ = true;
      key_.clear();
      return true;
    }
    key_.append(s.data(), s.size());
    return true;
  }

  // Where the characters of the string being read go (decided at its first part).
  void choose_dest() {
    string_started_ = true;
    dest_ = nullptr;
    dest_cap_ = std::numeric_limits<size_t>::max();
    if (stack_.empty()) return;
    switch (stack_.back()) {
      case Ctx::top:
        switch (member_) {
          case TopKey::request_id:
            f_.request_id.clear();
            dest_ = &f_.request_id;
            break;
          case TopKey::body:
            f_.body = Member::value;
            f_.body_b64.clear();
            dest_ = &f_.body_b64;
            break;
          case TopKey::data:
            f_.data = Member::value;
            f_.data_b64.clear();
            dest_ = &f_.data_b64;
            break;
          default: scalar_at_top(Kind::string); break;
        }
        break;
      case Ctx::header_values:
        value_.clear();
        dest_ = &value_;
        dest_cap_ = kMaxAgentHeaderBytes;
        dest_over_ = header_name_over_;
        break;
      case Ctx::error_obj:
        if (error_key_is_message_) {
          value_.clear();
          dest_ = &value_;
        }
        break;
      default: break;
    }
  }

  bool string_append(bj::string_view s) {
    if (!string_started_) choose_dest();
    if (!dest_ || dest_over_) return true;
    if (dest_->size() + s.size() > dest_cap_) {
      dest_over_ = true;
      f_.headers_over_limit = true;
      dest_->clear();
      return true;
    }
    dest_->append(s.data(), s.size());
    return true;
  }

  void add_header() {
    const size_t add = header_name_.size() + value_.size();
    if (f_.headers_over_limit || f_.header_list.size() >= kMaxAgentHeaderCount || header_bytes_ + add > kMaxAgentHeaderBytes) {
      f_.headers_over_limit = true;
      return;
    }
    header_bytes_ += add;
    f_.header_list.emplace_back(header_name_, std::move(value_));
  }

  bool number(Kind k, int64_t v) {
    if (at_root_scalar() || in_headers_object()) return true;
    if (stack_.back() != Ctx::top) return true;
    if (member_ == TopKey::status_code && k == Kind::integer) {
      f_.status_code = Member::value;
      f_.status_code_value = std::clamp<int64_t>(v, -1, 100000);
      return true;
    }
    if (member_ == TopKey::stream_id) {
      f_.stream_id = k == Kind::integer && v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max()
                         ? static_cast<int>(v)
                         : 0;
      return true;
    }
    scalar_at_top(k);
    return true;
  }

  // A value of kind `k` for the current top-level member (strings for body/data/requestID are
  // handled where they are read; this records everything else, last occurrence wins).
  void scalar_at_top(Kind k) {
    const bool null = k == Kind::null;
    const Member m = null ? Member::null : Member::wrong_type;
    switch (member_) {
      case TopKey::request_id:
        f_.request_id.clear();
        request_id_ok = false;
        break;
      case TopKey::status_code: f_.status_code = m; break;
      case TopKey::headers:
        f_.headers = m;
        f_.header_list.clear();
        break;
      case TopKey::body:
        f_.body = m;
        f_.body_b64.clear();
        break;
      case TopKey::data:
        f_.data = m;
        f_.data_b64.clear();
        break;
      case TopKey::is_close: f_.is_close = false; break;
      case TopKey::stream: f_.stream = false; break;
      case TopKey::stream_id: f_.stream_id = 0; break;
      case TopKey::error: f_.error_message.clear(); break;
      case TopKey::other: break;
    }
  }

  AgentFrame& f_;
  std::vector<Ctx> stack_;
  TopKey member_ = TopKey::other;
  std::string key_;
  bool key_overflow_ = false;
  std::string header_name_;
  bool header_name_over_ = false;
  size_t header_bytes_ = 0;
  bool error_key_is_message_ = false;
  bool string_started_ = false;
  std::string* dest_ = nullptr;
  size_t dest_cap_ = 0;
  bool dest_over_ = false;
  std::string value_;
};

}  // namespace

AgentFrame classify_agent_frame(std::string_view text) {
  AgentFrame f;
  bj::parse_options opts;
  opts.max_depth = kMaxDepth;
  bj::basic_parser<Handler> p(opts, f);
  bj::error_code ec;
  size_t n = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && n != text.size()) ec = bj::error::extra_data;
  if (ec) {
    AgentFrame bad;
    bad.error = ec == bj::error::too_deep ? std::string("JSON nested deeper than 64 levels") : "invalid JSON: " + ec.message();
    return bad;
  }
  if (p.handler().root != Root::object) {
    AgentFrame bad;
    bad.error = "frame is not a JSON object";
    return bad;
  }
  if (!p.handler().request_id_ok || f.request_id.empty()) {
    AgentFrame bad;
    bad.error = "frame has no requestID";
    return bad;
  }
  const bool has_data = f.data == Member::value || f.data == Member::wrong_type;
  f.kind = has_data || f.is_close ? FrameKind::stream_chunk : FrameKind::response;
  return f;
}

}  // namespace cg::session
