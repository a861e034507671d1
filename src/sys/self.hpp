// src/sys/self.hpp — who am I: this process's pid and this thread's kernel tid, cached.
//
// getpid()/gettid() are system calls in glibc; locks ask for the tid on every ownership
// check, so both are cached and the caches are reset in the child after fork()
// (sys::atfork). A child made by another clone than fork() must call
// refresh_after_fork() itself (or be made by sys::fork_with_handlers once it ran).
#pragma once

#include <sys/types.h>

namespace mpx::sys {

pid_t this_pid() noexcept;
pid_t this_tid() noexcept;
void refresh_after_fork() noexcept;

// True unless `pid` has exited: false when it is gone or a zombie (not yet reaped).
// Uses a pidfd, so a zombie counts as dead, unlike kill(pid, 0).
bool process_alive(pid_t pid) noexcept;

}  // namespace mpx::sys
