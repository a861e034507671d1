// mpx/detail/function_id.hpp — how a function's address reaches a process that is not a
// fork of the sender (a spawned child, a forkserver's child, another MPI rank). Not
// public API.
//
// Functions travel as the sender's own addresses (an entry point of mpx's task
// templates, a function pointer given as a callable): in a forked child they are valid
// as they are, and the hot path pays nothing. A process that receives addresses from a
// peer that is not its fork parent first adopts the peer's module table (once, at
// start-up: encode_module_table() there, adopt_module_table() here). From then on
// local_address() moves each address by the distance between the peer's and this
// process's load address of the module that holds it (DESIGN.md section 1: an entry is
// identified by its module and its offset in it, so ASLR does not matter). Modules are
// matched by their GNU build id (or path, size and mtime for a module without one), so
// a child that runs a different build of the program than its parent is refused with a
// clear error instead of jumping to a wrong address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mpx::detail {

// This process's loaded modules (executable, shared libraries, vdso): their identities
// and address ranges, encoded for a peer.
std::vector<std::byte> encode_module_table();

// From now on, addresses received through local_address() are the peer's whose table
// this is. Call once, before any such address is used (not thread-safe against
// concurrent local_address() calls). Throws ProcessError when the peer's main
// executable is not this process's (another build) and DecodeError on a malformed
// table. Modules the peer has and this process lacks fail later, in local_address(),
// for the addresses in them only.
void adopt_module_table(std::span<const std::byte> table);

// From now on, addresses are this process's own again (local_address() returns them as
// they are): for a fork whose tasks come from its parent, which may have adopted a table.
void forget_module_table() noexcept;

// The address here of `peer_address`, a code address of the peer whose table was
// adopted; the address itself when none was (a forked child). Throws ProcessError when
// the address lies in no module of the peer, or in one this process has not loaded.
std::uintptr_t local_address(std::uint64_t peer_address);

// This process's main executable, for a message: its path and build id.
std::string executable_identity();

}  // namespace mpx::detail
