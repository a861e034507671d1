// The client side of manager proxies: connecting, one request/reply, errors rethrown.
#include <unistd.h>

#include "mpx/detail/managers_proxy.hpp"
#include "mpx/errors.hpp"
#include "mpx/listener.hpp"

namespace mpx {
namespace detail {

namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, ObjectType, std::less<>> types;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used until the process ends
  return *r;
}

[[noreturn]] void throw_remote(const std::string& type, const std::string& message) {
  if (type == "KeyError") throw KeyError(message);
  if (type == "IndexError") throw IndexError(message);
  if (type == "AttributeError") throw AttributeError(message);
  if (type == "Empty") throw Empty(message);
  if (type == "Full") throw Full(message);
  if (type == "TimeoutError") throw TimeoutError(message);
  if (type == "BrokenBarrierError") throw BrokenBarrierError(message);
  if (type == "ValueError") throw ValueError(message);
  throw RemoteError(type, message, 0);
}

}  // namespace

bool register_object_type(ObjectType type) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::string name = type.name;
  r.types.emplace(std::move(name), std::move(type));
  return true;
}

const ObjectType* find_object_type(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : &it->second;  // entries are never erased
}

Connection manager_connect(const Token& token) {
  return Client(token.address, token.family, token.authkey);
}

Bytes manager_request(Connection& connection, Op op, std::uint64_t id, std::string_view name,
                      Bytes args) {
  // Not send()/recv<>(): their thread's scratch buffers may hold the message that is
  // being encoded or decoded around this request (a proxy taking its transit hold while
  // it is encoded, or connecting while it is decoded).
  connection.send_bytes(
      encode(Request(static_cast<std::uint8_t>(op), id, std::string(name), std::move(args))));
  auto [kind, type, message, result] = decode<Reply>(connection.recv_bytes());
  if (kind != 0) throw_remote(type, message);
  return std::move(result);
}

}  // namespace detail

BaseProxy::BaseProxy(ProxyToken token, Connection connection)
    : token_(std::move(token)), connection_(std::move(connection)), pid_(::getpid()) {}

BaseProxy::BaseProxy(const BaseProxy& other) {
  if (other.token_.id != 0) adopt(other.token_);
}

BaseProxy& BaseProxy::operator=(const BaseProxy& other) {
  if (this != &other) {
    BaseProxy copy(other);
    *this = std::move(copy);
  }
  return *this;
}

void BaseProxy::adopt(ProxyToken token, std::uint64_t hold) {
  Connection connection = detail::manager_connect(token);
  detail::manager_request(connection, detail::Op::incref, token.id, {},
                          hold ? encode(hold) : Bytes{});
  token_ = std::move(token);
  connection_ = std::move(connection);
  pid_ = ::getpid();
  mu_ = std::make_shared<std::mutex>();
}

Connection& BaseProxy::connection_here() const {
  if (pid_ != ::getpid()) {
    // Inherited through fork: the socket is the parent's; take our own reference.
    Connection inherited = std::move(connection_);
    (void)inherited.fileno();
    Connection connection = detail::manager_connect(token_);
    detail::manager_request(connection, detail::Op::incref, token_.id, {}, {});
    connection_ = std::move(connection);
    pid_ = ::getpid();
  }
  return connection_;
}

std::uint64_t BaseProxy::hold_for_transit() const {
  if (token_.id == 0) return 0;
  std::lock_guard lock(*mu_);
  return decode<std::uint64_t>(
      detail::manager_request(connection_here(), detail::Op::hold, token_.id, {}, {}));
}

Bytes BaseProxy::call_raw(std::string_view method_name, Bytes args) {
  if (token_.id == 0) throw InvalidStateError("the proxy refers to no shared object");
  std::lock_guard lock(*mu_);
  return detail::manager_request(connection_here(), detail::Op::call, token_.id, method_name,
                                 std::move(args));
}

}  // namespace mpx
