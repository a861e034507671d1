// src/sys/pidfd.hpp — process file descriptors: race-free signalling and exit waits.
#pragma once

#include <sys/types.h>

#include "sys/fd.hpp"

namespace mpx::sys {

// pidfd_open(pid) (O_CLOEXEC by definition). The fd becomes readable when the process
// exits; throws std::system_error.
Fd pidfd_open(pid_t pid);
// pidfd_send_signal; returns false if the process has already been reaped (ESRCH).
bool pidfd_send_signal(int pidfd, int sig);

}  // namespace mpx::sys
