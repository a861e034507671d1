// src/process/subprocess_internal.hpp — the seams between the files of mpx::subprocess:
// spawn.cpp (starting a program), popen.cpp (Popen, communicate, the reaper) and
// subprocess.cpp (run() and friends, pipe ends, text decoding).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "mpx/subprocess.hpp"
#include "sys/fd.hpp"

namespace mpx::detail {

// What spawn() starts. Every fd named here belongs to the caller and stays open.
struct SpawnRequest {
  std::string program;                            // exec'd; searched in PATH without '/'
  std::vector<std::string> argv;                  // argv[0] included
  const std::vector<std::string>* env = nullptr;  // "NAME=value"; null: this process's
  int stdio[3] = {-1, -1, -1};                    // the child's 0, 1, 2; -1: inherit
  // cwd, close_fds, pass_fds, restore_signals, start_new_session, process_group, umask.
  const subprocess::RunOptions* options = nullptr;
};

struct Spawned {
  pid_t pid = 0;
  sys::Fd pidfd;
};

// Starts the program (see "How a child is started" in mpx/subprocess.hpp).
// Throws: the OSError subclass for errno when the program or cwd cannot be used;
//   std::system_error for other failures of the OS.
Spawned spawn(const SpawnRequest& request);

// Takes over the pidfd of a child that still runs and reaps the child when it exits (on
// the reaper thread, started on first use).
void reap_later(sys::Fd pidfd) noexcept;

// The exit status of an exited child, Python's way: N for exit(N), -N for signal N.
int returncode_of(int code, int status) noexcept;

// Blocks SIGPIPE in the calling thread while it lives, so that a write to a pipe whose
// reader has gone fails with EPIPE instead of killing the process; a SIGPIPE raised
// meanwhile is consumed. (Python ignores SIGPIPE process-wide; a library must not.)
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept;
  ~SigpipeGuard();
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

// Incremental text decoding for text mode: checks UTF-8 and turns "\r\n" and "\r" into
// "\n". feed() returns the text of the bytes given so far that is complete; with final,
// all of it (an incomplete UTF-8 sequence at the end throws DecodeError).
class TextDecoder {
 public:
  std::string feed(std::string_view bytes, bool final);

 private:
  std::string held_;  // an incomplete UTF-8 sequence or a '\r' from the last feed
};

}  // namespace mpx::detail

namespace mpx::subprocess {

struct PipeEnd::Impl {
  sys::Fd fd;
  bool reader = false;
  bool text = false;
  bool eof = false;
  std::string buffer;  // read, decoded, not returned yet
  detail::TextDecoder decoder;
};

}  // namespace mpx::subprocess
