// bench/bench_util.hpp — small helpers shared by the benchmark programs of bench/.
//
// The floor and Boost programs (plain C++) print one line per invocation:
//   RESULT <tab> <workload> <tab> <value> <tab> <unit>
// one measured repetition after a warm-up; bench/compare runs them many times, interleaved
// with the mpx and Python runs, and takes medians. The mpx programs use Google Benchmark
// and report the same figure as the user counter "value" with the unit as the label.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <new>
#include <string>
#include <vector>

namespace bench {

inline double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] inline void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

inline void result(const char* workload, double value, const char* unit) {
  std::printf("RESULT\t%s\t%.6g\t%s\n", workload, value, unit);
  std::fflush(stdout);
}

// A zero-filled MAP_SHARED|MAP_ANONYMOUS block: shared with children forked afterwards.
inline void* shared_bytes(std::size_t n) {
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

template <class T>
T* shared_new() {
  return new (shared_bytes(sizeof(T))) T();
}

// Forks a child that runs fn() and leaves with _exit(0), or _exit(1) after printing an
// exception that escaped fn; it never returns into the caller.
template <class Fn>
pid_t fork_child(Fn&& fn) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "benchmark child: %s\n", e.what());
      _exit(1);
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  return pid;
}

// Waits for the child; exits the benchmark if it did not exit with status 0.
inline void reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "child %d failed (status %d)\n", pid, status);
    std::exit(1);
  }
}

// Items per second through a channel that `producers` processes fill with put(i) and
// `consumers` processes drain with get(), `per_producer` items each producer: every child
// is forked first and waits at a gate (a pipe whose write end the parent closes), the
// clock starts when the gate opens and stops when the last child has exited. The
// consumers' shares add up to the items put, so every child ends once all are through.
template <class Put, class Get>
double many_to_many_rate(int producers, int consumers, long per_producer, Put put, Get get) {
  int gate[2];
  if (pipe(gate) != 0) die("pipe");
  auto wait_at_gate = [&] {
    close(gate[1]);
    char c;
    while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
    }
  };
  const long total = per_producer * producers;
  std::vector<pid_t> kids;
  for (int p = 0; p < producers; ++p) {
    kids.push_back(fork_child([&] {
      wait_at_gate();
      for (long i = 0; i < per_producer; ++i)
        put(i);
    }));
  }
  for (int c = 0; c < consumers; ++c) {
    const long share = total / consumers + (c < total % consumers ? 1 : 0);
    kids.push_back(fork_child([&, share] {
      wait_at_gate();
      for (long i = 0; i < share; ++i)
        get();
    }));
  }
  close(gate[0]);
  double t0 = now_s();
  close(gate[1]);
  for (pid_t kid : kids)
    reap(kid);
  return static_cast<double>(total) / (now_s() - t0);
}

// Microseconds per call of once(), over n calls after `warm` untimed ones.
template <class F>
double us_per_call(F&& once, long n, long warm = 20) {
  for (long i = 0; i < warm; ++i)
    once();
  double t0 = now_s();
  for (long i = 0; i < n; ++i)
    once();
  return (now_s() - t0) / static_cast<double>(n) * 1e6;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Resident memory of a process that is not shared with any other process
// (Private_Clean + Private_Dirty from /proc/<pid>/smaps_rollup), in MiB; -1 if unreadable.
inline double private_rss_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  if (!in) return -1;
  std::string key;
  long kib = 0;
  double total_kib = 0;
  bool found = false;
  while (in >> key) {
    if (key == "Private_Clean:" || key == "Private_Dirty:") {
      in >> kib;
      total_kib += static_cast<double>(kib);
      found = true;
    }
  }
  return found ? total_kib / 1024.0 : -1;
}

// The CPU-bound workload shared by every implementation: count the primes below `limit`
// by trial division by odd numbers, in chunks of kPrimeChunk numbers.
inline constexpr long kPrimeChunk = 10000;
inline constexpr long kPrimeLimit = 2000000;

inline bool is_prime(long n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (long d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

// Primes in [lo, hi).
inline long count_primes(long lo, long hi) {
  long c = 0;
  for (long n = lo; n < hi; ++n)
    c += is_prime(n) ? 1 : 0;
  return c;
}

inline constexpr long kPrimesBelow2M = 148933;

// The number of CPUs this process may run on.
inline int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  int n = CPU_COUNT(&set);
  return n > 0 ? n : 1;
}

}  // namespace bench
