// The MPI job: init (the same binary on every rank, or a clear error), the sends and
// receives of the one communication thread, and the loop of every rank but the driver
// (serve), which runs each of the driver's pools in a Server (src/mpi/server.cpp).
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

#include "mpi/wire.hpp"
#include "mpx/context.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/mpi.hpp"

namespace mpx::mpi {

namespace detail {

namespace {
int g_rank = 0;
int g_size = 1;
bool g_initialized = false;
pid_t g_driver_pid = 0;
std::vector<std::string> g_hosts;  // by rank (rank 0); this rank's alone elsewhere
// Ranks but the driver: the driver's module table (adopted: the addresses in its tasks
// are the driver's), handed on to the pools' workers, forked or spawned.
ByteVector g_driver_table;

// A rank or size from the launcher's environment (Open MPI's, else MPICH's), or `none`.
int from_environment(const char* open_mpi, const char* mpich, int none) {
  const char* v = std::getenv(open_mpi);
  if (!v) v = std::getenv(mpich);
  if (!v) return none;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end != v && *end == '\0' && n >= 0 && n <= INT_MAX ? static_cast<int>(n) : none;
}

int count_of(std::size_t n) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw ValueError("mpx: a message between MPI ranks over 2 GiB (a task's arguments or result)");
  return static_cast<int>(n);
}

void at_exit() {
  if (::getpid() != g_driver_pid) return;  // a forked child that called exit()
  stop_driver();
  MPI_Finalize();
}

// Rank 0's module table to every rank, which adopts it; rank 0 hears what failed where.
std::string check_same_binary() {
  ByteVector table;
  if (g_rank == 0) table = mpx::detail::encode_module_table();
  unsigned long long n = table.size();
  MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  table.resize(static_cast<std::size_t>(n));
  MPI_Bcast(table.data(), count_of(table.size()), MPI_BYTE, 0, MPI_COMM_WORLD);
  std::string error;
  if (g_rank != 0) {
    try {
      mpx::detail::adopt_module_table(table);
      g_driver_table = table;
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int name_len = 0;
  MPI_Get_processor_name(name, &name_len);
  std::string mine = std::string(name, static_cast<std::size_t>(name_len)) + '\0' + error;
  int len = count_of(mine.size());
  std::vector<int> lens(static_cast<std::size_t>(g_size)), offsets(lens.size());
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string all;
  if (g_rank == 0) {
    std::size_t total = 0;
    for (std::size_t k = 0; k < lens.size(); ++k) {
      offsets[k] = count_of(total);
      total += static_cast<std::size_t>(lens[k]);
    }
    all.resize(total);
  }
  MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::string verdict;
  if (g_rank == 0) {
    for (std::size_t k = 0; k < lens.size(); ++k) {
      std::string entry =
          all.substr(static_cast<std::size_t>(offsets[k]), static_cast<std::size_t>(lens[k]));
      const std::size_t cut = entry.find('\0');
      g_hosts.push_back(entry.substr(0, cut));
      std::string why = entry.substr(cut + 1);
      if (!why.empty())
        verdict += (verdict.empty() ? "" : "; ") + std::string("rank ") + std::to_string(k) +
                   " on " + g_hosts.back() + ": " + why;
    }
  } else {
    g_hosts.assign(static_cast<std::size_t>(g_rank) + 1, std::string());
    g_hosts.back() = std::string(name, static_cast<std::size_t>(name_len));
  }
  int bad = verdict.empty() ? 0 : 1;
  MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (bad && g_rank != 0) verdict = "another rank runs another binary";
  return verdict;
}
}  // namespace

int my_rank() noexcept {
  return g_rank;
}
int ranks() noexcept {
  return g_size;
}
bool initialized() noexcept {
  return g_initialized;
}

struct Sender::Pending {
  ByteVector bytes;
  MPI_Request request = MPI_REQUEST_NULL;
};

Sender::Sender() = default;
Sender::~Sender() = default;

void Sender::send(int rank, Kind kind, ByteVector message) {
  auto p = std::make_unique<Pending>();
  p->bytes = std::move(message);
  MPI_Isend(p->bytes.data(), count_of(p->bytes.size()), MPI_BYTE, rank, kind, MPI_COMM_WORLD,
            &p->request);
  sends_.push_back(std::move(p));
}

bool Sender::progress() {
  bool any = false;
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    MPI_Test(&(*it)->request, &done, MPI_STATUS_IGNORE);
    if (done) {
      it = sends_.erase(it);
      any = true;
    } else {
      ++it;
    }
  }
  return any;
}

void Sender::flush() {
  for (auto& p : sends_)
    MPI_Wait(&p->request, MPI_STATUS_IGNORE);
  sends_.clear();
}

std::optional<Message> poll_message() {
  int flag = 0;
  MPI_Status status;
  MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
  if (!flag) return std::nullopt;
  int n = 0;
  MPI_Get_count(&status, MPI_BYTE, &n);
  Message m;
  m.source = status.MPI_SOURCE;
  m.kind = static_cast<Kind>(status.MPI_TAG);
  m.bytes.resize(static_cast<std::size_t>(n));
  MPI_Recv(m.bytes.data(), n, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD,
           MPI_STATUS_IGNORE);
  return m;
}

StartMethod start_method_of(std::uint64_t value) {
  if (value > static_cast<std::uint64_t>(StartMethod::forkserver))
    throw ProcessError("mpx: the driver asked for an unknown start method");
  return static_cast<StartMethod>(value);
}

// ---------------------------------------------------------------------------------------
void serve() {
  Idle idle;
  Sender sender;
  std::map<std::uint64_t, std::unique_ptr<Server>> servers;
  auto reply = [&](Kind kind, std::uint64_t id, auto&&... more) {
    ByteVector out;
    put(out, id);
    (put(out, more), ...);
    sender.send(0, kind, std::move(out));
  };
  auto send_results = [&](std::uint64_t id, Server& s) {
    ByteVector out;
    put(out, id);
    if (!s.take_results(out)) return false;
    sender.send(0, kResults, std::move(out));
    return true;
  };
  for (;;) {
    bool did = false;
    while (auto m = poll_message()) {
      did = true;
      if (m->kind == kShutdown) {
        for (auto& [id, s] : servers) {
          s->terminate();
          s->join();
        }
        sender.flush();
        return;
      }
      Reader r(m->bytes);
      const std::uint64_t id = r.u64();
      if (m->kind == kOpen) {
        mpx::detail::EngineOptions o;
        o.workers = static_cast<std::size_t>(r.u64());
        o.maxtasksperchild = static_cast<std::size_t>(r.u64());
        const std::uint64_t timeout = r.u64();
        if (timeout != kNoTimeout) o.timeout = std::chrono::nanoseconds(timeout);
        const std::uint64_t init = r.u64();
        auto initargs = r.bytes();
        const std::uint64_t batch_entry = r.u64();
        const std::uint64_t method = r.u64();
        try {
          if (init)
            o.initializer = reinterpret_cast<mpx::detail::Entry>(mpx::detail::local_address(init));
          o.initargs.assign(initargs.begin(), initargs.end());
          o.start_method = start_method_of(method);
          o.task_modules = g_driver_table;
          auto s = std::make_unique<Server>(std::move(o), idle, batch_entry);
          reply(kOpened, id, std::uint64_t{s->workers()}, std::span<const std::byte>());
          servers[id] = std::move(s);
        } catch (const std::exception& e) {
          std::string what = e.what();
          reply(kOpened, id, std::uint64_t{0}, std::as_bytes(std::span(what)));
        }
        continue;
      }
      auto it = servers.find(id);
      if (it == servers.end()) continue;
      Server& s = *it->second;
      if (m->kind == kTasks) {
        s.submit(r);
      } else if (m->kind == kClose || m->kind == kTerminate) {
        if (m->kind == kClose) s.close();
        if (m->kind == kTerminate) s.terminate();
        s.join();
        send_results(id, s);
        reply(kClosed, id);
        servers.erase(it);
      }
    }
    for (auto& [id, s] : servers)
      did |= send_results(id, *s);
    did |= sender.progress();
    if (did) {
      idle.busy();
    } else {
      bool active = false;
      for (auto& [id, s] : servers)
        active = active || s->busy();
      idle.wait(active);
    }
  }
}

}  // namespace detail

void init(int& argc, char**& argv) {
  using namespace detail;
  if (g_initialized) return;
  // mpx::init's work first: a spawn or forkserver child of this program (the driver has
  // threads, so spawn is the start method it should use) runs its target there and
  // never reaches MPI_Init, which would take it for one more rank.
  mpx::init(argc, argv);
  // Open MPI installs handlers that print a backtrace for SIGSEGV and the like; the
  // ranks' pool workers would inherit them, and a task's crash is not the job's: the
  // handlers the program had are put back.
  constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  struct sigaction before[std::size(kSignals)];
  for (std::size_t k = 0; k < std::size(kSignals); ++k)
    ::sigaction(kSignals[k], nullptr, &before[k]);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  for (std::size_t k = 0; k < std::size(kSignals); ++k)
    ::sigaction(kSignals[k], &before[k], nullptr);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_initialized = true;
  std::string error = check_same_binary();
  if (!error.empty()) {
    MPI_Finalize();
    // The driver reports (a rank that exits non-zero makes mpirun kill the job at once,
    // perhaps before the driver said why).
    if (g_rank != 0) ::_exit(0);
    throw ProcessError("mpx::mpi::init: the ranks do not all run the same program: " + error);
  }
  if (g_rank != 0) {
    serve();
    MPI_Finalize();
    std::fflush(nullptr);
    ::_exit(0);
  }
  g_driver_pid = ::getpid();
  start_driver();
  std::atexit(at_exit);
}

void init() {
  int argc = 0;
  char** argv = nullptr;
  init(argc, argv);
}

int rank() noexcept {
  if (!detail::g_initialized)
    return detail::from_environment("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0);
  return detail::g_rank;
}
int size() noexcept {
  if (!detail::g_initialized)
    return detail::from_environment("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1);
  return detail::g_size;
}
std::string host(int rank) {
  if (rank < 0 || static_cast<std::size_t>(rank) >= detail::g_hosts.size()) return {};
  return detail::g_hosts[static_cast<std::size_t>(rank)];
}

}  // namespace mpx::mpi
