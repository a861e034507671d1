// src/ipc/ring_upgrade.hpp — a Listener/Client connection between two mpx processes on
// one machine moves from its Unix socket to shared-memory rings (as a Pipe's) after the
// authenticated handshake. Negotiated in the handshake (each side's challenge says it can),
// so a Python peer, or any TCP peer, keeps the plain byte protocol.
#pragma once

#include <cstddef>

#include "mpx/connection.hpp"

namespace mpx::detail {

// A duplex connection over two rings of `capacity` in `memfd`: side 0 receives through
// ring 0 and sends through ring 1, side 1 the other way; in/out_socket are its bells.
// Takes ownership of the fds (src/ipc/connection.cpp).
Connection ring_connection(int memfd, std::size_t capacity, int side, int in_socket,
                           int out_socket);
// Whether fd is an AF_UNIX socket.
bool is_unix_socket(int fd);
// The listening side: makes the rings and bells, passes the peer's over `socket`.
Connection offer_rings(int socket);
// The connecting side: receives them. Throws AuthenticationError on a malformed offer.
Connection accept_rings(int socket);

}  // namespace mpx::detail
