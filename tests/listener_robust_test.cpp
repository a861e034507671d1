// Hostile and many peers against mpx::Listener: garbage, a 2^62 length header, half a
// message then silence, a silent client, wrong digests; 1000 connect/disconnect cycles
// and 50 concurrent clients. Each costs bounded memory and time, and the listener keeps
// serving (the leak check of tests/support sees every fd come back).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "mpx/listener.hpp"
#include "support/serving.hpp"
#include "sys/fd.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::span<const std::byte> span_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// A raw TCP socket connected to a "127.0.0.1:port" listener.
mpx::sys::Fd raw_connect(const std::string& address) {
  mpx::sys::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&in), sizeof in), 0);
  return fd;
}

void raw_send(const mpx::sys::Fd& fd, const std::string& bytes) {
  ASSERT_EQ(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

long rss_kib() {
  long pages = 0, rss = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    std::fclose(f);
  }
  return rss * (::sysconf(_SC_PAGESIZE) / 1024);
}

// The listener still serves a good client.
void expect_serves(mpx::Listener& listener, const std::optional<std::string>& key) {
  mpx_test::Serving served(listener, [&] {
    mpx::Connection c = listener.accept();
    c.send(c.recv<int>() + 1);
  });
  mpx::Connection c = mpx::Client(listener.address(), "", key);
  c.send(1);
  EXPECT_EQ(c.recv<int>(), 2);
  served.get();
}

constexpr mpx::ListenerLimits kQuick{.maxlength = mpx::Connection::npos,
                                     .handshake_timeout = std::chrono::milliseconds(300)};

// accept() against a raw peer that does `misbehave`; returns how long accept took and
// checks that it threw AuthenticationError.
Clock::duration rejected_after(mpx::Listener& listener,
                               const std::function<void(const mpx::sys::Fd&)>& misbehave) {
  mpx::sys::Fd raw = raw_connect(listener.address());
  misbehave(raw);
  const auto start = Clock::now();
  EXPECT_THROW((void)listener.accept(), mpx::AuthenticationError);
  return Clock::now() - start;
}

TEST(ListenerRobust, HandshakeRejectsBadPeersInBoundedTime) {
  mpx::Listener listener("127.0.0.1:0", "", 8, "key", kQuick);
  const std::string garbage = "\x13\x37garbage that is no frame at all\x00\xff";
  // Garbage: a length header of 322 MB-ish from "\x13\x37ga" is over 256: refused at once.
  EXPECT_LT(rejected_after(listener, [&](auto& fd) { raw_send(fd, garbage); }), 250ms);
  // A length header of 2^62 (the 8-byte form).
  EXPECT_LT(rejected_after(listener,
                           [&](auto& fd) {
                             raw_send(fd, std::string("\xff\xff\xff\xff\x40\0\0\0\0\0\0\0", 12));
                           }),
            250ms);
  // A wrong digest of the right form.
  EXPECT_LT(rejected_after(listener,
                           [&](auto& fd) {
                             raw_send(fd,
                                      std::string("\0\0\0\x28{sha256}", 12) + std::string(32, 'x'));
                           }),
            250ms);
  // Half a message, then silence; and a silent client: the handshake timeout.
  const auto half = rejected_after(
      listener, [&](auto& fd) { raw_send(fd, std::string("\0\0\0\x28{sha256}", 12)); });
  EXPECT_GE(half, 250ms);
  EXPECT_LT(half, 5s);
  const auto silent = rejected_after(listener, [](auto&) {});
  EXPECT_GE(silent, 250ms);
  EXPECT_LT(silent, 5s);
  expect_serves(listener, std::string("key"));
}

TEST(ListenerRobust, LyingLengthHeaderCostsOnlyWhatArrives) {
  mpx::Listener listener("127.0.0.1:0");
  mpx_test::Serving served(listener, [&] { return listener.accept(); });
  mpx::sys::Fd raw = raw_connect(listener.address());
  mpx::Connection server = served.get();
  const long before = rss_kib();
  raw_send(raw, std::string("\xff\xff\xff\xff\x40\0\0\0\0\0\0\0", 12));
  raw_send(raw, std::string(1 << 20, 'x'));
  raw.reset();
  EXPECT_THROW((void)server.recv_bytes(), mpx::OSError);  // end of file inside the message
  EXPECT_LT(rss_kib() - before, 64 * 1024);
  EXPECT_THROW((void)server.recv_bytes(), mpx::OSError);  // the framing is lost
  expect_serves(listener, std::nullopt);
}

TEST(ListenerRobust, MaxlengthRefusesLongMessagesUnread) {
  mpx::Listener listener("127.0.0.1:0", "", 1, std::nullopt,
                         {.maxlength = 1000, .handshake_timeout = std::chrono::seconds(10)});
  mpx_test::Serving served(listener, [&] { return listener.accept(); });
  mpx::Connection client = mpx::Client(listener.address());
  mpx::Connection server = served.get();
  client.send_bytes(span_of(std::string(1000, 'a')));
  EXPECT_EQ(server.recv_bytes().size(), 1000u);
  client.send_bytes(span_of(std::string(1001, 'a')));
  try {
    (void)server.recv_bytes();
    ADD_FAILURE() << "no error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EMSGSIZE);
  }
  // A per-call maxlength below the listener's, as Python's recv_bytes(maxlength).
  mpx::Listener open("127.0.0.1:0");
  mpx_test::Serving open_served(open, [&] { return open.accept(); });
  mpx::Connection c2 = mpx::Client(open.address());
  mpx::Connection s2 = open_served.get();
  c2.send_bytes(span_of(std::string(300, 'a')));
  EXPECT_THROW((void)s2.recv_bytes(256), std::system_error);
}

TEST(ListenerRobust, ThousandConnectDisconnectCycles) {
  mpx::Listener listener("", "AF_UNIX", 16, "key");
  std::atomic<int> accepted{0};
  // A client that fails (an ASSERT, an exception) leaves the server in accept(): the
  // Serving guard shuts the listener down on the way out, so that is a failure, not a hang.
  mpx_test::Serving served(listener, [&] {
    for (int i = 0; i < 1000; ++i) {
      mpx::Connection c = listener.accept();
      c.send(c.recv<int>());
      ++accepted;
    }
  });
  const auto start = Clock::now();
  int cycles = 0;
  for (; cycles < 1000 && Clock::now() - start < 120s; ++cycles) {
    mpx::Connection c = mpx::Client(listener.address(), "", std::string("key"));
    c.send(cycles);
    ASSERT_EQ(c.recv<int>(), cycles);
  }
  EXPECT_EQ(cycles, 1000) << "too slow";
  served.stop();  // the server needs no accept() after 1000 answers; fewer: it fails now
  EXPECT_NO_THROW(served.get());
  EXPECT_EQ(accepted.load(), 1000);
}

TEST(ListenerRobust, FiftyConcurrentClients) {
  // 50 connections open at once, made by 5 threads of 10 clients each.
  mpx::Listener listener("127.0.0.1:0", "", 64, "key");
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 5; ++t)
    clients.emplace_back([&, t] {
      try {
        std::vector<mpx::Connection> mine;
        for (int i = 0; i < 10; ++i) {
          mine.push_back(mpx::Client(listener.address(), "", std::string("key")));
          mine.back().send(t * 10 + i);
        }
        for (int i = 0; i < 10; ++i)
          if (mine[i].recv<int>() == (t * 10 + i) * 10) ++ok;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "client thread " << t << ": " << e.what();
      }
    });
  std::vector<mpx::Connection> conns;
  try {
    for (int i = 0; i < 50; ++i) {
      // A client thread that failed never connects: no accept() that waits for ever.
      if (mpx::wait({listener.fileno()}, 30s).empty())
        throw std::runtime_error(std::to_string(i) + " clients connected in time");
      conns.push_back(listener.accept());
    }
    // Serve them all at once through mpx::wait.
    int answered = 0;
    const auto start = Clock::now();
    std::vector<mpx::Waitable> waiting(conns.begin(), conns.end());
    while (answered < 50 && Clock::now() - start < 60s) {
      for (mpx::Waitable w : mpx::wait(waiting, 5s)) {
        w.connection()->send(w.connection()->recv<int>() * 10);
        std::erase(waiting, w);  // answered: its EOF comes later
        ++answered;
      }
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "server: " << e.what();
    conns.clear();  // the clients see EOF
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(ok.load(), 50);
}

}  // namespace
