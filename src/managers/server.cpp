// A manager's server (Python's multiprocessing.managers.Server).
#include "mpx/managers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <list>
#include <mutex>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "mpx/listener.hpp"
#include "sys/fd.hpp"

namespace mpx::detail {

namespace {

struct Entry {
  std::shared_ptr<void> object;
  const ObjectType* type = nullptr;
  long refs = 0;
};

// A reference held for a proxy in transit (Op::hold), until claimed or expired.
struct Hold {
  std::uint64_t object = 0;
  std::chrono::steady_clock::time_point expires;
};

struct ClientThread {
  std::thread thread;
  sys::Fd socket;  // a duplicate of the accepted socket: stop() shuts it down

  std::atomic<bool> done{false};
};

// Python's name of an error, for the caller to rethrow as its own type.
std::string error_type(const std::exception& e) {
  if (dynamic_cast<const KeyError*>(&e)) return "KeyError";
  if (dynamic_cast<const IndexError*>(&e)) return "IndexError";
  if (dynamic_cast<const AttributeError*>(&e)) return "AttributeError";
  if (dynamic_cast<const Empty*>(&e)) return "Empty";
  if (dynamic_cast<const Full*>(&e)) return "Full";
  if (dynamic_cast<const TimeoutError*>(&e)) return "TimeoutError";
  if (dynamic_cast<const BrokenBarrierError*>(&e)) return "BrokenBarrierError";
  if (dynamic_cast<const ValueError*>(&e)) return "ValueError";
  if (dynamic_cast<const DecodeError*>(&e)) return "DecodeError";
  return "RuntimeError";
}

}  // namespace

// Connections served at once; more are closed at accept (each costs a thread).
constexpr std::size_t kMaxClients = 1024;
// How often serve_forever looks for expired transit holds.
constexpr std::chrono::milliseconds kHoldCheck{250};

struct ServerState {
  Listener listener;
  std::string authkey;
  NamedObjects named;
  sys::Fd stop_read, stop_write;  // a byte on stop_write wakes serve_forever
  std::atomic<bool> stopping{false};
  mutable std::mutex mu;
  std::unordered_map<std::uint64_t, Entry> objects;
  std::map<std::string, std::uint64_t> named_ids;
  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, Hold> holds;  // by hold id
  std::uint64_t next_hold = 1;
  std::chrono::milliseconds transit_hold{kDefaultTransitHold};
  std::list<ClientThread> clients;  // guarded by mu
  std::uint64_t next_client = 1;

  std::uint64_t add(std::shared_ptr<void> object, const ObjectType* type) {
    std::lock_guard lock(mu);
    const std::uint64_t id = next_id++;
    objects[id] = Entry{std::move(object), type, 1};
    return id;
  }

  Entry* find(std::uint64_t id) {
    auto it = objects.find(id);
    if (it == objects.end()) throw KeyError("no shared object with id " + std::to_string(id));
    return &it->second;
  }

  Bytes handle(Op op, std::uint64_t id, const std::string& name, const Bytes& args,
               std::map<std::uint64_t, long>& held, CallContext& ctx) {
    switch (op) {
      case Op::ping:
        return encode(std::monostate{});
      case Op::shutdown:
        stopping = true;
        (void)!::write(stop_write.get(), "x", 1);
        return encode(std::monostate{});
      case Op::create: {
        const ObjectType* type = find_object_type(name);
        if (!type) throw KeyError("type '" + name + "' is not registered on the server");
        const std::uint64_t new_id = add(type->make(args), type);
        ++held[new_id];
        return encode(new_id);
      }
      case Op::incref: {
        std::lock_guard lock(mu);
        // With a hold's id (a decoded proxy): the sender's transit reference becomes ours.
        auto h = args.empty() ? holds.end() : holds.find(decode<std::uint64_t>(args));
        if (h != holds.end() && h->second.object == id)
          holds.erase(h);
        else
          ++find(id)->refs;
        ++held[id];
        return encode(std::monostate{});
      }
      case Op::hold: {
        std::lock_guard lock(mu);
        ++find(id)->refs;
        const std::uint64_t hold = next_hold++;
        holds[hold] = Hold{id, std::chrono::steady_clock::now() + transit_hold};
        return encode(hold);
      }
      case Op::named: {
        std::unique_lock lock(mu);
        auto reg = named.find(name);
        if (reg == named.end()) throw KeyError("no object registered as '" + name + "'");
        auto known = named_ids.find(name);
        std::uint64_t named_id;
        if (known != named_ids.end()) {
          named_id = known->second;
          ++find(named_id)->refs;
        } else {
          const ObjectType* type = find_object_type(reg->second.first);
          if (!type) throw KeyError("type '" + reg->second.first + "' is not registered");
          lock.unlock();
          named_id = add(type->make(reg->second.second), type);
          lock.lock();
          ++objects[named_id].refs;  // the name's own reference, kept until the end
          named_ids[name] = named_id;
        }
        ++held[named_id];
        return encode(std::pair<std::uint64_t, std::string>(named_id, reg->second.first));
      }
      case Op::call: {
        std::shared_ptr<void> object;
        const ObjectType* type;
        {
          std::lock_guard lock(mu);
          Entry* entry = find(id);
          object = entry->object;
          type = entry->type;
        }
        auto m = type->methods.find(name);
        if (m == type->methods.end())
          throw AttributeError("method '" + name + "' of '" + type->name + "' is not exposed");
        return m->second(object.get(), args, ctx);
      }
    }
    throw ValueError("unknown manager request");
  }

  // Drops n references to object id (under mu); an object without references moves to
  // `dying`, to be destroyed outside the lock.
  void unref_locked(std::uint64_t id, long n, std::vector<std::shared_ptr<void>>& dying) {
    auto it = objects.find(id);
    if (it == objects.end()) return;
    it->second.refs -= n;
    if (it->second.refs <= 0) {
      dying.push_back(std::move(it->second.object));
      objects.erase(it);
    }
  }

  // Drops the transit holds nobody claimed in time.
  void expire_holds() {
    std::vector<std::shared_ptr<void>> dying;
    std::lock_guard lock(mu);
    const auto now = std::chrono::steady_clock::now();
    for (auto it = holds.begin(); it != holds.end();) {
      if (it->second.expires > now) {
        ++it;
        continue;
      }
      unref_locked(it->second.object, 1, dying);
      it = holds.erase(it);
    }
  }  // `lock` goes before `dying`: the objects are destroyed outside it

  void release(std::map<std::uint64_t, long>& held, std::uint64_t client) {
    std::vector<std::shared_ptr<void>> dying;  // destroyed outside the lock
    std::vector<std::pair<std::shared_ptr<void>, const ObjectType*>> notify;
    {
      std::lock_guard lock(mu);
      for (auto [id, n] : held) {
        auto it = objects.find(id);
        if (it == objects.end()) continue;
        if (it->second.type->client_gone) notify.emplace_back(it->second.object, it->second.type);
        unref_locked(id, n, dying);
      }
    }
    for (auto& [object, type] : notify)
      type->client_gone(object.get(), client);
  }

  void serve_client(Connection& connection, std::uint64_t client) {
    // The handshake runs here, not in the accept loop: a silent peer costs its own
    // thread for the handshake timeout, never the other clients' connections.
    try {
      detail::authenticate_accepted(connection, authkey, ListenerLimits{}.handshake_timeout);
    } catch (const std::exception&) {
      return;
    }
    std::map<std::uint64_t, long> held;
    const int fd = connection.fileno();
    CallContext ctx;
    ctx.client = client;
    ctx.gone = [this, fd] {
      if (stopping) return true;
      pollfd p{fd, POLLRDHUP, 0};
      return ::poll(&p, 1, 0) > 0;  // any event mid-call means the caller hung up
    };
    for (;;) {
      Request request;
      try {
        // In slices, so that a stopping server ends threads whose connection moved to
        // shared memory (shutting the socket down no longer reaches them).
        while (!connection.poll(std::chrono::milliseconds(100)))
          if (stopping) throw EOFError("the server stops");
        request = connection.recv<Request>();
      } catch (const std::exception&) {
        break;  // EOF, a reset, a foreign message: this client is done
      }
      auto& [op, id, name, args] = request;
      Reply reply;
      try {
        std::get<3>(reply) = handle(static_cast<Op>(op), id, name, args, held, ctx);
      } catch (const std::exception& e) {
        reply = Reply(1, error_type(e), e.what(), {});
      }
      try {
        connection.send(reply);
      } catch (const std::exception&) {
        break;
      }
    }
    release(held, client);
  }

  // Joins the threads of clients that are done.
  void reap(bool all) {
    std::list<ClientThread> finished;
    {
      std::lock_guard lock(mu);
      for (auto it = clients.begin(); it != clients.end();) {
        auto next = std::next(it);
        if (all || it->done) {
          if (all && !it->done) ::shutdown(it->socket.get(), SHUT_RDWR);
          finished.splice(finished.end(), clients, it);
        }
        it = next;
      }
    }
    for (ClientThread& c : finished)
      c.thread.join();
  }
};

}  // namespace mpx::detail

namespace mpx {

using detail::ServerState;

ManagerServer::ManagerServer(std::string address, std::string family, std::string authkey,
                             detail::NamedObjects named)
    : state_(std::make_shared<ServerState>()) {
  state_->listener = Listener(std::move(address), std::move(family), 64);
  state_->authkey = std::move(authkey);
  state_->named = std::move(named);
  auto [r, w] = sys::make_pipe();
  state_->stop_read = std::move(r);
  state_->stop_write = std::move(w);
}
ManagerServer::ManagerServer(ManagerServer&&) noexcept = default;
ManagerServer& ManagerServer::operator=(ManagerServer&&) noexcept = default;
ManagerServer::~ManagerServer() = default;

const std::string& ManagerServer::address() const {
  return state_->listener.address();
}

void ManagerServer::stop() noexcept {
  if (!state_) return;
  state_->stopping = true;
  (void)!::write(state_->stop_write.get(), "x", 1);
}

std::pair<std::size_t, std::size_t> ManagerServer::counts() const {
  std::lock_guard lock(state_->mu);
  std::size_t live = 0;
  for (const detail::ClientThread& c : state_->clients)
    live += c.done ? 0 : 1;
  return {state_->objects.size(), live};
}

void ManagerServer::serve_forever() {
  ServerState& s = *state_;
  while (!s.stopping) {
    const auto ready = mpx::wait({s.listener.fileno(), s.stop_read.get()}, detail::kHoldCheck);
    s.reap(false);
    s.expire_holds();
    if (s.stopping) break;
    if (ready.empty() || ready[0].fd() != s.listener.fileno()) continue;
    Connection connection;
    try {
      connection = s.listener.accept();
    } catch (const AuthenticationError&) {
      continue;  // a peer without the key: refused, keep serving
    } catch (const std::system_error&) {
      continue;  // ECONNABORTED and the like
    }
    std::lock_guard lock(s.mu);
    if (s.clients.size() >= detail::kMaxClients) continue;  // closes it
    detail::ClientThread& c = s.clients.emplace_back();
    c.socket = sys::Fd(::fcntl(connection.fileno(), F_DUPFD_CLOEXEC, 0));
    const std::uint64_t id = s.next_client++;
    // The connection lives as long as the thread: reap(true) may shut its socket down
    // until the thread has ended.
    c.thread = std::thread([&s, &c, id, conn = std::move(connection)]() mutable {
      s.serve_client(conn, id);
      c.done = true;
    });
  }
  s.reap(true);
  std::lock_guard lock(s.mu);
  s.holds.clear();
  s.objects.clear();
}

void ManagerServer::set_transit_hold(std::chrono::milliseconds hold) {
  std::lock_guard lock(state_->mu);
  state_->transit_hold = hold;
}

}  // namespace mpx
