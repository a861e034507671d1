// libFuzzer target for the Listener/Client authkey handshake (CPython's #CHALLENGE# /
// #WELCOME# / #FAILURE# with HMAC) and the socket framing behind it: arbitrary bytes play
// the peer. Whatever they are, the mpx side must end with a named error — the handshake
// with AuthenticationError only, the framing with EOFError / OSError / EMSGSIZE — never
// a crash, a sanitizer report, a wait for bytes that are not coming, or an allocation out
// of proportion to the input.
//
// Input: a selector byte, then the peer's bytes (written into one end of a socketpair,
// whose write side is then shut: the mpx side reads them and then the end of the
// stream). Selector % 3: 0, the server's side (Listener::accept with an authkey: deliver,
// then answer a challenge, then the move to shared memory); 1, the client's side (Client
// with an authkey: answer, then deliver); 2, no authkey: recv_bytes until the stream ends,
// with a maxlength taken from the selector's high bits.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <system_error>
#include <typeinfo>

#include "ipc/handshake.hpp"
#include "ipc/socket_stream.hpp"
#include "mpx/connection.hpp"
#include "mpx/errors.hpp"
#include "mpx/listener.hpp"
#include "sys/fd.hpp"

namespace {

const std::string kKey = "fuzz key";

[[noreturn]] void fail(const char* side, const char* what) {
  std::fprintf(stderr, "%s: unexpected outcome: %s\n", side, what);
  std::abort();
}

// Runs f; only an exception of type Allowed (or none) may come out.
template <class Allowed, class F>
void expect_only(const char* side, F&& f) {
  try {
    f();
  } catch (const Allowed&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s threw %s: %s\n", side, typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    fail(side, "a non-std exception");
  }
}

void read_messages(mpx::Connection& connection, std::size_t maxlength) {
  try {
    for (;;)
      (void)connection.recv_bytes(maxlength);
  } catch (const mpx::EOFError&) {
  } catch (const mpx::OSError&) {  // the end of the stream inside a message
  } catch (const std::system_error& e) {
    if (e.code().value() != EMSGSIZE) fail("recv_bytes", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "recv_bytes threw %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  mpx::sys::Fd peer(fds[1]);
  // What the socket's buffer takes (far more than libFuzzer's inputs), then the end.
  std::size_t sent = 0;
  while (sent + 1 < size) {
    const ssize_t n =
        ::send(peer.get(), data + 1 + sent, size - 1 - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(peer.get(), SHUT_WR);
  auto stream = std::make_unique<mpx::detail::SocketStream>(mpx::sys::Fd(fds[0]));
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = mpx::detail::Deadline::after(std::chrono::seconds(5));
  switch (selector % 3) {
    case 0: {
      mpx::Connection connection = mpx::detail::socket_connection(std::move(stream));
      expect_only<mpx::AuthenticationError>("server handshake", [&] {
        mpx::detail::authenticate_accepted(connection, kKey, std::chrono::seconds(5));
        fail("server handshake", "a peer without the key was accepted");
      });
      break;
    }
    case 1:
      expect_only<mpx::AuthenticationError>("client handshake", [&] {
        (void)mpx::detail::answer_challenge(*stream, kKey, deadline);
        mpx::detail::deliver_challenge(*stream, kKey, deadline, true);
        fail("client handshake", "a peer without the key was accepted");
      });
      break;
    default: {
      mpx::Connection connection = mpx::detail::socket_connection(std::move(stream));
      read_messages(connection, selector & 0x80 ? 64 : mpx::Connection::npos);
      break;
    }
  }
  // Every byte and the end of the stream were there from the start: nothing may wait.
  if (std::chrono::steady_clock::now() - start > std::chrono::seconds(3))
    fail("handshake", "waited for bytes that were not coming");
  return 0;
}
