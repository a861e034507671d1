// src/ipc/handshake.hpp — CPython's multiprocessing.connection authentication: the
// challenge/response with HMAC (OpenSSL), modern "{digest}" prefixed and legacy MD5.
#pragma once

#include <string>

#include "ipc/socket_stream.hpp"
#include "mpx/detail/deadline.hpp"

namespace mpx::detail {

// The server side: sends a "{sha256}" challenge, checks the answer (any digest Python
// allows, or a legacy raw HMAC-MD5), replies #WELCOME# or #FAILURE#.
// Throws AuthenticationError on a wrong or malformed answer, and for any stream error
// (EOF, timeout, a message over 256 bytes) during the exchange.
// advertise: the challenge says that this side can move to shared-memory rings (its
// random bytes start with a fixed tag; the HMAC covers it like any challenge).
void deliver_challenge(SocketStream& stream, const std::string& authkey, const Deadline& deadline,
                       bool advertise = false);

// The client side: answers the peer's challenge (legacy MD5 to a legacy 20-byte
// challenge, else the digest its prefix names) and expects #WELCOME#.
// Returns whether the peer's challenge advertised shared-memory rings.
bool answer_challenge(SocketStream& stream, const std::string& authkey, const Deadline& deadline);

}  // namespace mpx::detail
