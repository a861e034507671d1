// mpx/detail/deadline.hpp — the one deadline type every blocking call uses.
// Not public API: users pass std::chrono durations; mpx turns them into a Deadline.
#pragma once

#include <chrono>
#include <ctime>
#include <optional>

namespace mpx::detail {

// A point on the steady clock after which a wait gives up, or "never".
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  static Deadline never() noexcept { return Deadline(); }
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> timeout) noexcept {
    if (timeout <= timeout.zero()) return Deadline(Clock::now());
    // Saturate instead of overflowing for huge timeouts (e.g. hours::max()).
    auto limit =
        std::chrono::duration_cast<std::chrono::duration<double>>(Clock::duration::max()) / 4;
    if (std::chrono::duration_cast<std::chrono::duration<double>>(timeout) > limit) return never();
    return Deadline(Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }
  // A deadline from an optional timeout: empty means wait forever.
  template <class Rep, class Period>
  static Deadline after(const std::optional<std::chrono::duration<Rep, Period>>& timeout) noexcept {
    return timeout ? after(*timeout) : never();
  }
  static Deadline at(Clock::time_point when) noexcept { return Deadline(when); }
  // The sooner of this deadline and `timeout` from now: for a wait that must look again
  // at least that often, or one given a timeout of its own within an outer deadline.
  template <class Rep, class Period>
  Deadline at_most(std::chrono::duration<Rep, Period> timeout) const noexcept {
    const Deadline limit = after(timeout);
    return !limit.when_ || (when_ && *when_ < *limit.when_) ? *this : limit;
  }

  bool is_never() const noexcept { return !when_; }
  bool expired() const noexcept { return when_ && Clock::now() >= *when_; }
  // Time left (zero when expired); Clock::duration::max() when never.
  Clock::duration remaining() const noexcept {
    if (!when_) return Clock::duration::max();
    auto left = *when_ - Clock::now();
    return left > Clock::duration::zero() ? left : Clock::duration::zero();
  }
  std::optional<Clock::time_point> when() const noexcept { return when_; }
  // The deadline as an absolute CLOCK_MONOTONIC timespec (steady_clock is CLOCK_MONOTONIC
  // on Linux), for futex/pthread clocklock/ppoll; nullopt when never.
  std::optional<timespec> monotonic_timespec() const noexcept;
  // Remaining time in milliseconds for poll(2): -1 when never, rounded up otherwise.
  int poll_timeout_ms() const noexcept;

 private:
  Deadline() = default;
  explicit Deadline(Clock::time_point when) : when_(when) {}
  std::optional<Clock::time_point> when_;
};

inline std::optional<timespec> Deadline::monotonic_timespec() const noexcept {
  if (!when_) return std::nullopt;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when_->time_since_epoch()).count();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

inline int Deadline::poll_timeout_ms() const noexcept {
  if (!when_) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(remaining()).count();
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

}  // namespace mpx::detail
