// Interop of mpx/listener.hpp with CPython's multiprocessing.connection (the system's
// /usr/bin/python3): its Client against an mpx Listener and an mpx Client against its
// Listener, with the right authkey and a wrong one (failing on both sides). Python 3.11
// speaks the legacy HMAC-MD5 handshake; 3.12+ the "{sha256}" one: both are accepted.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "mpx/listener.hpp"
#include "mpx/subprocess.hpp"
#include "support/leak_check.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
namespace sp = mpx::subprocess;

const char* kPython = "/usr/bin/python3";

// argv: address ("unix:PATH" or "tcp:HOST:PORT"), authkey ("" for none), role.
const char* kScript = R"(
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
where, key, role = sys.argv[1], sys.argv[2].encode() or None, sys.argv[3]
if where.startswith('tcp:'):
    host, port = where[4:].rsplit(':', 1)
    addr = (host, int(port))
else:
    addr = where[5:]
try:
    if role == 'client':
        c = Client(addr, authkey=key)
        c.send_bytes(b'from python')
        print('got', c.recv_bytes().decode(), flush=True)
    else:
        l = Listener(addr, authkey=key)
        a = l.address
        print(a if isinstance(a, str) else '%s:%d' % a, flush=True)
        c = l.accept()
        c.send_bytes(b'python got ' + c.recv_bytes())
        c.recv_bytes()  # until the mpx side closes
except AuthenticationError as e:
    print('AuthenticationError', e, flush=True)
except EOFError:
    pass
)";

bool have_python() {
  return ::access(kPython, X_OK) == 0;
}

std::string text(const mpx::Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
std::span<const std::byte> span_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// Runs Python's Client against `listener`; the mpx side answers one message. Returns
// Python's output; `server_error` gets what accept() threw ("" when nothing).
std::string python_client(mpx::Listener& listener, const std::string& where, const std::string& key,
                          std::string& server_error) {
  auto served = std::async(std::launch::async, [&]() -> std::string {
    if (mpx::wait({listener.fileno()}, 30s).empty()) return "no connection";
    try {
      mpx::Connection c = listener.accept();
      c.send_bytes(span_of("mpx: " + text(c.recv_bytes())));
      return "";
    } catch (const mpx::AuthenticationError& e) {
      return std::string("AuthenticationError: ") + e.what();
    }
  });
  sp::CompletedProcess done =
      sp::run({kPython, "-c", kScript, where, key, "client"},
              {.capture_output = true, .timeout = std::chrono::duration<double>(30)});
  server_error = served.get();
  return done.stdout + done.stderr;
}

TEST(ListenerPython, PythonClientToMpxListener) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  mpx::Listener listener("", "AF_UNIX", 1, "shared key");
  std::string server_error;
  EXPECT_EQ(python_client(listener, "unix:" + listener.address(), "shared key", server_error),
            "got mpx: from python\n");
  EXPECT_EQ(server_error, "");

  mpx::Listener tcp("127.0.0.1:0", "", 1, "shared key");
  EXPECT_EQ(python_client(tcp, "tcp:" + tcp.address(), "shared key", server_error),
            "got mpx: from python\n");
  EXPECT_EQ(server_error, "");
}

TEST(ListenerPython, PythonClientWithAWrongKeyFailsOnBothSides) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  mpx::Listener listener("127.0.0.1:0", "", 1, "right");
  std::string server_error;
  const std::string out =
      python_client(listener, "tcp:" + listener.address(), "wrong", server_error);
  EXPECT_EQ(out.rfind("AuthenticationError", 0), 0u) << out;
  EXPECT_EQ(server_error.rfind("AuthenticationError", 0), 0u) << server_error;
}

// Starts Python's Listener; returns its process and the address it printed.
std::pair<sp::Popen, std::string> python_listener(const std::string& where,
                                                  const std::string& key) {
  sp::Popen p({kPython, "-c", kScript, where, key, "listener"}, {.stdout = sp::PIPE});
  std::string address = p.stdout().readline();
  if (!address.empty() && address.back() == '\n') address.pop_back();
  return {std::move(p), address};
}

TEST(ListenerPython, MpxClientToPythonListener) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  for (std::string where :
       {std::string("tcp:127.0.0.1:0"), "unix:/tmp/" + mpx_test::unique_name("py") + ".sock"}) {
    auto [python, address] = python_listener(where, "shared key");
    mpx_test::Watchdog watchdog(30s, "python3", [pid = python.pid()] { ::kill(pid, SIGKILL); });
    ASSERT_FALSE(address.empty());
    {
      mpx::Connection c = mpx::Client(address, "", std::string("shared key"));
      c.send_bytes(span_of("hello"));
      EXPECT_EQ(text(c.recv_bytes()), "python got hello");
    }
    EXPECT_EQ(python.communicate().first, "");
    EXPECT_EQ(python.wait(), 0);
  }
}

TEST(ListenerPython, MpxClientWithAWrongKeyFailsOnBothSides) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  auto [python, address] = python_listener("tcp:127.0.0.1:0", "right");
  mpx_test::Watchdog watchdog(30s, "python3", [pid = python.pid()] { ::kill(pid, SIGKILL); });
  EXPECT_THROW((void)mpx::Client(address, "", std::string("wrong")), mpx::AuthenticationError);
  const std::string out = python.communicate().first;
  EXPECT_EQ(out.rfind("AuthenticationError", 0), 0u) << out;
  EXPECT_EQ(python.wait(), 0);
}

TEST(ListenerPython, UnauthenticatedBytesBothWays) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  mpx::Listener listener("127.0.0.1:0");
  std::string server_error;
  EXPECT_EQ(python_client(listener, "tcp:" + listener.address(), "", server_error),
            "got mpx: from python\n");
  auto [python, address] = python_listener("tcp:127.0.0.1:0", "");
  mpx_test::Watchdog watchdog(30s, "python3", [pid = python.pid()] { ::kill(pid, SIGKILL); });
  {
    mpx::Connection c = mpx::Client(address);
    c.send_bytes(span_of(std::string(100000, 'z')));
    EXPECT_EQ(c.recv_bytes().size(), 100000u + 11);
  }
  EXPECT_EQ(python.wait(), 0);
}

}  // namespace
