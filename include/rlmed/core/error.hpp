// rlmed/core/error.hpp — the one exception type of rlmed and the checks that throw it.
//
// Design: every failure a user can cause (bad shape, corrupt file, NaN, argument out of range)
// throws rlmed::Error whose message says where (file:line), what was checked, and the values
// that were expected and found. The message is built only on failure, so checks are cheap on
// hot paths. No asserts that vanish in Release: user-facing preconditions always hold.
#pragma once

#include <array>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rlmed {

/// The exception rlmed throws for every invalid input, argument or file.
class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line, std::string condition = {})
      : std::runtime_error(compose(message, file, line, condition)),
        message_(std::move(message)),
        file_(file ? file : ""),
        line_(line),
        condition_(std::move(condition)) {}

  /// The human part of the message, without location.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] const std::string& file() const noexcept { return file_; }
  [[nodiscard]] int line() const noexcept { return line_; }
  /// The source text of the failed condition ("" when thrown directly).
  [[nodiscard]] const std::string& condition() const noexcept { return condition_; }

 private:
  static std::string compose(const std::string& message, const char* file, int line,
                             const std::string& condition) {
    std::ostringstream os;
    os << "rlmed::Error at " << (file ? file : "?") << ':' << line << ": ";
    if (!condition.empty()) os << "check `" << condition << "` failed: ";
    os << message;
    return os.str();
  }
  std::string message_;
  std::string file_;
  int line_;
  std::string condition_;
};

namespace detail {

template <class T>
concept Streamable = requires(std::ostream& os, const T& v) { os << v; };

template <class T>
void put(std::ostream& os, const T& value);

template <class Range>
void put_range(std::ostream& os, const Range& r) {
  os << '[';
  bool first = true;
  for (const auto& v : r) {
    if (!first) os << ", ";
    put(os, v);
    first = false;
  }
  os << ']';
}

template <class T>
void put(std::ostream& os, const T& value) {
  if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t>) {
    os << static_cast<int>(value);
  } else if constexpr (Streamable<T>) {
    os << value;
  } else if constexpr (requires { value.begin(); value.end(); }) {
    put_range(os, value);
  } else {
    os << "<unprintable>";
  }
}

// Arrays and vectors print as [a, b, c] so shapes read naturally in messages.
template <class T, std::size_t N>
void put(std::ostream& os, const std::array<T, N>& a) { put_range(os, a); }
template <class T>
void put(std::ostream& os, const std::vector<T>& v) { put_range(os, v); }

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  os.precision(9);
  (put(os, args), ...);
  return os.str();
}

}  // namespace detail

/// Formats any mix of strings, numbers, shapes (std::array / std::vector) into one string.
template <class... Args>
[[nodiscard]] std::string format(const Args&... args) {
  return detail::concat(args...);
}

}  // namespace rlmed

/// Throws rlmed::Error with file:line and the concatenated message arguments.
#define RLMED_THROW(...) throw ::rlmed::Error(::rlmed::format(__VA_ARGS__), __FILE__, __LINE__)

/// Checks a user-facing precondition in every build type; on failure throws rlmed::Error
/// with file:line, the condition text and the concatenated message arguments (values included).
#define RLMED_CHECK(cond, ...)                                                               \
  do {                                                                                       \
    if (!(cond)) [[unlikely]]                                                                \
      throw ::rlmed::Error(::rlmed::format(__VA_ARGS__), __FILE__, __LINE__, #cond);        \
  } while (false)

/// Checks a == b and reports both values ("expected <b>, found <a>") on failure.
#define RLMED_CHECK_EQ(found, expected, ...)                                                  \
  do {                                                                                       \
    const auto& rlmed_found_ = (found);                                                      \
    const auto& rlmed_expected_ = (expected);                                                \
    if (!(rlmed_found_ == rlmed_expected_)) [[unlikely]]                                     \
      throw ::rlmed::Error(::rlmed::format(__VA_ARGS__ __VA_OPT__(, ) "expected ",           \
                                           rlmed_expected_, ", found ", rlmed_found_),       \
                           __FILE__, __LINE__, #found " == " #expected);                     \
  } while (false)
