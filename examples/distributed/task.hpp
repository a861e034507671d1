// examples/distributed/task.hpp — what the task master and its workers exchange.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace distributed {

struct Task {
  std::int64_t id;  // -1: no more tasks
  std::int64_t n;
};

struct Result {
  std::int64_t id;
  std::int64_t value;
  pid_t worker;
};

// The work: the sum of the squares of 1..n (the master checks it with n(n+1)(2n+1)/6).
inline std::int64_t compute(std::int64_t n) {
  std::int64_t sum = 0;
  for (std::int64_t i = 1; i <= n; ++i)
    sum += i * i;
  return sum;
}

// "--name value" from argv, or `fallback`.
inline std::string option(int argc, char** argv, const std::string& name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return fallback;
}

}  // namespace distributed
