#pragma once
// cudl::Error and the macros that raise it. Every message names the failing call or op, the
// shapes involved and the file:line where it was raised, so one line on stderr is enough to act.
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace cudl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown when a device (or the pool over it) has no memory left; a subclass so callers can retry
// at a smaller size (style transfer does) without string matching.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

namespace detail {
std::string with_location(std::string message, const char* file, int line);
std::string_view short_file(const char* file);
}  // namespace detail

}  // namespace cudl

#define CUDL_THROW(...) \
  throw ::cudl::Error(::cudl::detail::with_location(::fmt::format(__VA_ARGS__), __FILE__, __LINE__))

#define CUDL_CHECK(cond, ...)  \
  do {                         \
    if (!(cond)) [[unlikely]]  \
      CUDL_THROW(__VA_ARGS__); \
  } while (0)
