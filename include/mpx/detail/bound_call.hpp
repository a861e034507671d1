// mpx/detail/bound_call.hpp — a callable bound to its arguments, called once.
// Not public API: the type-erased target of Process and Thread.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mpx::detail {

// A one-shot call, type-erased. Move-only targets and arguments are fine.
class BoundCall {
 public:
  virtual ~BoundCall() = default;
  // Calls the target once with its arguments as rvalues (as std::thread does); its
  // result, if any, is discarded.
  virtual void operator()() = 0;
  // For a child that is not a fork: sets `entry` (a SpawnEntry, mpx/detail/handoff.hpp),
  // appends the target's and arguments' bytes to `out` and the fds of the mpx objects
  // among the arguments to `fds`. False when the target cannot travel (not a portable
  // callable, or an argument that has no codec and is no mpx object that can travel).
  virtual bool encode_for_spawn(std::uint64_t& entry, std::vector<std::byte>& out,
                                std::vector<int>& fds) const {
    static_cast<void>(entry);
    static_cast<void>(out);
    static_cast<void>(fds);
    return false;
  }
};

template <class F, class... Args>
class BoundCallOf : public BoundCall {
 public:
  template <class G, class... A>
  explicit BoundCallOf(G&& f, A&&... args)
      : f_(std::forward<G>(f)), args_(std::forward<A>(args)...) {}
  void operator()() override {
    std::apply(
        [this](Args&... args) {
          static_cast<void>(std::invoke(std::move(f_), std::move(args)...));
        },
        args_);
  }

 protected:
  F f_;
  std::tuple<Args...> args_;
};

// The requirement on Process/Thread targets: callable with its decayed arguments as
// rvalues, like std::thread.
template <class F, class... Args>
concept OneShotCallable = std::invocable<std::decay_t<F>, std::decay_t<Args>...> &&
    std::constructible_from<std::decay_t<F>, F> &&
    (std::constructible_from<std::decay_t<Args>, Args>&&...);

template <class F, class... Args>
std::unique_ptr<BoundCall> bind_call(F&& f, Args&&... args) {
  return std::make_unique<BoundCallOf<std::decay_t<F>, std::decay_t<Args>...>>(
      std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace mpx::detail
