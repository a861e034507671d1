// The main() of every test binary: GoogleTest plus the leak check of leak_check.hpp.
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <thread>

#include "mpx/context.hpp"
#include "mpx/shared_memory.hpp"
#include "process/start_methods.hpp"
#include "support/leak_check.hpp"

namespace mpx_test {

namespace {

std::vector<std::string> list_dir(const char* path) {
  std::vector<std::string> names;
  if (DIR* dir = ::opendir(path)) {
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(dir);
  }
  return names;
}

bool g_leaked = false;

class LeakCheckListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override {
    fds_ = open_fds();
    shm_ = shm_entries();
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    std::ostringstream problems;
    // Children may still be exiting when a test's last object is destroyed by another
    // thread; give them a bounded grace period to be reaped.
    auto children = child_processes();
    for (int i = 0; i < 500 && !children.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      children = child_processes();
    }
    for (const auto& child : children)
      problems << "  child process left behind: " << child << "\n";
    auto fds = open_fds();
    std::vector<std::string> new_fds;
    std::set_difference(fds.begin(), fds.end(), fds_.begin(), fds_.end(),
                        std::back_inserter(new_fds));
    for (const auto& fd : new_fds)
      problems << "  fd left open: " << fd << "\n";
    auto shm = shm_entries();
    std::vector<std::string> new_shm;
    std::set_difference(shm.begin(), shm.end(), shm_.begin(), shm_.end(),
                        std::back_inserter(new_shm));
    for (const auto& name : new_shm)
      problems << "  /dev/shm entry left behind: " << name << "\n";
    if (!problems.str().empty()) {
      g_leaked = true;
      std::cerr << "[  LEAKED  ] " << info.test_suite_name() << "." << info.name() << "\n"
                << problems.str() << std::flush;
    }
  }

  std::set<std::string> fds_;
  std::set<std::string> shm_;
};

// mpx's resource tracker (which unlinks named segments and queues a killed creator left)
// holds one socket for the life of the process, by design. Start it before the first
// test, so that the leak check does not count it against whichever test used it first.
class StartResourceTracker : public ::testing::Environment {
 public:
  void SetUp() override {
    auto shm = mpx::SharedMemory::create(unique_name("tracker"), 1);
    shm.unlink();
  }
};

}  // namespace

std::set<std::string> open_fds() {
  std::set<std::string> fds;
  const std::string forkserver = std::to_string(mpx::detail::forkserver_client_fd());
  for (const auto& name : list_dir("/proc/self/fd")) {
    if (name == forkserver) continue;  // replaced when a test kills the server
    char target[512];
    std::string path = "/proc/self/fd/" + name;
    ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    if (n < 0) continue;  // the directory fd used by list_dir, closed by now
    target[n] = '\0';
    fds.insert(name + " -> " + target);
  }
  return fds;
}

std::vector<std::string> child_processes() {
  std::vector<std::string> children;
  const pid_t self = ::getpid();
  for (const auto& name : list_dir("/proc")) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream stat("/proc/" + name + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // Format: pid (comm) state ppid ...; comm may hold spaces and parentheses.
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    char state = '?';
    long ppid = 0;
    rest >> state >> ppid;
    // The forkserver of a test that used one lives as long as the test binary.
    if (line.find("(mpx-forkserver)") != std::string::npos) continue;
    if (ppid == self) children.push_back(name + " (" + state + ")");
  }
  return children;
}

std::set<std::string> shm_entries() {
  std::set<std::string> entries;
  const std::string pid = std::to_string(::getpid());
  for (const auto& name : list_dir("/dev/shm")) {
    if (name.find(pid) != std::string::npos) entries.insert(name);
  }
  return entries;
}

std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "mpx-test-" + std::to_string(::getpid()) + "-" + tag + "-" +
         std::to_string(counter.fetch_add(1));
}

}  // namespace mpx_test

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // a spawned child runs its target here and exits
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new mpx_test::LeakCheckListener);
  ::testing::AddGlobalTestEnvironment(new mpx_test::StartResourceTracker);
  int rc = RUN_ALL_TESTS();
  return rc != 0 ? rc : (mpx_test::g_leaked ? 1 : 0);
}
