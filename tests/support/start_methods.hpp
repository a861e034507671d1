// tests/support/start_methods.hpp — what the tests of spawn and forkserver share: the
// forkserver started before the first test, and a crash's WorkerLost checked.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>

#include "mpx/context.hpp"
#include "mpx/errors.hpp"

namespace mpx_test {

inline void forkserver_warm_up() {}

// The forkserver lives as long as the test binary: started before the first test (the
// leak check leaves its socket and the server alone). Register it with
// ::testing::AddGlobalTestEnvironment(new StartTheForkserver).
class StartTheForkserver : public ::testing::Environment {
 public:
  void SetUp() override {
    mpx::Process p = mpx::get_context("forkserver").Process(forkserver_warm_up);
    p.start();
    p.join();
  }
};

// `result` (a pool's future) of a task that raised SIGSEGV fails with WorkerLost.
template <class Future>
void expect_lost_to_segfault(Future& result) {
  try {
    result.get(std::chrono::seconds(60));
    ADD_FAILURE() << "no exception";
  } catch (const mpx::WorkerLost& e) {
#if !defined(__SANITIZE_ADDRESS__)
    EXPECT_EQ(e.signal(), SIGSEGV);  // (AddressSanitizer catches SIGSEGV and exits)
#endif
    EXPECT_GT(e.pid(), 0);
  }
}

}  // namespace mpx_test
