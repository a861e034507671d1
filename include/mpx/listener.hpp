// mpx/listener.hpp — Listener and Client, like multiprocessing.connection's: connections
// between processes that are not parent and child, on one machine (Unix sockets) or on
// several (TCP), with an optional shared secret (authkey).
//
//   mpx::Listener listener("127.0.0.1:0", "AF_INET", 1, "secret");
//   // elsewhere:  auto c = mpx::Client(address, "AF_INET", "secret"); c.send(42);
//   mpx::Connection conn = listener.accept();
//   int v = conn.recv<int>();   // 42
//
// Addresses are strings. family "AF_UNIX": a socket file path, or a Linux abstract name
// starting with '\0' (std::string("\0name", 5)); "AF_INET": "host:port"; "AF_INET6":
// "[host]:port". Port 0 picks a free one (address() tells which). An empty family is
// inferred from the address as Python infers it: "[...]:port" is AF_INET6, "host:port"
// AF_INET, anything else AF_UNIX; an empty address gets a fresh one of the family
// (AF_UNIX when both are empty: a socket in a private directory under $TMPDIR).
//
// Wire compatibility: the connections speak CPython's bytes: its message framing
// (4-byte big-endian length; 0xffffffff then an 8-byte length for messages over 2 GiB)
// and its authentication handshake (#CHALLENGE# / #WELCOME# / #FAILURE#, HMAC-SHA256
// with the "{sha256}" prefix of Python 3.12+, and the legacy HMAC-MD5 answer of older
// Pythons accepted and given, as 3.12 does). So send_bytes()/recv_bytes() interoperate
// with Python's Listener/Client; send<T>()/recv<T>() carry mpx's codec, which only mpx
// peers read. With an authkey, both sides prove knowledge of it (mutual, as Python).
//
// Two mpx processes on one machine: a connection over a Unix socket with an authkey
// moves, after the handshake, to shared-memory rings like a Pipe's (a memfd and two
// doorbell socketpairs passed over the socket), so it costs what a Pipe costs (well under
// a microsecond a round trip, against tens over a socket). Both challenges say whether
// their side can; a Python peer, a TCP connection, or a connection without an authkey
// stays a socket with CPython's bytes. fileno() is then a doorbell socket, as a Pipe's.
//
// Hostile peers: accept() authenticates before any message is handed over; a handshake
// message longer than 256 bytes, a wrong digest, garbage, or a peer silent for longer
// than ListenerLimits::handshake_timeout makes accept() throw AuthenticationError and
// close that connection only. Lengths announced by a peer are never trusted: a
// connection's receive buffer grows as bytes arrive. ListenerLimits::maxlength bounds
// every message on accepted connections (recv throws std::system_error(EMSGSIZE) and
// the connection is unusable afterwards, as Python's "bad message length").
//
// OS resources: the listening socket (O_CLOEXEC), closed by close(); a Unix socket file
// is created mode 0600 and removed by close() in the process that created it.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "mpx/connection.hpp"

namespace mpx {

// Limits on what an accepted connection may cost (not in Python, which has none).
struct ListenerLimits {
  // Longest message accepted connections receive; longer ones throw EMSGSIZE.
  std::size_t maxlength = Connection::npos;
  // How long accept() waits for a peer to finish the authkey handshake.
  std::chrono::milliseconds handshake_timeout{10'000};
};

class Listener {
 public:
  // Binds and listens (backlog: the kernel's queue of connections not yet accepted).
  // authkey: when set, accept() runs the handshake (deliver, then answer the challenge).
  // Throws: ValueError (bad address or family), OSError/std::system_error (bind: address
  //   in use, no permission, ...).
  explicit Listener(std::string address = "", std::string family = "", int backlog = 1,
                    std::optional<std::string> authkey = std::nullopt, ListenerLimits limits = {});
  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Waits for a connection, authenticates it when there is an authkey, returns it.
  // Throws: AuthenticationError (the handshake failed or timed out: that connection is
  //   closed; the listener keeps working); InvalidStateError when closed.
  Connection accept();
  // Stops listening; removes the socket file. Idempotent; never throws.
  void close() noexcept;
  bool closed() const noexcept { return fd_ < 0; }
  // The bound address, with the picked port for port 0 ("127.0.0.1:41234").
  const std::string& address() const noexcept { return address_; }
  const std::string& family() const noexcept { return family_; }
  // The peer of the last accepted connection ("" for an unnamed Unix socket).
  const std::string& last_accepted() const noexcept { return last_accepted_; }
  // The listening socket: readable when accept() would not block (usable in mpx::wait).
  int fileno() const;

 private:
  int fd_ = -1;
  std::string address_;
  std::string family_;
  std::string last_accepted_;
  std::optional<std::string> authkey_;
  ListenerLimits limits_;
  std::string unlink_path_;  // the socket file (and its private directory) to remove
  bool unlink_dir_ = false;
  int owner_pid_ = 0;
};

// Connects to a Listener (mpx's or Python's) and, with an authkey, runs the handshake
// (answer, then deliver the challenge). family: as for Listener ("" infers it).
// Throws: AuthenticationError (wrong key on either side, or not a Listener speaking the
//   protocol); OSError/std::system_error (refused, no such file); ValueError.
Connection Client(const std::string& address, const std::string& family = "",
                  const std::optional<std::string>& authkey = std::nullopt);

namespace detail {
// The server's side of the authkey handshake on a connection accepted by a Listener
// without a key (so that a server can run it in another thread than its accept loop).
// Throws AuthenticationError as accept() does.
void authenticate_accepted(Connection& connection, const std::string& authkey,
                           std::chrono::milliseconds timeout);
}  // namespace detail

// The family Python would use for `address` ("AF_UNIX", "AF_INET", "AF_INET6").
std::string address_type(const std::string& address);

}  // namespace mpx
