// BaseManager: starting a server in a child process, connecting, shutting down.
#include <openssl/rand.h>

#include <chrono>

#include "mpx/managers.hpp"
#include "mpx/process.hpp"

namespace mpx {

namespace {

using namespace std::chrono_literals;

std::string random_authkey() {
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) throw Error("no random bytes for an authkey (OpenSSL)");
  return std::string(reinterpret_cast<const char*>(key), sizeof key);
}

}  // namespace

BaseManager::BaseManager(std::string address, std::optional<std::string> authkey,
                         std::string family)
    : address_(std::move(address)),
      family_(std::move(family)),
      authkey_(authkey ? std::move(*authkey) : random_authkey()) {}

BaseManager::BaseManager(BaseManager&&) noexcept = default;
BaseManager& BaseManager::operator=(BaseManager&& other) noexcept {
  if (this != &other) {
    shutdown();
    address_ = std::move(other.address_);
    family_ = std::move(other.family_);
    authkey_ = std::move(other.authkey_);
    named_ = std::move(other.named_);
    server_pid_ = std::exchange(other.server_pid_, 0);
    transit_hold_ = other.transit_hold_;
    process_ = std::move(other.process_);
  }
  return *this;
}

BaseManager::~BaseManager() {
  try {
    shutdown();
  } catch (...) {  // a destructor must not throw; the process is killed below anyway
  }
}

ManagerServer BaseManager::get_server() {
  ManagerServer server(address_, family_, authkey_, named_);
  server.set_transit_hold(transit_hold_);
  return server;
}

void BaseManager::start() {
  if (process_) throw InvalidStateError("the manager was started already");
  auto [reader, writer] = Pipe(false);
  auto child_end = std::make_shared<Connection>(std::move(writer));
  auto process = std::make_shared<Process>([this, child_end] {
    try {
      ManagerServer server = get_server();
      child_end->send(std::pair<bool, std::string>(true, server.address()));
      child_end->close();
      server.serve_forever();
    } catch (const std::exception& e) {
      child_end->send(std::pair<bool, std::string>(false, e.what()));
      throw;
    }
  });
  process->start();
  child_end->close();
  if (mpx::wait({reader}, 60s).empty()) {
    process->kill();
    process->join();
    throw ProcessError("the manager's server did not start within 60 s");
  }
  std::pair<bool, std::string> started;
  try {
    started = reader.recv<std::pair<bool, std::string>>();
  } catch (const EOFError&) {
    started = {false, "its process ended"};
  }
  if (!started.first) {
    process->join(5s);
    if (process->is_alive()) process->kill();
    process->join();
    throw ProcessError("the manager's server failed to start: " + started.second);
  }
  address_ = started.second;
  server_pid_ = process->pid();
  process_ = process;
}

detail::Token BaseManager::token(std::uint64_t id, std::string type) const {
  return detail::Token{address_, family_, authkey_, id, std::move(type)};
}

void BaseManager::connect() {
  Connection c = detail::manager_connect(token(0, ""));
  detail::manager_request(c, detail::Op::ping, 0, {}, {});
}

void BaseManager::shutdown() {
  if (!process_) return;
  auto process = std::static_pointer_cast<Process>(std::exchange(process_, nullptr));
  try {
    Connection c = detail::manager_connect(token(0, ""));
    detail::manager_request(c, detail::Op::shutdown, 0, {}, {});
  } catch (const std::exception&) {  // gone already, or not answering: stopped below
  }
  process->join(10s);
  if (process->is_alive()) {
    process->terminate();
    process->join(2s);
    if (process->is_alive()) process->kill();
  }
  process->join();
  server_pid_ = 0;
}

BaseProxy BaseManager::create_raw(const std::string& type_id, Bytes args) {
  Connection c = detail::manager_connect(token(0, type_id));
  const auto id = decode<std::uint64_t>(
      detail::manager_request(c, detail::Op::create, 0, type_id, std::move(args)));
  return BaseProxy(token(id, type_id), std::move(c));
}

std::pair<BaseProxy, std::string> BaseManager::get_named(const std::string& name) {
  Connection c = detail::manager_connect(token(0, ""));
  auto [id, type] = decode<std::pair<std::uint64_t, std::string>>(
      detail::manager_request(c, detail::Op::named, 0, name, {}));
  return {BaseProxy(token(id, type), std::move(c)), type};
}

SyncManager Manager() {
  SyncManager m;
  m.start();
  return m;
}

}  // namespace mpx
