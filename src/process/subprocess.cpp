// mpx::subprocess's module functions (run, call, check_call, check_output,
// getstatusoutput, getoutput, environ), the pipe ends, and text-mode decoding.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "mpx/subprocess.hpp"
#include "process/subprocess_internal.hpp"
#include "sys/syscall.hpp"
#include "sys/utf8.hpp"

namespace mpx::detail {

SigpipeGuard::SigpipeGuard() noexcept {
  sigset_t pipe;
  ::sigemptyset(&pipe);
  ::sigaddset(&pipe, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  sigset_t pending;
  was_pending_ = ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE);
}

SigpipeGuard::~SigpipeGuard() {
  sigset_t pending;
  if (!was_pending_ && ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE)) {
    sigset_t pipe;
    ::sigemptyset(&pipe);
    ::sigaddset(&pipe, SIGPIPE);
    const timespec zero{};
    static_cast<void>(::sigtimedwait(&pipe, nullptr, &zero));
  }
  if (!::sigismember(&old_, SIGPIPE)) ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

namespace {

[[noreturn]] void decode_error(unsigned char byte, const char* reason) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "text mode: 'utf-8' codec can't decode byte 0x%02x: %s", byte,
                reason);
  throw DecodeError(buf);
}

}  // namespace

std::string TextDecoder::feed(std::string_view bytes, bool final) {
  std::string joined;
  if (!held_.empty()) {
    joined = std::move(held_) + std::string(bytes);
    held_.clear();
    bytes = joined;
  }
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    // A run of plain ASCII is copied at once.
    std::size_t j = i;
    while (j < bytes.size() && static_cast<unsigned char>(bytes[j]) < 0x80 && bytes[j] != '\r')
      ++j;
    out.append(bytes.data() + i, j - i);
    i = j;
    if (i == bytes.size()) break;
    if (bytes[i] == '\r') {
      if (i + 1 == bytes.size() && !final) {
        held_.assign(1, '\r');  // a '\n' may follow in the next bytes
        break;
      }
      out += '\n';
      i += i + 1 < bytes.size() && bytes[i + 1] == '\n' ? 2 : 1;
      continue;
    }
    const sys::Utf8Step step = sys::utf8_step(bytes.substr(i));
    if (step.error) decode_error(static_cast<unsigned char>(bytes[i]), step.error);
    const std::size_t len = step.length;
    if (len == 0) {
      if (final) decode_error(static_cast<unsigned char>(bytes[i]), "unexpected end of data");
      held_ = std::string(bytes.substr(i));
      break;
    }
    out.append(bytes.data() + i, len);
    i += len;
  }
  return out;
}

}  // namespace mpx::detail

namespace mpx::subprocess {

// ---------------------------------------------------------------------------
// PipeEnd

PipeEnd::PipeEnd() noexcept = default;
PipeEnd::PipeEnd(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
PipeEnd::PipeEnd(PipeEnd&&) noexcept = default;
PipeEnd& PipeEnd::operator=(PipeEnd&&) noexcept = default;
PipeEnd::~PipeEnd() = default;

PipeEnd::operator bool() const noexcept {
  return impl_ != nullptr;
}

bool PipeEnd::closed() const noexcept {
  return !impl_ || !impl_->fd;
}

void PipeEnd::close() noexcept {
  if (impl_) impl_->fd.reset();
}

PipeEnd::Impl& PipeEnd::checked(bool want_read) const {
  if (!impl_) throw InvalidStateError("not a pipe (the stream was not PIPE)");
  if (!impl_->fd) throw InvalidStateError("I/O operation on closed pipe");
  if (want_read && !impl_->reader) throw InvalidStateError("pipe end not readable");
  if (!want_read && impl_->reader) throw InvalidStateError("pipe end not writable");
  return *impl_;
}

int PipeEnd::fileno() const {
  if (!impl_ || !impl_->fd) throw InvalidStateError("fileno: pipe end is closed or not a pipe");
  return impl_->fd.get();
}

namespace {

// One read(2) of up to `max` bytes into end.buffer (decoded in text mode); false at EOF
// (then the decoder is flushed).
bool fill(PipeEnd::Impl& end, std::size_t max) {
  if (end.eof) return false;
  if (!end.text) {
    const std::size_t old = end.buffer.size();
    end.buffer.resize(old + max);
    ssize_t n =
        sys::call("read(pipe)", [&] { return ::read(end.fd.get(), end.buffer.data() + old, max); });
    end.buffer.resize(old + static_cast<std::size_t>(n));
    end.eof = n == 0;
    return n > 0;
  }
  std::string raw(max, '\0');
  ssize_t n = sys::call("read(pipe)", [&] { return ::read(end.fd.get(), raw.data(), max); });
  raw.resize(static_cast<std::size_t>(n));
  end.eof = n == 0;
  end.buffer += end.decoder.feed(raw, end.eof);
  return n > 0;
}

std::string take(PipeEnd::Impl& end, std::size_t n) {
  if (n >= end.buffer.size()) return std::exchange(end.buffer, {});
  std::string out = end.buffer.substr(0, n);
  end.buffer.erase(0, n);
  return out;
}

}  // namespace

std::string PipeEnd::read() {
  Impl& end = checked(true);
  while (fill(end, 65536)) {
  }
  return std::exchange(end.buffer, {});
}

std::string PipeEnd::read(std::size_t n) {
  Impl& end = checked(true);
  while (end.buffer.size() < n &&
         fill(end, std::min<std::size_t>(n - end.buffer.size(), 1 << 20))) {
  }
  return take(end, n);
}

std::string PipeEnd::read1(std::size_t n) {
  Impl& end = checked(true);
  // In text mode a read may yield no text yet (a held '\r' or partial character).
  while (end.buffer.empty() && fill(end, std::max<std::size_t>(n, 4))) {
  }
  return take(end, n);
}

std::string PipeEnd::readline() {
  Impl& end = checked(true);
  std::size_t searched = 0;
  for (;;) {
    std::size_t nl = end.buffer.find('\n', searched);
    if (nl != std::string::npos) return take(end, nl + 1);
    searched = end.buffer.size();
    if (!fill(end, 65536)) return std::exchange(end.buffer, {});
  }
}

std::vector<std::string> PipeEnd::readlines() {
  std::vector<std::string> lines;
  for (std::string line = readline(); !line.empty(); line = readline())
    lines.push_back(std::move(line));
  return lines;
}

std::size_t PipeEnd::write(std::string_view data) {
  Impl& end = checked(false);
  detail::SigpipeGuard guard;
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = sys::call_raw("write(pipe)", [&] {
      return ::write(end.fd.get(), data.data() + done, data.size() - done);
    });
    if (n < 0 && errno == EPIPE) throw BrokenPipeError("write(pipe): the child closed its end");
    if (n < 0) sys::throw_errno("write(pipe)");
    done += static_cast<std::size_t>(n);
  }
  return done;
}

// ---------------------------------------------------------------------------
// Module functions

void CompletedProcess::check_returncode() const {
  if (returncode != 0) throw CalledProcessError(returncode, args, stdout, stderr);
}

CompletedProcess run(Args args, RunOptions o) {
  std::optional<std::string> input = std::move(o.input);
  o.input.reset();
  if (input) {
    if (o.stdin) throw ValueError("stdin and input arguments may not both be used.");
    o.stdin = PIPE;
  }
  if (o.capture_output) {
    if (o.stdout || o.stderr)
      throw ValueError("stdout and stderr arguments may not be used with capture_output.");
    o.stdout = o.stderr = PIPE;
    o.capture_output = false;
  }
  const auto timeout = std::exchange(o.timeout, std::nullopt);
  const bool check = std::exchange(o.check, false);
  Popen p(std::move(args), std::move(o));
  const std::string_view in = input ? std::string_view(*input) : std::string_view();
  std::pair<std::string, std::string> out;
  try {
    out = timeout ? p.communicate(in, *timeout) : p.communicate(in);
  } catch (...) {
    // As Python: kill, reap, and let the error (TimeoutExpired with the output so far) go.
    p.kill();
    p.wait();
    throw;
  }
  CompletedProcess r{p.args(), *p.returncode(), std::move(out.first), std::move(out.second)};
  if (check) r.check_returncode();
  return r;
}

int call(Args args, RunOptions o) {
  if (o.input || o.check || o.capture_output)
    throw ValueError("call: input, check and capture_output are arguments of run()");
  const auto timeout = std::exchange(o.timeout, std::nullopt);
  Popen p(std::move(args), std::move(o));
  try {
    return timeout ? p.wait(*timeout) : p.wait();
  } catch (...) {
    p.kill();
    p.wait();
    throw;
  }
}

int check_call(Args args, RunOptions o) {
  std::vector<std::string> cmd = args.argv();
  if (int rc = call(std::move(args), std::move(o))) throw CalledProcessError(rc, std::move(cmd));
  return 0;
}

std::string check_output(Args args, RunOptions o) {
  if (o.stdout) throw ValueError("stdout argument not allowed, it will be overridden.");
  o.stdout = PIPE;
  o.check = true;
  return run(std::move(args), std::move(o)).stdout;
}

std::pair<int, std::string> getstatusoutput(const std::string& cmd) {
  std::pair<int, std::string> result;
  try {
    result.second = check_output(cmd, {.stderr = STDOUT, .shell = true, .text = true});
  } catch (const CalledProcessError& e) {
    result = {e.returncode(), e.output()};
  }
  if (!result.second.empty() && result.second.back() == '\n') result.second.pop_back();
  return result;
}

std::string getoutput(const std::string& cmd) {
  return getstatusoutput(cmd).second;
}

std::map<std::string, std::string> environ() {
  std::map<std::string, std::string> env;
  for (char** e = ::environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::size_t eq = entry.find('=', 1);
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

}  // namespace mpx::subprocess
