// src/ipc/socket_stream.hpp — a Connection over a stream socket, framed as CPython's
// multiprocessing.connection frames it: a 4-byte big-endian length, or for messages over
// 2^31-1 bytes the 4 bytes 0xffffffff then an 8-byte big-endian length.
//
// Reads: one recv() takes what the socket has, up to a small read-ahead buffer: a
// message's header and a small payload (and the start of the next messages) in one
// system call. poll() and mpx::wait() see those buffered bytes (buffered()); fileno()
// alone does not, as the Connection's documentation says.
//
// Bounded memory: a length header is never trusted. The receive buffer grows as bytes
// actually arrive (first 64 KiB, then doubling), so a peer announcing 2^62 bytes costs
// what it sends, not what it claims; `limit` (the Listener's maxlength) rejects long
// messages before any of their bytes are read.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/scratch.hpp"
#include "sys/fd.hpp"

namespace mpx::detail {

class SocketStream {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  explicit SocketStream(sys::Fd fd, std::size_t limit = npos) noexcept
      : fd_(std::move(fd)), limit_(limit) {}
  // A copy of a stream handed to another process (snapshot()): reads `ahead` first.
  // Throws std::runtime_error when `ahead` is longer than a read-ahead can be.
  SocketStream(sys::Fd fd, std::size_t limit, std::span<const std::byte> ahead);

  int fd() const noexcept { return fd_.get(); }

  // What a copy of this stream in another process needs besides the socket: the limit
  // and the bytes read ahead. Throws OSError when the stream lost its framing.
  struct Snapshot {
    std::size_t limit;
    std::vector<std::byte> ahead;
  };
  Snapshot snapshot();

  // Sends the parts, concatenated, as one framed message. Blocks while the socket's
  // buffer is full. Throws BrokenPipeError when the peer is gone (EPIPE, ECONNRESET).
  void send(Parts parts);

  // Receives one message into `out` (resized to it). Throws: EOFError at the end of the
  // stream between messages; OSError at the end of the stream inside a message;
  // std::system_error(EMSGSIZE) when the message is longer than maxlength or the
  // stream's limit (the stream is unusable afterwards: its bytes are not read);
  // TimeoutError when `deadline` passes first (unusable afterwards too).
  void recv(Bytes& out, std::size_t maxlength, const Deadline& deadline);

  // Whether bytes (or the end of the stream) can be read before `deadline`.
  bool poll(const Deadline& deadline) const;

  // Whether bytes read ahead wait in the buffer (the socket may have none).
  bool buffered() const noexcept { return ahead_size_.load(std::memory_order_acquire) != 0; }

 private:
  // Reads exactly n bytes into p: the buffered ones first, then from the socket (through
  // the buffer for small remainders, straight into p for large ones). Returns false at end
  // of stream before the first byte when `eof_ok`.
  bool read_exact(std::byte* p, std::size_t n, const Deadline& deadline, bool eof_ok);
  // One recv() of at most n bytes into p; 0 at end of stream.
  std::size_t read_some(std::byte* p, std::size_t n, const Deadline& deadline, bool eof_ok,
                        std::size_t got);
  void wait_readable(const Deadline& deadline);
  void set_ahead(std::size_t begin, std::size_t end) noexcept;

  sys::Fd fd_;
  std::size_t limit_;
  std::mutex send_mu_;
  std::mutex recv_mu_;
  bool broken_ = false;  // a message was left half read: the framing is lost
  // Read-ahead: bytes [ahead_begin_, ahead_begin_ + ahead_size_) of ahead_ (under
  // recv_mu_; ahead_size_ is also read by buffered() without it).
  std::unique_ptr<std::byte[]> ahead_;
  std::size_t ahead_begin_ = 0;
  std::atomic<std::size_t> ahead_size_{0};
};

}  // namespace mpx::detail
