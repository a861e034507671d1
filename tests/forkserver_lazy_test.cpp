// The forkserver of a program that cannot be bound at load: the server binds every
// symbol as it loads (LD_BIND_NOW, for its children's speed) and falls back to lazy
// binding when the program's libraries leave a symbol undefined, as this binary's
// (tests/lazy/undefined_symbol.cpp) does.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "mpx/context.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "support/watchdog.hpp"

using namespace std::chrono_literals;

extern "C" int mpx_test_call_the_undefined_symbol(int);  // in the library; never called

namespace {

void exit_with(int code) {
  mpx::exit(code);
}

void report_bind_now(mpx::SimpleQueue<std::string> out) {
  const char* v = std::getenv("LD_BIND_NOW");
  out.put(v ? v : "");
}

TEST(ForkserverLazy, AProgramThatCannotBeBoundAtLoadStillGetsItsChildren) {
  volatile bool never = false;
  if (never) mpx_test_call_the_undefined_symbol(0);  // links the library for real
  ASSERT_EQ(std::getenv("LD_BIND_NOW"), nullptr);
  mpx_test::Watchdog dog(120s, "forkserver children of a program bound lazily");
  auto ctx = mpx::get_context("forkserver");
  for (int code : {3, 4}) {
    mpx::Process p = ctx.Process(exit_with, code);
    p.start();
    p.join(60s);
    EXPECT_EQ(p.exitcode(), code);
  }
  // The children see the program's environment, without the server's mark.
  mpx::SimpleQueue<std::string> out;
  mpx::Process p = ctx.Process(report_bind_now, out);
  p.start();
  EXPECT_EQ(out.get(), "");
  p.join(60s);
  EXPECT_EQ(p.exitcode(), 0);
}

}  // namespace
