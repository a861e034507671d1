// tests/support/shared_counts.hpp — counters that a test's pool workers and the test
// itself see alike: in a shared anonymous mapping made before the first pool is built
// (a process pool's workers are forks of its zygote, forked when the pool is built).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <new>

namespace mpx_test {

// counts<N>(): N counters and a total, mapped once per N for the test binary's life.
template <std::size_t N>
struct SharedCounts {
  std::atomic<int> of[N];
  std::atomic<int> total;

  // Counts item i (0 <= i < N).
  void add(std::size_t i) {
    of[i].fetch_add(1);
    total.fetch_add(1);
  }
  void reset() {
    for (auto& c : of)
      c.store(0);
    total.store(0);
  }
};
template <std::size_t N>
SharedCounts<N>& counts() {
  static SharedCounts<N>* shared = [] {
    void* p = ::mmap(nullptr, sizeof(SharedCounts<N>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return new (p) SharedCounts<N>{};
  }();
  return *shared;
}

}  // namespace mpx_test
