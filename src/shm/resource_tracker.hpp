// src/shm/resource_tracker.hpp — unlinks the named shared memory a process created and left
// behind when it ends, even by kill -9 (Python's resource_tracker, done right).
//
// One tracker per creating process, started at its first register_segment(): a
// grandchild (double fork, so never this process's child to reap) that reads "+name" /
// "-name" lines from a pipe whose write end only this process holds, and on end of file
// (this process is gone) unlinks every name still registered and exits. The write end is
// closed in children forked later (pthread_atfork), so a child neither keeps the tracker
// alive nor registers into it: a child that creates segments starts its own tracker.
// OS resources: one fd in this process for its lifetime; one small process.
#pragma once

#include <string>

namespace mpx::detail {

// Tracks the named segment `name` (with its leading '/') created by this process.
// Throws std::system_error when the tracker cannot be started.
void register_segment(const std::string& name);
// Stops tracking `name` (it was unlinked). Never throws.
void unregister_segment(const std::string& name) noexcept;

}  // namespace mpx::detail
