// src/process_internal.hpp — the seams between process.cpp and thread.cpp.
#pragma once

namespace mpx::detail {

// Joins the mpx Threads that are running and not daemon (Python's threading._shutdown).
void join_non_daemon_threads() noexcept;
// In a forked child: the parent's other threads do not exist here; marks their Thread
// states finished and forgets them.
void threads_after_fork_in_child() noexcept;
// The daemon flag of the calling thread (the default of new Threads).
bool current_thread_daemon() noexcept;

}  // namespace mpx::detail
