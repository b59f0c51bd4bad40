// Errors in the runtime: the code that runs on target hosts and inside patched processes (the
// agent, the PE appliers) links neither LLVM nor fmt, so a failure is a plain message. The host
// libraries turn an Outcome into llvm::Expected with lift() (hotforge/core/error.h).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace hotforge {

struct Failure {
  std::string message;
};

template <typename T> class [[nodiscard]] Outcome {
public:
  Outcome(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  Outcome(Failure failure) : state_(std::in_place_index<1>, std::move(failure)) {}

  explicit operator bool() const { return state_.index() == 0; }
  T &operator*() { return std::get<0>(state_); }
  const T &operator*() const { return std::get<0>(state_); }
  T *operator->() { return &std::get<0>(state_); }
  const T *operator->() const { return &std::get<0>(state_); }
  const std::string &error() const { return std::get<1>(state_).message; }
  Failure failure() && { return std::move(std::get<1>(state_)); }

private:
  std::variant<T, Failure> state_;
};

// Success or a message, for operations without a value.
using Status = Outcome<std::monostate>;
inline Status success() { return std::monostate{}; }

// A failure whose message is the pieces concatenated (numbers through std::to_string; use hexAddress()
// for addresses).
template <typename... Pieces> Failure fail(const Pieces &...pieces) {
  std::string message;
  auto append = [&message](const auto &piece) {
    if constexpr (std::is_arithmetic_v<std::decay_t<decltype(piece)>>) message += std::to_string(piece);
    else message += piece;
  };
  (append(pieces), ...);
  return Failure{std::move(message)};
}

}  // namespace hotforge
