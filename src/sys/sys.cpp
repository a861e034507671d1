// The private sys layer: system-call wrapper, fds, memfd/mmap, pidfd, futex.
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mpx/detail/waiter.hpp"
#include "sys/atfork.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/pidfd.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/self.hpp"
#include "sys/syscall.hpp"

namespace mpx::sys {

namespace {
std::atomic<FailureInjector> g_injector{nullptr};
// A transparent huge page (x86-64).
constexpr std::size_t kHuge = std::size_t{2} << 20;
}  // namespace

void throw_errno(const char* what, int err) {
  throw std::system_error(err, std::generic_category(), what);
}

void set_failure_injector(FailureInjector injector) noexcept {
  g_injector.store(injector, std::memory_order_release);
}

int injected_failure(const char* what) noexcept {
  FailureInjector injector = g_injector.load(std::memory_order_acquire);
  return injector ? injector(what) : 0;
}

Fd Fd::dup() const {
  return Fd(call("fcntl(F_DUPFD_CLOEXEC)", [&] { return ::fcntl(fd_, F_DUPFD_CLOEXEC, 0); }));
}

std::pair<Fd, Fd> make_pipe(int extra_flags) {
  int fds[2];
  call("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC | extra_flags); });
  return {Fd(fds[0]), Fd(fds[1])};
}

std::pair<Fd, Fd> make_socketpair(int type) {
  int fds[2];
  call("socketpair", [&] { return ::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds); });
  return {Fd(fds[0]), Fd(fds[1])};
}

void Mapping::reset() noexcept {
  if (addr_) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

Fd memfd(const char* name, std::size_t size) {
  std::string what = std::string("memfd_create(") + name + ")";
  Fd fd(call(what.c_str(), [&] { return ::memfd_create(name, MFD_CLOEXEC); }));
  call("ftruncate", [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); });
  return fd;
}

Mapping map_shared(int fd, std::size_t size) {
  void* addr = call("mmap", [&] {
    return ::mmap(nullptr, size == 0 ? 1 : size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  });
  return Mapping(addr, size == 0 ? 1 : size);
}

Mapping map_anonymous_shared(std::size_t size) {
  void* addr = call("mmap(anonymous shared)", [&] {
    return ::mmap(nullptr, size == 0 ? 1 : size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                  -1, 0);
  });
  return Mapping(addr, size == 0 ? 1 : size);
}

Mapping map_anonymous_private(std::size_t size, bool huge) {
  if (size == 0) size = 1;
  if (huge) size = (size + kHuge - 1) / kHuge * kHuge;
  // Huge: map one huge page more than asked, then unmap the ends outside the aligned part.
  const std::size_t mapped = huge ? size + kHuge : size;
  void* addr = call("mmap(anonymous private)", [&] {
    return ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  });
  if (!huge) return Mapping(addr, size);
  const auto begin = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t aligned = (begin + kHuge - 1) & ~std::uintptr_t{kHuge - 1};
  if (aligned > begin) ::munmap(addr, aligned - begin);
  if (const std::uintptr_t tail = begin + mapped - (aligned + size); tail > 0)
    ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  static_cast<void>(::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE));
  return Mapping(reinterpret_cast<void*>(aligned), size);
}

void prefault(void* p, std::size_t bytes) noexcept {
  if (p == nullptr || bytes == 0) return;
  static const auto kPage = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = begin + bytes;
  const std::uintptr_t first_huge = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t last_huge = end & ~(kHuge - 1);
  if (first_huge < last_huge)
    static_cast<void>(
        ::madvise(reinterpret_cast<void*>(first_huge), last_huge - first_huge, MADV_HUGEPAGE));
  // Whole pages: the ones at the edges are written too.
  const std::uintptr_t first = begin & ~(kPage - 1);
  const std::uintptr_t last = (end + kPage - 1) & ~(kPage - 1);
  static_cast<void>(::madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE));
}

Fd pidfd_open(pid_t pid) {
  return Fd(
      static_cast<int>(call("pidfd_open", [&] { return ::syscall(SYS_pidfd_open, pid, 0); })));
}

bool pidfd_send_signal(int pidfd, int sig) {
  long rc = call_raw("pidfd_send_signal",
                     [&] { return ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0); });
  if (rc == -1) {
    if (errno == ESRCH) return false;
    throw_errno("pidfd_send_signal");
  }
  return true;
}

}  // namespace mpx::sys

namespace mpx::detail {

bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, const Deadline& deadline) {
  auto ts = deadline.monotonic_timespec();
  if (ts && deadline.expired()) return false;
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time; no FUTEX_PRIVATE_FLAG, so
  // the word may live in memory shared between processes.
  long rc = ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_BITSET, expected,
                      ts ? &*ts : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == -1 && errno == ETIMEDOUT) return false;
  // 0 (woken), EAGAIN (value changed), EINTR (signal): the caller re-checks its state.
  return true;
}

void futex_wake(std::atomic<uint32_t>& word, int count) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

namespace {
int compute_spin_limit() noexcept {
  if (const char* env = std::getenv("MPX_SPIN")) return std::atoi(env);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) <= 1) return 0;
  // About 2000 pause instructions (tens of µs) cover the cost of waking a halted vCPU,
  // measured in ../shared/anchors (spin <= 2000 pause then futex: 0.5-0.8 µs round trip).
  return 2000;
}
}  // namespace

int spin_limit() noexcept {
  static const int limit = compute_spin_limit();
  return limit;
}

}  // namespace mpx::detail

namespace mpx::sys {

RobustMutex::RobustMutex() {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int rc = ::pthread_mutex_init(&mutex_, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_errno("pthread_mutex_init(robust, pshared)", rc);
}

RobustMutex::~RobustMutex() {
  ::pthread_mutex_destroy(&mutex_);
}

RobustMutex::Result RobustMutex::classify(int rc, const char* what) {
  switch (rc) {
    case 0:
      return Result::kAcquired;
    case EOWNERDEAD:
      return Result::kOwnerDied;
    case EBUSY:
    case ETIMEDOUT:
      return Result::kTimedOut;
    default:
      throw_errno(what, rc);
  }
}

RobustMutex::Result RobustMutex::lock_contended(const mpx::detail::Deadline& deadline) {
  Result r = Result::kTimedOut;
  for (int i = mpx::detail::spin_limit() / 16; i > 0; --i) {
    for (int j = 0; j < 16; ++j)
      mpx::detail::cpu_relax();
    // Read before trying: a failed try writes the owner's cache line and slows it down.
    if (owner_tid() != 0) continue;
    r = try_lock();
    if (r != Result::kTimedOut) return r;
  }
  if (deadline.is_never()) return classify(::pthread_mutex_lock(&mutex_), "pthread_mutex_lock");
  timespec ts = *deadline.monotonic_timespec();
  return classify(::pthread_mutex_clocklock(&mutex_, CLOCK_MONOTONIC, &ts),
                  "pthread_mutex_clocklock");
}

void RobustMutex::mark_consistent() {
  if (int rc = ::pthread_mutex_consistent(&mutex_)) throw_errno("pthread_mutex_consistent", rc);
}

void RobustMutex::unlock_failed(int rc) {
  throw_errno("pthread_mutex_unlock", rc);
}

pid_t RobustMutex::owner_tid() const noexcept {
  return static_cast<pid_t>(__atomic_load_n(&mutex_.__data.__lock, __ATOMIC_RELAXED) &
                            FUTEX_TID_MASK);
}

namespace {
std::atomic<pid_t> g_pid{0};
// initial-exec: no __tls_get_addr call on the lock paths when built as a shared library.
thread_local pid_t t_tid __attribute__((tls_model("initial-exec"))) = 0;

void reset_after_fork() noexcept {
  g_pid.store(0, std::memory_order_relaxed);
  t_tid = 0;
}

void install_atfork() noexcept {
  static const bool installed = [] {
    atfork(nullptr, nullptr, reset_after_fork);
    return true;
  }();
  (void)installed;
}
}  // namespace

void refresh_after_fork() noexcept {
  reset_after_fork();
}

pid_t this_pid() noexcept {
  pid_t pid = g_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    install_atfork();
    pid = ::getpid();
    g_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

pid_t this_tid() noexcept {
  if (t_tid == 0) {
    install_atfork();
    t_tid = static_cast<pid_t>(::syscall(SYS_gettid));
  }
  return t_tid;
}

bool process_alive(pid_t pid) noexcept {
  long fd = call_raw("pidfd_open", [&] { return ::syscall(SYS_pidfd_open, pid, 0); });
  if (fd < 0) return errno != ESRCH;
  pollfd p{static_cast<int>(fd), POLLIN, 0};
  int rc = call_raw("poll(pidfd)", [&] { return ::poll(&p, 1, 0); });
  ::close(static_cast<int>(fd));
  return !(rc == 1 && (p.revents & POLLIN));
}

}  // namespace mpx::sys
