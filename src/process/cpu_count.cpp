// cpu_count() of mpx/process.hpp.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include "mpx/process.hpp"

namespace mpx {

namespace {
// The CPU limit of a cgroup v2 cpu.max file ("max 100000" or "<quota> <period>").
std::optional<int> cgroup_cpu_limit() {
  std::ifstream cgroup("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(cgroup, line)) {
    if (line.rfind("0::", 0) == 0) {
      path = line.substr(3);
      break;
    }
  }
  if (path.empty()) return std::nullopt;
  std::optional<int> limit;
  const std::string root = "/sys/fs/cgroup";
  for (;;) {
    std::ifstream max(root + path + "/cpu.max");
    std::string quota;
    long period = 0;
    if (max >> quota >> period && quota != "max" && period > 0) {
      long q = std::atol(quota.c_str());
      if (q > 0) {
        int cpus = static_cast<int>((q + period - 1) / period);
        limit = limit ? std::min(*limit, cpus) : cpus;
      }
    }
    if (path.empty() || path == "/") break;
    auto slash = path.rfind('/');
    path = slash == std::string::npos || slash == 0 ? std::string("/") : path.substr(0, slash);
  }
  return limit;
}
}  // namespace

int cpu_count() {
  int count = 0;
  for (int size = 1024; size <= 1 << 20 && count == 0; size *= 4) {
    cpu_set_t* set = CPU_ALLOC(size);
    if (!set) break;
    std::size_t bytes = CPU_ALLOC_SIZE(size);
    CPU_ZERO_S(bytes, set);
    if (::sched_getaffinity(0, bytes, set) == 0) {
      count = CPU_COUNT_S(bytes, set);
    } else if (errno != EINVAL) {
      CPU_FREE(set);
      break;
    }
    CPU_FREE(set);
  }
  if (count <= 0) count = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  if (auto limit = cgroup_cpu_limit()) count = std::min(count, *limit);
  return std::max(1, count);
}

}  // namespace mpx
