// src/process/start_methods.hpp — the seams between Process (process.cpp) and the start
// methods that do not fork the caller: spawn and forkserver (start_methods.cpp,
// forkserver.cpp).
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mpx/detail/bound_call.hpp"
#include "mpx/process.hpp"
#include "sys/atfork.hpp"
#include "sys/fd.hpp"

namespace mpx::detail {

// Who a child that is not a fork becomes: its Process's name, daemon flag and identity,
// and its parent's name and daemon flag (its pid travels too).
struct ChildIdentity {
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  std::string parent_name;
  bool parent_daemon = false;
};

// A started child (this process's child, whatever its start method): its pid and pidfd.
struct StartedChild {
  pid_t pid = 0;
  sys::Fd pidfd;
};

// --- process.cpp

// Runs `job` (which forks or spawns and returns the child's pid, or -1 with errno) on
// the calling thread if it is the main thread, else on the long-lived forker thread,
// so that PR_SET_PDEATHSIG ties the child to a thread that lives as long as the process.
// Throws std::system_error(what) when it returns -1.
pid_t run_forking(const std::function<pid_t()>& job, const char* what);
// Makes this process (a child that is not a fork) the Process `self` describes.
void become_child(const ChildIdentity& self, pid_t parent_pid);
// Pool workers are named as Python names them: the identity of this process's pool
// zygote, which becomes it (a fork zygote too), and before the number. `executor`: a
// ProcessPoolExecutor's ("ForkProcess", not a daemon), else a Pool's ("ForkPoolWorker",
// a daemon).
ChildIdentity pool_worker_identity(StartMethod method, bool executor);
// The next number of this process's children (Python's _process_counter): a pool takes
// one for each worker it starts, and the worker, forked by the zygote, becomes
// "<name>-<number>" (with the zygote's identity before the number).
int next_child_number();
void become_numbered(int number);
// Runs a child's target, prints an uncaught exception as Python does, and ends the
// child (finish_child) with 0, or 1 after an exception.
[[noreturn]] void run_child_target(const std::string& name, const std::function<void()>& target);
// The end of a child: joins its children and threads, flushes stdio, _exit(code).
[[noreturn]] void finish_child(int code);

// --- start_methods.cpp

// The pidfd of a child just started; kills and reaps it when there is none.
sys::Fd child_pidfd(pid_t pid);

// Tests: as if mpx::init had (not) been called.
void set_init_called(bool called) noexcept;

// The program's start method (set_start_method's; fork when none was set).
StartMethod default_start_method();
// Starts a child by spawn or forkserver that runs `target` (null: nothing).
// Throws ValueError when the target cannot travel, InvalidStateError without mpx::init.
StartedChild start_not_forked(const ChildIdentity& self, StartMethod method,
                              const BoundCall* target);

// posix_spawn of the executable with argv {argv0, marker, the caller's pid}, `channel`
// as its fd 3, /dev/null as stdin, no other fd but stdout and stderr; on the forker when
// needed. mpx::init recognises the marker and ties the child's life to that pid.
pid_t spawn_executable(const char* marker, int channel, char* const* envp = nullptr);
inline constexpr const char* kForkserverArg = "--mpx-forkserver";
// `size` bytes with fds (SCM_RIGHTS, at most kMaxFds) on a Unix socket; false when the
// peer is gone.
inline constexpr std::size_t kMaxFds = 250;
bool send_with_fds(int sock, const void* value, std::size_t size, std::span<const int> fds);
// Receives `size` bytes and the fds sent with them (appended to `fds`); false at EOF.
bool recv_with_fds(int sock, void* value, std::size_t size, std::vector<sys::Fd>& fds);
// One frame on a stream socket: its length (u64) with the fds, then its bytes.
// send_frame returns false when the peer is gone; recv_frame throws EOFError.
bool send_frame(int fd, std::span<const std::byte> bytes, std::span<const int> fds = {});
std::vector<std::byte> recv_frame(int fd, std::vector<sys::Fd>* fds = nullptr);

// What a child that is not a fork receives: who it is, its parent's pid, its target, and
// its parent's start method (Python's spawn preparation data carries it too).
struct ChildOrder {
  ChildIdentity self;
  pid_t parent = 0;
  std::uint64_t entry = 0;  // a SpawnEntry of the parent's, 0: no target
  std::vector<std::byte> target;
  std::vector<int> fds;   // of the mpx objects among the arguments (the parent's)
  int start_method = -1;  // the parent's set_start_method (a StartMethod), -1: none
};
std::vector<std::byte> encode_order(const ChildOrder& order);
// In the child: reads its order from `channel`, becomes the Process, runs the target
// and exits. Never returns.
[[noreturn]] void run_order(int channel);

// --- forkserver.cpp

// A forkserver child: asks the server (started on first use, restarted when it died) to
// fork a child of this process that reads `order` (a frame, with `fds`) from the socket
// left in `channel`.
StartedChild forkserver_start(std::span<const std::byte> order, std::span<const int> fds,
                              sys::Fd& channel);
// This process's socket to its forkserver, or -1 (for the tests' leak check: the server
// lives as long as the process).
int forkserver_client_fd();
// The server's loop, in the process that mpx::init recognised as the forkserver (and
// tied to its client's life); the client's socket is fd 3. Never returns.
[[noreturn]] void forkserver_main();

// The process-wide T (a struct with a std::mutex `mu`) of the start methods' state:
// made on first use, never destroyed (children start at exit too), and a forked child
// gets its mutex fresh, so that a fork while another thread holds it leaves the child's
// copy unlocked.
template <class T>
class ForkSafeInstance {
 public:
  static T& get() {
    static T* const instance = [] {
      ptr_ = new T;
      sys::atfork(nullptr, nullptr, reset_in_child);
      return ptr_;
    }();
    return *instance;
  }

 private:
  // Only a mutex that another thread held at the fork needs making anew: writing an
  // unlocked one costs the child a copy of its page (glibc: __lock is the lock word).
  MPX_CHILD_PATH static void reset_in_child() {
    if (ptr_ && ptr_->mu.native_handle()->__data.__lock != 0) new (&ptr_->mu) std::mutex;
  }
  static inline T* ptr_ = nullptr;
};

}  // namespace mpx::detail
