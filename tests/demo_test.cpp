// tests/demo_test.cpp — mpx-demo prints what it promises: every section, the failure of
// each bad task by name, the pool carrying on, and the closing table. Shape only, never
// timings. Runs `mpx-demo --quick` (built next to the test binaries); skipped when the
// demo is not part of the build (MPX_BUILD_DEMO=OFF).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

namespace {

std::filesystem::path demo_path() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path() / "mpx-demo";
}

// Runs the command and returns its stdout; *status gets the wait status.
std::string run(const std::string& command, int* status) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0)
    out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

TEST(DemoTest, QuickRunPrintsEverySectionTheFailuresByNameAndTheTable) {
  auto demo = demo_path();
  if (!std::filesystem::exists(demo)) GTEST_SKIP() << demo << " is not built";
  int status = -1;
  std::string out = run(demo.string() + " --quick 2>/dev/null", &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;

  // Each pattern must match, in this order.
  const std::vector<std::string> expected = {
      R"(mpx demo: processes or threads\? Measured on this machine \([0-9]+ CPUs\))",
      R"(1\. CPU-bound work: count the primes below [0-9]+)",
      R"(serial \(1 thread\) +[0-9.]+ s +speedup +1\.00x)",
      R"(ThreadPool\([0-9]+\) +[0-9.]+ s +speedup +[0-9.]+x)",
      R"(Pool\([0-9]+\) processes +[0-9.]+ s +speedup +[0-9.]+x)",
      R"(2\. I/O-bound work: [0-9]+ tasks that each wait [0-9]+ ms)",
      R"(serial \(1 thread\) +[0-9.]+ s +speedup +1\.00x)",
      R"(ThreadPool\([0-9]+\) +[0-9.]+ s +speedup +[0-9.]+x)",
      R"(Pool\([0-9]+\) processes +[0-9.]+ s +speedup +[0-9.]+x)",
      R"(3\. Isolation)",
      R"(task +0 +ok +0)",
      R"(task +3 +FAILED +WorkerLost: .*(signal 11|SIGSEGV))",
      R"(task +6 +FAILED +TimeoutError: )",
      R"(task +9 +FAILED +std::out_of_range: record 9)",
      R"(task 10 +FAILED +RemoteError: .*ParseError)",
      R"(task 11 +ok +121)",
      R"(8 of 12 results arrived; 4 failures, each reported by name)",
      R"(The pool keeps going: map\(square, 1\.\.5\) = 1 4 9 16 25)",
      R"(on a ThreadPool: the program died with signal 11)",
      R"(4\. Communication)",
      R"(Queue<long>, producer process -> consumer: [0-9]+ items in [0-9.]+ s = [0-9.]+ [kM]?/s)",
      R"(Pipe ping-pong: [0-9]+ round trips in [0-9.]+ s = [0-9.]+ us each)",
      R"(Which to pick when)",
      R"(I/O-bound .*ThreadPool)",
  };
  std::size_t from = 0;
  for (const auto& pattern : expected) {
    std::smatch m;
    std::string rest = out.substr(from);
    ASSERT_TRUE(std::regex_search(rest, m, std::regex(pattern)))
        << "missing (in order): " << pattern << "\n--- output ---\n"
        << out;
    from += static_cast<std::size_t>(m.position(0) + m.length(0));
  }
}

}  // namespace
