// mpx/managers.hpp — Managers, like multiprocessing.managers: a server process holds
// shared objects; other processes, on this machine or others, use them through proxies.
//
//   mpx::SyncManager manager;            // mpx::Manager() starts one
//   manager.start();                     // the server runs in a child process
//   auto d = manager.dict<std::string, int>();
//   d.setitem("a", 1);                   // d["a"] = 1
//   mpx::Process p([d]() mutable { d.setitem("b", d.getitem("a") + 1); }); ...
//
// Remote use (Python's "distributed" pattern): a master serves named objects on TCP with
// an authkey; workers elsewhere connect and fetch them by name:
//   mpx::BaseManager m("0.0.0.0:50000", "secret");
//   m.register_<mpx::QueueProxy<int>>("tasks");   m.get_server().serve_forever();
//   // worker:  mpx::BaseManager w("master:50000", "secret"); w.connect();
//   //          auto tasks = w.get<mpx::QueueProxy<int>>("tasks");  tasks.get();
//
// Wire: mpx's Listener/Client (CPython's framing and authkey handshake) carrying mpx
// codec messages: both ends must be mpx programs of the same build (types are checked by
// their codec tags). Security: a server runs only the methods registered types expose,
// with arguments decoded as the types those methods declare; nothing else can be run.
//
// Proxies: each proxy holds one connection to the server, which holds one reference to
// the object while it is open (a server thread serves it). Copying a proxy (or passing
// it to another process: it is encodable, carrying address, object id and authkey)
// connects anew; a proxy used in a forked child reconnects there. The object lives while
// any proxy to it is open; a process that dies drops its connections, so its references
// go, any manager Lock/RLock/Condition it held is released, and the Semaphore units it
// acquired and did not release come back (never above the initial value: a semaphore
// used as a signal gains nothing when its consumer dies). One thread at a time
// per proxy object: give each thread its own copy. A proxy passed to another process
// keeps its object alive until the receiver has decoded it (set_transit_hold).
// Errors raised by a method on the server reach the caller as the mpx error of the same
// Python name (KeyError, IndexError, Empty, Full, ValueError, BrokenBarrierError,
// AttributeError for a method not exposed), else as RemoteError.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/managers_objects.hpp"
#include "mpx/detail/managers_proxy.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx {

// Exposes a member function of a registered type (BaseManager::register_type).
template <class F>
detail::Method expose(F fn) {
  return detail::method(fn);
}

namespace detail {
// How long the server keeps the reference of a proxy in transit (encoded, not yet decoded).
inline constexpr std::chrono::milliseconds kDefaultTransitHold = std::chrono::hours(1);
using NamedObjects = std::map<std::string, std::pair<std::string, Bytes>>;
struct ServerState;
template <class Obj>
bool register_builtin(std::string name,
                      std::function<std::shared_ptr<void>(std::span<const std::byte>)> make,
                      std::map<std::string, Method, std::less<>> methods) {
  ObjectType type{std::move(name), std::move(make), std::move(methods), {}};
  if constexpr (requires(Obj & o) { o.client_gone(std::uint64_t{}); })
    type.client_gone = [](void* o, std::uint64_t client) {
      static_cast<Obj*>(o)->client_gone(client);
    };
  return register_object_type(std::move(type));
}
inline Timeout seconds(std::optional<std::chrono::duration<double>> t) {
  return t ? Timeout(t->count()) : std::nullopt;
}
}  // namespace detail

using OptionalTimeout = std::optional<std::chrono::duration<double>>;

// A manager's server (Python's managers.Server): serves until stop() or a shutdown
// request. Made by BaseManager::get_server(); BaseManager::start() runs one in a child.
class ManagerServer {
 public:
  ManagerServer(std::string address, std::string family, std::string authkey,
                detail::NamedObjects named);
  ManagerServer(ManagerServer&&) noexcept;
  ManagerServer& operator=(ManagerServer&&) noexcept;
  ~ManagerServer();
  const std::string& address() const;
  void serve_forever();
  void stop() noexcept;  // from any thread; idempotent
  // Live shared objects and connected clients (diagnostics).
  std::pair<std::size_t, std::size_t> counts() const;
  // How long a proxy in transit keeps its object alive (BaseManager::set_transit_hold).
  void set_transit_hold(std::chrono::milliseconds hold);

 private:
  std::shared_ptr<detail::ServerState> state_;
};

class BaseManager {
 public:
  // address: where the server listens or is ("" : a fresh Unix socket on start());
  // authkey: the shared secret (empty: 32 random bytes, for a manager this process
  // starts); family as for Listener.
  explicit BaseManager(std::string address = "", std::optional<std::string> authkey = std::nullopt,
                       std::string family = "");
  BaseManager(BaseManager&&) noexcept;
  BaseManager& operator=(BaseManager&&) noexcept;
  BaseManager(const BaseManager&) = delete;
  BaseManager& operator=(const BaseManager&) = delete;
  // Shuts down a server this manager started.
  virtual ~BaseManager();

  // Runs the server in a child process (fork); returns once it listens.
  // Throws ProcessError when the server could not start (the child's error in the text).
  void start();
  // Joins a running server at address() with the authkey (checks that it answers).
  void connect();
  // Stops the server this manager started (and waits for its process). Idempotent.
  void shutdown();
  // A server for this manager's address, to serve in this process.
  ManagerServer get_server();
  // The server's address (after start(): the one it bound).
  const std::string& address() const noexcept { return address_; }
  const std::string& authkey() const noexcept { return authkey_; }
  // The server's process id (start() only).
  pid_t pid() const noexcept { return server_pid_; }
  // A proxy encoded to be sent (through a queue, a pipe, as a task argument) keeps its
  // object alive on the server until a receiver decodes it, even when the sender's
  // proxies are gone by then; one never decoded (its receiver died) lets go after `hold`
  // (default 1 hour). Not in Python (whose sender must keep its proxy until then).
  // Before start()/get_server().
  void set_transit_hold(std::chrono::milliseconds hold) noexcept { transit_hold_ = hold; }

  // Python's register(typeid, callable): the server makes one object of P's type
  // (constructor arguments as P::make_args takes them) on the first get<P>(name) and
  // hands every caller a proxy to that same object. Before start()/get_server().
  template <class P, class... A>
  void register_(const std::string& name, const A&... args) {
    (void)P::registered;  // the server of this program can make P's objects
    named_[name] = {P::type_id(), P::make_args(args...)};
  }
  // A proxy to the object registered as `name` on the server (any process may ask).
  // Throws KeyError when no such name; ValueError when it is not of P's type.
  template <class P>
  P get(const std::string& name) {
    auto [base, type] = get_named(name);
    if (type != P::type_id())
      throw ValueError("'" + name + "' holds a " + type + ", not a " + P::type_id());
    return P(std::move(base));
  }
  // A new shared object of P's type, on the server.
  template <class P, class... A>
  P create(const A&... args) {
    return P(create_raw(P::type_id(), P::make_args(args...)));
  }
  // A new object of a type registered with register_type, by its type id.
  template <class... A>
  BaseProxy create(const std::string& type_id, const A&... args) {
    return create_raw(type_id, encode(std::tuple<A...>(args...)));
  }
  // Registers a user type T in this program (server side): constructed from Args...,
  // exposing only `exposed` ({{"add", mpx::expose(&T::add)}, ...}). Proxies call them
  // as proxy.call<R>("add", args...).
  template <class T, class... Args>
  static void register_type(std::string type_id,
                            std::map<std::string, detail::Method, std::less<>> exposed) {
    detail::register_object_type(
        {std::move(type_id), detail::maker<T, Args...>(), std::move(exposed), {}});
  }

 protected:
  BaseProxy create_raw(const std::string& type_id, Bytes args);
  std::pair<BaseProxy, std::string> get_named(const std::string& name);

 private:
  detail::Token token(std::uint64_t id, std::string type) const;
  std::string address_;
  std::string family_;
  std::string authkey_;
  detail::NamedObjects named_;
  pid_t server_pid_ = 0;
  std::chrono::milliseconds transit_hold_ = detail::kDefaultTransitHold;
  std::shared_ptr<void> process_;  // the server's mpx::Process (start())
};

// Python's SharedMemoryManager: the SharedMemory blocks and ShareableLists made through
// it live until its server ends (shutdown(), the destructor, or the server's death, even
// by kill -9), whatever becomes of the processes that made or used them.
//
//   mpx::SharedMemoryManager smm;  smm.start();
//   mpx::SharedMemory shm = smm.SharedMemory(4096);        // a new block, "psm_…"
//   mpx::ShareableList sl = smm.ShareableList({1, 2, 3});  // any process may open them
//   smm.shutdown();                                        // unlinks them all
//
// The server makes each block (its resource tracker holds the name from the first
// moment, so no block is ever left behind) and the caller opens it by name: the server
// runs on this machine. Any process holding a copy of the manager's address and authkey
// (a forked child, or one that connect()s) may make blocks through it.
class SharedMemoryManager : public BaseManager {
 public:
  explicit SharedMemoryManager(std::string address = "",
                               std::optional<std::string> authkey = std::nullopt,
                               std::string family = "");
  // smm.SharedMemory(size). Throws ValueError for size 0; the errors of a manager call.
  mpx::SharedMemory SharedMemory(std::size_t size);
  // smm.ShareableList(sequence). Throws ValueError for an item a list cannot hold
  // (before asking the server for a block).
  mpx::ShareableList ShareableList(std::span<const mpx::ShareableList::Item> items);
  mpx::ShareableList ShareableList(std::initializer_list<mpx::ShareableList::Item> items);
};

}  // namespace mpx

#include "mpx/detail/managers_sync.hpp"  // IWYU pragma: export
