// The authkey handshake of CPython's multiprocessing.connection (3.12's, which accepts
// and answers the legacy HMAC-MD5 of older Pythons).
#include "ipc/handshake.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <exception>
#include <string_view>
#include <system_error>

#include "mpx/errors.hpp"

namespace mpx::detail {

namespace {

constexpr std::string_view kChallenge = "#CHALLENGE#";
constexpr std::string_view kWelcome = "#WELCOME#";
constexpr std::string_view kFailure = "#FAILURE#";
constexpr std::size_t kMessageLength = 40;    // random bytes of a modern challenge
constexpr std::size_t kLegacyChallenge = 20;  // an old Python's challenge
constexpr std::size_t kLegacyDigest = 16;     // an old Python's HMAC-MD5 answer
constexpr std::size_t kMaxHandshakeMessage = 256;
// The first random bytes of a challenge from an mpx peer that can move to rings.
constexpr std::string_view kRingTag = "mpx-ring";

const EVP_MD* digest_by_python_name(std::string_view name) {
  if (name == "md5") return EVP_md5();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha384") return EVP_sha384();
  if (name == "sha512") return EVP_sha512();
  if (name == "sha3_256") return EVP_sha3_256();
  if (name == "sha3_384") return EVP_sha3_384();
  if (name == "sha3_512") return EVP_sha3_512();
  return nullptr;
}

std::string_view as_view(const Bytes& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

Bytes hmac(const EVP_MD* md, const std::string& key, std::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &size))
    throw AuthenticationError("HMAC failed (OpenSSL)");
  const auto* p = reinterpret_cast<const std::byte*>(out);
  return Bytes(p, p + size);
}

// Python's _get_digest_name_and_payload: "" for the legacy (unprefixed) form.
std::pair<std::string_view, std::string_view> digest_and_payload(std::string_view message) {
  if (message.size() == kLegacyChallenge || message.size() == kLegacyDigest) return {"", message};
  if (!message.empty() && message[0] == '{') {
    const std::size_t curly = message.find('}', 1);
    if (curly != std::string_view::npos && curly <= 9) {
      std::string_view name = message.substr(1, curly - 1);
      if (digest_by_python_name(name)) return {name, message.substr(curly + 1)};
    }
  }
  throw AuthenticationError(
      "unsupported message length, missing digest prefix, or unsupported digest");
}

void send_text(SocketStream& stream, std::string_view text) {
  const std::span<const std::byte> part(reinterpret_cast<const std::byte*>(text.data()),
                                        text.size());
  stream.send(Parts(&part, 1));
}

Bytes recv_small(SocketStream& stream, const Deadline& deadline) {
  Bytes message;
  stream.recv(message, kMaxHandshakeMessage, deadline);
  return message;
}

// Runs one side; any failure of the stream becomes an AuthenticationError.
template <class F>
void guarded(const char* side, F&& f) {
  try {
    f();
  } catch (const AuthenticationError&) {
    throw;
  } catch (const std::exception& e) {
    throw AuthenticationError(std::string(side) + ": " + e.what());
  }
}

}  // namespace

void deliver_challenge(SocketStream& stream, const std::string& authkey, const Deadline& deadline,
                       bool advertise) {
  guarded("authentication (deliver_challenge)", [&] {
    unsigned char random[kMessageLength];
    if (RAND_bytes(random, sizeof random) != 1)
      throw AuthenticationError("no random bytes for the challenge (OpenSSL)");
    std::string message = "{sha256}";
    message.append(reinterpret_cast<const char*>(random), sizeof random);
    if (advertise) message.replace(8, kRingTag.size(), kRingTag);
    send_text(stream, std::string(kChallenge) + message);
    const Bytes response = recv_small(stream, deadline);
    try {
      auto [name, mac] = digest_and_payload(as_view(response));
      const Bytes expected =
          hmac(digest_by_python_name(name.empty() ? "md5" : name), authkey, message);
      if (expected.size() != mac.size() ||
          CRYPTO_memcmp(expected.data(), mac.data(), mac.size()) != 0)
        throw AuthenticationError("digest received was wrong");
    } catch (const AuthenticationError&) {
      send_text(stream, kFailure);
      throw;
    }
    send_text(stream, kWelcome);
  });
}

bool answer_challenge(SocketStream& stream, const std::string& authkey, const Deadline& deadline) {
  bool rings = false;
  guarded("authentication (answer_challenge)", [&] {
    const Bytes received = recv_small(stream, deadline);
    std::string_view message = as_view(received);
    if (message.substr(0, kChallenge.size()) != kChallenge)
      throw AuthenticationError("protocol error: expected a challenge");
    message.remove_prefix(kChallenge.size());
    if (message.size() < kLegacyChallenge) throw AuthenticationError("challenge too short");
    const auto [name, payload] = digest_and_payload(message);
    rings = name == "sha256" && payload.substr(0, kRingTag.size()) == kRingTag;
    const Bytes mac = hmac(digest_by_python_name(name.empty() ? "md5" : name), authkey, message);
    if (name.empty()) {
      send_text(stream, as_view(mac));
    } else {
      std::string answer(1, '{');  // appends, not "{" + s: GCC 12's -Wrestrict misfires
      answer.append(name).append(1, '}').append(as_view(mac));
      send_text(stream, answer);
    }
    if (as_view(recv_small(stream, deadline)) != kWelcome)
      throw AuthenticationError("digest sent was rejected");
  });
  return rings;
}

}  // namespace mpx::detail
