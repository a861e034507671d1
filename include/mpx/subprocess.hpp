// mpx/subprocess.hpp — run other programs: feed them input, read their output, time them
// out (Python's subprocess module, same names, in namespace mpx::subprocess).
//
//   namespace sp = mpx::subprocess;
//   auto r = sp::run({"ls", "-l"}, {.capture_output = true, .text = true});
//   std::printf("%d: %s", r.returncode, r.stdout.c_str());
//   std::string log = sp::check_output({"git", "log", "-1"});     // throws on failure
//
// Options are Python's keyword arguments, as a struct for designated initializers (in the
// order of the struct): run(args, {.input = data, .capture_output = true, .timeout = 2s}).
//
// How a child is started. posix_spawn(3) (glibc: clone with CLONE_VM|CLONE_VFORK, so the
// cost does not grow with the parent's memory) does everything but `umask`: the standard
// streams (adddup2), `cwd` (addfchdir_np on a directory opened in the parent),
// `close_fds` (addclosefrom_np), `pass_fds` (adddup2 onto itself clears close-on-exec,
// the fds between them are closed one by one), `start_new_session` (POSIX_SPAWN_SETSID),
// `process_group` (SETPGROUP), `restore_signals` (SETSIGDEF). glibc reports a failed exec
// as posix_spawn's result, so exec errors reach the caller without an error pipe. With
// `umask` (or pass_fds that leave more than 1024 fds to close) the child is made by
// fork() and runs only async-signal-safe calls up to execve; an exec failure travels back
// through a close-on-exec pipe, as in CPython's _posixsubprocess.
// Either way the child starts with no signal blocked (whatever the calling thread
// blocks) and, with restore_signals, SIGPIPE and SIGXFSZ at their default action.
// A program name without '/' is searched in PATH (of `env` when given, else of this
// process; "/bin:/usr/bin" when unset) by the parent, relative to `cwd`, as execvp does.
//
// Errors, as Python's: a program that cannot be executed throws in the caller
// FileNotFoundError (missing), PermissionError (not executable), NotADirectoryError or
// OSError (errno_value(), filename()); never a child that exits 127. A `cwd` that cannot
// be entered throws the same errors naming the directory. CalledProcessError (check),
// TimeoutExpired (timeouts); ValueError for contradictory options (input with stdin,
// capture_output with stdout/stderr, an embedded NUL, an '=' in an env name).
//
// Resources: every fd mpx opens is O_CLOEXEC, so no pipe of one Popen leaks into a child
// started by another thread at the same time; with close_fds (the default) the child also
// loses the fds others opened without O_CLOEXEC. No zombies: see ~Popen().
//
// Thread safety: run() and the other functions may be called from many threads at once.
// One Popen: poll(), wait(), returncode(), send_signal() from any threads;
// communicate() and the pipe ends from one thread at a time.
// Across fork: a Popen copied into a forked child is not the child's child: it must only
// be destroyed there (which does nothing to the process).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/errors.hpp"

namespace mpx::subprocess {

using mpx::CalledProcessError;
using mpx::SubprocessError;
using mpx::TimeoutExpired;

// Values for RunOptions::stdin/stdout/stderr besides a file descriptor (Python's).
inline constexpr int PIPE = -1;     // a new pipe to this process (Popen::stdin() etc.)
inline constexpr int STDOUT = -2;   // stderr only: where the child's stdout goes
inline constexpr int DEVNULL = -3;  // /dev/null

// A command: a list of arguments, or one string (the program's name when shell is false,
// the shell command when it is true).
//   run({"ls", "-l"});  run("make");  run("ls | wc -l", {.shell = true});
class Args {
 public:
  Args(std::initializer_list<std::string> argv) : argv_(argv) {}   // NOLINT
  Args(std::vector<std::string> argv) : argv_(std::move(argv)) {}  // NOLINT
  Args(std::string command) : argv_{std::move(command)} {}         // NOLINT
  Args(const char* command) : argv_{std::string(command)} {}       // NOLINT
  const std::vector<std::string>& argv() const& noexcept { return argv_; }
  std::vector<std::string> argv() && noexcept { return std::move(argv_); }

 private:
  std::vector<std::string> argv_;
};

// Python's keyword arguments of run() and Popen(), in this order. Fields marked (run) are
// run()'s own; Popen throws ValueError when they are set.
struct RunOptions {
  // Each standard stream of the child: empty (inherit this process's), PIPE, DEVNULL, an
  // fd of this process, or (stderr only) STDOUT.
  std::optional<int> stdin{};
  // (run) Written to the child's stdin, which becomes a pipe; then stdin is closed.
  std::optional<std::string> input{};
  std::optional<int> stdout{};
  std::optional<int> stderr{};
  // stdout and stderr = PIPE, both captured.
  bool capture_output = false;
  // Run the command through /bin/sh -c (args: the command, then $0, $1...).
  bool shell = false;
  // The child's working directory (resolved in the parent: errors name it).
  std::optional<std::filesystem::path> cwd{};
  // (run) Kill the child (SIGKILL) and throw TimeoutExpired after this long.
  std::optional<std::chrono::duration<double>> timeout{};
  // (run) Throw CalledProcessError when the return code is not 0.
  bool check = false;
  // Text mode: the output must be UTF-8 (DecodeError otherwise) and "\r\n" and "\r"
  // become "\n" (Python's universal newlines). Output is a std::string either way.
  bool text = false;
  // The child's whole environment; empty: this process's (see environ()).
  std::optional<std::map<std::string, std::string>> env{};
  // The program to run instead of args[0] (args[0] stays the child's argv[0]); with
  // shell, the shell to run instead of /bin/sh.
  std::optional<std::string> executable{};
  // Close every fd but 0, 1, 2 and pass_fds in the child (Python's default).
  bool close_fds = true;
  // Fds kept open in the child under their own numbers (implies close_fds).
  std::vector<int> pass_fds{};
  // SIGPIPE and SIGXFSZ at their default action in the child.
  bool restore_signals = true;
  // setsid() in the child: a new session and process group, no controlling terminal.
  bool start_new_session = false;
  // setpgid(0, group) in the child (0: a new group led by the child).
  std::optional<pid_t> process_group{};
  // umask(value) in the child (needs the fork path, see the top).
  std::optional<mode_t> umask{};
  // F_SETPIPE_SZ on the pipes made for PIPE.
  std::optional<int> pipesize{};
};
using PopenOptions = RunOptions;

// The result of run() (subprocess.CompletedProcess).
struct CompletedProcess {
  std::vector<std::string> args;
  // 0..255 as the child exited, -N when signal N killed it.
  int returncode = 0;
  // What was captured (empty when not a pipe).
  std::string stdout;
  std::string stderr;
  // Throws CalledProcessError (with the output) when returncode is not 0.
  void check_returncode() const;
};

class Popen;

// One end of a pipe to a child (Popen::stdin(), stdout(), stderr()); Python's file
// objects, unbuffered for writing. "None" (Python's None: no pipe was asked for) when
// !*this; then every call but closed() throws InvalidStateError.
// Usable in mpx::wait() (it has fileno()): mpx::wait({p.stdout(), p.stderr()}, 1s). A
// read may keep bytes beyond what it returns (readline, text mode); read1() returns
// those first.
// Thread safety: one thread at a time. Across fork: the fd is O_CLOEXEC and is inherited by
// a forked child like any fd.
class PipeEnd {
 public:
  PipeEnd() noexcept;
  PipeEnd(PipeEnd&&) noexcept;
  PipeEnd& operator=(PipeEnd&&) noexcept;
  ~PipeEnd();

  explicit operator bool() const noexcept;
  bool closed() const noexcept;
  // The fd, for poll(2) and mpx::wait(). Throws InvalidStateError when None or closed.
  int fileno() const;
  // Closes this end; idempotent; never throws.
  void close() noexcept;

  // Reading (stdout and stderr ends). Blocks until the bytes are there.
  // read(): everything up to EOF. read(n): n bytes, fewer only at EOF.
  // read1(n): whatever one read(2) returns, up to n; empty at EOF.
  // readline(): up to and including '\n' (without it at EOF); empty at EOF.
  // Throws: InvalidStateError (None, closed or a write end); DecodeError (text mode);
  //   std::system_error.
  std::string read();
  std::string read(std::size_t n);
  std::string read1(std::size_t n = 65536);
  std::string readline();
  std::vector<std::string> readlines();

  // Writes all of data (stdin end). Blocks while the pipe is full.
  // Throws: InvalidStateError; BrokenPipeError (a std::system_error, EPIPE) when the
  //   child closed its end (SIGPIPE is blocked during the write: this process is not
  //   killed); std::system_error.
  std::size_t write(std::string_view data);
  // Nothing is buffered; for ported code.
  void flush() const noexcept {}

  struct Impl;  // the implementation's

 private:
  friend class Popen;
  explicit PipeEnd(std::unique_ptr<Impl> impl) noexcept;
  Impl& checked(bool want_read) const;
  std::unique_ptr<Impl> impl_;
};

// A child process running a program (subprocess.Popen).
//   sp::Popen p({"grep", "x"}, {.stdin = sp::PIPE, .stdout = sp::PIPE});
//   auto [out, err] = p.communicate("a\nx\n");   // out == "x\n", p.returncode() == 0
// Pipelines: one Popen's stdout end as the next one's stdin, then close it here:
//   sp::Popen a({"ls"}, {.stdout = sp::PIPE});
//   sp::Popen b({"wc", "-l"}, {.stdin = a.stdout().fileno(), .stdout = sp::PIPE});
//   a.stdout().close();  // so that a gets SIGPIPE if b exits first
// OS resources: the child, a pidfd (sentinel()) and the pipes asked for; released by the
// destructor.
class Popen {
 public:
  // Starts the child. Blocks: for the spawn (~0.2-1 ms).
  // Throws: FileNotFoundError / PermissionError / NotADirectoryError / OSError when the
  //   program (or cwd) cannot be used; ValueError for bad options (see the top);
  //   std::system_error when the OS refuses (pipe2, posix_spawn, fork, pidfd_open).
  explicit Popen(Args args, PopenOptions options = {});
  // Popen({"ls", "-l"}) (without it, a braced list would be ambiguous with the move).
  explicit Popen(std::initializer_list<std::string> args, PopenOptions options = {})
      : Popen(Args(args), std::move(options)) {}
  Popen(Popen&&) noexcept;
  // Assigning over a Popen releases it as the destructor does.
  Popen& operator=(Popen&&) noexcept;
  Popen(const Popen&) = delete;
  Popen& operator=(const Popen&) = delete;
  // Closes the pipe ends. A child that has exited is reaped at once; one that still runs
  // is neither waited for nor killed: a process-wide reaper thread (started the first
  // time it is needed, with every signal blocked) reaps it when it exits, so it never
  // stays a zombie; its return code is lost. (Python keeps it in a list and reaps it at the
  // next Popen.) Like Python, this process does not wait for such children at exit.
  ~Popen();

  const std::vector<std::string>& args() const;
  pid_t pid() const;
  // The return code once reaped (by poll, wait or communicate), else empty (Python's
  // Popen.returncode attribute; it does not poll). -N: killed by signal N. 0 when
  // another part of the program reaped the child first (status lost, as in Python).
  std::optional<int> returncode() const;

  // Reaps the child if it has exited. Does not block.
  std::optional<int> poll();
  // Waits for the child to exit and returns its return code.
  // Blocks: yes. Timeout: steady clock. Throws: TimeoutExpired (the child keeps running).
  int wait();
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::Deadline::after(timeout), timeout);
  }

  // Writes input to stdin (then closes it), reads stdout and stderr to EOF, all at once
  // (poll(2): no deadlock whatever the sizes), then waits for the child. Returns
  // {stdout, stderr}; empty for a stream that is not a pipe.
  // Blocks: yes. Timeout: throws TimeoutExpired carrying the output so far and leaves the
  //   child running; a later communicate() (without input) goes on where it stopped and
  //   returns all the output.
  // Throws: ValueError (input without a stdin pipe, or input given again after a
  //   timeout); DecodeError (text mode); std::system_error.
  std::pair<std::string, std::string> communicate(std::string_view input = {});
  template <class Rep, class Period>
  std::pair<std::string, std::string> communicate(std::string_view input,
                                                  std::chrono::duration<Rep, Period> timeout) {
    return communicate_until(input, detail::Deadline::after(timeout), timeout);
  }

  // Signals the child (pidfd_send_signal: never another process that reused the pid);
  // nothing once it has been reaped. terminate(): SIGTERM; kill(): SIGKILL.
  void send_signal(int sig);
  void terminate();
  void kill();

  // The pipe ends (None when the stream was not a PIPE).
  PipeEnd& stdin();
  PipeEnd& stdout();
  PipeEnd& stderr();

  // The child's pidfd: readable once it has exited; for poll(2) or mpx::wait(). Valid
  // while this Popen lives. (Not in Python.)
  int sentinel() const;

  struct Impl;  // the implementation's

 private:
  int wait_until(const detail::Deadline& deadline,
                 std::optional<std::chrono::duration<double>> timeout);
  std::pair<std::string, std::string> communicate_until(
      std::string_view input, const detail::Deadline& deadline,
      std::optional<std::chrono::duration<double>> timeout);
  Impl& checked() const;
  std::unique_ptr<Impl> impl_;
};

// Runs the command, waits for it, returns what it did (subprocess.run).
// With timeout: on expiry the child gets SIGKILL and is reaped, then TimeoutExpired is
// thrown with the output so far. With check: CalledProcessError for a non-zero code.
// Blocks: until the child exits. Throws: as Popen(), plus TimeoutExpired,
//   CalledProcessError.
CompletedProcess run(Args args, RunOptions options = {});

// Runs the command and returns its return code (subprocess.call). input is not allowed.
int call(Args args, RunOptions options = {});
// As call(), but throws CalledProcessError for a non-zero code; returns 0.
int check_call(Args args, RunOptions options = {});
// Runs the command and returns its stdout (subprocess.check_output); throws
// CalledProcessError (with the output) for a non-zero code.
std::string check_output(Args args, RunOptions options = {});
// Runs `cmd` with the shell, stderr into stdout, in text mode; returns {return code,
// output without its last '\n'} (subprocess.getstatusoutput). Never throws for the
// command's failure.
std::pair<int, std::string> getstatusoutput(const std::string& cmd);
// getstatusoutput(cmd)'s output (subprocess.getoutput).
std::string getoutput(const std::string& cmd);

// This process's environment as a map (Python's os.environ), for building `env`:
//   auto env = sp::environ(); env["LANG"] = "C"; sp::run({"date"}, {.env = env});
std::map<std::string, std::string> environ();

}  // namespace mpx::subprocess
