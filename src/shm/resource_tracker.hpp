// src/shm/resource_tracker.hpp — unlinks the named shared memory a process created and left
// behind when it ends, even by kill -9 (Python's resource_tracker, done right).
//
// One tracker per creating process, started at its first create_segment(): a
// grandchild (double fork, so never this process's child to reap) that reads "+name" /
// "-name" lines from a pipe whose write end only this process holds, creates the segments
// this process asks it to (so that no moment exists where a name is on disk and unknown
// to the tracker, even for a creator killed inside create()), and on end of file
// (this process is gone) unlinks every name still registered and exits. The write end is
// closed in children forked later (pthread_atfork), so a child neither keeps the tracker
// alive nor registers into it: a child that creates segments starts its own tracker.
// OS resources: one fd in this process for its lifetime; one small process.
#pragma once

#include <string>
#include <string_view>

namespace mpx::detail {

// "name" or "/name" → "/name", the one check of a POSIX shared memory name (SharedMemory
// and named queues). Throws ValueError, naming `what`, when the name is empty, holds a
// NUL byte or a '/' past the first character, or is longer than NAME_MAX (255) bytes.
std::string segment_path(std::string_view name, const char* what);

// Creates the named segment `path` (with its leading '/'; shm_open O_CREAT|O_EXCL, mode
// 0600) in this process's tracker, which tracks it from the moment it exists. Returns
// its fd (O_CLOEXEC), or -1 with errno set when shm_open failed (EEXIST, ...).
// Throws std::system_error when the tracker cannot be started or reached.
int create_segment(const std::string& path);
// Stops tracking `name` (it was unlinked). Never throws.
void unregister_segment(const std::string& name) noexcept;

}  // namespace mpx::detail
