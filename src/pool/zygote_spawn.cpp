// The zygote of a process pool whose start method is spawn or forkserver (mpx/pool.hpp):
// a new run of the program, started as a spawn or forkserver child is (the order on
// its channel, src/process/start_methods.cpp), whose target is zygote_entry() below.
// It receives by SCM_RIGHTS the memfds of the pool's shared regions (the header page
// and the workers' rings), the doorbell eventfd and its end of the pool's socket, and
// through the codec its setup: the number of workers, maxtasksperchild and the
// initializer (its entry's address, moved to this process's by local_address(), and
// its encoded arguments). From then on it is the zygote of a fork pool: it forks the
// workers, which find the task entries by local_address() too.
#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <tuple>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/detail/pool_entry.hpp"
#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "pool/pool_worker.hpp"
#include "process/start_methods.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

// workers, maxtasksperchild, the initializer's entry (0: none), its arguments, the
// tasks' module table (EngineOptions::task_modules).
using ZygoteSetup = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, ByteVector, ByteVector>;
// The fds handed over, in this order.
enum ZygoteFd { kSocket, kHeader, kRings, kDoorbell, kZygoteFds };
// The size of the header's page (ProcessCollector::kPage).
constexpr std::size_t kHeaderPage = 4096;

// The zygote's target (a SpawnEntry): takes the fds, maps the regions, runs the zygote.
// The initializer's objects' fds, in this zygote and its workers.
std::vector<int>* g_initializer_fds = new std::vector<int>;  // never destroyed

void zygote_entry(std::span<const std::byte> in, std::vector<int>& fds) {
  if (fds.size() < kZygoteFds) throw ProcessError("mpx: a pool's zygote got the wrong fds");
  g_initializer_fds->assign(fds.begin() + kZygoteFds, fds.end());
  sys::Fd sock(fds[kSocket]);
  sys::Fd header_fd(fds[kHeader]);
  sys::Fd rings_fd(fds[kRings]);
  const int doorbell = fds[kDoorbell];
  fds.clear();
  auto [workers, maxtasks, initializer, initargs, task_modules] = mpx::decode<ZygoteSetup>(in);
  // Mapped for the zygote's life (it ends in _exit).
  auto* header = new sys::Mapping(sys::map_shared(header_fd.get(), kHeaderPage));
  auto* shared = new WorkerShared(
      static_cast<std::size_t>(workers), reinterpret_cast<PoolHeader*>(header->bytes()),
      sys::map_shared(rings_fd.get(), WorkerShared::bytes_for(workers)));
  shared->doorbell = doorbell;
  header_fd.reset();
  rings_fd.reset();
  EngineOptions options;
  options.workers = static_cast<std::size_t>(workers);
  options.processes = true;
  options.maxtasksperchild = static_cast<std::size_t>(maxtasks);
  if (initializer != 0) options.initializer = reinterpret_cast<Entry>(local_address(initializer));
  options.initargs = std::move(initargs);
  // The pool's process sent its own table (the initializer's is moved by now); tasks may
  // carry another's.
  if (!task_modules.empty()) adopt_module_table(task_modules);
  zygote_main(sock.release(), *shared, options);
}

// The zygote as a spawn or forkserver target.
class ZygoteCall final : public BoundCall {
 public:
  ZygoteCall(ByteVector setup, std::vector<int> fds)
      : setup_(std::move(setup)), fds_(std::move(fds)) {}
  void operator()() override {}
  bool encode_for_spawn(std::uint64_t& entry, std::vector<std::byte>& out,
                        std::vector<int>& fds) const override {
    entry = reinterpret_cast<std::uint64_t>(&zygote_entry);
    out.insert(out.end(), setup_.begin(), setup_.end());
    fds.insert(fds.end(), fds_.begin(), fds_.end());
    return true;
  }

 private:
  ByteVector setup_;
  std::vector<int> fds_;
};

}  // namespace

const std::vector<int>& initializer_fds() noexcept {
  return *g_initializer_fds;
}

Zygote start_zygote_by(StartMethod method, WorkerShared& shared, sys::Fd header,
                       const EngineOptions& options) {
  auto [ours, theirs] = sys::make_socketpair(SOCK_SEQPACKET);
  const sys::Fd rings = shared.take_fd();
  std::vector<int> fds(kZygoteFds);
  fds[kSocket] = theirs.get();
  fds[kHeader] = header.get();
  fds[kRings] = rings.get();
  fds[kDoorbell] = shared.doorbell;
  // The initializer: its arguments encoded, or with mpx objects handed over (their fds
  // follow the zygote's own).
  Entry init = options.initializer;
  const ByteVector* initargs = &options.initargs;
  if (const InitObjects* objects = options.init_objects.get()) {
    init = objects->entry;
    initargs = &objects->args;
    fds.insert(fds.end(), objects->fds.begin(), objects->fds.end());
  }
  const ZygoteCall call(mpx::encode(ZygoteSetup{options.workers, options.maxtasksperchild,
                                                reinterpret_cast<std::uint64_t>(init), *initargs,
                                                options.task_modules}),
                        std::move(fds));
  StartedChild started =
      start_not_forked(pool_worker_identity(method, options.on_demand), method, &call);
  Zygote z;
  z.pid = started.pid;
  z.socket = std::move(ours);
  return z;
}

}  // namespace mpx::detail
