// src/sys/robust_mutex.hpp — a process-shared, robust mutex placed in shared memory.
//
// A thin layer over a pthread mutex with PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST:
// when the owner dies holding it, the next lock() succeeds and reports OwnerDied so
// that the caller can repair the state it guards and call mark_consistent(). lock()
// spins briefly (trylock) before it sleeps, like every wait in mpx.
//
// Owned by a thread: only the thread that locked it may unlock it.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include "mpx/detail/deadline.hpp"

namespace mpx::sys {

class RobustMutex {
 public:
  enum class Result { kAcquired, kOwnerDied, kTimedOut };

  // Initialises the mutex in place (the object must live in the shared mapping).
  RobustMutex();
  ~RobustMutex();
  RobustMutex(const RobustMutex&) = delete;
  RobustMutex& operator=(const RobustMutex&) = delete;

  // Blocks until acquired or the deadline passes. kOwnerDied: acquired, and the previous
  // owner died holding it; call mark_consistent() once the guarded state is repaired,
  // or unlock() without it to make the mutex unusable (ENOTRECOVERABLE -> throws).
  // Throws std::system_error (EDEADLK when this thread holds it already).
  // (The uncontended paths are inline: a channel takes a lock per message.)
  Result lock(const mpx::detail::Deadline& deadline = mpx::detail::Deadline::never()) {
    const Result r = try_lock();
    return r != Result::kTimedOut ? r : lock_contended(deadline);
  }
  // As lock(), for a caller whose try_lock() just failed: spins, then sleeps.
  Result lock_contended(const mpx::detail::Deadline& deadline);
  // Never blocks; kTimedOut when another holds it.
  Result try_lock() {
    const int rc = ::pthread_mutex_trylock(&mutex_);
    return rc == 0 ? Result::kAcquired : classify(rc, "pthread_mutex_trylock");
  }
  void mark_consistent();
  // Throws std::system_error(EPERM) when this thread does not hold it.
  void unlock() {
    if (const int rc = ::pthread_mutex_unlock(&mutex_)) unlock_failed(rc);
  }
  // Whether unlock() is a full fence as well: glibc unlocks a robust mutex with an atomic
  // exchange of its lock word (it must see FUTEX_WAITERS as it clears it), and on x86
  // every atomic read-modify-write is a full barrier. A caller that needs a seq_cst fence
  // right after unlock() may skip its own where this is true.
#if defined(__x86_64__) || defined(__i386__)
  static constexpr bool kUnlockIsFence = true;
#else
  static constexpr bool kUnlockIsFence = false;
#endif
  // The kernel thread id of the owner, 0 when unlocked or when the owner died (the kernel
  // clears the owner's tid from the futex word when it dies). A relaxed read: exact when
  // the caller compares it with its own tid, a hint otherwise.
  pid_t owner_tid() const noexcept;
  // For callers that inline the uncontended path (pthread_mutex_trylock/unlock).
  pthread_mutex_t* native_handle() noexcept {
    return &mutex_;
  }

 private:
  Result classify(int rc, const char* what);
  [[noreturn]] static void unlock_failed(int rc);
  pthread_mutex_t mutex_;
};

}  // namespace mpx::sys
