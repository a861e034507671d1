// tests/support/serving.hpp — a Listener's server side in another thread that cannot hang
// the test: leaving the scope early (a failed ASSERT, an exception) or get() waiting
// longer than its limit shuts the listening socket down, so that a server still blocked
// in accept() fails there (accept throws) instead of the scope waiting for it forever.
//
//   mpx_test::Serving served(listener, [&] { return listener.accept(); });
//   mpx::Connection client = mpx::Client(listener.address());   // may throw: no hang
//   mpx::Connection server = served.get();
//
// Only accept() is woken: a server blocked on a connection wakes when its peer (the test's
// client, destroyed on the way out) closes.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <future>
#include <type_traits>
#include <utility>

#include "mpx/listener.hpp"

namespace mpx_test {

template <class R>
class Serving {
 public:
  template <class F>
  Serving(mpx::Listener& listener, F&& serve,
          std::chrono::milliseconds limit = std::chrono::seconds(120))
      : listener_(listener),
        limit_(limit),
        future_(std::async(std::launch::async, std::forward<F>(serve))) {}
  Serving(const Serving&) = delete;
  Serving& operator=(const Serving&) = delete;
  ~Serving() {
    if (future_.valid()) stop();
  }  // then future_'s destructor joins the thread, which no longer waits in accept()

  // The server's result (or its exception); after `limit`, the listener is shut down first.
  R get() {
    if (future_.wait_for(limit_) != std::future_status::ready) stop();
    return future_.get();
  }
  // Shuts the listening socket down: accept() in the server fails now and from now on.
  void stop() noexcept {
    if (!listener_.closed()) ::shutdown(listener_.fileno(), SHUT_RDWR);
  }

 private:
  mpx::Listener& listener_;
  std::chrono::milliseconds limit_;
  std::future<R> future_;
};

template <class F>
Serving(mpx::Listener&, F&&) -> Serving<std::invoke_result_t<std::decay_t<F>&>>;
template <class F>
Serving(mpx::Listener&, F&&, std::chrono::milliseconds)
    -> Serving<std::invoke_result_t<std::decay_t<F>&>>;

}  // namespace mpx_test
