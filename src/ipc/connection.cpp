// Pipe() and Connection over shared-memory rings with a socket doorbell (ring.hpp).
#include "mpx/connection.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <new>
#include <system_error>
#include <unordered_set>

#include "ipc/read_ends.hpp"
#include "ipc/ring.hpp"
#include "ipc/ring_upgrade.hpp"
#include "ipc/socket_stream.hpp"
#include "mpx/synchronize.hpp"
#include "sys/atfork.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx {

// Each direction of a pipe has its own socketpair: the receiving end sleeps on its side
// for data bells, the sending end on the other side for room bells. So a thread that
// sends and another that receives on one end never drain each other's bells.
struct Connection::Impl {
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // A read end hangs up (Ring::hang_up_reader) after its socket is closed: a writer's bell
  // then finds the socket gone if this was its last copy.
  ~Impl() {
    if (!has_in || stream) return;
    detail::forget_read_end(this);
    in_socket.reset();
    in.hang_up_reader();
  }

  std::shared_ptr<sys::Mapping> mapping;  // shared by both ends while in one process
  // The memfd under `mapping` when the pipe was made for a child that is not a fork (a
  // spawn or forkserver Context's Pipe()), and where this end's rings are in it.
  std::shared_ptr<sys::Fd> memory;
  std::size_t in_offset = 0;
  std::size_t out_offset = 0;
  sys::Fd in_socket;   // data bells in, room bells out
  sys::Fd out_socket;  // room bells in, data bells out
  detail::Doorbell in_bell;
  detail::Doorbell out_bell;
  detail::Ring in;   // messages to this end (absent on a write-only end)
  detail::Ring out;  // messages from this end (absent on a read-only end)
  bool has_in = false;
  bool has_out = false;
  // A Listener/Client connection: a socket framed as CPython frames it, no rings.
  std::unique_ptr<detail::SocketStream> stream;
};

namespace detail {

// The read ends alive in this process, hung up when it ends through mpx (a Process
// child's end, mpx::exit), where no destructor runs for them.
namespace {

struct ReadEnds {
  std::mutex mu;
  std::unordered_set<Connection::Impl*> ends;
};

// How many read ends `ends` holds, read without the lock by hang_up_read_ends: a child
// that never made a connection ends without touching (and copying) the registry's pages.
std::atomic<std::size_t> g_read_end_count{0};

ReadEnds& read_ends() {
  static ReadEnds* r = [] {
    auto* ends = new ReadEnds;  // never destroyed: used until the process ends
    // A fork while another thread holds the lock must not leave the child's copy held.
    sys::atfork([] { read_ends().mu.lock(); }, [] { read_ends().mu.unlock(); },
                [] { read_ends().mu.unlock(); });
    return ends;
  }();
  return *r;
}

}  // namespace

void remember_read_end(Connection::Impl* impl) {
  ReadEnds& r = read_ends();
  std::lock_guard lock(r.mu);
  r.ends.insert(impl);
  g_read_end_count.store(r.ends.size(), std::memory_order_relaxed);
}

void forget_read_end(Connection::Impl* impl) noexcept {
  ReadEnds& r = read_ends();
  std::lock_guard lock(r.mu);
  r.ends.erase(impl);
  g_read_end_count.store(r.ends.size(), std::memory_order_relaxed);
}

MPX_CHILD_PATH void hang_up_read_ends() noexcept {
  if (g_read_end_count.load(std::memory_order_relaxed) == 0) return;
  ReadEnds& r = read_ends();
  std::lock_guard lock(r.mu);
  for (Connection::Impl* impl : r.ends) {
    impl->in_socket.reset();
    impl->in.hang_up_reader();
  }
}

SocketStream* socket_stream(Connection& connection) noexcept {
  return connection.impl_ ? connection.impl_->stream.get() : nullptr;
}

Connection socket_connection(std::unique_ptr<SocketStream> stream) {
  auto impl = std::make_unique<Connection::Impl>();
  impl->stream = std::move(stream);
  impl->has_in = impl->has_out = true;
  return Connection(std::move(impl));
}

}  // namespace detail

struct detail::ConnectionAccess {
  static Connection make(std::unique_ptr<Connection::Impl> impl) noexcept {
    return Connection(std::move(impl));
  }
};

namespace {

// One end over rings in `mapping`: receiving through `in` (with its bell socket), sending
// through `out`; either may be absent (nullptr).
Connection ring_end(const std::shared_ptr<sys::Mapping>& mapping, std::byte* in, sys::Fd in_socket,
                    std::byte* out, sys::Fd out_socket, std::shared_ptr<sys::Fd> memory = nullptr) {
  auto impl = std::make_unique<Connection::Impl>();
  impl->mapping = mapping;
  impl->memory = std::move(memory);
  if (in) impl->in_offset = static_cast<std::size_t>(in - mapping->bytes());
  if (out) impl->out_offset = static_cast<std::size_t>(out - mapping->bytes());
  impl->in_socket = std::move(in_socket);
  impl->out_socket = std::move(out_socket);
  impl->in_bell.fd = impl->in_socket.get();
  impl->out_bell.fd = impl->out_socket.get();
  if (in) {
    impl->in = detail::Ring(in, &impl->in_bell);
    detail::remember_read_end(impl.get());
    impl->has_in = true;
  }
  if (out) {
    impl->out = detail::Ring(out, &impl->out_bell);
    impl->has_out = true;
  }
  return detail::ConnectionAccess::make(std::move(impl));
}

}  // namespace

Connection detail::ring_connection(int memfd, std::size_t capacity, int side, int in_socket,
                                   int out_socket) {
  sys::Fd memory(memfd);
  sys::Fd in_s(in_socket), out_s(out_socket);
  const std::size_t ring_bytes = detail::Ring::region_size(capacity);
  auto mapping = std::make_shared<sys::Mapping>(sys::map_shared(memory.get(), 2 * ring_bytes));
  std::byte* region[2] = {mapping->bytes(), mapping->bytes() + ring_bytes};
  // The memfd stays with the end: it can then be handed to a spawn or forkserver child.
  return ring_end(mapping, region[side], std::move(in_s), region[1 - side], std::move(out_s),
                  std::make_shared<sys::Fd>(std::move(memory)));
}

std::pair<Connection, Connection> Pipe(bool duplex, std::size_t capacity) {
  const std::size_t cap =
      detail::Ring::round_capacity(capacity == 0 ? detail::Ring::kDefaultPipeCapacity : capacity);
  const std::size_t ring_bytes = detail::Ring::region_size(cap);
  const int rings = duplex ? 2 : 1;
  // For a child that is not a fork (a spawn or forkserver Context's Pipe), over a memfd
  // that can travel; else an anonymous mapping, which fork passes on.
  std::shared_ptr<sys::Fd> memory;
  if (detail::KeepBlockFds::active())
    memory = std::make_shared<sys::Fd>(sys::memfd("mpx-pipe", ring_bytes * rings));
  auto mapping =
      std::make_shared<sys::Mapping>(memory ? sys::map_shared(memory->get(), ring_bytes * rings)
                                            : sys::map_anonymous_shared(ring_bytes * rings));
  std::byte* region[2] = {mapping->bytes(), mapping->bytes() + ring_bytes};
  for (int i = 0; i < rings; ++i)
    detail::Ring::init(region[i], cap, 0);

  // Direction d: ring region[d], sockets pair[d] = {receiving side, sending side}.
  std::pair<sys::Fd, sys::Fd> pair[2];
  for (int i = 0; i < rings; ++i)
    pair[i] = sys::make_socketpair();

  if (duplex) {
    // a receives through region[0] and sends through region[1]; b the other way round.
    Connection a = ring_end(mapping, region[0], std::move(pair[0].first), region[1],
                            std::move(pair[1].second), memory);
    Connection b = ring_end(mapping, region[1], std::move(pair[1].first), region[0],
                            std::move(pair[0].second), memory);
    return {std::move(a), std::move(b)};
  }
  Connection reader =
      ring_end(mapping, region[0], std::move(pair[0].first), nullptr, sys::Fd(), memory);
  Connection writer =
      ring_end(mapping, nullptr, sys::Fd(), region[0], std::move(pair[0].second), memory);
  return {std::move(reader), std::move(writer)};
}

namespace detail {

namespace {
// What travels with a handed-off end besides its fds. A Listener/Client connection over
// a socket (`stream`): its socket, its limit, and the bytes it read ahead (after this).
struct EndLayout {
  std::uint64_t in_offset;
  std::uint64_t out_offset;
  bool has_in;
  bool has_out;
  bool stream;
  std::uint64_t limit;
  std::uint64_t ahead;
};
}  // namespace

void Handoff<Connection>::save(const Connection& c, HandoffWriter& w) {
  const Connection::Impl* impl = c.impl_.get();
  if (!impl) throw ValueError("mpx: a closed Connection cannot be handed to a child");
  if (impl->stream) {
    const SocketStream::Snapshot snap = impl->stream->snapshot();
    w.put_fd(impl->stream->fd());
    const EndLayout layout{0, 0, true, true, true, snap.limit, snap.ahead.size()};
    w.put(&layout, sizeof layout);
    w.put(snap.ahead.data(), snap.ahead.size());
    return;
  }
  if (!impl->memory) {
    throw ValueError(
        "mpx: this Pipe end's rings live in an anonymous mapping that only fork passes on, so "
        "it cannot reach a spawn or forkserver child: make the pipe with that context's "
        "factory (mpx::get_context(\"spawn\").Pipe())");
  }
  w.put_fd(impl->memory->get());
  const EndLayout layout{
      impl->in_offset, impl->out_offset, impl->has_in, impl->has_out, false, 0, 0};
  w.put(&layout, sizeof layout);
  if (impl->has_in) w.put_fd(impl->in_socket.get());
  if (impl->has_out) w.put_fd(impl->out_socket.get());
}

Connection Handoff<Connection>::load(HandoffReader& r) {
  sys::Fd first(r.take_fd());  // the memfd of the rings, or a stream's socket
  EndLayout layout{};
  r.get(&layout, sizeof layout);
  if (layout.stream) {
    if (layout.ahead > r.bytes.size())
      throw std::runtime_error("mpx: a handed-off connection is truncated");
    std::vector<std::byte> ahead(static_cast<std::size_t>(layout.ahead));
    r.get(ahead.data(), ahead.size());
    return socket_connection(std::make_unique<SocketStream>(
        std::move(first), static_cast<std::size_t>(layout.limit), ahead));
  }
  auto memory = std::make_shared<sys::Fd>(std::move(first));
  sys::Fd in_socket, out_socket;
  if (layout.has_in) in_socket = sys::Fd(r.take_fd());
  if (layout.has_out) out_socket = sys::Fd(r.take_fd());
  struct stat st {};
  sys::call("fstat(pipe)", [&] { return ::fstat(memory->get(), &st); });
  const auto size = static_cast<std::size_t>(st.st_size);
  if ((layout.has_in && layout.in_offset >= size) || (layout.has_out && layout.out_offset >= size))
    throw std::runtime_error("mpx: a handed-off Pipe end does not fit its rings");
  auto mapping = std::make_shared<sys::Mapping>(sys::map_shared(memory->get(), size));
  std::byte* in = layout.has_in ? mapping->bytes() + layout.in_offset : nullptr;
  std::byte* out = layout.has_out ? mapping->bytes() + layout.out_offset : nullptr;
  return ring_end(mapping, in, std::move(in_socket), out, std::move(out_socket), std::move(memory));
}

}  // namespace detail

Connection::Connection() noexcept = default;
Connection::Connection(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Connection::Connection(Connection&& other) noexcept = default;
Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
Connection::~Connection() {
  close();
}

void Connection::close() noexcept {
  impl_.reset();
}
bool Connection::readable() const noexcept {
  return impl_ && impl_->has_in;
}
bool Connection::writable() const noexcept {
  return impl_ && impl_->has_out;
}

int Connection::fileno() const {
  const Impl& impl = checked(false, false);
  if (impl.stream) return impl.stream->fd();
  return impl.has_in ? impl.in_socket.get() : impl.out_socket.get();
}

namespace {

[[noreturn, gnu::noinline, gnu::cold]] void throw_unusable(const Connection::Impl* impl,
                                                           bool want_read) {
  if (!impl) throw InvalidStateError("connection is closed");
  throw InvalidStateError(want_read ? "connection is write-only" : "connection is read-only");
}

}  // namespace

// Inlined into every send and receive: the throws stay out of line.
Connection::Impl& Connection::checked(bool want_read, bool want_write) const {
  Impl* impl = impl_.get();
  if (!impl || (want_read && !impl->has_in) || (want_write && !impl->has_out)) [[unlikely]]
    throw_unusable(impl, want_read && impl && !impl->has_in);
  return *impl;
}

namespace {

void send_to(Connection::Impl& impl, detail::Parts parts) {
  if (impl.stream) return impl.stream->send(parts);
  impl.out.write(parts, detail::Deadline::never());
}

}  // namespace

void Connection::send_parts(detail::Parts parts) {
  send_to(checked(false, true), parts);
}

void Connection::send_bytes(std::span<const std::byte> buffer, std::size_t offset,
                            std::size_t size) {
  Impl& impl = checked(false, true);
  if (offset > buffer.size()) throw ValueError("send_bytes: offset is beyond the buffer");
  if (size == npos) size = buffer.size() - offset;
  if (size > buffer.size() - offset)
    throw ValueError("send_bytes: offset + size is beyond the buffer");
  const std::span<const std::byte> part = buffer.subspan(offset, size);
  send_to(impl, std::span<const std::span<const std::byte>>(&part, 1));
}

namespace {

struct IntoSpan {
  std::span<std::byte> buffer;
  Bytes overflow;
  bool fits = true;
  bool no_memory = false;
  std::size_t size = 0;
  static std::byte* reserve(void* ctx, std::size_t total) noexcept {
    auto* self = static_cast<IntoSpan*>(ctx);
    self->size = total;
    self->no_memory = false;
    self->fits = total <= self->buffer.size();
    if (self->fits) return self->buffer.data();
    try {
      self->overflow.resize(total);
    } catch (...) {
      self->no_memory = true;
      return nullptr;
    }
    return self->overflow.data();
  }
};

}  // namespace

void Connection::recv_into(Bytes& out) {
  Impl& impl = checked(true, false);
  if (impl.stream) return impl.stream->recv(out, npos, detail::Deadline::never());
  detail::IntoVector into{&out, npos};
  impl.in.read(&detail::IntoVector::reserve, &into, detail::Deadline::never());
  if (into.no_memory) throw std::bad_alloc();
}

Bytes Connection::recv_bytes(std::size_t maxlength) {
  Impl& impl = checked(true, false);
  Bytes out;
  if (impl.stream) {
    impl.stream->recv(out, maxlength, detail::Deadline::never());
    return out;
  }
  detail::IntoVector into{&out, maxlength};
  impl.in.read(&detail::IntoVector::reserve, &into, detail::Deadline::never());
  if (into.too_long)
    throw std::system_error(EMSGSIZE, std::generic_category(),
                            "recv_bytes: message longer than maxlength");
  if (into.no_memory) throw std::bad_alloc();
  return out;
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset) {
  Impl& impl = checked(true, false);
  if (offset > buffer.size()) throw ValueError("recv_bytes_into: offset is beyond the buffer");
  if (impl.stream) {
    Bytes& scratch = detail::recv_scratch();
    detail::ScratchTrim trim{scratch};
    impl.stream->recv(scratch, npos, detail::Deadline::never());
    if (scratch.size() > buffer.size() - offset) throw BufferTooShort(Bytes(scratch));
    std::copy(scratch.begin(), scratch.end(), buffer.begin() + static_cast<std::ptrdiff_t>(offset));
    return scratch.size();
  }
  IntoSpan into{buffer.subspan(offset)};
  impl.in.read(&IntoSpan::reserve, &into, detail::Deadline::never());
  if (into.no_memory) throw std::bad_alloc();
  if (!into.fits) throw BufferTooShort(std::move(into.overflow));
  return into.size;
}

bool Connection::poll_until(const detail::Deadline& deadline) {
  Impl& impl = checked(true, false);
  if (impl.stream) return impl.stream->poll(deadline);
  if (impl.in.has_data() || impl.in_bell.gone()) return true;
  if (deadline.expired()) {
    impl.in_bell.drain();
    return impl.in.has_data() || impl.in_bell.gone();
  }
  return impl.in.wait_readable(deadline) || impl.in_bell.gone();
}

namespace detail {

std::vector<Waitable> wait_objects(const std::vector<Waitable>& objects, const Deadline& deadline) {
  std::vector<Connection::Impl*> impls(objects.size(), nullptr);
  std::vector<int> plain_fds(objects.size());  // fds and socket connections
  std::vector<const SocketStream*> streams(objects.size(), nullptr);
  for (std::size_t i = 0; i < objects.size(); ++i) {
    plain_fds[i] = objects[i].fd();
    if (Connection* c = objects[i].connection()) {
      Connection::Impl& impl = c->checked(true, false);
      if (impl.stream) {
        plain_fds[i] = impl.stream->fd();
        streams[i] = impl.stream.get();
      } else {
        impls[i] = &impl;
      }
    }
  }
  // A ring connection with a message or EOF, or a socket one with bytes read ahead.
  auto ready_now = [&](std::size_t i) {
    if (streams[i]) return streams[i]->buffered();
    Connection::Impl* impl = impls[i];
    return impl && (impl->in.has_data() || impl->in_bell.gone());
  };
  auto any_connection_ready = [&] {
    for (std::size_t i = 0; i < objects.size(); ++i)
      if (ready_now(i)) return true;
    return false;
  };
  // Plain descriptors are polled; a connection's slot holds its bell (or -1, ignored by
  // poll, when only the plain ones are asked about).
  std::vector<pollfd> fds(objects.size());
  const bool any_plain = std::find(impls.begin(), impls.end(), nullptr) != impls.end();
  auto poll_fds = [&](bool bells, int ms) {
    for (std::size_t i = 0; i < objects.size(); ++i)
      fds[i] = pollfd{impls[i] ? (bells ? impls[i]->in_bell.fd : -1) : plain_fds[i], POLLIN, 0};
    if (!bells && !any_plain) return;
    sys::call("poll(wait)",
              [&] { return ::poll(fds.data(), static_cast<nfds_t>(fds.size()), ms); });
  };
  // Every ready object, in the caller's order: the connections with a message or EOF
  // now, and the descriptors the last poll found readable (Python's wait reports all).
  auto collect = [&] {
    std::vector<Waitable> ready;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      if (impls[i] ? ready_now(i) : fds[i].revents != 0 || ready_now(i))
        ready.push_back(objects[i]);
    }
    return ready;
  };
  for (;;) {
    if (any_connection_ready()) {
      poll_fds(false, 0);
      return collect();
    }
    // Arm every connection's bell, then look again: a writer that published before it
    // could see the flag rang no bell.
    for (Connection::Impl* impl : impls)
      if (impl) impl->in.header()->reader_sleeping.store(1, std::memory_order_seq_cst);
    if (any_connection_ready()) {
      poll_fds(false, 0);
    } else {
      int ms = deadline.poll_timeout_ms();
      for (Connection::Impl* impl : impls) {
        if (!impl) continue;
        // Slices, as in Ring::wait_for: another thread on the same end may drain our bell.
        impl->in_bell.waiting_threads.fetch_add(1);
        const int slice = detail::bell_sleep_ms(impl->in_bell, deadline);
        if (ms < 0 || slice < ms) ms = slice;
      }
      struct Leave {
        std::vector<Connection::Impl*>& impls;
        ~Leave() {
          for (Connection::Impl* impl : impls)
            if (impl) impl->in_bell.waiting_threads.fetch_sub(1);
        }
      } leave{impls};
      poll_fds(true, ms);
      for (std::size_t i = 0; i < objects.size(); ++i)
        if (impls[i] && fds[i].revents != 0)
          impls[i]->in_bell.drain();  // a stale bell must not count as a message
    }
    for (Connection::Impl* impl : impls)
      if (impl) impl->in.header()->reader_sleeping.store(0, std::memory_order_relaxed);
    std::vector<Waitable> ready = collect();
    if (!ready.empty() || deadline.expired()) return ready;
  }
}

}  // namespace detail

}  // namespace mpx
