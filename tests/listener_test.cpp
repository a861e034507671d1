// Tests of mpx/listener.hpp: Listener/Client over Unix (path, abstract) and TCP (IPv4,
// IPv6), the authkey handshake between mpx peers, CPython's framing bytes, and the
// connection working in mpx::wait beside a Pipe end.
#include "mpx/listener.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/context.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "support/serving.hpp"
#include "support/start_methods.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;

std::string text(const mpx::Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
std::span<const std::byte> span_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// Accepts one connection in a thread while `client` runs here; echoes one message back.
void echo_once(mpx::Listener& listener, const std::function<void()>& client) {
  mpx_test::Serving served(listener, [&] {
    mpx::Connection c = listener.accept();
    c.send_bytes(c.recv_bytes());
  });
  client();
  served.get();
}

void expect_round_trip(mpx::Listener& listener, const std::string& family = "") {
  echo_once(listener, [&] {
    mpx::Connection c = mpx::Client(listener.address(), family);
    c.send_bytes(span_of("ping"));
    EXPECT_EQ(text(c.recv_bytes()), "ping");
  });
}

TEST(Listener, UnixPathIsMode0600AndRemovedOnClose) {
  mpx::Listener listener;
  EXPECT_EQ(listener.family(), "AF_UNIX");
  const std::string path = listener.address();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  expect_round_trip(listener);
  EXPECT_EQ(listener.last_accepted(), "");
  listener.close();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(path).parent_path()));
  EXPECT_THROW(listener.accept(), mpx::InvalidStateError);
}

TEST(Listener, GivenUnixPathAndAbstractName) {
  const std::string path = "/tmp/" + mpx_test::unique_name("listener") + ".sock";
  {
    mpx::Listener listener(path);
    EXPECT_EQ(listener.address(), path);
    expect_round_trip(listener, "AF_UNIX");
    EXPECT_THROW(mpx::Listener again(path), std::system_error);  // EADDRINUSE
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  const std::string abstract = std::string(1, '\0') + mpx_test::unique_name("abstract");
  mpx::Listener listener(abstract);
  EXPECT_EQ(listener.family(), "AF_UNIX");
  EXPECT_EQ(listener.address(), abstract);
  expect_round_trip(listener);
}

TEST(Listener, TcpIpv4PortZero) {
  mpx::Listener listener("127.0.0.1:0");
  EXPECT_EQ(listener.family(), "AF_INET");
  EXPECT_EQ(listener.address().rfind("127.0.0.1:", 0), 0u);
  EXPECT_NE(listener.address(), "127.0.0.1:0");
  expect_round_trip(listener, "AF_INET");
  EXPECT_EQ(listener.last_accepted().rfind("127.0.0.1:", 0), 0u);
}

TEST(Listener, TcpIpv6PortZero) {
  std::unique_ptr<mpx::Listener> listener;
  try {
    listener = std::make_unique<mpx::Listener>("[::1]:0");
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_EQ(listener->family(), "AF_INET6");
  EXPECT_EQ(listener->address().rfind("[::1]:", 0), 0u);
  expect_round_trip(*listener);
}

TEST(Listener, AddressTypeAsPython) {
  EXPECT_EQ(mpx::address_type("/tmp/x"), "AF_UNIX");
  EXPECT_EQ(mpx::address_type(std::string("\0x", 2)), "AF_UNIX");
  EXPECT_EQ(mpx::address_type("localhost:80"), "AF_INET");
  EXPECT_EQ(mpx::address_type("[::1]:80"), "AF_INET6");
  EXPECT_THROW(mpx::Listener("x", "AF_PIPE"), mpx::ValueError);
  EXPECT_THROW(mpx::Client("127.0.0.1", "AF_INET"), mpx::ValueError);
}

TEST(Listener, TypedMessagesLargeMessagesAndBytesInto) {
  mpx::Listener listener("127.0.0.1:0");
  mpx_test::Serving served(listener, [&] {
    mpx::Connection c = listener.accept();
    c.send(c.recv<std::vector<int>>().size());
    mpx::Bytes big = c.recv_bytes();
    c.send_bytes(big);
  });
  mpx::Connection c = mpx::Client(listener.address());
  c.send(std::vector<int>(1000, 7));
  EXPECT_EQ(c.recv<std::size_t>(), 1000u);
  mpx::Bytes big(3u << 20);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<std::byte>(i * 31 + 7);
  c.send_bytes(big);
  std::vector<std::byte> into(big.size() + 10);
  EXPECT_EQ(c.recv_bytes_into(into, 10), big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), into.begin() + 10));
  served.get();
}

TEST(Listener, EofWhenThePeerCloses) {
  mpx::Listener listener;
  mpx_test::Serving served(listener, [&] { return listener.accept(); });
  mpx::Connection client = mpx::Client(listener.address());
  mpx::Connection server = served.get();
  client.close();
  EXPECT_TRUE(server.poll(5s));
  EXPECT_THROW(server.recv_bytes(), mpx::EOFError);
  EXPECT_THROW(server.send_bytes(span_of(std::string(1 << 20, 'x'))), mpx::BrokenPipeError);
}

TEST(Listener, WorksInWaitBesideAPipe) {
  mpx::Listener listener;
  mpx_test::Serving served(listener, [&] { return listener.accept(); });
  mpx::Connection client = mpx::Client(listener.address());
  mpx::Connection server = served.get();
  auto [a, b] = mpx::Pipe();
  EXPECT_TRUE(mpx::wait({server, a}, 50ms).empty());
  EXPECT_FALSE(server.poll());
  client.send(5);
  auto ready = mpx::wait({a, server}, 5s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &server);
  EXPECT_EQ(server.recv<int>(), 5);
  b.send(6);
  ready = mpx::wait({a, server}, 5s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &a);
  EXPECT_EQ(a.recv<int>(), 6);
  // The listener itself: readable when a connection waits to be accepted.
  EXPECT_TRUE(mpx::wait({listener.fileno()}, 20ms).empty());
  mpx::Connection other = mpx::Client(listener.address());
  EXPECT_EQ(mpx::wait({listener.fileno()}, 5s).size(), 1u);
}

TEST(Listener, FramingIsCpythons) {
  mpx::Listener listener("127.0.0.1:0");
  mpx_test::Serving served(listener, [&] {
    mpx::Connection c = listener.accept();
    c.send_bytes(span_of("hello"));
    return text(c.recv_bytes());
  });
  // A raw socket: the bytes on the wire.
  auto [host, port] =
      std::pair{listener.address().substr(0, 9), std::stoi(listener.address().substr(10))};
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &in.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in), 0);
  char got[9];
  ASSERT_EQ(::recv(fd, got, 9, MSG_WAITALL), 9);
  EXPECT_EQ(std::string(got, 9), std::string("\0\0\0\5hello", 9));
  // The long form: 0xffffffff, then an 8-byte length.
  const std::string long_form("\xff\xff\xff\xff\0\0\0\0\0\0\0\3abc", 15);
  ASSERT_EQ(::send(fd, long_form.data(), long_form.size(), MSG_NOSIGNAL), 15);
  EXPECT_EQ(served.get(), "abc");
  ::close(fd);
}

// Messages that arrive together are read ahead by one recv(): poll() and mpx::wait()
// still see the ones left in the buffer, though the socket itself has nothing to read.
TEST(Listener, MessagesReadAheadAreSeenByPollAndWait) {
  mpx::Listener listener;
  mpx_test::Serving served(listener, [&] { return listener.accept(); });
  mpx::Connection client = mpx::Client(listener.address());
  mpx::Connection server = served.get();
  for (const char* m : {"one", "two", "three"})
    client.send_bytes(span_of(m));  // a Unix socket: all queued at the server on return
  EXPECT_EQ(text(server.recv_bytes()), "one");
  pollfd p{server.fileno(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // read ahead: the socket is empty
  EXPECT_TRUE(server.poll());
  auto [a, b] = mpx::Pipe();
  auto ready = mpx::wait({a, server}, 0s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &server);
  EXPECT_EQ(text(server.recv_bytes()), "two");
  EXPECT_EQ(mpx::wait({server}, 0s).size(), 1u);
  EXPECT_EQ(text(server.recv_bytes()), "three");
  EXPECT_FALSE(server.poll());
  EXPECT_TRUE(mpx::wait({a, server}, 0s).empty());
  client.close();
  EXPECT_TRUE(server.poll(5s));
  EXPECT_THROW(server.recv_bytes(), mpx::EOFError);
}

TEST(Listener, AuthkeyBetweenMpxPeers) {
  mpx::Listener listener("127.0.0.1:0", "", 4, "secret");
  echo_once(listener, [&] {
    mpx::Connection c = mpx::Client(listener.address(), "", std::string("secret"));
    c.send(1.5);
    EXPECT_EQ(c.recv<double>(), 1.5);
  });
  // Wrong key: both sides fail, and the listener keeps serving.
  {
    mpx_test::Serving served(listener, [&] { (void)listener.accept(); });
    EXPECT_THROW((void)mpx::Client(listener.address(), "", std::string("wrong")),
                 mpx::AuthenticationError);
    EXPECT_THROW(served.get(), mpx::AuthenticationError);
  }
  // A client without a key gets the challenge, and #FAILURE# for a wrong answer.
  {
    mpx_test::Serving served(listener, [&] { (void)listener.accept(); });
    mpx::Connection c = mpx::Client(listener.address());
    EXPECT_EQ(text(c.recv_bytes()).rfind("#CHALLENGE#{sha256}", 0), 0u);
    c.send_bytes(span_of("{sha256}" + std::string(32, 'x')));
    EXPECT_EQ(text(c.recv_bytes()), "#FAILURE#");
    c.close();
    EXPECT_THROW(served.get(), mpx::AuthenticationError);
  }
  // A key on the client only: the server's first message is no challenge.
  mpx::Listener open("127.0.0.1:0");
  mpx_test::Serving served(open, [&] {
    mpx::Connection c = open.accept();
    c.send_bytes(span_of("not a challenge"));
  });
  EXPECT_THROW((void)mpx::Client(open.address(), "", std::string("k")), mpx::AuthenticationError);
  served.get();
  expect_round_trip(open);
}

TEST(Listener, ClientInAnotherProcess) {
  mpx::Listener listener("", "AF_UNIX", 1, "key");
  mpx_test::Child child([address = listener.address()] {
    mpx::Connection c = mpx::Client(address, "", std::string("key"));
    c.send(c.recv<int>() * 2);
  });
  mpx::Connection c = listener.accept();
  c.send(21);
  EXPECT_EQ(c.recv<int>(), 42);
  EXPECT_EQ(child.join(), 0);
}

// The name of the socket behind a connection's fileno(): an accepted socket is named
// after its listener; a shared-memory connection's bell socket has no name.
std::string socket_name(const mpx::Connection& c) {
  sockaddr_storage name{};
  socklen_t len = sizeof name;
  if (::getsockname(c.fileno(), reinterpret_cast<sockaddr*>(&name), &len) != 0) return "?";
  if (name.ss_family != AF_UNIX) return "inet";
  std::string path(reinterpret_cast<sockaddr_un*>(&name)->sun_path,
                   len - offsetof(sockaddr_un, sun_path));
  return path.empty() || path[0] == '\0' ? path : std::string(path.c_str());
}

TEST(Listener, LocalMpxPeersWithAKeyMoveToSharedMemory) {
  mpx::Listener listener("", "AF_UNIX", 1, "key");
  mpx_test::Child child([address = listener.address()] {
    mpx::Connection c = mpx::Client(address, "", std::string("key"));
    for (int i = 0; i < 1000; ++i)
      c.send(c.recv<int>() + 1);
  });
  mpx::Connection c = listener.accept();
  EXPECT_EQ(socket_name(c), "");  // a bell socket, not the accepted one
  int v = 0;
  for (int i = 0; i < 1000; ++i) {
    c.send(v);
    v = c.recv<int>();
  }
  EXPECT_EQ(v, 1000);
  EXPECT_EQ(child.join(), 0);
  EXPECT_THROW(c.recv<int>(), mpx::EOFError);  // as a Pipe's: the peer is gone
  // Without a key, or over TCP, the connection stays a socket.
  mpx::Listener open;
  mpx_test::Serving served(open, [&] { return open.accept(); });
  mpx::Connection client = mpx::Client(open.address());
  EXPECT_EQ(socket_name(served.get()), open.address());
  mpx::Listener tcp("127.0.0.1:0", "", 1, "key");
  mpx_test::Serving tcp_served(tcp, [&] { return tcp.accept(); });
  mpx::Connection tcp_client = mpx::Client(tcp.address(), "", std::string("key"));
  EXPECT_EQ(socket_name(tcp_served.get()), "inet");
}

TEST(Listener, ConnectionRefusedAndMissingFile) {
  EXPECT_THROW((void)mpx::Client("/nonexistent/mpx.sock"), mpx::FileNotFoundError);
  int port;
  {
    mpx::Listener l("127.0.0.1:0");
    port = std::stoi(l.address().substr(10));
  }
  const std::string address = "127.0.0.1:" + std::to_string(port);
  try {
    (void)mpx::Client(address);
    ADD_FAILURE() << "connected to a closed listener";
  } catch (const mpx::ConnectionRefusedError& e) {  // an mpx::ConnectionError, an mpx::OSError
    EXPECT_EQ(e.errno_value(), ECONNREFUSED);
    EXPECT_EQ(e.filename(), address);
  }
  // A Unix socket file nobody listens on any more.
  const std::string path = mpx_test::unique_name("refused") + ".sock";
  const std::string file = "/tmp/" + path;
  {
    mpx::Listener l(file);
    ASSERT_EQ(::link(file.c_str(), (file + ".kept").c_str()), 0);  // outlives l's unlink
  }
  EXPECT_THROW((void)mpx::Client(file + ".kept"), mpx::ConnectionRefusedError);
  ::unlink((file + ".kept").c_str());
}

// Python hands a Listener/Client connection to any child. Here: a spawn or forkserver
// child gets one, accepted or connected, over a Unix socket or TCP, with or without an
// authkey (an authenticated Unix one runs on shared-memory rings), and talks both ways,
// starting from what the parent's end had read ahead (the second message below).
void echo_doubled_twice(mpx::Connection c) {
  for (int i = 0; i < 2; ++i)
    c.send(c.recv<int>() * 2);
}

class ListenerHandoff : public ::testing::TestWithParam<mpx::StartMethod> {};

TEST_P(ListenerHandoff, ConnectionsReachAChildThatIsNotAFork) {
  mpx_test::Watchdog dog(120s, "Listener/Client connections handed to a child");
  const mpx::Context ctx(GetParam());
  const std::optional<std::string> authkeys[] = {std::nullopt, "secret"};
  for (const char* address : {"", "127.0.0.1:0"})
    for (const auto& authkey : authkeys)
      for (const bool accepted_end : {true, false}) {
        mpx::Listener listener(address, "", 1, authkey);
        auto accepting = std::async(std::launch::async, [&] { return listener.accept(); });
        mpx::Connection ours;
        mpx::Connection theirs = mpx::Client(listener.address(), "", authkey);
        mpx::Connection accepted = accepting.get();
        if (accepted_end) std::swap(theirs, accepted);
        ours = std::move(accepted);
        ours.send(1);
        ours.send(2);
        EXPECT_EQ(theirs.recv<int>(), 1);  // reads 2 ahead with it
        mpx::Process p = ctx.Process(echo_doubled_twice, std::move(theirs));
        p.start();
        EXPECT_EQ(ours.recv<int>(), 4);
        ours.send(21);
        EXPECT_EQ(ours.recv<int>(), 42);
        p.join();
        EXPECT_EQ(p.exitcode(), 0)
            << address << " authkey " << authkey.has_value() << " accepted end " << accepted_end;
      }
}

INSTANTIATE_TEST_SUITE_P(All, ListenerHandoff,
                         ::testing::Values(mpx::StartMethod::spawn, mpx::StartMethod::forkserver),
                         [](const auto& param) {
                           return std::string(mpx::start_method_name(param.param));
                         });

const auto* const g_forkserver_env =
    ::testing::AddGlobalTestEnvironment(new mpx_test::StartTheForkserver);

}  // namespace
