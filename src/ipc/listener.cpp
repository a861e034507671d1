// Listener and Client over Unix and TCP sockets (CPython's multiprocessing.connection).
#include "mpx/listener.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "ipc/handshake.hpp"
#include "ipc/ring_upgrade.hpp"
#include "ipc/socket_stream.hpp"
#include "sys/fd.hpp"
#include "sys/syscall.hpp"

namespace mpx {

namespace {

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t size = 0;
  int family = AF_UNSPEC;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

std::string checked_family(const std::string& address, const std::string& family) {
  if (family.empty()) return address_type(address);
  if (family != "AF_UNIX" && family != "AF_INET" && family != "AF_INET6")
    throw ValueError("unrecognized family: " + family);
  return family;
}

// "host:port" or "[host]:port" → host and port.
std::pair<std::string, std::string> split_host_port(const std::string& address) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size())
    throw ValueError("address is not host:port: " + address);
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, address.substr(colon + 1)};
}

SockAddr resolve(const std::string& address, const std::string& family) {
  SockAddr out;
  if (family == "AF_UNIX") {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    if (address.empty() || address.size() >= sizeof un.sun_path)
      throw ValueError("AF_UNIX address is empty or too long");
    std::memcpy(un.sun_path, address.data(), address.size());
    std::memcpy(&out.storage, &un, sizeof un);
    out.size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() +
                                      (address[0] == '\0' ? 0 : 1));
    out.family = AF_UNIX;
    return out;
  }
  auto [host, port] = split_host_port(address);
  addrinfo hints{};
  hints.ai_family = family == "AF_INET6" ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0 || !found) throw OSError("cannot resolve " + address + ": " + ::gai_strerror(rc));
  std::memcpy(&out.storage, found->ai_addr, found->ai_addrlen);
  out.size = found->ai_addrlen;
  out.family = found->ai_family;
  ::freeaddrinfo(found);
  return out;
}

std::string format(const SockAddr& a) {
  char host[INET6_ADDRSTRLEN] = {};
  if (a.family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (a.family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    std::string out(1, '[');  // appends, not "[" + s: GCC 12's -Wrestrict misfires
    return out.append(host).append("]:").append(std::to_string(ntohs(in6->sin6_port)));
  }
  const auto* un = reinterpret_cast<const sockaddr_un*>(&a.storage);
  const std::size_t n =
      a.size > offsetof(sockaddr_un, sun_path) ? a.size - offsetof(sockaddr_un, sun_path) : 0;
  std::string path(un->sun_path, n);
  if (!path.empty() && path[0] != '\0') path = path.c_str();  // drop the terminator
  return path;
}

sys::Fd open_socket(int family) {
  return sys::Fd(
      sys::call("socket", [&] { return ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0); }));
}

void no_delay(const sys::Fd& fd, int family) {
  if (family == AF_UNIX) return;
  const int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

[[noreturn]] void throw_address_error(const char* what, const std::string& address) {
  const int err = errno;
  if (err == ENOENT || err == EACCES || err == EPERM || err == EEXIST || err == ENOTDIR ||
      err == ECONNREFUSED)
    throw_os_error(err, address);
  sys::throw_errno(what, err);
}

}  // namespace

std::string address_type(const std::string& address) {
  if (address.empty() || address[0] == '\0' || address.find('/') != std::string::npos)
    return "AF_UNIX";
  if (address[0] == '[') return "AF_INET6";
  if (address.find(':') != std::string::npos) return "AF_INET";
  return "AF_UNIX";
}

Listener::Listener(std::string address, std::string family, int backlog,
                   std::optional<std::string> authkey, ListenerLimits limits)
    : authkey_(std::move(authkey)), limits_(limits) {
  if (family.empty() && address.empty()) family = "AF_UNIX";
  family_ = checked_family(address, family);
  if (address.empty()) {
    if (family_ == "AF_UNIX") {
      const char* tmp = std::getenv("TMPDIR");
      std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/mpx-listener-XXXXXX";
      if (!::mkdtemp(templ.data())) sys::throw_errno("mkdtemp(listener)");
      address = templ + "/socket";
      unlink_dir_ = true;
    } else {
      address = family_ == "AF_INET6" ? "[::1]:0" : "127.0.0.1:0";
    }
  }
  const SockAddr where = resolve(address, family_);
  sys::Fd fd = open_socket(where.family);
  if (where.family != AF_UNIX) {
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  const bool file = where.family == AF_UNIX && address[0] != '\0';
  if (::bind(fd.get(), where.get(), where.size) < 0) {
    const int err = errno;
    if (unlink_dir_) ::rmdir(address.substr(0, address.rfind('/')).c_str());
    errno = err;
    throw_address_error("bind(listener)", address);
  }
  if (file) {
    unlink_path_ = address;
    owner_pid_ = static_cast<int>(::getpid());
    // Before listen(): nobody can connect while the file is still open to all.
    if (::chmod(address.c_str(), 0600) < 0) {
      const int err = errno;
      close();
      errno = err;
      throw_address_error("chmod(listener)", address);
    }
  }
  sys::call("listen", [&] { return ::listen(fd.get(), backlog > 0 ? backlog : 1); });
  SockAddr bound;
  bound.size = sizeof bound.storage;
  sys::call("getsockname", [&] { return ::getsockname(fd.get(), bound.get(), &bound.size); });
  bound.family = where.family;
  address_ = where.family == AF_UNIX ? address : format(bound);
  fd_ = fd.release();
}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      address_(std::move(other.address_)),
      family_(std::move(other.family_)),
      last_accepted_(std::move(other.last_accepted_)),
      authkey_(std::move(other.authkey_)),
      limits_(other.limits_),
      unlink_path_(std::exchange(other.unlink_path_, {})),
      unlink_dir_(std::exchange(other.unlink_dir_, false)),
      owner_pid_(other.owner_pid_) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    address_ = std::move(other.address_);
    family_ = std::move(other.family_);
    last_accepted_ = std::move(other.last_accepted_);
    authkey_ = std::move(other.authkey_);
    limits_ = other.limits_;
    unlink_path_ = std::exchange(other.unlink_path_, {});
    unlink_dir_ = std::exchange(other.unlink_dir_, false);
    owner_pid_ = other.owner_pid_;
  }
  return *this;
}

Listener::~Listener() {
  close();
}

void Listener::close() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  if (!unlink_path_.empty() && owner_pid_ == static_cast<int>(::getpid())) {
    ::unlink(unlink_path_.c_str());
    if (unlink_dir_) ::rmdir(unlink_path_.substr(0, unlink_path_.rfind('/')).c_str());
  }
  unlink_path_.clear();
}

int Listener::fileno() const {
  if (fd_ < 0) throw InvalidStateError("listener is closed");
  return fd_;
}

Connection Listener::accept() {
  SockAddr peer;
  peer.size = sizeof peer.storage;
  const int listen_fd = fileno();
  sys::Fd fd(sys::call("accept",
                       [&] { return ::accept4(listen_fd, peer.get(), &peer.size, SOCK_CLOEXEC); }));
  peer.family = peer.get()->sa_family;
  last_accepted_ = format(peer);
  no_delay(fd, peer.family);
  auto stream = std::make_unique<detail::SocketStream>(std::move(fd), limits_.maxlength);
  Connection connection = detail::socket_connection(std::move(stream));
  if (authkey_) detail::authenticate_accepted(connection, *authkey_, limits_.handshake_timeout);
  return connection;
}

void detail::authenticate_accepted(Connection& connection, const std::string& authkey,
                                   std::chrono::milliseconds timeout) {
  detail::SocketStream* stream = detail::socket_stream(connection);
  if (!stream) throw InvalidStateError("not a Listener connection");
  const auto deadline = detail::Deadline::after(timeout);
  const bool local = detail::is_unix_socket(stream->fd());
  detail::deliver_challenge(*stream, authkey, deadline, local);
  const bool peer_rings = detail::answer_challenge(*stream, authkey, deadline);
  if (local && peer_rings) {
    try {
      connection = detail::offer_rings(stream->fd());
    } catch (const std::exception& e) {
      throw AuthenticationError(std::string("moving to shared memory failed: ") + e.what());
    }
  }
}

Connection Client(const std::string& address, const std::string& family,
                  const std::optional<std::string>& authkey) {
  const SockAddr where = resolve(address, checked_family(address, family));
  sys::Fd fd = open_socket(where.family);
  if (sys::call_raw("connect", [&] { return ::connect(fd.get(), where.get(), where.size); }) < 0)
    throw_address_error("connect", address);
  no_delay(fd, where.family);
  auto stream = std::make_unique<detail::SocketStream>(std::move(fd));
  if (authkey) {
    const bool local = where.family == AF_UNIX;
    const bool peer_rings = detail::answer_challenge(*stream, *authkey, detail::Deadline::never());
    detail::deliver_challenge(*stream, *authkey, detail::Deadline::never(), local);
    if (local && peer_rings) return detail::accept_rings(stream->fd());
  }
  return detail::socket_connection(std::move(stream));
}

}  // namespace mpx
