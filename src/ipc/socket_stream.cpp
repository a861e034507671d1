// CPython's multiprocessing.connection framing over a stream socket.
#include "ipc/socket_stream.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "mpx/errors.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t kFirstChunk = std::size_t{64} << 10;
constexpr std::uint64_t kMaxShortLength = 0x7fffffff;
// The read-ahead buffer: a header and a small message in one recv().
constexpr std::size_t kReadAhead = 8192;

void put_be(std::byte* p, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}

std::uint64_t get_be(const std::byte* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = (v << 8) | static_cast<std::uint64_t>(p[i]);
  return v;
}

[[noreturn]] void throw_send_error(int err) {
  if (err == EPIPE || err == ECONNRESET) throw BrokenPipeError("send: the peer is gone");
  sys::throw_errno("sendmsg(connection)", err);
}

}  // namespace

void SocketStream::send(Parts parts) {
  std::uint64_t total = 0;
  for (const auto& part : parts)
    total += part.size();
  std::byte header[12];
  std::size_t header_size = 4;
  if (total > kMaxShortLength) {
    put_be(header, 0xffffffff, 4);
    put_be(header + 4, total, 8);
    header_size = 12;
  } else {
    put_be(header, total, 4);
  }
  std::vector<iovec> iov;
  iov.reserve(parts.size() + 1);
  iov.push_back({header, header_size});
  for (const auto& part : parts)
    if (!part.empty()) iov.push_back({const_cast<std::byte*>(part.data()), part.size()});

  std::lock_guard lock(send_mu_);
  std::size_t first = 0;
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
    const ssize_t n = sys::call_raw("sendmsg(connection)",
                                    [&] { return ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL); });
    if (n < 0) throw_send_error(errno);
    auto left = static_cast<std::size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
}

bool SocketStream::poll(const Deadline& deadline) const {
  if (buffered()) return true;
  pollfd p{fd_.get(), POLLIN, 0};
  for (;;) {
    const int rc =
        sys::call("poll(connection)", [&] { return ::poll(&p, 1, deadline.poll_timeout_ms()); });
    if (rc > 0) return true;
    if (deadline.expired()) return false;
  }
}

void SocketStream::wait_readable(const Deadline& deadline) {
  if (deadline.is_never()) return;  // the blocking read waits
  if (!poll(deadline)) {
    broken_ = true;
    throw TimeoutError("recv: timed out inside the message stream");
  }
}

SocketStream::SocketStream(sys::Fd fd, std::size_t limit, std::span<const std::byte> ahead)
    : SocketStream(std::move(fd), limit) {
  if (ahead.size() > kReadAhead)
    throw std::runtime_error("mpx: a handed-off connection read ahead more than it can");
  if (ahead.empty()) return;
  ahead_ = std::make_unique<std::byte[]>(kReadAhead);
  std::memcpy(ahead_.get(), ahead.data(), ahead.size());
  set_ahead(0, ahead.size());
}

SocketStream::Snapshot SocketStream::snapshot() {
  std::lock_guard lock(recv_mu_);
  if (broken_) throw OSError("the connection lost its framing (an earlier error)");
  const std::size_t have = ahead_size_.load(std::memory_order_relaxed);
  const std::byte* at = ahead_ ? ahead_.get() + ahead_begin_ : nullptr;
  return Snapshot{limit_, std::vector<std::byte>(at, at + have)};
}

void SocketStream::set_ahead(std::size_t begin, std::size_t end) noexcept {
  ahead_begin_ = begin;
  ahead_size_.store(end - begin, std::memory_order_release);
}

std::size_t SocketStream::read_some(std::byte* p, std::size_t n, const Deadline& deadline,
                                    bool eof_ok, std::size_t got) {
  wait_readable(deadline);
  const ssize_t r = sys::call_raw("recv(connection)", [&] { return ::recv(fd_.get(), p, n, 0); });
  if (r < 0) {
    const int err = errno;
    broken_ = true;
    if (err == ECONNRESET) {
      if (eof_ok && got == 0) throw EOFError("recv: the peer reset the connection");
      throw OSError("got end of file during message");
    }
    sys::throw_errno("recv(connection)", err);
  }
  if (r == 0 && !(eof_ok && got == 0)) {
    broken_ = true;
    throw OSError("got end of file during message");
  }
  return static_cast<std::size_t>(r);
}

bool SocketStream::read_exact(std::byte* p, std::size_t n, const Deadline& deadline, bool eof_ok) {
  std::size_t got = 0;
  while (got < n) {
    const std::size_t have = ahead_size_.load(std::memory_order_relaxed);
    if (have > 0) {
      const std::size_t take = std::min(have, n - got);
      std::memcpy(p + got, ahead_.get() + ahead_begin_, take);
      set_ahead(ahead_begin_ + take, ahead_begin_ + have);
      got += take;
    } else if (n - got >= kReadAhead) {  // large: straight into p, no copy
      const std::size_t r = read_some(p + got, n - got, deadline, eof_ok, got);
      if (r == 0) return false;
      got += r;
    } else {
      if (!ahead_) ahead_ = std::make_unique<std::byte[]>(kReadAhead);
      const std::size_t r = read_some(ahead_.get(), kReadAhead, deadline, eof_ok, got);
      if (r == 0) return false;
      set_ahead(0, r);
    }
  }
  return true;
}

void SocketStream::recv(Bytes& out, std::size_t maxlength, const Deadline& deadline) {
  std::lock_guard lock(recv_mu_);
  if (broken_) throw OSError("recv: the connection lost its framing (an earlier error)");
  std::byte header[8];
  if (!read_exact(header, 4, deadline, true))
    throw EOFError("recv: the peer closed the connection");
  std::uint64_t size = get_be(header, 4);
  if (size == 0xffffffff) {
    read_exact(header, 8, deadline, false);
    size = get_be(header, 8);
  }
  if (size > std::min(maxlength, limit_)) {
    broken_ = true;
    throw std::system_error(EMSGSIZE, std::generic_category(),
                            "recv_bytes: message longer than maxlength (bad message length)");
  }
  // Grow as the bytes arrive: the header may lie.
  std::size_t have = 0;
  out.clear();
  while (have < size) {
    const std::size_t want = std::min<std::uint64_t>(size, std::max(kFirstChunk, out.size() * 2));
    out.resize(want);
    read_exact(out.data() + have, want - have, deadline, false);
    have = want;
  }
}

}  // namespace mpx::detail
