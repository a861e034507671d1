// src/sys/atfork.hpp — mpx's fork handlers, kept so that a child made by other means
// than fork() (the forkserver's clone with CLONE_PARENT) gets them as a fork's child
// would.
#pragma once

#include <sys/types.h>

// On the functions a forked child runs before its target and at its end: they sit
// together in .text.hot, so that the child, whose first run of each page of code is a
// page fault (fork copies no page table of the program's code), faults once for them
// rather than once per function (5 places in the binary before).
#define MPX_CHILD_PATH [[gnu::hot]]

namespace mpx::sys {

// pthread_atfork(prepare, parent, child), each may be null; also remembered for
// fork_with_handlers. At most 32 registrations in a process.
void atfork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept;

// Runs `fork_like` (returns 0 in the child, else the child's pid or -1 with errno) between
// the handlers registered with atfork, as fork() runs pthread_atfork's: the prepare
// handlers in reverse order before it, then the parent's or the child's in order. Other
// libraries' pthread_atfork handlers do not run.
pid_t fork_with_handlers(pid_t (*fork_like)(void*), void* arg);

}  // namespace mpx::sys
