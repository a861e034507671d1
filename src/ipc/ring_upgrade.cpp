// Local mpx peers of a Listener/Client connection move to shared-memory rings after the
// authenticated handshake: the listening side makes a memfd with two rings and two
// doorbell socketpairs and passes the peer's fds over the Unix socket (SCM_RIGHTS).
#include "ipc/ring_upgrade.hpp"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ipc/ring.hpp"
#include "mpx/errors.hpp"
#include "sys/fd.hpp"
#include "sys/fd_passing.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

constexpr char kMagic[8] = {'M', 'P', 'X', 'R', 'I', 'N', 'G', '1'};
constexpr int kFds = 3;  // memfd, the peer's bell sockets in and out

void send_offer(int socket, const int (&fds)[kFds], std::uint64_t capacity) {
  char payload[16];
  std::memcpy(payload, kMagic, 8);
  std::memcpy(payload + 8, &capacity, 8);
  const ssize_t n =
      sys::send_with_fds("sendmsg(ring upgrade)", socket, payload, sizeof payload, fds);
  if (n < 0) sys::throw_errno("sendmsg(ring upgrade)");
  if (n != static_cast<ssize_t>(sizeof payload)) throw OSError("ring upgrade: short send");
}

}  // namespace

bool is_unix_socket(int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  return ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

Connection offer_rings(int socket) {
  const std::size_t cap = Ring::round_capacity(Ring::kDefaultPipeCapacity);
  const std::size_t ring_bytes = Ring::region_size(cap);
  sys::Fd memory = sys::memfd("mpx-listener", 2 * ring_bytes);
  {
    sys::Mapping m = sys::map_shared(memory.get(), 2 * ring_bytes);
    Ring::init(m.bytes(), cap, 0);
    Ring::init(m.bytes() + ring_bytes, cap, 0);
  }
  // Direction d: ring d, sockets pair[d] = {receiving side, sending side}. This side
  // receives through ring 0, the peer through ring 1.
  auto pair0 = sys::make_socketpair();
  auto pair1 = sys::make_socketpair();
  send_offer(socket, {memory.get(), pair1.first.get(), pair0.second.get()}, cap);
  return ring_connection(memory.release(), cap, 0, pair0.first.release(), pair1.second.release());
}

Connection accept_rings(int socket) {
  char payload[16];
  std::vector<sys::Fd> fds;
  bool truncated = false;
  const ssize_t n = sys::recv_with_fds("recvmsg(ring upgrade)", socket, payload, sizeof payload,
                                       fds, MSG_WAITALL, &truncated);
  if (n < 0) sys::throw_errno("recvmsg(ring upgrade)");
  fds.resize(std::max<std::size_t>(fds.size(), kFds));  // missing ones: empty, refused below
  if (n != static_cast<ssize_t>(sizeof payload) || std::memcmp(payload, kMagic, 8) != 0 ||
      truncated || !fds[0] || !fds[1] || !fds[2])
    throw AuthenticationError("ring upgrade: malformed offer");
  std::uint64_t cap;
  std::memcpy(&cap, payload + 8, 8);
  struct stat st {};
  if (cap != Ring::round_capacity(cap) || cap > (std::uint64_t{1} << 30) ||
      ::fstat(fds[0].get(), &st) != 0 ||
      static_cast<std::uint64_t>(st.st_size) < 2 * Ring::region_size(cap))
    throw AuthenticationError("ring upgrade: malformed offer");
  return ring_connection(fds[0].release(), cap, 1, fds[1].release(), fds[2].release());
}

}  // namespace mpx::detail
