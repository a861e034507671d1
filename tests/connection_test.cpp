// Tests of mpx/connection.hpp: Pipe, Connection, wait().
#include "mpx/connection.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ipc/ring.hpp"
#include "mpx/process.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "support/proc_state.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using mpx_test::Child;

mpx::Bytes bytes_of(const std::string& s) {
  mpx::Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

std::string string_of(const mpx::Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

mpx::Bytes pattern(std::size_t n, unsigned seed) {
  mpx::Bytes b(n);
  uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    b[i] = static_cast<std::byte>(x >> 24);
  }
  return b;
}

TEST(ConnectionTest, DuplexPipeCarriesBytesBothWays) {
  auto [a, b] = mpx::Pipe();
  a.send_bytes(bytes_of("ping"));
  EXPECT_EQ(string_of(b.recv_bytes()), "ping");
  b.send_bytes(bytes_of("pong"));
  EXPECT_EQ(string_of(a.recv_bytes()), "pong");
  EXPECT_TRUE(a.readable() && a.writable() && b.readable() && b.writable());
}

struct Point {
  int x;
  double y;
};

TEST(ConnectionTest, SendAndRecvCarryTypedValues) {
  auto [a, b] = mpx::Pipe();
  a.send(42);
  a.send(std::string("hello"));
  a.send(Point{3, 4.5});
  a.send(std::vector<int>{1, 2, 3});
  EXPECT_EQ(b.recv<int>(), 42);
  EXPECT_EQ(b.recv<std::string>(), "hello");
  Point p = b.recv<Point>();
  EXPECT_EQ(p.x, 3);
  EXPECT_EQ(p.y, 4.5);
  EXPECT_EQ(b.recv<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
}

TEST(ConnectionTest, RecvOfAnotherTypeThanWasSentThrowsDecodeErrorAndConsumesIt) {
  auto [a, b] = mpx::Pipe();
  a.send(std::string("not an int"));
  a.send(7);
  EXPECT_THROW(b.recv<int>(), mpx::DecodeError);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(ConnectionTest, MessagesArriveWholeAndInOrder) {
  auto [a, b] = mpx::Pipe();
  for (int i = 0; i < 100; ++i)
    a.send_bytes(bytes_of("message " + std::to_string(i)));
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(string_of(b.recv_bytes()), "message " + std::to_string(i));
  a.send_bytes({});
  EXPECT_TRUE(b.recv_bytes().empty());
}

TEST(ConnectionTest, SimplexPipeIsReaderThenWriterAndRefusesTheOtherDirection) {
  auto [reader, writer] = mpx::Pipe(false);
  EXPECT_TRUE(reader.readable());
  EXPECT_FALSE(reader.writable());
  EXPECT_TRUE(writer.writable());
  EXPECT_FALSE(writer.readable());
  writer.send_bytes(bytes_of("one way"));
  EXPECT_EQ(string_of(reader.recv_bytes()), "one way");
  EXPECT_THROW(reader.send_bytes(bytes_of("x")), mpx::InvalidStateError);
  EXPECT_THROW(writer.recv_bytes(), mpx::InvalidStateError);
  EXPECT_THROW(writer.poll(), mpx::InvalidStateError);
}

TEST(ConnectionTest, SendBytesHonoursOffsetAndSize) {
  auto [a, b] = mpx::Pipe();
  auto buf = bytes_of("0123456789");
  a.send_bytes(buf, 2, 3);
  EXPECT_EQ(string_of(b.recv_bytes()), "234");
  a.send_bytes(buf, 7);
  EXPECT_EQ(string_of(b.recv_bytes()), "789");
  EXPECT_THROW(a.send_bytes(buf, 11), mpx::ValueError);
  EXPECT_THROW(a.send_bytes(buf, 5, 6), mpx::ValueError);
}

TEST(ConnectionTest, RecvBytesIntoFillsTheBufferAtTheOffset) {
  auto [a, b] = mpx::Pipe();
  a.send_bytes(bytes_of("abc"));
  mpx::Bytes buf(8, std::byte{'.'});
  EXPECT_EQ(b.recv_bytes_into(buf, 2), 3u);
  EXPECT_EQ(string_of(buf), "..abc...");
}

TEST(ConnectionTest, RecvBytesIntoThrowsBufferTooShortCarryingTheWholeMessage) {
  auto [a, b] = mpx::Pipe();
  a.send_bytes(bytes_of("a long message"));
  a.send_bytes(bytes_of("next"));
  mpx::Bytes buf(4);
  try {
    b.recv_bytes_into(buf);
    FAIL() << "expected BufferTooShort";
  } catch (const mpx::BufferTooShort& e) {
    EXPECT_EQ(string_of(e.message()), "a long message");
  }
  EXPECT_EQ(b.recv_bytes_into(buf), 4u);
  EXPECT_EQ(string_of(buf), "next");
  EXPECT_THROW(b.recv_bytes_into(buf, 5), mpx::ValueError);
}

TEST(ConnectionTest, RecvBytesRefusesAMessageLongerThanMaxlength) {
  auto [a, b] = mpx::Pipe();
  a.send_bytes(bytes_of("too long"));
  a.send_bytes(bytes_of("ok"));
  try {
    b.recv_bytes(4);
    FAIL() << "expected std::system_error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EMSGSIZE);
  }
  EXPECT_EQ(string_of(b.recv_bytes(4)), "ok");
}

TEST(ConnectionTest, PollReportsDataWithoutConsumingIt) {
  auto [a, b] = mpx::Pipe();
  EXPECT_FALSE(b.poll());
  auto start = Clock::now();
  EXPECT_FALSE(b.poll(200ms));
  EXPECT_GE(Clock::now() - start, 100ms);
  a.send_bytes(bytes_of("x"));
  EXPECT_TRUE(b.poll());
  EXPECT_TRUE(b.poll(1s));
  EXPECT_EQ(string_of(b.recv_bytes()), "x");
  EXPECT_FALSE(b.poll());
}

TEST(ConnectionTest, PollWithTimeoutWakesWhenAMessageArrives) {
  auto [a, b] = mpx::Pipe();
  std::thread sender([&] {
    std::this_thread::sleep_for(50ms);  // let the receiver fall asleep first
    a.send_bytes(bytes_of("late"));
  });
  EXPECT_TRUE(b.poll(30s));
  sender.join();
  EXPECT_EQ(string_of(b.recv_bytes()), "late");
}

TEST(ConnectionTest, RecvThrowsEOFErrorAfterThePeerClosesButDeliversWhatWasSentFirst) {
  auto [a, b] = mpx::Pipe();
  a.send_bytes(bytes_of("last words"));
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(string_of(b.recv_bytes()), "last words");
  EXPECT_TRUE(b.poll());
  EXPECT_THROW(b.recv_bytes(), mpx::EOFError);
}

TEST(ConnectionTest, UsingAClosedConnectionThrowsInvalidStateError) {
  auto [a, b] = mpx::Pipe();
  b.close();
  b.close();
  EXPECT_TRUE(b.closed());
  EXPECT_FALSE(b.readable());
  EXPECT_THROW(b.recv_bytes(), mpx::InvalidStateError);
  EXPECT_THROW(b.send_bytes(bytes_of("x")), mpx::InvalidStateError);
  EXPECT_THROW(b.fileno(), mpx::InvalidStateError);
}

TEST(ConnectionTest, ChildProcessTalksThroughAnInheritedPipe) {
  auto [parent, child_end] = mpx::Pipe();
  Child child([&] {
    parent.close();
    for (;;) {
      mpx::Bytes m = child_end.recv_bytes();
      if (m.empty()) break;
      std::reverse(m.begin(), m.end());
      child_end.send_bytes(m);
    }
  });
  child_end.close();
  for (int i = 0; i < 1000; ++i) {
    std::string s = "round trip " + std::to_string(i);
    parent.send_bytes(bytes_of(s));
    std::string r = string_of(parent.recv_bytes());
    std::reverse(r.begin(), r.end());
    ASSERT_EQ(r, s);
  }
  parent.send_bytes({});
  EXPECT_EQ(child.join(), 0);
}

TEST(ConnectionTest, RecvThrowsEOFErrorWhenThePeerProcessDies) {
  auto [parent, child_end] = mpx::Pipe();
  auto [go_r, go_w] = mpx::Pipe(false);
  Child child([&, &child_end = child_end, &go_r = go_r] {
    parent.close();
    go_r.recv_bytes();
    ::pause();
  });
  child_end.close();
  go_r.close();
  go_w.send_bytes(bytes_of("go"));
  std::thread killer([&] {
    std::this_thread::sleep_for(50ms);
    ::kill(child.pid(), SIGKILL);
  });
  EXPECT_THROW(parent.recv_bytes(), mpx::EOFError);
  killer.join();
  EXPECT_EQ(child.join(), -SIGKILL);
}

TEST(ConnectionTest, APeerKilledInTheMiddleOfALargeSendGivesEOFErrorNeverAPartialMessage) {
  auto [a, b] = mpx::Pipe(true, 64 << 10);
  const mpx::Bytes big = pattern(4u << 20, 5);
  // The child sends 4 MiB messages (64 times the ring) without end, so it is inside
  // send_bytes() nearly all the time when it is killed.
  Child child([&] {
    b.close();
    for (;;)
      a.send_bytes(big);
  });
  a.close();
  ASSERT_TRUE(b.recv_bytes() == big);
  child.kill();
  EXPECT_EQ(child.join(), -SIGKILL);
  for (;;) {
    try {
      ASSERT_TRUE(b.recv_bytes() == big) << "a partial or corrupt message was delivered";
    } catch (const mpx::EOFError&) {
      break;
    }
  }
}

TEST(ConnectionTest, AWriterKilledBetweenCommittingAndPublishingLosesNothing) {
  auto [reader, writer] = mpx::Pipe(false);
  // The child dies after its message is complete in the ring, before it moves the
  // ring's head: the message counts as sent, and the next writer carries on after it.
  Child child([&writer = writer] {
    mpx::detail::set_commit_hook([](mpx::detail::CommitStep) noexcept { ::raise(SIGKILL); });
    writer.send_bytes(bytes_of("first"));
  });
  EXPECT_EQ(child.join(), -SIGKILL);
  EXPECT_TRUE(reader.poll());
  EXPECT_EQ(string_of(reader.recv_bytes()), "first");
  EXPECT_FALSE(reader.poll());
  writer.send_bytes(bytes_of("second"));
  writer.send_bytes(bytes_of("third"));
  ASSERT_TRUE(reader.poll(10s)) << "the next writer wrote where the reader does not look";
  EXPECT_EQ(string_of(reader.recv_bytes()), "second");
  EXPECT_EQ(string_of(reader.recv_bytes()), "third");
}

TEST(ConnectionTest, SixtyFourMiBMessagesStreamThroughASmallRingByteExact) {
  auto [a, b] = mpx::Pipe(true, 64 << 10);
  const mpx::Bytes big = pattern(64u << 20, 1);
  const mpx::Bytes small = pattern(100, 2);
  Child child([&] {
    b.close();
    a.send_bytes(big);
    a.send_bytes(small);
  });
  a.close();
  mpx::Bytes got = b.recv_bytes();
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  EXPECT_TRUE(b.recv_bytes() == small);
  EXPECT_EQ(child.join(), 0);
}

TEST(ConnectionTest, MessagesFromConcurrentWritersNeverInterleave) {
  auto [reader, writer] = mpx::Pipe(false, 16 << 10);
  constexpr int kWriters = 3;
  constexpr int kMessages = 20;
  std::vector<std::unique_ptr<Child>> children;
  for (int w = 0; w < kWriters; ++w) {
    children.push_back(std::make_unique<Child>([&, w] {
      reader.close();
      for (int i = 0; i < kMessages; ++i)
        writer.send_bytes(pattern(100'000 + 7 * i, 100 * w + i));
    }));
  }
  writer.close();
  std::vector<int> seen(kWriters * kMessages, 0);
  for (int n = 0; n < kWriters * kMessages; ++n) {
    mpx::Bytes m = reader.recv_bytes();
    ASSERT_GE(m.size(), 100'000u);
    int i = static_cast<int>((m.size() - 100'000) / 7);
    bool matched = false;
    for (int w = 0; w < kWriters && !matched; ++w) {
      if (m == pattern(m.size(), 100 * w + i)) {
        ++seen[w * kMessages + i];
        matched = true;
      }
    }
    ASSERT_TRUE(matched) << "message " << n << " is corrupt or interleaved";
  }
  for (int count : seen)
    EXPECT_EQ(count, 1);
  EXPECT_THROW(reader.recv_bytes(), mpx::EOFError);
  for (auto& c : children)
    EXPECT_EQ(c->join(), 0);
}

// Small whole messages are taken without the read lock (ring.hpp), larger ones under it:
// with both kinds in flight, several readers on one end get every message exactly once
// and intact, while a small ring wraps around under them.
TEST(ConnectionTest, ConcurrentReadersGetEveryMessageOnceWhateverItsSize) {
  auto [reader, writer] = mpx::Pipe(false, 16 << 10);
  constexpr int kWriters = 2;
  constexpr int kMessages = 2000;
  const std::size_t sizes[] = {8, 64, 511, 512, 513, 3000, 20'000};
  auto message = [&](int w, int i) {
    mpx::Bytes m = pattern(sizes[i % std::size(sizes)], static_cast<unsigned>(w * kMessages + i));
    const uint32_t id[2] = {static_cast<uint32_t>(w), static_cast<uint32_t>(i)};
    std::memcpy(m.data(), id, sizeof id);
    return m;
  };
  std::vector<std::unique_ptr<Child>> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.push_back(std::make_unique<Child>([&, w] {
      reader.close();
      for (int i = 0; i < kMessages; ++i)
        writer.send_bytes(message(w, i));
    }));
  }
  writer.close();
  const auto start = Clock::now();
  std::vector<std::atomic<int>> seen(kWriters * kMessages);
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, &reader = reader] {
      for (;;) {
        mpx::Bytes m;
        try {
          m = reader.recv_bytes();
        } catch (const mpx::EOFError&) {
          return;
        }
        uint32_t id[2] = {kWriters, 0};
        if (m.size() >= sizeof id) std::memcpy(id, m.data(), sizeof id);
        if (id[0] >= kWriters || id[1] >= kMessages ||
            m != message(static_cast<int>(id[0]), static_cast<int>(id[1]))) {
          ++bad;
          continue;
        }
        ++seen[id[0] * kMessages + id[1]];
      }
    });
  }
  for (auto& t : readers)
    t.join();
    // About 30 ms here. A reader under the lock that waits where the tail no longer is
    // wakes only every 100 ms, while the writers wait for room: 3 s. The sanitizers slow
    // the copying (ThreadSanitizer twentyfold, ASan to about 1 s here and 2.5 s on a
    // loaded machine): the stall bound is for plain builds.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr auto kBound = 20s;
#else
  constexpr auto kBound = 2s;
#endif
  EXPECT_LT(Clock::now() - start, kBound) << "the readers stalled";
  for (auto& c : writers)
    EXPECT_EQ(c->join(), 0);
  EXPECT_EQ(bad.load(), 0) << "corrupt messages";
  int missing = 0, repeated = 0;
  for (auto& n : seen) {
    missing += n.load() == 0;
    repeated += n.load() > 1;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(repeated, 0);
}

TEST(ConnectionTest, OneEndServesASendingThreadAndAWaitingThreadAtOnce) {
  // Small rings keep both sides blocking, so that the two threads sleep on the same end's
  // doorbell together.
  auto [here, there] = mpx::Pipe(true, 4096);
  constexpr int kMessages = 300;
  Child echo([&, &here = here, &there = there] {
    here.close();
    for (int i = 0; i < kMessages; ++i)
      there.send_bytes(there.recv_bytes());
  });
  there.close();
  int received = 0;
  std::string failure;
  std::thread receiver([&, &here = here] {
    while (received < kMessages) {
      if (mpx::wait({here}, 30s).empty()) {
        failure = "wait() timed out";
      } else if (here.recv_bytes() != pattern(3000, static_cast<unsigned>(received))) {
        failure = "corrupt or reordered message";
      } else {
        ++received;
        continue;
      }
      echo.kill();  // so that the sending thread fails instead of hanging
      return;
    }
  });
  try {
    for (int i = 0; i < kMessages; ++i)
      here.send_bytes(pattern(3000, static_cast<unsigned>(i)));
  } catch (const std::system_error&) {
  }
  receiver.join();
  EXPECT_EQ(failure, "");
  EXPECT_EQ(received, kMessages);
  EXPECT_EQ(echo.join(), failure.empty() ? 0 : -SIGKILL);
}

TEST(ConnectionTest, SendThrowsBrokenPipeWhenTheRingIsFullAndTheReaderIsGone) {
  auto [reader, writer] = mpx::Pipe(false, 4096);
  reader.close();
  const mpx::Bytes big = pattern(100'000, 3);
  try {
    writer.send_bytes(big);
    FAIL() << "expected std::system_error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
}

TEST(ConnectionTest, SendToAReaderClosedEverywhereThrowsBrokenPipeErrorAtOnce) {
  auto [reader, writer] = mpx::Pipe(false);
  reader.close();
  EXPECT_THROW(writer.send(42), mpx::BrokenPipeError);
  // And every send after it, before anything is written.
  try {
    writer.send(std::string("again"));
    FAIL() << "expected BrokenPipeError";
  } catch (const std::system_error& e) {  // it is the std::system_error for EPIPE
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  auto [a, b] = mpx::Pipe();
  b.close();
  EXPECT_THROW(a.send(1), mpx::BrokenPipeError);
}

TEST(ConnectionTest, SendThrowsBrokenPipeErrorOnceTheReadingChildHasEnded) {
  auto [reader, writer] = mpx::Pipe(false);
  Child child([&reader = reader] { reader.recv<int>(); });  // ends without closing it
  reader.close();
  writer.send(1);
  EXPECT_EQ(child.join(), 0);
  EXPECT_THROW(writer.send(2), mpx::BrokenPipeError);
}

TEST(ConnectionTest, SendThrowsBrokenPipeErrorOnceAReaderKilledInItsWaitIsGone) {
  auto [reader, writer] = mpx::Pipe(false);
  Child child([&reader = reader] { reader.recv<int>(); });
  reader.close();
  // Until the child sleeps in its receive (it spins for a moment first).
  const auto give_up = Clock::now() + 10s;
  while (mpx_test::proc_state(std::to_string(child.pid())) != 'S' && Clock::now() < give_up)
    std::this_thread::yield();
  ASSERT_EQ(mpx_test::proc_state(std::to_string(child.pid())), 'S');
  child.kill();
  EXPECT_EQ(child.join(), -SIGKILL);
  EXPECT_THROW(writer.send(1), mpx::BrokenPipeError);
}

TEST(ConnectionTest, AReaderThatRemainsInAnotherProcessKeepsTheWriterGoing) {
  auto [reader, writer] = mpx::Pipe(false);
  Child child([&reader = reader] { reader.close(); });  // one copy closes, one remains
  EXPECT_EQ(child.join(), 0);
  writer.send(5);
  writer.send(6);
  EXPECT_EQ(reader.recv<int>(), 5);
  EXPECT_EQ(reader.recv<int>(), 6);
}

TEST(ConnectionTest, AStringLiteralOrCStringIsSentAsAString) {
  auto [a, b] = mpx::Pipe();
  a.send("hello");
  const char* text = "world";
  a.send(text);
  EXPECT_EQ(b.recv<std::string>(), "hello");
  EXPECT_EQ(b.recv<std::string>(), "world");
}

TEST(WaitTest, ReturnsTheReadyConnectionsInOrder) {
  auto [a1, b1] = mpx::Pipe();
  auto [a2, b2] = mpx::Pipe();
  auto [a3, b3] = mpx::Pipe();
  EXPECT_TRUE(mpx::wait({b1, b2, b3}, 0ms).empty());
  a3.send_bytes(bytes_of("3"));
  a1.send_bytes(bytes_of("1"));
  auto ready = mpx::wait({b1, b2, b3});
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].connection(), &b1);
  EXPECT_EQ(ready[1].connection(), &b3);
  EXPECT_EQ(string_of(b3.recv_bytes()), "3");
  ready = mpx::wait({b1, b2, b3}, 1s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &b1);
}

TEST(WaitTest, TimesOutEmptyAfterTheTimeout) {
  auto [a, b] = mpx::Pipe();
  auto start = Clock::now();
  EXPECT_TRUE(mpx::wait({b}, 200ms).empty());
  EXPECT_GE(Clock::now() - start, 100ms);
}

TEST(WaitTest, WakesWhenAMessageArrivesFromAnotherProcess) {
  auto [a1, b1] = mpx::Pipe();
  auto [a2, b2] = mpx::Pipe();
  auto [go_r, go_w] = mpx::Pipe(false);
  Child child([&, &a2 = a2, &go_r = go_r] {
    go_r.recv_bytes();
    a2.send_bytes(bytes_of("hello"));
  });
  a2.close();
  go_r.close();
  std::thread starter([&] {
    std::this_thread::sleep_for(50ms);
    go_w.send_bytes(bytes_of("go"));
  });
  auto ready = mpx::wait({b1, b2}, 30s);
  starter.join();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &b2);
  EXPECT_EQ(string_of(b2.recv_bytes()), "hello");
  EXPECT_EQ(child.join(), 0);
  // The child is gone and held the only other copy of a2: EOF is ready too.
  ready = mpx::wait({b1, b2}, 30s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].connection(), &b2);
  EXPECT_THROW(b2.recv_bytes(), mpx::EOFError);
}

TEST(WaitTest, ReportsAFinishedChildTogetherWithAReadyConnection) {
  auto [a_send, a] = mpx::Pipe();
  auto [b_send, b] = mpx::Pipe();
  mpx::Process p([] {});
  p.start();
  ASSERT_EQ(mpx::wait({p.sentinel()}, 60s).size(), 1u);  // the child has exited
  b_send.send(7);
  // Python returns both the sentinel and b; a has nothing.
  auto ready = mpx::wait({a, p.sentinel(), b}, 1s);
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].fd(), p.sentinel());
  EXPECT_EQ(ready[1].connection(), &b);
  ready = mpx::wait({b, p.sentinel()}, 0ms);
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].connection(), &b);
  EXPECT_EQ(ready[1].fd(), p.sentinel());
  p.join();
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(WaitTest, MixesConnectionsWithPlainFileDescriptors) {
  auto [a, b] = mpx::Pipe();
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_TRUE(mpx::wait({b, fds[0]}, 0ms).empty());
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  auto ready = mpx::wait({b, fds[0]}, 1s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].fd(), fds[0]);
  EXPECT_EQ(ready[0].connection(), nullptr);
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
