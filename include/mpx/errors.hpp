// mpx/errors.hpp — the one exception hierarchy of mpx, named after Python's.
//
//   try { q.get(100ms); } catch (const mpx::Empty&) { ... }
//
// Runtime failures derive from mpx::Error (a std::runtime_error). Misuse of an API
// (what Python reports as ValueError/AssertionError) derives from mpx::UsageError
// (a std::logic_error). Failed system calls throw std::system_error naming the call.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace mpx {

// Base of every runtime error mpx throws (besides std::system_error for OS failures).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A blocking call's timeout expired (multiprocessing.TimeoutError,
// concurrent.futures.TimeoutError). Also the failure of a pool task that ran past its
// per-task timeout.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// get() on an empty queue with a timeout or without blocking (queue.Empty).
class Empty : public Error {
 public:
  using Error::Error;
  Empty() : Error("queue is empty") {}
};

// put() on a full queue with a timeout or without blocking (queue.Full).
class Full : public Error {
 public:
  using Error::Error;
  Full() : Error("queue is full") {}
};

// The other end of a connection is closed or its process died (EOFError).
class EOFError : public Error {
 public:
  using Error::Error;
  EOFError() : Error("end of file: the other end is closed") {}
};

// Base of process-related failures (multiprocessing.ProcessError).
class ProcessError : public Error {
 public:
  using Error::Error;
};

// A Listener/Client handshake failed: wrong or missing authkey.
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// recv_bytes_into() was given a buffer too small for the message; the whole message is
// kept here so that nothing is lost.
class BufferTooShort : public ProcessError {
 public:
  explicit BufferTooShort(std::vector<std::byte> message)
      : ProcessError("buffer too short for a message of " + std::to_string(message.size()) +
                     " bytes"),
        message_(std::move(message)) {}
  const std::vector<std::byte>& message() const noexcept { return message_; }

 private:
  std::vector<std::byte> message_;
};

// A Barrier was broken (timeout, abort, failing action, a participant died).
class BrokenBarrierError : public Error {
 public:
  using Error::Error;
  BrokenBarrierError() : Error("barrier is broken") {}
};

// A pool or executor can no longer run tasks (concurrent.futures BrokenProcessPool):
// e.g. its initializer keeps failing.
class BrokenPool : public Error {
 public:
  using Error::Error;
};
using BrokenProcessPool = BrokenPool;

// The future was cancelled before it ran (concurrent.futures.CancelledError).
class CancelledError : public Error {
 public:
  using Error::Error;
  CancelledError() : Error("future was cancelled") {}
};

// The worker process running a task died (signal, exit, OOM kill) before the task
// finished. Names the worker's pid and how it ended.
class WorkerLost : public Error {
 public:
  // `status` follows Process::exitcode(): N >= 0 for exit(N), -N for signal N.
  WorkerLost(pid_t pid, int status) : Error(describe(pid, status)), pid_(pid), status_(status) {}
  pid_t pid() const noexcept { return pid_; }
  int exitcode() const noexcept { return status_; }
  std::optional<int> signal() const noexcept {
    return status_ < 0 ? std::optional<int>(-status_) : std::nullopt;
  }

 private:
  static std::string describe(pid_t pid, int status);
  pid_t pid_;
  int status_;
};

// A task threw an exception of a type that cannot be rethrown as itself in the caller.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message, pid_t pid)
      : Error(type_name + ": " + message + " (in process " + std::to_string(pid) + ")"),
        type_name_(std::move(type_name)),
        message_(std::move(message)),
        pid_(pid) {}
  const std::string& type_name() const noexcept { return type_name_; }
  const std::string& remote_message() const noexcept { return message_; }
  pid_t pid() const noexcept { return pid_; }

 private:
  std::string type_name_;
  std::string message_;
  pid_t pid_;
};

// Bytes could not be decoded: truncated, malformed, or of another type than asked for.
class DecodeError : public Error {
 public:
  using Error::Error;
};

// The lock was acquired, but its previous owner died while holding it: the state it
// protected may be inconsistent. The caller holds the lock when this is thrown.
class OwnerDied : public Error {
 public:
  using Error::Error;
  OwnerDied() : Error("the previous owner of the lock died while holding it") {}
};

// A named resource (shared memory segment, queue) that was to be created exists already.
class FileExistsError : public Error {
 public:
  using Error::Error;
};

// A named resource that was to be opened does not exist.
class FileNotFoundError : public Error {
 public:
  using Error::Error;
};

// A send to a connection whose every reader is gone (Python's BrokenPipeError). It is
// the std::system_error for EPIPE, so code that catches either sees it.
class BrokenPipeError : public std::system_error {
 public:
  explicit BrokenPipeError(const std::string& what)
      : std::system_error(EPIPE, std::generic_category(), what) {}
};

// ---------------------------------------------------------------------------
// Misuse of an API: a programming error in the caller, reported like Python does.

class UsageError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// A call on an object in the wrong state: starting a process twice, joining one never
// started, using a closed pool, connection or process (Python: ValueError/AssertionError).
class InvalidStateError : public UsageError {
 public:
  using UsageError::UsageError;
};

// An argument or operation count out of range: releasing an unlocked lock, too many
// task_done() calls, over-releasing a BoundedSemaphore (Python: ValueError).
class ValueError : public UsageError {
 public:
  using UsageError::UsageError;
};

inline std::string WorkerLost::describe(pid_t pid, int status) {
  std::string how;
  if (status < 0) {
    const char* abbrev = ::sigabbrev_np(-status);
    how = "killed by signal " + std::to_string(-status) +
          (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
  } else {
    how = "exited with code " + std::to_string(status);
  }
  return "worker process " + std::to_string(pid) + " was lost: " + how;
}

}  // namespace mpx
