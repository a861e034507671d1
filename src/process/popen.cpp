// Popen (mpx/subprocess.hpp): the child's standard streams, reaping and signals, and
// communicate(), which feeds stdin while it drains stdout and stderr (poll(2)).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "mpx/subprocess.hpp"
#include "process/subprocess_internal.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

namespace mpx::subprocess {

namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kWriteChunk = 1024 * 1024;

// Output that communicate() reads: data[0, used), read straight into the string it
// returns. Its capacity is reserved once from a size hint (the input's size: filters
// write about as much as they read) and then grows geometrically; its size follows the
// reads a step ahead, so the zeroes resize() writes land in cache lines the next read()
// fills at once, and only memory that output arrives for is ever touched.
//
// Fresh memory is what costs here: in a virtual machine a first touch of a page costs
// more than moving its bytes through the pipe. Pages are populated ahead of the reads
// 2 MiB at a time as transparent huge pages (sys::prefault), which takes 20 ms for 256
// MiB against 80 for 4 KiB faults, but only while the host has memory behind them: after
// a few idle seconds a hypervisor that takes free guest memory back (free page reporting)
// must fault each huge page in anew, and the same 256 MiB took 300 ms (0.59 GB/s through
// cat instead of 1.2). Huge pages stop, for this output, once they have cost more on
// average than 4 KiB faults would.
struct Collected {
  std::string prefix;  // read through the pipe end before communicate() (decoded)
  std::string data;
  std::size_t used = 0;
  std::size_t hint = 0;
  std::size_t populated = 0;  // data's buffer is populated up to here
  bool huge = true;           // populate in huge pages
  std::size_t huge_blocks = 0;
  std::chrono::steady_clock::duration huge_time{};  // spent populating them

  std::string so_far() const { return prefix + data.substr(0, used); }
  // Room for a read at data + used.
  void reserve_tail() {
    if (data.size() - used >= kMinRead) return;
    if (data.capacity() - used < kMinRead) {
      data.reserve(std::max({data.capacity() * 2, used + kStep, hint}));
      populated = data.size();
    }
    const std::size_t size = std::min(data.capacity(), used + kStep);
    if (size > populated && data.capacity() >= kHugeFrom) populate(size);
    data.resize(size);
  }
  // Populates the buffer up to `size` bytes, then on to a 2 MiB boundary.
  void populate(std::size_t size) {
    if (!huge) return;
    const auto base = reinterpret_cast<std::uintptr_t>(data.data());
    const std::uintptr_t end = (base + size + kHuge - 1) & ~std::uintptr_t{kHuge - 1};
    const std::size_t upto = std::min<std::size_t>(end - base, data.capacity());
    // Timed when it is one whole huge page (the first block may be a part of one).
    const bool whole = (base + populated) % kHuge == 0 && upto - populated == kHuge;
    const auto t0 = std::chrono::steady_clock::now();
    sys::prefault(data.data() + populated, upto - populated);
    if (whole) {
      huge_time += std::chrono::steady_clock::now() - t0;
      huge = huge_time <= ++huge_blocks * kBlockBudget;
    }
    populated = upto;
  }
  static constexpr std::size_t kMinRead = 4096;
  static constexpr std::size_t kStep = 256 * 1024;
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  static constexpr std::size_t kHugeFrom = 2 * kHuge;
  // 4 KiB faults fill 2 MiB in about 0.6 ms; a huge page the host has: 0.15 ms; one it
  // must fault in again: 2.3 ms. Huge pages go on while they cost less on average.
  static constexpr auto kBlockBudget = std::chrono::microseconds(600);
};

}  // namespace

struct Popen::Impl {
  std::vector<std::string> args;
  pid_t pid = 0;
  sys::Fd pidfd;
  std::mutex mu;  // returncode and reaping
  std::optional<int> returncode;
  PipeEnd in, out, err;
  // communicate()
  bool communication_started = false;
  std::string pending_input;  // what a timed-out communicate() had not written yet
  Collected out_collected, err_collected;
};

namespace {

void check_no_nul(const std::string& s, const char* what) {
  if (s.find('\0') != std::string::npos)
    throw ValueError(std::string(what) + ": embedded null byte");
}

// Reaps the child if it has exited. Call with impl.mu held.
std::optional<int> reap_locked(Popen::Impl& impl) {
  if (impl.returncode) return impl.returncode;
  siginfo_t info{};
  int rc = sys::call_raw("waitid(P_PIDFD)", [&] {
    return ::waitid(P_PIDFD, static_cast<id_t>(impl.pidfd.get()), &info, WEXITED | WNOHANG);
  });
  if (rc == -1) {
    if (errno != ECHILD) sys::throw_errno("waitid(P_PIDFD)");
    impl.returncode = 0;  // reaped elsewhere (SIGCHLD ignored...): as Python, status lost
  } else if (info.si_pid != 0) {
    impl.returncode = detail::returncode_of(info.si_code, info.si_status);
  }
  return impl.returncode;
}

}  // namespace

Popen::Popen(Args args, PopenOptions o) : impl_(std::make_unique<Impl>()) {
  if (o.input || o.timeout || o.check)
    throw ValueError(
        "Popen: input, timeout and check are arguments of run(); use communicate(input, "
        "timeout) and wait(timeout)");
  Impl& s = *impl_;
  s.args = std::move(args).argv();
  if (s.args.empty()) throw ValueError("Popen: args is empty");
  for (const std::string& a : s.args)
    check_no_nul(a, "Popen: argument");
  if (o.capture_output) {
    if (o.stdout || o.stderr)
      throw ValueError("stdout and stderr arguments may not be used with capture_output.");
    o.stdout = o.stderr = PIPE;
  }

  detail::SpawnRequest req;
  if (o.shell) {
    req.argv = {o.executable.value_or("/bin/sh"), "-c"};
    req.argv.insert(req.argv.end(), s.args.begin(), s.args.end());
    req.program = req.argv[0];
  } else {
    req.argv = s.args;
    req.program = o.executable.value_or(s.args[0]);
  }
  check_no_nul(req.program, "Popen: executable");
  std::vector<std::string> env;
  if (o.env) {
    for (const auto& [name, value] : *o.env) {
      if (name.find('=') != std::string::npos || name.find('\0') != std::string::npos)
        throw ValueError("illegal environment variable name");
      check_no_nul(value, "Popen: environment value");
      env.push_back(name + "=" + value);
    }
    req.env = &env;
  }
  o.close_fds = o.close_fds || !o.pass_fds.empty();  // as Python
  req.options = &o;

  // The child's ends stay open here until the child has its copies.
  sys::Fd child_ends[3];
  sys::Fd devnull;
  auto stream = [&](int i, const std::optional<int>& how) {
    if (!how) return;
    const int v = *how;
    if (v >= 0) {
      req.stdio[i] = v;
    } else if (v == DEVNULL) {
      if (!devnull)
        devnull.reset(
            sys::call("open(/dev/null)", [] { return ::open("/dev/null", O_RDWR | O_CLOEXEC); }));
      req.stdio[i] = devnull.get();
    } else if (v == PIPE) {
      auto [read_end, write_end] = sys::make_pipe();
      if (o.pipesize) {
        const int fd = read_end.get();  // clang 14 cannot capture a structured binding
        sys::call("fcntl(F_SETPIPE_SZ)", [&] { return ::fcntl(fd, F_SETPIPE_SZ, *o.pipesize); });
      }
      const bool to_child = i == 0;
      child_ends[i] = to_child ? std::move(read_end) : std::move(write_end);
      auto end = std::make_unique<PipeEnd::Impl>();
      end->fd = to_child ? std::move(write_end) : std::move(read_end);
      end->reader = !to_child;
      end->text = o.text;
      (i == 0 ? s.in : i == 1 ? s.out : s.err) = PipeEnd(std::move(end));
      req.stdio[i] = child_ends[i].get();
    } else if (v == STDOUT && i == 2) {
      req.stdio[2] = req.stdio[1] >= 0 ? req.stdio[1] : STDOUT_FILENO;
    } else {
      throw ValueError("Popen: invalid value " + std::to_string(v) + " for std" +
                       (i == 0   ? "in"
                        : i == 1 ? "out"
                                 : "err"));
    }
  };
  stream(0, o.stdin);
  stream(1, o.stdout);
  stream(2, o.stderr);

  detail::Spawned child = detail::spawn(req);
  s.pid = child.pid;
  s.pidfd = std::move(child.pidfd);
}

Popen::Popen(Popen&&) noexcept = default;

Popen& Popen::operator=(Popen&& other) noexcept {
  if (this != &other) {
    Popen old(std::move(*this));
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Popen::~Popen() {
  if (!impl_ || !impl_->pidfd) return;
  Impl& s = *impl_;
  s.in.close();
  s.out.close();
  s.err.close();
  try {
    std::lock_guard lock(s.mu);
    if (reap_locked(s)) return;
  } catch (...) {
  }
  detail::reap_later(std::move(s.pidfd));
}

Popen::Impl& Popen::checked() const {
  if (!impl_) throw InvalidStateError("the Popen object was moved from");
  return *impl_;
}

const std::vector<std::string>& Popen::args() const {
  return checked().args;
}

pid_t Popen::pid() const {
  return checked().pid;
}

std::optional<int> Popen::returncode() const {
  Impl& s = checked();
  std::lock_guard lock(s.mu);
  return s.returncode;
}

std::optional<int> Popen::poll() {
  Impl& s = checked();
  std::lock_guard lock(s.mu);
  return reap_locked(s);
}

int Popen::wait() {
  return wait_until(detail::Deadline::never(), std::nullopt);
}

int Popen::wait_until(const detail::Deadline& deadline,
                      std::optional<std::chrono::duration<double>> timeout) {
  Impl& s = checked();
  for (;;) {
    if (auto rc = poll()) return *rc;
    pollfd p{s.pidfd.get(), POLLIN, 0};
    int n = sys::call("poll(pidfd)", [&] { return ::poll(&p, 1, deadline.poll_timeout_ms()); });
    if (n == 0 && deadline.expired()) {
      if (auto rc = poll()) return *rc;
      throw TimeoutExpired(s.args, timeout.value_or(std::chrono::duration<double>(0)));
    }
  }
}

void Popen::send_signal(int sig) {
  Impl& s = checked();
  std::lock_guard lock(s.mu);
  if (!reap_locked(s)) sys::pidfd_send_signal(s.pidfd.get(), sig);
}

void Popen::terminate() {
  send_signal(SIGTERM);
}

void Popen::kill() {
  send_signal(SIGKILL);
}

PipeEnd& Popen::stdin() {
  return checked().in;
}
PipeEnd& Popen::stdout() {
  return checked().out;
}
PipeEnd& Popen::stderr() {
  return checked().err;
}

int Popen::sentinel() const {
  return checked().pidfd.get();
}

std::pair<std::string, std::string> Popen::communicate(std::string_view input) {
  return communicate_until(input, detail::Deadline::never(), std::nullopt);
}

namespace {

// One read(2) into c; false at end of file.
bool read_into(int fd, Collected& c) {
  c.reserve_tail();
  ssize_t n = sys::call("read(communicate)",
                        [&] { return ::read(fd, c.data.data() + c.used, c.data.size() - c.used); });
  c.used += static_cast<std::size_t>(n);
  return n > 0;
}

// The whole output of one stream, decoded in text mode; c is left empty.
std::string finish(PipeEnd::Impl* end, Collected& c) {
  c.data.resize(c.used);
  std::string text = end && end->text ? end->decoder.feed(c.data, true) : std::move(c.data);
  std::string out = c.prefix.empty() ? std::move(text) : std::move(c.prefix) + text;
  c = Collected{};
  return out;
}

}  // namespace

std::pair<std::string, std::string> Popen::communicate_until(
    std::string_view input, const detail::Deadline& deadline,
    std::optional<std::chrono::duration<double>> timeout) {
  Impl& s = checked();
  PipeEnd::Impl* in = s.in.impl_ && s.in.impl_->fd ? s.in.impl_.get() : nullptr;
  PipeEnd::Impl* out = s.out.impl_ && s.out.impl_->fd ? s.out.impl_.get() : nullptr;
  PipeEnd::Impl* err = s.err.impl_ && s.err.impl_->fd ? s.err.impl_.get() : nullptr;
  std::string_view todo = input;
  if (s.communication_started) {
    if (!input.empty()) throw ValueError("Cannot send input after starting communication");
    todo = s.pending_input;
  } else {
    if (!input.empty() && !in)
      throw ValueError("communicate: input given, but stdin is not a pipe");
    s.communication_started = true;
    // Bytes a read through the pipe end left in its buffer come first.
    if (out) s.out_collected.prefix = std::exchange(out->buffer, {});
    if (err) s.err_collected.prefix = std::exchange(err->buffer, {});
    if (out) s.out_collected.hint = input.size() + kReadChunk;
  }
  if (in && todo.empty()) {
    in->fd.reset();
    in = nullptr;
  }

  // The stdin end is non-blocking while communicate() writes, so that a write never
  // waits for room while the child waits for us to read; SIGPIPE is blocked meanwhile.
  std::optional<detail::SigpipeGuard> sigpipe;
  int in_flags = 0;
  if (in) {
    sigpipe.emplace();
    in_flags = sys::call("fcntl(F_GETFL)", [&] { return ::fcntl(in->fd.get(), F_GETFL); });
    sys::call("fcntl(F_SETFL)",
              [&] { return ::fcntl(in->fd.get(), F_SETFL, in_flags | O_NONBLOCK); });
  }
  auto close_in = [&] {
    in->fd.reset();
    in = nullptr;
    todo = {};
  };
  auto expire = [&]() -> TimeoutExpired {
    if (in) {
      sys::call_raw("fcntl(F_SETFL)", [&] { return ::fcntl(in->fd.get(), F_SETFL, in_flags); });
      s.pending_input = std::string(todo);
    }
    return TimeoutExpired(s.args, timeout.value_or(std::chrono::duration<double>(0)),
                          s.out_collected.so_far(), s.err_collected.so_far());
  };

  pollfd fds[3];
  while (in || out || err) {
    nfds_t n = 0;
    if (in) fds[n++] = pollfd{in->fd.get(), POLLOUT, 0};
    if (out) fds[n++] = pollfd{out->fd.get(), POLLIN, 0};
    if (err) fds[n++] = pollfd{err->fd.get(), POLLIN, 0};
    int ready =
        sys::call("poll(communicate)", [&] { return ::poll(fds, n, deadline.poll_timeout_ms()); });
    if (ready == 0 && deadline.expired()) throw expire();
    nfds_t i = 0;
    if (in && fds[i++].revents != 0) {
      ssize_t w = sys::call_raw("write(communicate)", [&] {
        return ::write(in->fd.get(), todo.data(), std::min(todo.size(), kWriteChunk));
      });
      if (w >= 0) {
        todo.remove_prefix(static_cast<std::size_t>(w));
        if (todo.empty()) close_in();
      } else if (errno == EPIPE) {
        close_in();  // the child stopped reading: not an error (as Python)
      } else if (errno != EAGAIN) {
        sys::throw_errno("write(communicate)");
      }
    }
    if (out && fds[i++].revents != 0 && !read_into(out->fd.get(), s.out_collected)) {
      out->fd.reset();
      out = nullptr;
    }
    if (err && fds[i++].revents != 0 && !read_into(err->fd.get(), s.err_collected)) {
      err->fd.reset();
      err = nullptr;
    }
  }
  s.pending_input.clear();
  try {
    wait_until(deadline, timeout);
  } catch (const TimeoutExpired&) {
    throw expire();
  }
  std::string o = finish(s.out.impl_.get(), s.out_collected);
  std::string e = finish(s.err.impl_.get(), s.err_collected);
  return {std::move(o), std::move(e)};
}

}  // namespace mpx::subprocess
