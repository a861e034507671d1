// mpx-demo (interim): starts a few processes and prints their pids and exit codes.
// The benchmark demo of issue 6 replaces this program.
#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "mpx/process.hpp"

int main() {
  std::printf("mpx demo: %s (pid %d), %d usable CPUs\n", mpx::current_process().name().c_str(),
              static_cast<int>(mpx::current_process().pid()), mpx::cpu_count());

  std::vector<mpx::Process> children;
  children.emplace_back(
      [] { std::printf("  hello from %s\n", mpx::current_process().name().c_str()); });
  children.emplace_back([] { mpx::exit(3); });
  children.emplace_back([] { throw std::runtime_error("demo failure (expected)"); });
  children.emplace_back([] { std::raise(SIGKILL); });
  for (auto& c : children)
    c.start();
  for (auto& c : children) {
    c.join();
    std::printf("%-10s pid %-7d exitcode %d\n", c.name().c_str(), static_cast<int>(c.pid()),
                *c.exitcode());
  }
  return 0;
}
