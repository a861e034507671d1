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
#include <chrono>
#include <cstdio>
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

// A key not in a mapping (Python's KeyError), e.g. from a manager dict proxy.
class KeyError : public Error {
 public:
  using Error::Error;
};

// An index out of range (Python's IndexError), e.g. from a manager list proxy or
// Array::at.
class IndexError : public Error {
 public:
  using Error::Error;
};

// A method or attribute that does not exist or is not exposed (Python's AttributeError),
// e.g. a manager proxy calling a method its type does not expose.
class AttributeError : public Error {
 public:
  using Error::Error;
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

// An operating-system error tied to a file or a program (Python's OSError): errno_value()
// is the errno (0 when the error was made from a message only), filename() the file or
// program concerned. The subclasses below are chosen by errno, as Python chooses them;
// throw_os_error() throws the right one.
class OSError : public Error {
 public:
  explicit OSError(const std::string& message) : Error(message) {}
  explicit OSError(const char* message) : Error(message) {}
  // "[Errno 2] No such file or directory: 'prog'", as Python prints it.
  OSError(int err, std::string filename)
      : Error(describe(err, filename)), errno_(err), filename_(std::move(filename)) {}
  int errno_value() const noexcept { return errno_; }
  const std::string& filename() const noexcept { return filename_; }
  // The errno's text ("No such file or directory"); empty when errno_value() is 0.
  std::string strerror() const {
    const char* text = errno_ ? ::strerrordesc_np(errno_) : nullptr;
    return text ? text : "";
  }

 private:
  static std::string describe(int err, const std::string& filename) {
    const char* text = ::strerrordesc_np(err);
    std::string s = "[Errno " + std::to_string(err) + "] " + (text ? text : "Unknown error");
    return filename.empty() ? s : s + ": '" + filename + "'";
  }
  int errno_ = 0;
  std::string filename_;
};

// A named resource (shared memory segment, queue, file) that was to be created exists
// already (EEXIST).
class FileExistsError : public OSError {
 public:
  using OSError::OSError;
};

// A named resource or a program that was to be opened or run does not exist (ENOENT).
class FileNotFoundError : public OSError {
 public:
  using OSError::OSError;
};

// Permission denied (EACCES, EPERM): e.g. running a file that is not executable.
class PermissionError : public OSError {
 public:
  using OSError::OSError;
};

// A path component that had to be a directory is not one (ENOTDIR).
class NotADirectoryError : public OSError {
 public:
  using OSError::OSError;
};

// A connection failed (Python's ConnectionError).
class ConnectionError : public OSError {
 public:
  using OSError::OSError;
};

// Nobody listens at the address connected to (ECONNREFUSED): Client() to a server that
// is gone, or not started yet.
class ConnectionRefusedError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// A send to a connection whose every reader is gone (Python's BrokenPipeError). It is
// the std::system_error for EPIPE, so code that catches either sees it.
class BrokenPipeError : public std::system_error {
 public:
  explicit BrokenPipeError(const std::string& what)
      : std::system_error(EPIPE, std::generic_category(), what) {}
};

// Throws the OSError subclass Python would raise for `err`, naming `filename`.
[[noreturn]] inline void throw_os_error(int err, std::string filename) {
  switch (err) {
    case ENOENT:
      throw FileNotFoundError(err, std::move(filename));
    case EEXIST:
      throw FileExistsError(err, std::move(filename));
    case EACCES:
    case EPERM:
      throw PermissionError(err, std::move(filename));
    case ENOTDIR:
      throw NotADirectoryError(err, std::move(filename));
    case ECONNREFUSED:
      throw ConnectionRefusedError(err, std::move(filename));
    default:
      throw OSError(err, std::move(filename));
  }
}

// ---------------------------------------------------------------------------
// mpx/subprocess.hpp (Python's subprocess module).

namespace detail {
// A command as Python prints it in messages: ['ls', '-l'].
inline std::string format_cmd(const std::vector<std::string>& cmd) {
  std::string s = "[";
  for (std::size_t i = 0; i < cmd.size(); ++i) {
    if (i) s += ", ";
    s += "'" + cmd[i] + "'";
  }
  return s + "]";
}
}  // namespace detail

// Base of the errors of mpx::subprocess (subprocess.SubprocessError).
class SubprocessError : public Error {
 public:
  using Error::Error;
};

// A program run with check (run(..., {.check = true}), check_call, check_output) ended
// with a non-zero return code (subprocess.CalledProcessError). returncode() follows
// Popen::returncode(): -N when signal N killed it. output()/stdout() and stderr() hold
// what was captured (empty when not captured).
class CalledProcessError : public SubprocessError {
 public:
  CalledProcessError(int returncode, std::vector<std::string> cmd, std::string output = {},
                     std::string stderr_output = {})
      : SubprocessError(describe(returncode, cmd)),
        returncode_(returncode),
        cmd_(std::move(cmd)),
        output_(std::move(output)),
        stderr_(std::move(stderr_output)) {}
  int returncode() const noexcept { return returncode_; }
  const std::vector<std::string>& cmd() const noexcept { return cmd_; }
  const std::string& output() const noexcept { return output_; }
  const std::string& stdout() const noexcept { return output_; }
  const std::string& stderr() const noexcept { return stderr_; }

 private:
  static std::string describe(int returncode, const std::vector<std::string>& cmd) {
    std::string s = "Command '" + detail::format_cmd(cmd) + "' ";
    if (returncode >= 0)
      return s + "returned non-zero exit status " + std::to_string(returncode) + ".";
    const char* abbrev = ::sigabbrev_np(-returncode);
    return s + "died with <Signals." + (abbrev ? std::string("SIG") + abbrev : "signal") + ": " +
           std::to_string(-returncode) + ">.";
  }
  int returncode_;
  std::vector<std::string> cmd_;
  std::string output_;
  std::string stderr_;
};

// A wait, communicate() or run() ran past its timeout (subprocess.TimeoutExpired).
// output()/stdout() and stderr() hold what was read before it expired. run() kills the
// child before it throws; Popen::wait() and communicate() leave it running.
class TimeoutExpired : public SubprocessError {
 public:
  TimeoutExpired(std::vector<std::string> cmd, std::chrono::duration<double> timeout,
                 std::string output = {}, std::string stderr_output = {})
      : SubprocessError("Command '" + detail::format_cmd(cmd) + "' timed out after " +
                        format_seconds(timeout) + " seconds"),
        cmd_(std::move(cmd)),
        timeout_(timeout),
        output_(std::move(output)),
        stderr_(std::move(stderr_output)) {}
  const std::vector<std::string>& cmd() const noexcept { return cmd_; }
  std::chrono::duration<double> timeout() const noexcept { return timeout_; }
  const std::string& output() const noexcept { return output_; }
  const std::string& stdout() const noexcept { return output_; }
  const std::string& stderr() const noexcept { return stderr_; }

 private:
  static std::string format_seconds(std::chrono::duration<double> t) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", t.count());
    return buf;
  }
  std::vector<std::string> cmd_;
  std::chrono::duration<double> timeout_;
  std::string output_;
  std::string stderr_;
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
