// src/process_internal.hpp — the seams between process.cpp and thread.cpp.
#pragma once

namespace mpx::detail {

// Joins the mpx Threads that are running and not daemon (Python's threading._shutdown).
void join_non_daemon_threads() noexcept;

}  // namespace mpx::detail
