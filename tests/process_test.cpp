// Process (mpx/process.hpp) under fork only: captured state, a Process object copied by
// fork, and what needs no child (names, misuse errors, cpu_count). The lifecycle under
// each start method is in process_methods_test.cpp.
#include "mpx/process.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "mpx/errors.hpp"
#include "sys/fd.hpp"

namespace {

using mpx::sys::make_pipe;

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

TEST(ProcessTest, TargetReceivesItsArgumentsAndCapturedState) {
  auto [r, w] = make_pipe();
  std::string prefix = "got";
  mpx::Process p(
      [&, fd = w.get()](int a, const std::string& b) {
        write_all(fd, prefix + " " + std::to_string(a) + " " + b);
      },
      42, std::string("hello"));
  p.start();
  w.reset();
  EXPECT_EQ(read_all(r.get()), "got 42 hello");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, MisuseErrorsAreUsageErrors) {
  mpx::Process p;
  EXPECT_THROW(p.join(), mpx::UsageError);
  EXPECT_THROW(p.join(), std::logic_error);
}

TEST(ProcessTest, ACopiedProcessObjectCannotBeJoinedInTheChild) {
  mpx::Process p;
  mpx::Process* self = &p;
  p = mpx::Process([self] {
    try {
      self->join();
    } catch (const mpx::InvalidStateError&) {
      mpx::exit(21);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 21);
}

TEST(ProcessTest, MainProcessIsNamedMainProcessAndHasNoParent) {
  EXPECT_EQ(mpx::current_process().name(), "MainProcess");
  EXPECT_EQ(mpx::current_process().pid(), ::getpid());
  EXPECT_FALSE(mpx::current_process().daemon());
  EXPECT_TRUE(mpx::current_process().is_alive());
  EXPECT_FALSE(mpx::parent_process().has_value());
}

TEST(ProcessTest, NameCanBeChanged) {
  mpx::Process p;
  p.set_name("renamed");
  EXPECT_EQ(p.name(), "renamed");
}

TEST(ProcessTest, CpuCountIsBetweenOneAndTheNumberOfConfiguredCpus) {
  int n = mpx::cpu_count();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, ::sysconf(_SC_NPROCESSORS_CONF));
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_LE(n, CPU_COUNT(&set));
}

}  // namespace
