// Interop of mpx/listener.hpp with CPython's multiprocessing.connection (the system's
// /usr/bin/python3): its Client against an mpx Listener and an mpx Client against its
// Listener, with the right authkey and a wrong one (failing on both sides). Python 3.11
// speaks the legacy HMAC-MD5 handshake; 3.12+ the "{sha256}" one: both are accepted. The
// {sha256} one is tested against kScript312, a Python script speaking 3.12's protocol.
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
#include "support/python.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
namespace sp = mpx::subprocess;
using mpx_test::have_python;
using mpx_test::kPython;

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

// An independent implementation of CPython 3.12's side of the handshake (the system's
// Python is 3.11, which speaks only HMAC-MD5): written from 3.12's documented semantics
// of Lib/multiprocessing/connection.py — deliver_challenge sends "#CHALLENGE#{sha256}"
// and 40 random bytes and checks the answer's HMAC over that whole message;
// answer_challenge answers "{sha256}" + the HMAC; #WELCOME# / #FAILURE#; messages framed
// by a 4-byte big-endian signed length (-1: an 8-byte length follows). Strict: the mpx
// peer must speak the {sha256} form, not the legacy one. Same argv as kScript.
// Exit status: 0 done, 3 AuthenticationError (printed), anything else a failure.
const char* kScript312 = R"(
import hmac, os, socket, struct, sys

class AuthenticationError(Exception):
    pass

CHALLENGE, WELCOME, FAILURE = b'#CHALLENGE#', b'#WELCOME#', b'#FAILURE#'
DIGESTS = (b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384')

def recv_exact(sock, n):
    data = b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def send_bytes(sock, payload):
    if len(payload) > 0x7fffffff:
        header = struct.pack('!iQ', -1, len(payload))
    else:
        header = struct.pack('!i', len(payload))
    sock.sendall(header + payload)

def recv_bytes(sock, maxlength=None):
    size, = struct.unpack('!i', recv_exact(sock, 4))
    if size == -1:
        size, = struct.unpack('!Q', recv_exact(sock, 8))
    if maxlength is not None and size > maxlength:
        raise OSError('bad message length')
    return recv_exact(sock, size)

def split_digest(message):
    if len(message) in (16, 20):
        return 'md5', message, False
    if message.startswith(b'{'):
        end = message.find(b'}', 1, 10)
        if end > 0 and message[1:end] in DIGESTS:
            return message[1:end].decode(), message[end + 1:], True
    raise AuthenticationError('unsupported digest: %r' % message[:12])

def deliver_challenge(sock, key):
    message = b'{sha256}' + os.urandom(40)
    send_bytes(sock, CHALLENGE + message)
    name, answer, prefixed = split_digest(recv_bytes(sock, 256))
    expected = hmac.new(key, message, name).digest()
    if not hmac.compare_digest(expected, answer):
        send_bytes(sock, FAILURE)
        raise AuthenticationError('digest received was wrong')
    assert prefixed and name == 'sha256', 'legacy answer from mpx'
    send_bytes(sock, WELCOME)

def answer_challenge(sock, key):
    message = recv_bytes(sock, 256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError('expected a challenge')
    message = message[len(CHALLENGE):]
    name, _, prefixed = split_digest(message)
    assert prefixed and name == 'sha256', 'mpx challenged in the legacy form'
    send_bytes(sock, b'{sha256}' + hmac.new(key, message, 'sha256').digest())
    if recv_bytes(sock, 256) != WELCOME:
        raise AuthenticationError('digest sent was rejected')

where, key, role = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
if where.startswith('tcp:'):
    host, port = where[4:].rsplit(':', 1)
    family, addr = socket.AF_INET, (host, int(port))
else:
    family, addr = socket.AF_UNIX, where[5:]
socket.setdefaulttimeout(30)
try:
    if role == 'client':
        sock = socket.socket(family)
        sock.connect(addr)
        answer_challenge(sock, key)
        deliver_challenge(sock, key)
        send_bytes(sock, b'from python')
        print('got', recv_bytes(sock).decode(), flush=True)
    else:
        listener = socket.socket(family)
        listener.bind(addr)
        listener.listen(1)
        a = listener.getsockname()
        print(a if isinstance(a, str) else '%s:%d' % a, flush=True)
        sock, _ = listener.accept()
        try:
            deliver_challenge(sock, key)
            answer_challenge(sock, key)
            send_bytes(sock, b'python got ' + recv_bytes(sock))
            recv_bytes(sock)  # until the mpx side closes
        except EOFError:
            pass
        finally:
            if family == socket.AF_UNIX:
                os.unlink(addr)
except AuthenticationError as e:
    print('AuthenticationError', e, flush=True)
    sys.exit(3)
)";

std::string text(const mpx::Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
std::span<const std::byte> span_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// Runs Python's Client (`script`) against `listener`; the mpx side answers one message.
// Returns Python's output; `server_error` gets what accept() threw ("" when nothing);
// `status`, when given, Python's exit status.
std::string python_client(mpx::Listener& listener, const std::string& where, const std::string& key,
                          std::string& server_error, const char* script = kScript,
                          int* status = nullptr) {
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
      sp::run({kPython, "-c", script, where, key, "client"},
              {.capture_output = true, .timeout = std::chrono::duration<double>(30)});
  server_error = served.get();
  if (status) *status = done.returncode;
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
std::pair<sp::Popen, std::string> python_listener(const std::string& where, const std::string& key,
                                                  const char* script = kScript) {
  sp::Popen p({kPython, "-c", script, where, key, "listener"}, {.stdout = sp::PIPE});
  std::string address = p.stdout().readline();
  if (!address.empty() && address.back() == '\n') address.pop_back();
  return {std::move(p), address};
}

// An mpx Client exchanges one message with `script`'s Listener, over TCP and Unix.
void mpx_client_to_python_listener(const char* script) {
  for (std::string where :
       {std::string("tcp:127.0.0.1:0"), "unix:/tmp/" + mpx_test::unique_name("py") + ".sock"}) {
    auto [python, address] = python_listener(where, "shared key", script);
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

TEST(ListenerPython, MpxClientToPythonListener) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  mpx_client_to_python_listener(kScript);
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

// Python 3.12's {sha256} handshake (kScript312) against an mpx Listener and an mpx
// Client, over TCP and a Unix socket, with the right key and a wrong one.
TEST(ListenerPython, Python312ClientToMpxListener) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  for (std::string where : {std::string("127.0.0.1:0"), std::string()}) {
    mpx::Listener listener(where, "", 1, "shared key");
    const std::string scheme = listener.family() == "AF_UNIX" ? "unix:" : "tcp:";
    std::string server_error;
    int status = -1;
    EXPECT_EQ(python_client(listener, scheme + listener.address(), "shared key", server_error,
                            kScript312, &status),
              "got mpx: from python\n");
    EXPECT_EQ(status, 0);
    EXPECT_EQ(server_error, "");
  }
  mpx::Listener listener("127.0.0.1:0", "", 1, "right");
  std::string server_error;
  int status = -1;
  const std::string out = python_client(listener, "tcp:" + listener.address(), "wrong",
                                        server_error, kScript312, &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_EQ(out.rfind("AuthenticationError digest sent was rejected", 0), 0u) << out;
  EXPECT_EQ(server_error.rfind("AuthenticationError", 0), 0u) << server_error;
}

TEST(ListenerPython, MpxClientToPython312Listener) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  mpx_client_to_python_listener(kScript312);
  auto [python, address] = python_listener("tcp:127.0.0.1:0", "right", kScript312);
  mpx_test::Watchdog watchdog(30s, "python3", [pid = python.pid()] { ::kill(pid, SIGKILL); });
  EXPECT_THROW((void)mpx::Client(address, "", std::string("wrong")), mpx::AuthenticationError);
  const std::string out = python.communicate().first;
  EXPECT_EQ(out.rfind("AuthenticationError digest received was wrong", 0), 0u) << out;
  EXPECT_EQ(python.wait(), 3);
}

}  // namespace
