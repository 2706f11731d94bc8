#include "cudl/engine/io/json.hpp"

#include <set>
#include <vector>

#include "cudl/engine/error.hpp"

namespace cudl::io {

std::string json_reason(const std::exception& e) {
  std::string text = e.what();
  if (text.starts_with("[json.exception.")) {
    const auto close = text.find("] ");
    if (close != std::string::npos) text.erase(0, close + 2);
  }
  if (text.starts_with("parse error at ")) text.erase(0, 6);  // "error at line 1, column 3: ..."
  return text;
}

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  using json = nlohmann::json;
  // The keys seen in each open object, innermost last: a repeated key is an error, not "last wins".
  std::vector<std::set<std::string>> keys;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        CUDL_CHECK(depth < kMaxJsonDepth, "{}: values nested more than {} deep; not a file cudl writes or reads", what,
                   kMaxJsonDepth);
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          CUDL_CHECK(keys.back().insert(key).second, "{}: the key {} appears twice in one object", what,
                     json_excerpt(json(key)));
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    CUDL_THROW("{}: not valid JSON ({})", what, json_reason(e));
  }
}

std::string json_excerpt(const nlohmann::json& value, std::size_t limit) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

}  // namespace cudl::io
