// src/sys/fd_passing.hpp — one sendmsg/recvmsg carrying file descriptors (SCM_RIGHTS) on a
// Unix socket: the resource tracker's created segments, the fds handed to spawned and
// forkserver children, the rings of an upgraded Listener connection.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <vector>

#include "sys/fd.hpp"

namespace mpx::sys {

// The most fds one message carries (the kernel's SCM_MAX_FD is 253).
inline constexpr std::size_t kMaxPassedFds = 253;

// sendmsg of `size` bytes with `fds` (at most kMaxPassedFds; none: a plain send), with
// MSG_NOSIGNAL. Returns sendmsg's result: -1 with errno on failure (EINTR retried).
ssize_t send_with_fds(const char* what, int socket, const void* data, std::size_t size,
                      std::span<const int> fds) noexcept;

// One recvmsg of at most `size` bytes (flags: e.g. MSG_WAITALL), the fds received appended
// to `fds`, close-on-exec. Returns recvmsg's result (-1 with errno, EINTR retried);
// *truncated tells whether fds were cut off (MSG_CTRUNC: the sender sent more than
// kMaxPassedFds).
ssize_t recv_with_fds(const char* what, int socket, void* data, std::size_t size,
                      std::vector<Fd>& fds, int flags = 0, bool* truncated = nullptr);

}  // namespace mpx::sys
