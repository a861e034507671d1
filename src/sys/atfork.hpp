// src/sys/atfork.hpp — mpx's fork handlers, kept so that a child made by other means
// than fork() (the forkserver's clone with CLONE_PARENT) gets them as a fork's child
// would.
#pragma once

#include <sys/types.h>

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
