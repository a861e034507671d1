// Tests of mpx/shared_memory.hpp: anonymous and named segments, their lifetime rules,
// and the tracker that unlinks what a killed creator left.
#include "mpx/shared_memory.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <thread>

#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/synchronize.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;

namespace {

// (tests/support/main.cpp starts this process's resource tracker before the first test.)

bool exists(const std::string& name) {
  return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

template <class Pred>
bool eventually(Pred ready) {
  auto end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return ready();
}

using mpx_test::join_child;
using mpx_test::start_child;

// Forks a child that runs setup(), tells the parent, and waits to be killed; kills it.
template <class F>
void run_and_kill(F setup, std::function<void(pid_t)> before_kill = {}) {
  mpx::Event ready;
  auto child = start_child([&] {
    setup();
    ready.set();
    for (;;)
      ::pause();
  });
  ASSERT_TRUE(ready.wait(10s));
  if (before_kill) before_kill(child.pid());
  child.kill();
  EXPECT_EQ(join_child(child), -SIGKILL);
}

}  // namespace

TEST(SharedMemoryTest, AnonymousSegmentHasExactSizeNoNameAndZeroedMemory) {
  mpx::SharedMemory shm(1000);
  EXPECT_EQ(shm.size(), 1000u);
  EXPECT_EQ(shm.buf().size(), 1000u);
  EXPECT_TRUE(shm.name().empty());
  for (std::byte b : shm.buf())
    ASSERT_EQ(b, std::byte{0});
  EXPECT_THROW(mpx::SharedMemory(0), mpx::ValueError);
}

TEST(SharedMemoryTest, AnonymousSegmentIsSharedWithAForkedChild) {
  mpx::SharedMemory shm(64);
  auto child = start_child([&] { std::memcpy(shm.buf().data(), "child", 6); });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(shm.buf().data()), "child");
}

TEST(SharedMemoryTest, FromFdMapsTheSameMemory) {
  mpx::SharedMemory shm(4096 + 1);
  auto view = mpx::SharedMemory::from_fd(shm.fd());
  EXPECT_EQ(view.size(), 4097u);
  shm.buf()[4096] = std::byte{42};
  EXPECT_EQ(view.buf()[4096], std::byte{42});
}

TEST(SharedMemoryTest, CloseReleasesTheMappingAndIsIdempotent) {
  mpx::SharedMemory shm(10);
  shm.close();
  EXPECT_TRUE(shm.closed());
  EXPECT_EQ(shm.fd(), -1);
  EXPECT_THROW(shm.buf(), mpx::InvalidStateError);
  shm.close();
  mpx::SharedMemory moved = mpx::SharedMemory(8);
  mpx::SharedMemory target(std::move(moved));
  EXPECT_TRUE(moved.closed());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_EQ(target.size(), 8u);
}

TEST(SharedMemoryTest, NamedSegmentHasMode0600AndCanBeOpenedByName) {
  std::string name = mpx_test::unique_name("named");
  auto shm = mpx::SharedMemory::create("/" + name, 5000);
  EXPECT_EQ(shm.name(), name);
  EXPECT_EQ(shm.size(), 5000u);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 5000);
  auto other = mpx::SharedMemory::open(name);
  EXPECT_EQ(other.size(), 5000u);
  shm.buf()[4999] = std::byte{7};
  EXPECT_EQ(other.buf()[4999], std::byte{7});
  shm.unlink();
  EXPECT_FALSE(exists(name));
  EXPECT_THROW(other.unlink(), mpx::FileNotFoundError);
}

TEST(SharedMemoryTest, CreatingAnExistingNameOrOpeningAMissingOneThrows) {
  std::string name = mpx_test::unique_name("exists");
  auto shm = mpx::SharedMemory::create(name, 10);
  EXPECT_THROW(mpx::SharedMemory::create(name, 10), mpx::FileExistsError);
  shm.unlink();
  EXPECT_THROW(mpx::SharedMemory::open(name), mpx::FileNotFoundError);
  EXPECT_THROW(mpx::SharedMemory::create("a/b", 10), mpx::ValueError);
  EXPECT_THROW(mpx::SharedMemory::create(mpx_test::unique_name("zero"), 0), mpx::ValueError);
}

TEST(SharedMemoryTest, ABadNameIsAValueErrorAndCreatesNothing) {
  using namespace std::string_literals;
  const std::string prefix = mpx_test::unique_name("nul");
  const std::string bad[] = {prefix + "\0tail"s, "", "/", "a/b", "/a/b", std::string(256, 'n')};
  for (const std::string& name : bad) {
    EXPECT_THROW(mpx::SharedMemory::create(name, 10), mpx::ValueError) << name.size();
    EXPECT_THROW(mpx::SharedMemory::create(name, 10, false), mpx::ValueError) << name.size();
    EXPECT_THROW(mpx::SharedMemory::open(name), mpx::ValueError) << name.size();
  }
  EXPECT_FALSE(exists(prefix));  // not the truncated name either
  // The longest name the file system takes is fine.
  std::string longest = mpx_test::unique_name("long");
  longest.resize(255, 'x');
  auto shm = mpx::SharedMemory::create(longest, 10);
  EXPECT_TRUE(exists(longest));
  shm.unlink();
}

TEST(SharedMemoryTest, CreateWithOnlyASizeNamesTheSegmentForAChildToOpen) {
  auto shm = mpx::SharedMemory::create(64);
  auto other = mpx::SharedMemory::create(64);
  const std::string name = shm.name();
  EXPECT_EQ(name.rfind("psm_", 0), 0u) << name;
  EXPECT_EQ(name.size(), 12u) << name;
  EXPECT_NE(name, other.name());
  EXPECT_TRUE(exists(name));
  shm.buf()[0] = std::byte{42};
  auto child = start_child([&] {
    auto view = mpx::SharedMemory::open(name);
    mpx::exit(view.buf()[0] == std::byte{42} && view.size() == 64 ? 0 : 1);
  });
  EXPECT_EQ(join_child(child), 0);
  shm.unlink();
  other.unlink();
  EXPECT_FALSE(exists(name));
}

TEST(SharedMemoryTest, DestructorClosesButNeverUnlinks) {
  std::string name = mpx_test::unique_name("persist");
  { auto shm = mpx::SharedMemory::create(name, 10); }
  EXPECT_TRUE(exists(name));
  auto again = mpx::SharedMemory::open(name);
  again.unlink();
  EXPECT_FALSE(exists(name));
}

TEST(SharedMemoryTest, NamedSegmentIsVisibleToAnUnrelatedProcessAndSurvivesIt) {
  std::string name = mpx_test::unique_name("visible");
  auto shm = mpx::SharedMemory::create(name, 16);
  // A new program (fork + exec of /bin/sh) writes into the segment by its path.
  std::string script = "printf hello 1<> /dev/shm/" + name;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(std::memcmp(shm.buf().data(), "hello", 5), 0);
  EXPECT_TRUE(exists(name));
  shm.unlink();
}

TEST(SharedMemoryTest, AnOpenerThatExitsOrIsKilledDoesNotUnlink) {
  std::string name = mpx_test::unique_name("opener");
  auto shm = mpx::SharedMemory::create(name, 16);
  auto child = start_child([&] {
    auto view = mpx::SharedMemory::open(name);
    view.buf()[0] = std::byte{1};
  });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_EQ(shm.buf()[0], std::byte{1});
  run_and_kill([&] { auto view = mpx::SharedMemory::open(name); });
  // Give a (wrongly) tracking opener's tracker time to act before checking.
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(exists(name));
  shm.unlink();
}

TEST(SharedMemoryTest, NoNamedSegmentLeftAfterItsCreatorIsKilled) {
  for (int i = 0; i < 5; ++i) {
    std::string name = mpx_test::unique_name("killed");
    // The child keeps the segment open (leaked on purpose) when it is killed.
    run_and_kill([&] { new mpx::SharedMemory(mpx::SharedMemory::create(name, 4096)); });
    EXPECT_TRUE(eventually([&] { return !exists(name); })) << name << " left in /dev/shm";
  }
}

// Kills a child the moment `name` appears in /dev/shm (inotify wakes us), while it is
// inside its first named create (which starts its tracker); the name must still go.
template <class Create>
void kill_inside_create(const std::string& name, Create create) {
  int watch = ::inotify_init1(IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, "/dev/shm", IN_CREATE), 0);
  mpx::Process child([&] {
    create();
    for (;;)
      ::pause();
  });
  child.start();
  alignas(inotify_event) char events[4096];
  bool seen = false;
  while (!seen) {
    pollfd p{watch, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30'000), 1) << name << " never appeared";
    ssize_t n = ::read(watch, events, sizeof(events));
    ASSERT_GT(n, 0);
    for (ssize_t at = 0; at < n;) {
      auto* e = reinterpret_cast<inotify_event*>(events + at);
      if (e->len > 0 && name == e->name) seen = true;
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  child.kill();
  ::close(watch);
  child.join();
  ASSERT_EQ(child.exitcode(), -SIGKILL);
  EXPECT_TRUE(eventually([&] { return !exists(name); })) << name << " left in /dev/shm";
  if (exists(name)) ::shm_unlink(("/" + name).c_str());
}

TEST(SharedMemoryTest, ACreatorKilledInsideCreateLeavesNoName) {
  for (int i = 0; i < 20; ++i) {
    std::string name = mpx_test::unique_name("inside");
    kill_inside_create(name, [&] { new mpx::SharedMemory(mpx::SharedMemory::create(name, 1)); });
  }
}

TEST(SharedMemoryTest, ANamedQueueCreatorKilledInsideCreateLeavesNoName) {
  for (int i = 0; i < 20; ++i) {
    std::string name = mpx_test::unique_name("queue_inside");
    kill_inside_create(name, [&] { new mpx::Queue<int>(mpx::Queue<int>::create(name)); });
  }
}

TEST(SharedMemoryTest, ABadQueueNameIsAValueError) {
  using namespace std::string_literals;
  const std::string bad[] = {"q\0tail"s, "", "/", "a/b", std::string(256, 'q')};
  for (const std::string& name : bad) {
    EXPECT_THROW(mpx::Queue<int>::create(name), mpx::ValueError) << name.size();
    EXPECT_THROW(mpx::Queue<int>::open(name), mpx::ValueError) << name.size();
    EXPECT_THROW(mpx::JoinableQueue<int>::create(name), mpx::ValueError) << name.size();
  }
  EXPECT_FALSE(exists("q"));
}

TEST(SharedMemoryTest, ACreatorThatExitsWithoutUnlinkingLeavesNothing) {
  std::string name = mpx_test::unique_name("exited");
  auto child = start_child([&] { mpx::SharedMemory::create(name, 100); });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_TRUE(eventually([&] { return !exists(name); })) << name << " left in /dev/shm";
}

TEST(SharedMemoryTest, AnUntrackedSegmentOutlivesItsKilledCreator) {
  std::string name = mpx_test::unique_name("untracked");
  run_and_kill([&] { mpx::SharedMemory::create(name, 100, /*track=*/false); });
  std::this_thread::sleep_for(100ms);  // a tracker, wrongly involved, would act by now
  EXPECT_TRUE(exists(name));
  mpx::SharedMemory::open(name).unlink();
}

TEST(SharedMemoryTest, NothingLeftInDevShmAfterACreatorOfAnonymousSegmentsIsKilled) {
  std::string child_maps;
  run_and_kill(
      [] {
        for (int i = 0; i < 3; ++i)
          new mpx::SharedMemory(1 << 16);
      },
      [&](pid_t pid) {
        std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
        child_maps.assign(std::istreambuf_iterator<char>(maps), {});
      });
  // The segments are memfds: mapped, but never files in /dev/shm, so a kill -9 can leave
  // nothing there (the memory goes with the last process that maps it).
  EXPECT_NE(child_maps.find("/memfd:mpx-shm"), std::string::npos) << child_maps;
  EXPECT_EQ(child_maps.find("/dev/shm/"), std::string::npos) << child_maps;
}
