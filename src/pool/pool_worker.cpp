// The zygote and the worker loop of process pools (see pool_worker.hpp).
#include "pool/pool_worker.hpp"

#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <new>
#include <vector>

#include "mpx/detail/function_id.hpp"
#include "process/start_methods.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

WorkerShared::WorkerShared(std::size_t workers, PoolHeader* header, bool shareable)
    : workers_(workers), header_(header) {
  if (shareable) {
    fd_ = sys::memfd("mpx-pool-rings", bytes_for(workers));
    map_ = sys::map_shared(fd_.get(), bytes_for(workers));
  } else {
    map_ = sys::map_anonymous_shared(bytes_for(workers));
  }
  // Value-initialized on purpose: `WorkerSlot()` zero-fills the rings' buffers, which
  // faults their pages in here, while the pool is built, not one by one as the first
  // lap of tasks goes through them (the mapping is zero already; the writes are the
  // point).
  for (std::size_t i = 0; i < workers; ++i)
    new (&slot(i)) WorkerSlot();
}

namespace {

int exit_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 255;
}

void send_message(int sock, ZygoteMessage m) {
  // A lost supervisor is seen as EOF on the next recv.
  [[maybe_unused]] auto n = ::send(sock, &m, sizeof m, MSG_NOSIGNAL);
}

// --- the worker ---

class WorkerLoop {
 public:
  WorkerLoop(WorkerShared& shared, std::size_t index)
      : shared_(shared), slot_(shared.slot(index)) {}

  [[noreturn]] void run(const EngineOptions& options) {
    // Task and result buffers of up to a few MiB come and go with every map chunk: keep
    // them in the heap rather than mapping them and faulting them in anew every time.
    ::mallopt(M_MMAP_THRESHOLD, 8 << 20);
    ::mallopt(M_TRIM_THRESHOLD, 16 << 20);
    // A process pool's thread_initializer: the initializer with mpx objects among its
    // arguments, inherited by this fork of the pool's process (EngineOptions).
    if (options.initializer || options.thread_initializer) {
      slot_.in_init.store(1, std::memory_order_seq_cst);
      try {
        ByteVector ignored;
        if (options.initializer) {
          options.initializer(options.initargs, ignored);
        } else {
          options.thread_initializer();
        }
        slot_.in_init.store(0, std::memory_order_seq_cst);
      } catch (...) {
        report_initializer_failure(std::current_exception());
        ByteVector body;
        encode_exception(std::current_exception(), body);
        send(kFrameInitError, 0, body);
        finish(3);
      }
    }
    send(kFrameInitOk, 0, {});
    std::size_t done = 0;
    ByteVector args;
    ByteVector out;
    for (;;) {
      FrameHeader h{};
      // The parent hears of the room the header made with the body's (read_exact()).
      read_exact(reinterpret_cast<std::byte*>(&h), sizeof h, false);
      if (h.kind == kFrameStop) {  // the pool closed and its tasks are done
        release_held();
        finish(0);
      }
      if (h.kind == kFramePad) {
        skip(h.size);
        continue;
      }
      warm(slot_.inbox, inbox_warm_, slot_.inbox.tail.load(std::memory_order_relaxed), h.size);
      // A frame whole in the inbox and in one piece is read where it lies, and dropped
      // from the inbox once the call returned (a large one, kInPlaceFrame) or once its
      // result is out (a small one: the parent hears of the room, a fence, after that).
      std::span<const std::byte> in = slot_.inbox.peek(h.size);
      const std::size_t in_place = in.size();
      const bool large = in_place >= kInPlaceFrame;
      if (in_place == 0) {
        reserve_prefaulted(args, h.size);
        args.resize(h.size);
        read_exact(args.data(), args.size());
        in = args;
      }
      if (!take(h.seq, in_place)) {  // the parent gave it to an idle worker
        if (in_place != 0) dropped(in_place);
        // The next frame's kFrameSameGroup is about this one, not the results held.
        release_held();
        continue;
      }
      // The task may be long: the results before it must not wait, unless they are of
      // its group (then they are needed only with its own).
      if ((h.flags & kFrameSameGroup) == 0) release_held();
      settle_ring(true);
      const int64_t started = monotonic_ns();
      slot_.started_ns.store(started, std::memory_order_relaxed);
      slot_.current.store(h.task_id, std::memory_order_release);
      out.clear();
      out.resize(sizeof(FrameHeader));
      uint16_t kind = kFrameResult;
      // A large task's results may go straight to the outbox (DirectResult).
      DirectResult& direct = direct_result();
      if (large) direct.room = outbox_room();
      try {
        reinterpret_cast<Entry>(local_address(h.entry))(in, out);
      } catch (...) {
        direct.used = 0;
        out.resize(sizeof(FrameHeader));
        kind = kFrameError;
        try {
          encode_exception(std::current_exception(), out);
        } catch (...) {
          finish(4);
        }
      }
      last_task_ns_ = monotonic_ns() - started;
      if (large) dropped(in_place);
      FrameHeader r{};
      r.kind = kind;
      r.task_id = h.task_id;
      r.entry = static_cast<uint64_t>(last_task_ns_);
      r.size = out.size() - sizeof(FrameHeader);
      std::memcpy(out.data(), &r, sizeof r);
      warm(slot_.outbox, outbox_warm_, slot_.outbox.written, out.size());
      // After a long task (a short one's result is read by a spinning collector anyway),
      // a result of a group (a map's chunk) wakes nobody while this worker has at least
      // two more tasks queued: the collector is woken once per few results (each wake-up
      // costs it tens of microseconds on a VM, and a worker's CPU when they share one),
      // and still a task ahead of this queue running dry. Errors are not held.
      const bool hold = (h.flags & kFrameGrouped) != 0 && kind == kFrameResult &&
                        last_task_ns_ > kShortTaskNs && queued_after(h.seq) >= 2;
      if (direct.used != 0) {  // the results are in the outbox already: the header, then out
        r.size = direct.used;
        ByteRing& ring = slot_.outbox;
        const uint64_t at = ring.written;
        std::memcpy(ring.data + (at & (ByteRing::kCapacity - 1)), &r, sizeof r);
        ring.publish(at + sizeof r + direct.used);
        written(hold);
      } else {
        write_all(out.data(), out.size(), hold);
      }
      direct = {};
      if (in_place != 0 && !large) dropped(in_place);
      // Cleared only once the result is in the ring: a worker that dies before this
      // line is seen holding the task (its result, if complete, is read first).
      slot_.current.store(0, std::memory_order_release);
      if (options.maxtasksperchild != 0 && ++done >= options.maxtasksperchild) {
        release_held();
        finish(0);
      }
    }
  }

 private:
  // A worker leaves through here (unless killed): what it printed reaches its stdout and
  // stderr (pipes and files hold it in stdio's buffers until a flush), as a Python
  // worker's sys.stdout is flushed when it exits.
  [[noreturn]] static void finish(int code) {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    ::_exit(code);
  }

  // Whether this worker runs the task of frame `seq`, which it just read (all but the
  // `unread` bytes it reads in place), or the parent took it back (WorkerSlot::claim).
  // Frames come in the order they were assigned and the parent takes back the last ones,
  // so once one is taken back, so are all after it.
  bool take(uint32_t seq, std::size_t unread) noexcept {
    uint64_t c = slot_.claim.load(std::memory_order_acquire);
    for (;;) {
      const auto from = static_cast<uint32_t>(c >> 32);
      const bool taken_back = from != 0 && static_cast<int32_t>(seq - from) >= 0;
      // Past the last frame taken back (nothing follows them: the parent gives this
      // worker nothing new meanwhile): open for new tasks again.
      const bool reopen = taken_back && slot_.inbox.readable() == unread;
      const uint64_t next = (reopen ? 0 : uint64_t{from} << 32) | seq;
      if (slot_.claim.compare_exchange_weak(c, next, std::memory_order_acq_rel)) {
        if (reopen) {  // the supervisor may have tasks for this worker now
          shared_.header()->reopened.store(1, std::memory_order_seq_cst);
          ring_supervisor();
        }
        return !taken_back;
      }
    }
  }

  // How many task frames are whole in the inbox after frame `seq`.
  uint32_t queued_after(uint32_t seq) const noexcept {
    const auto n = static_cast<int32_t>(slot_.last_seq.load(std::memory_order_acquire) - seq);
    return n > 0 ? static_cast<uint32_t>(n) : 0;
  }

  // Wakes the readers for the results held back (see run()).
  void release_held() noexcept {
    if (!holding_) return;
    holding_ = false;
    results_written();
  }
  bool holding_ = false;  // results were written that nobody was woken for

  // A large frame about to pass through `ring` at position `at` on this worker's first
  // lap: its pages are faulted in by one system call rather than one fault per 4 KiB
  // (the parent wrote them at pool build, but this process's page tables start empty; a
  // 1M-item map ran 10% faster). `until`: how far this worker did so (a slot's rings
  // start at 0 with each worker).
  static void warm(ByteRing& ring, uint64_t& until, uint64_t at, std::size_t n) noexcept {
    if (n < kPrefaultBytes) return;
    const uint64_t from = std::max(until, at);
    const uint64_t to = std::min<uint64_t>(at + n, ByteRing::kCapacity);
    if (from >= to) return;
    prefault(ring.data + from, static_cast<std::size_t>(to - from));
    until = to;
  }
  uint64_t inbox_warm_ = 0;
  uint64_t outbox_warm_ = 0;

  void ring_supervisor() noexcept { shared_.header()->ring_supervisor(shared_.doorbell); }

  // After writing to the outbox: wakes whoever reads results. The fence orders our ring
  // update before reading the flags (Dekker with the readers' store-flag-then-check):
  // without it x86 may let both sides miss each other.
  // When no caller collects, the supervisor must read the result; but a caller usually
  // asks for it within microseconds, so while there is spinning to do the ring waits
  // (owe_ring_) until the worker goes to sleep or its next task, unless a caller
  // collected the result meanwhile.
  void results_written() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    PoolHeader* h = shared_.header();
    if (h->results.sleepers.load(std::memory_order_seq_cst) != 0) notify(h->results);
    if (h->collecting.load(std::memory_order_seq_cst) != 0) return;
    if (spin_limit() == 0) {
      ring_supervisor();
    } else {
      owe_ring_ = true;
    }
  }
  // Settles a deferred ring: not needed once a caller collects or read the outbox.
  void settle_ring(bool now) noexcept {
    if (!owe_ring_) return;
    PoolHeader* h = shared_.header();
    if (h->collecting.load(std::memory_order_seq_cst) != 0 || slot_.outbox.readable() == 0) {
      // The collector's leaving (collecting = 0, then a look at the outboxes) covers what
      // it left unread.
      owe_ring_ = false;
      return;
    }
    if (now) {
      owe_ring_ = false;
      ring_supervisor();
    }
  }
  bool owe_ring_ = false;

  // After reading from the inbox: the parent may wait for room to write more.
  void inbox_read() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (slot_.writer_waiting.load(std::memory_order_seq_cst) != 0) ring_supervisor();
  }

  // Waits for the inbox: spins for a bounded time first (the next task usually comes
  // within microseconds; a futex sleep costs a 50-85 µs wake-up on VMs), never on one CPU.
  void wait_inbox() {
    release_held();  // this worker's queue ran dry
    ByteRing& ring = slot_.inbox;
    if (spin_limit() != 0) {
      slot_.cpu.store(::sched_getcpu(), std::memory_order_relaxed);
      int64_t start = monotonic_ns();
      for (int i = 1;; ++i) {
        if (ring.readable() != 0) break;
        ring.prefetch_next();
        cpu_relax();
        if (i % 64 != 0) continue;
        int64_t now = monotonic_ns();
        settle_ring(now - start > kRingDelayNs);
        if (now - start > kSpinNs) break;
        // Past a few microseconds, let whatever shares this CPU run (the parent, when
        // the machine is oversubscribed); without other runnable work this returns
        // at once. At once when the thread that collects our results was last seen
        // spinning on this CPU: it cannot hand us a task before it runs.
        if (const int here = ::sched_getcpu(); collector_is_on(here)) {
          move_off_cpu(here, now);
          ::sched_yield();
        } else if (now - start > kYieldAfterNs) {
          ::sched_yield();
        }
      }
    }
    settle_ring(true);
    if (ring.readable() != 0) return;
    slot_.sleep_cpu.store(::sched_getcpu(), std::memory_order_relaxed);
    slot_.cpu.store(-1, std::memory_order_relaxed);  // asleep: on no CPU
    wait_until(
        ring.word, [&] { return ring.readable() != 0; }, Deadline::never());
    slot_.cpu.store(::sched_getcpu(), std::memory_order_relaxed);
  }
  // Moves this worker to another CPU it may run on, when it finds itself on the CPU where
  // the collecting thread spins: the scheduler was seen to leave such a pair on one CPU
  // for a whole run while the other idled, every task then costing two switches between
  // processes (5-16 us a round trip on a VM, instead of under 1). Narrowing the affinity
  // mask for a moment moves the worker at once; the mask is put back as it was. At most
  // every 10 ms, only after a short task (with long ones the shared CPU costs little, and
  // a CPU-bound map lost speed when its workers moved), and only to a CPU where no other
  // worker was last seen (moving onto a busy worker slows both).
  // `here`: the CPU this worker runs on (>= 0).
  void move_off_cpu(int here, int64_t now) noexcept {
    if (last_task_ns_ > kShortTaskNs || now - last_move_ns_ < kMoveIntervalNs) return;
    last_move_ns_ = now;
    if (here >= CPU_SETSIZE) return;
    cpu_set_t avoid;
    CPU_ZERO(&avoid);
    CPU_SET(here, &avoid);
    for (std::size_t j = 0; j < shared_.size(); ++j) {
      const int cpu = shared_.slot(j).cpu.load(std::memory_order_relaxed);
      if (&shared_.slot(j) != &slot_ && cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &avoid);
    }
    with_cpus_avoided(0, avoid, [](const cpu_set_t&) {});
  }
  static constexpr int64_t kMoveIntervalNs = 10'000'000;
  static constexpr int64_t kShortTaskNs = 100'000;
  int64_t last_task_ns_ = 0;
  int64_t last_move_ns_ = -kMoveIntervalNs;

  // Whether the collecting thread was last seen spinning on CPU `here` (a hint).
  bool collector_is_on(int here) const noexcept {
    const PoolHeader* h = shared_.header();
    return here >= 0 && h->collecting.load(std::memory_order_relaxed) != 0 &&
           h->collector_cpu.load(std::memory_order_relaxed) == here;
  }
  static constexpr int64_t kSpinNs = 50'000;
  static constexpr int64_t kRingDelayNs = 20'000;
  static constexpr int64_t kYieldAfterNs = 5'000;

  void send(uint16_t kind, uint64_t id, std::span<const std::byte> body) {
    FrameHeader h{};
    h.kind = kind;
    h.task_id = id;
    h.size = body.size();
    write_all(reinterpret_cast<const std::byte*>(&h), sizeof h);
    write_all(body.data(), body.size());
  }

  // Room in the outbox for a frame's body after its header, in one piece (for
  // DirectResult), faulted in on this worker's first lap; empty if too little.
  std::span<std::byte> outbox_room() noexcept {
    ByteRing& ring = slot_.outbox;
    const uint64_t at = ring.written;
    const std::size_t to_end =
        ByteRing::kCapacity - static_cast<std::size_t>(at & (ByteRing::kCapacity - 1));
    std::size_t room = std::min(ring.room_for(at, ByteRing::kCapacity), to_end);
    if (room < sizeof(FrameHeader) + kInPlaceFrame) {
      // Too close to the end: skip to the start (a kFramePad frame the reader drops) if
      // more room waits there.
      if (to_end < sizeof(FrameHeader) || to_end >= sizeof(FrameHeader) + kInPlaceFrame ||
          !ring.pad_before(
              sizeof(FrameHeader) + kInPlaceFrame, +[](std::size_t skip) {
                FrameHeader pad{};
                pad.kind = kFramePad;
                pad.size = skip;
                return pad;
              }))
        return {};
      return outbox_room();
    }
    warm(ring, outbox_warm_, at, room);
    return {ring.data + (at & (ByteRing::kCapacity - 1)) + sizeof(FrameHeader),
            room - sizeof(FrameHeader)};
  }

  // After writing a result frame to the outbox: wakes its readers, or, with `hold`,
  // holds the wake-up back (release_held()).
  void written(bool hold) noexcept {
    if (hold) {
      holding_ = true;
    } else {
      holding_ = false;  // woken for all
      results_written();
    }
  }

  // Writes n bytes to the outbox and wakes their readers, or, with `hold`, holds the
  // wake-up back (release_held()).
  void write_all(const std::byte* p, std::size_t n, bool hold = false) {
    ByteRing& ring = slot_.outbox;
    while (n != 0) {
      std::size_t k = ring.write(p, n);
      if (k == 0) {
        release_held();
        settle_ring(true);
        wait_until(
            ring.word, [&] { return ring.writable() != 0; }, Deadline::never());
        continue;
      }
      p += k;
      n -= k;
      if (n == 0 && hold) {
        holding_ = true;
      } else {
        holding_ = false;  // woken for all
        results_written();
      }
    }
  }

  // Drops n bytes read in place from the inbox (ByteRing::peek).
  void dropped(std::size_t n) noexcept {
    slot_.inbox.consume(n);
    inbox_read();
  }
  // Drops the next n bytes of the inbox, waiting for them as read_exact() does.
  void skip(std::size_t n) {
    ByteRing& ring = slot_.inbox;
    while (n != 0) {
      const std::size_t k = std::min(n, ring.readable());
      if (k == 0) {
        wait_inbox();
        continue;
      }
      dropped(k);
      n -= k;
    }
  }

  // `tell`: the parent hears of the room made at once (inbox_read(), a fence); else it
  // does before this waits, or with the next read that tells.
  void read_exact(std::byte* p, std::size_t n, bool tell = true) {
    ByteRing& ring = slot_.inbox;
    bool untold = false;
    while (n != 0) {
      std::size_t k = ring.read(p, n);
      if (k == 0) {
        if (untold) inbox_read();
        untold = false;
        wait_inbox();
        continue;
      }
      if (tell) {
        inbox_read();
      } else {
        untold = true;
      }
      p += k;
      n -= k;
    }
  }

  WorkerShared& shared_;
  WorkerSlot& slot_;
};

// --- the zygote ---

struct Child {
  pid_t pid;
  int pidfd;
  uint32_t slot;
};

}  // namespace

[[noreturn]] void zygote_main(int sock, WorkerShared& shared, const EngineOptions& options) {
  pid_t self = ::getpid();
  std::vector<Child> children;
  std::vector<pollfd> fds;
  auto stop = [&]() {
    for (auto& c : children)
      sys::pidfd_send_signal(c.pidfd, SIGKILL);
    for (auto& c : children) {
      int status;
      while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    ::_exit(0);
  };
  for (;;) {
    fds.clear();
    fds.push_back({sock, POLLIN, 0});
    for (auto& c : children)
      fds.push_back({c.pidfd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      stop();
    }
    for (std::size_t k = children.size(); k-- > 0;) {
      if (!(fds[k + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Child c = children[k];
      int status = 0;
      pid_t r;
      while ((r = ::waitpid(c.pid, &status, 0)) < 0 && errno == EINTR) {
      }
      ::close(c.pidfd);
      children.erase(children.begin() + static_cast<std::ptrdiff_t>(k));
      send_message(sock, {kZygoteExited, c.slot, c.pid, exit_status(status)});
    }
    if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ZygoteMessage m{};
    ssize_t n = ::recv(sock, &m, sizeof m, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n != static_cast<ssize_t>(sizeof m)) stop();  // the pool is gone (or closed us)
    if (m.kind == kZygoteSpawn) {
      // Through the syscall seam: tests make it fail (tests/pool_faults_test.cpp).
      pid_t pid = sys::call_raw("fork (a pool worker)", [] { return ::fork(); });
      const int fork_errno = errno;
      if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != self) ::_exit(1);
        ::close(sock);
        for (auto& c : children)
          ::close(c.pidfd);
        become_numbered(m.status);
        WorkerLoop(shared, m.slot).run(options);
      }
      if (pid < 0) {
        send_message(sock, {kZygoteSpawned, m.slot, -1, fork_errno});
        continue;
      }
      int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
      if (pidfd < 0) {  // cannot watch it: do not keep it
        const int err = errno;
        ::kill(pid, SIGKILL);
        int status;
        ::waitpid(pid, &status, 0);
        send_message(sock, {kZygoteSpawned, m.slot, -1, -err});
        continue;
      }
      children.push_back({pid, pidfd, m.slot});
      send_message(sock, {kZygoteSpawned, m.slot, pid, 0});
    } else if (m.kind == kZygoteStop) {
      stop();
    } else if (m.kind == kZygoteKill) {
      for (auto& c : children)
        if (c.pid == m.pid && c.slot == m.slot) sys::pidfd_send_signal(c.pidfd, SIGKILL);
    }
  }
}

Zygote start_zygote(WorkerShared& shared, const EngineOptions& options) {
  auto [ours, theirs] = sys::make_socketpair(SOCK_SEQPACKET);
  // The zygote keeps a copy-on-write share of every page we have now, for the pool's
  // life. Heap memory that is free now would be reused by our next allocations, and
  // each first write to such a page copies it and, while another of our threads runs
  // (the supervisor, a collector), interrupts that CPU to flush its TLB: after large
  // maps had left megabytes free, these faults tripled the cost of submit() on a VM.
  // Giving the free pages back first makes those writes plain zero-fill faults.
  ::malloc_trim(0);
  // What the parent printed is written now, not inherited by every worker, which flush
  // their stdio buffers when they leave (Python flushes before it forks too). A line
  // another thread buffers meanwhile is dropped from the zygote's copy.
  std::cout.flush();
  std::fflush(nullptr);
  const ChildIdentity self = pool_worker_identity(StartMethod::fork, options.on_demand);
  const pid_t parent = ::getpid();
  pid_t pid = sys::call("fork", [] { return ::fork(); });
  if (pid == 0) {
    // The zygote: single-threaded from here on. It stops when the pool closes its
    // end of the socket, which also happens when the pool's process dies.
    ::__fpurge(stdout);
    ::__fpurge(stderr);
    ::close(ours.release());
    become_child(self, parent);
    // The tasks carry this process's addresses (or those of options.task_modules), even
    // where it adopted another's table: a spawned child's fork pool.
    try {
      if (options.task_modules.empty())
        forget_module_table();
      else
        adopt_module_table(options.task_modules);
    } catch (...) {
      ::_exit(1);  // not this build's table: the pool learns that its zygote died
    }
    zygote_main(theirs.get(), shared, options);
  }
  Zygote z;
  z.pid = pid;
  z.socket = std::move(ours);
  return z;
}

}  // namespace mpx::detail
