// src/ipc/read_ends.hpp — the read ends of connections alive in this process, so that a
// process that ends without running their destructors (an mpx Process child, mpx::exit)
// still tells their writers that it reads no more (Ring::hang_up_reader).
#pragma once

#include "mpx/connection.hpp"

namespace mpx::detail {

// Connection's own bookkeeping (src/ipc/connection.cpp).
void remember_read_end(Connection::Impl* impl);
void forget_read_end(Connection::Impl* impl) noexcept;

// Closes this process's copy of every read end's socket, then hangs the end up: a writer
// elsewhere gets BrokenPipeError from its next message if no other process reads. For a
// process about to end: the connections are unusable afterwards.
void hang_up_read_ends() noexcept;

}  // namespace mpx::detail
