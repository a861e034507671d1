// mpx/connection.hpp — Pipe() and Connection, like multiprocessing.connection.
//
//   auto [parent, child] = mpx::Pipe();
//   mpx::Process p([&] { parent.close(); child.send(42); }); p.start();
//   child.close(); int v = parent.recv<int>();   // 42
//
// Each direction of a pipe is a ring buffer in shared memory: send() copies a framed
// message in, recv() copies it out, and no system call is made while both sides are
// busy. A side that has to sleep sleeps on its end's socket ("doorbell"), which the other
// side rings only when it sees that someone sleeps. Because every end owns sockets,
// poll()/mpx::wait() work over many connections and process sentinels at once, and the
// death of the process holding the other end shows as end-of-file (EOFError) instead of
// a hang.
//
// Thread and process safety: an end may be used by several threads or processes that
// share it (after fork); sends never interleave and each message is received exactly
// once. One thread may send while another receives or waits. Several threads that wait
// to receive on the same end share its bell socket: one may drain a bell meant for
// another, which then notices within a few milliseconds (bell sleeps are sliced), so
// that costs latency, never a hang. As in Python, every process should close() the ends
// it does not use, or EOF is never seen.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/handoff_trait.hpp"
#include "mpx/detail/scratch.hpp"
#include "mpx/errors.hpp"

namespace mpx {

class Connection;

namespace detail {
class Waitable;
std::vector<Waitable> wait_objects(const std::vector<Waitable>& objects, const Deadline& deadline);
class SocketStream;
// A Listener/Client connection over a connected socket (src/ipc/socket_stream.hpp).
Connection socket_connection(std::unique_ptr<SocketStream> stream);
// The socket of a Listener/Client connection; nullptr for a Pipe end or a closed one.
SocketStream* socket_stream(Connection& connection) noexcept;
struct ConnectionAccess;  // src/ipc/connection.cpp: makes connections from their parts
}  // namespace detail

// One end of a Pipe(), or a connection made by Listener::accept()/Client()
// (mpx/listener.hpp: a socket framed as CPython's, same methods). Move-only; the
// moved-from end is closed.
class Connection {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  // A closed connection.
  Connection() noexcept;
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // Closes this end (see close()).
  ~Connection();

  // Sends `value` as one message, encoded by mpx/codec.hpp (its type tag travels with
  // it). Blocks and throws like send_bytes, plus what encoding throws.
  template <class T>
  void send(const T& value) {
    detail::with_message(value, [&](detail::Parts parts) { send_parts(parts); });
  }
  // A string literal or C string goes as a std::string (Python's str): the receiver
  // calls recv<std::string>(). conn.send("hello") works as in Python.
  void send(const char* text) { send(std::string(text)); }

  // Receives one message sent by send(T). Blocks like recv_bytes.
  // Throws: DecodeError when the message is not a T (it is consumed); EOFError;
  //   InvalidStateError.
  template <class T>
  T recv() {
    Bytes& buffer = detail::recv_scratch();
    detail::ScratchTrim trim{buffer};
    recv_into(buffer);
    return decode<T>(buffer);
  }

  // Sends buffer[offset, offset + size) as one message (size npos: to the end). Any size;
  // a message larger than the ring streams through it whole.
  // Blocks: while the ring is full (until the reader makes room).
  // Throws: InvalidStateError (closed or read-only end), ValueError (range outside the
  //   buffer), BrokenPipeError (a std::system_error, EPIPE) when the other end is gone in
  //   every process that held it: closed (by close() or its destructor), or its process
  //   ended through mpx (a Process child's end, mpx::exit) — from the first send after;
  //   killed (kill -9) — from the first send after, if it was waiting to receive, else
  //   once this send has to wait for room. The message of a send that throws is not
  //   delivered.
  void send_bytes(std::span<const std::byte> buffer, std::size_t offset = 0,
                  std::size_t size = npos);

  // Receives one message. Blocks: until a message arrives.
  // Throws: EOFError when no message is left and the other end is closed or its process
  //   died; std::system_error(EMSGSIZE) when the message is longer than maxlength (the
  //   message is consumed); InvalidStateError (closed or write-only end).
  Bytes recv_bytes(std::size_t maxlength = npos);

  // Receives one message into buffer[offset...]; returns its size. Blocks like recv_bytes.
  // Throws: BufferTooShort carrying the whole (consumed) message when it does not fit;
  //   ValueError when offset > buffer.size(); EOFError and InvalidStateError as recv_bytes.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0);

  // Whether a message can be received without blocking, or the other end is closed (then
  // recv throws EOFError). Does not consume. poll() does not block; poll(timeout) blocks
  // up to `timeout`.
  // Throws: InvalidStateError (closed or write-only end).
  bool poll() { return poll_until(detail::Deadline::after(std::chrono::seconds(0))); }
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_until(detail::Deadline::after(timeout));
  }

  // Closes this end in this process: releases its socket and its mapping of the rings.
  // The other end sees EOF once every process that holds this end has closed it or died.
  // Idempotent; never throws.
  void close() noexcept;
  bool closed() const noexcept { return !impl_; }
  bool readable() const noexcept;
  bool writable() const noexcept;
  // The socket on which this end's bells arrive (for receiving; on a write-only end, the
  // one for room to send), for poll(2)-style readiness only: it becomes readable when the
  // other side rings or closes. To wait for messages use poll() or mpx::wait(), which
  // arm the bell first. Throws InvalidStateError when closed.
  int fileno() const;

  // The implementation (src/ipc/connection.cpp); opaque.
  struct Impl;

 private:
  friend std::pair<Connection, Connection> Pipe(bool duplex, std::size_t capacity);
  friend Connection detail::socket_connection(std::unique_ptr<detail::SocketStream> stream);
  friend detail::SocketStream* detail::socket_stream(Connection& connection) noexcept;
  friend struct detail::ConnectionAccess;
  friend struct detail::Handoff<Connection>;
  friend std::vector<detail::Waitable> detail::wait_objects(
      const std::vector<detail::Waitable>& objects, const detail::Deadline& deadline);
  explicit Connection(std::unique_ptr<Impl> impl) noexcept;

  bool poll_until(const detail::Deadline& deadline);
  Impl& checked(bool want_read, bool want_write) const;
  // One message from parts (concatenated), no copy beyond the ring.
  void send_parts(detail::Parts parts);
  // Receives one message into `out` (resized to it).
  void recv_into(Bytes& out);

  std::unique_ptr<Impl> impl_;
};

// A connected pair of Connections (multiprocessing.Pipe). duplex: both ends send and
// receive; otherwise the pair is (reader, writer). capacity: ring bytes per direction
// (rounded up to a power of two, at least 4 KiB; default 256 KiB).
// Across fork: made before Process::start(), both ends are inherited by the child; each
// process closes the end it does not use.
// OS resources: one anonymous shared mapping (gone with the last process that maps it)
// and a socketpair (O_CLOEXEC) per direction; released by close()/destructors.
std::pair<Connection, Connection> Pipe(bool duplex = true, std::size_t capacity = 0);

namespace detail {
// Something mpx::wait() can wait for: a Connection (ready when a message or EOF can be
// received), a file descriptor such as Process::sentinel() (ready when readable), or any
// other object with an `int fileno() const` (such as subprocess::PipeEnd), taken as its fd.
class Waitable {
 public:
  Waitable(Connection& connection) noexcept : connection_(&connection) {}  // NOLINT
  Waitable(int fd) noexcept : fd_(fd) {}                                   // NOLINT
  template <class T>
  requires(!std::same_as<std::remove_cvref_t<T>, Connection> &&
           requires(const T& t) {
             { t.fileno() } -> std::convertible_to<int>;
           }) Waitable(const T& object)
      : fd_(object.fileno()) {}  // NOLINT
  Connection* connection() const noexcept { return connection_; }
  // The file descriptor; -1 for a Connection (use connection()->fileno()).
  int fd() const noexcept { return fd_; }
  friend bool operator==(const Waitable&, const Waitable&) = default;

 private:
  Connection* connection_ = nullptr;
  int fd_ = -1;
};
}  // namespace detail

using Waitable = detail::Waitable;

// A Pipe end handed to a spawn or forkserver child (mpx/context.hpp): the memfd of its
// rings and its sockets travel. Only a spawn or forkserver Context's Pipe() keeps a
// memfd; other ends are refused (ValueError). A Listener/Client connection over a socket
// travels too (its socket, and what it read ahead): as in Python, both processes then
// hold it.
namespace detail {
template <>
struct Handoff<Connection> {
  static void save(const Connection& c, HandoffWriter& w);
  static Connection load(HandoffReader& r);
};
}  // namespace detail

// Waits until at least one of `objects` is ready and returns the ready ones, in the
// order given (multiprocessing.connection.wait). Connections are ready when recv would
// not block (a message, or EOF); fds (Process::sentinel()) when readable.
//   auto ready = mpx::wait({conn, p.sentinel()}, 1s);
// Blocks: until one is ready; with a timeout at most that long (then returns empty).
// Throws: InvalidStateError when a Connection is closed or write-only.
inline std::vector<Waitable> wait(const std::vector<Waitable>& objects) {
  return detail::wait_objects(objects, detail::Deadline::never());
}
template <class Rep, class Period>
std::vector<Waitable> wait(const std::vector<Waitable>& objects,
                           std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_objects(objects, detail::Deadline::after(timeout));
}

}  // namespace mpx
