// Tests of the private sys layer: the syscall wrapper, fds, shared mappings, the waiter.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/pidfd.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/syscall.hpp"

using namespace std::chrono_literals;
using mpx::detail::Deadline;

namespace {

int fail_pipe2(const char* what) {
  return std::strcmp(what, "pipe2") == 0 ? EMFILE : 0;
}

int the_function(int x) {
  return x + 1;
}

// Runs fn in a forked child (the module table a process adopts stays for its life) and
// returns its exit code.
template <class F>
int in_child(F fn) {
  mpx::Process p(fn);
  p.start();
  p.join();
  return p.exitcode().value_or(-1000);
}

struct Shared {
  mpx::detail::WaitWord word;
  std::atomic<uint32_t> value{0};
};

}  // namespace

TEST(SyscallTest, FailureThrowsSystemErrorNamingTheCall) {
  try {
    mpx::sys::call("close(-1)", [] { return ::close(-1); });
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EBADF);
    EXPECT_NE(std::string(e.what()).find("close(-1)"), std::string::npos) << e.what();
  }
}

TEST(SyscallTest, InjectedFailureReachesTheCaller) {
  mpx::sys::set_failure_injector(fail_pipe2);
  EXPECT_THROW(mpx::sys::make_pipe(), std::system_error);
  mpx::sys::set_failure_injector(nullptr);
  auto [r, w] = mpx::sys::make_pipe();
  EXPECT_TRUE(r.valid());
  EXPECT_TRUE(w.valid());
}

TEST(FdTest, EveryFdIsCloseOnExecAndClosedByTheDestructor) {
  int raw = -1;
  {
    auto [r, w] = mpx::sys::make_pipe();
    raw = r.get();
    EXPECT_TRUE(::fcntl(raw, F_GETFD) & FD_CLOEXEC);
    auto copy = r.dup();
    EXPECT_TRUE(::fcntl(copy.get(), F_GETFD) & FD_CLOEXEC);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

TEST(DeadlineTest, NeverDoesNotExpireAndZeroExpiresAtOnce) {
  EXPECT_FALSE(Deadline::never().expired());
  EXPECT_EQ(Deadline::never().poll_timeout_ms(), -1);
  EXPECT_TRUE(Deadline::after(0ms).expired());
  EXPECT_TRUE(Deadline::after(-5s).expired());
  EXPECT_FALSE(Deadline::after(std::chrono::hours::max()).expired());
  auto d = Deadline::after(10s);
  EXPECT_GT(d.remaining(), 9s);
  EXPECT_GE(d.poll_timeout_ms(), 9000);
}

TEST(MappingTest, MemfdMappingIsSharedWithAForkedChild) {
  auto fd = mpx::sys::memfd("mpx-test", 4096);
  auto map = mpx::sys::map_shared(fd.get(), 4096);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::memcpy(map.data(), "hello", 6);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_STREQ(static_cast<const char*>(map.data()), "hello");
}

TEST(PidfdTest, BecomesReadableWhenTheChildExits) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(3);
  auto pidfd = mpx::sys::pidfd_open(pid);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_FALSE(mpx::sys::pidfd_send_signal(pidfd.get(), 0));
}

TEST(WaiterTest, WaitTimesOutWhenNothingChanges) {
  Shared s;
  auto start = std::chrono::steady_clock::now();
  bool ok = mpx::detail::wait_until(
      s.word, [&] { return s.value.load() != 0; }, Deadline::after(200ms));
  EXPECT_FALSE(ok);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
}

TEST(WaiterTest, ThreadWakesWaiter) {
  Shared s;
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);  // let the waiter reach its futex sleep
    s.value.store(1);
    mpx::detail::notify(s.word);
  });
  EXPECT_TRUE(mpx::detail::wait_until(
      s.word, [&] { return s.value.load() == 1; }, Deadline::never()));
  t.join();
}

TEST(WaiterTest, ProcessesPingPongThroughSharedMemoryWithoutLosingAWakeUp) {
  auto map = mpx::sys::map_anonymous_shared(sizeof(Shared));
  auto* s = new (map.data()) Shared;
  constexpr uint32_t kRounds = 20000;
  pid_t pid = ::fork();
  if (pid == 0) {
    for (uint32_t i = 1; i <= kRounds; i += 2) {
      mpx::detail::wait_until(
          s->word, [&] { return s->value.load() == i; }, Deadline::never());
      s->value.store(i + 1);
      mpx::detail::notify(s->word);
    }
    ::_exit(0);
  }
  for (uint32_t i = 0; i < kRounds; i += 2) {
    ASSERT_TRUE(mpx::detail::wait_until(
        s->word, [&] { return s->value.load() == i; }, Deadline::after(30s)));
    s->value.store(i + 1);
    mpx::detail::notify(s->word);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(s->value.load(), kRounds);
}

TEST(ErrorsTest, WorkerLostNamesPidAndSignal) {
  mpx::WorkerLost lost(1234, -9);
  EXPECT_EQ(lost.pid(), 1234);
  EXPECT_EQ(lost.signal(), 9);
  EXPECT_NE(std::string(lost.what()).find("SIGKILL"), std::string::npos) << lost.what();
  mpx::WorkerLost exited(99, 3);
  EXPECT_FALSE(exited.signal().has_value());
  EXPECT_NE(std::string(exited.what()).find("exited with code 3"), std::string::npos);
  static_assert(std::is_base_of_v<std::runtime_error, mpx::Error>);
  static_assert(std::is_base_of_v<std::logic_error, mpx::ValueError>);
}

TEST(RobustMutexTest, OwnerKilledWhileHoldingItIsReportedToTheNextLocker) {
  auto map = mpx::sys::map_anonymous_shared(sizeof(mpx::sys::RobustMutex));
  auto* mutex = new (map.data()) mpx::sys::RobustMutex;
  pid_t pid = ::fork();
  if (pid == 0) {
    mutex->lock();
    ::raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(mutex->lock(Deadline::after(5s)), mpx::sys::RobustMutex::Result::kOwnerDied);
  mutex->mark_consistent();
  mutex->unlock();
  EXPECT_EQ(mutex->lock(Deadline::after(5s)), mpx::sys::RobustMutex::Result::kAcquired);
  mutex->unlock();
  mutex->~RobustMutex();
}

TEST(RobustMutexTest, LockTimesOutWhileAnotherThreadHoldsIt) {
  mpx::sys::RobustMutex mutex;
  mutex.lock();
  std::thread t([&] {
    EXPECT_EQ(mutex.lock(Deadline::after(100ms)), mpx::sys::RobustMutex::Result::kTimedOut);
  });
  t.join();
  mutex.unlock();
}

TEST(FunctionIdTest, AddressesAreTheirOwnWithoutAPeerTable) {
  auto a = reinterpret_cast<std::uint64_t>(&the_function);
  EXPECT_EQ(mpx::detail::local_address(a), a);
}

TEST(FunctionIdTest, AFunctionOfTheSameBuildMapsToItselfAndAStrayAddressIsRefused) {
  EXPECT_EQ(in_child([] {
              mpx::detail::adopt_module_table(mpx::detail::encode_module_table());
              auto a = reinterpret_cast<std::uint64_t>(&the_function);
              if (mpx::detail::local_address(a) != a) mpx::exit(2);
              auto f = reinterpret_cast<int (*)(int)>(mpx::detail::local_address(a));
              if (f(41) != 42) mpx::exit(3);
              try {
                mpx::detail::local_address(8);  // in no module
                mpx::exit(4);
              } catch (const mpx::ProcessError& e) {
                if (!std::strstr(e.what(), "none of its loaded modules")) mpx::exit(5);
              }
              mpx::exit(0);
            }),
            0);
}

TEST(FunctionIdTest, AnotherBuildOfTheProgramIsRefusedWithAClearError) {
  EXPECT_EQ(in_child([] {
              auto table = mpx::detail::encode_module_table();
              // The first module is the main executable; its id follows the count, three
              // addresses and the id's length: change a digit of its build id.
              std::string bytes(reinterpret_cast<const char*>(table.data()), table.size());
              const std::size_t at = 5 * sizeof(std::uint64_t);
              if (bytes.compare(at, 2, "b:") != 0) mpx::exit(2);  // built without a build id
              table[at + 2] = static_cast<std::byte>(bytes[at + 2] == '0' ? '1' : '0');
              try {
                mpx::detail::adopt_module_table(table);
                mpx::exit(3);
              } catch (const mpx::ProcessError& e) {
                if (!std::strstr(e.what(), "same build")) mpx::exit(4);
              }
              mpx::exit(0);
            }),
            0);
}

TEST(FunctionIdTest, AMalformedTableThrowsDecodeError) {
  std::vector<std::byte> junk(5, std::byte{0xff});
  EXPECT_THROW(mpx::detail::adopt_module_table(junk), mpx::DecodeError);
}
