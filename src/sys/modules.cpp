// Function identity across processes that are not forks of each other: the module
// tables of mpx/detail/function_id.hpp (dl_iterate_phdr, GNU build ids).
#include <elf.h>
#include <link.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mpx/detail/function_id.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

namespace {

struct Module {
  std::uint64_t base = 0;  // load bias (dlpi_addr)
  std::uint64_t lo = 0;    // its PT_LOAD segments span [lo, hi), absolute
  std::uint64_t hi = 0;
  std::string id;    // "b:<build id hex>", or "f:<size>:<mtime>" without one
  std::string name;  // path ("" for the main executable in dl_iterate_phdr)
};

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(kDigits[p[i] >> 4]);
    s.push_back(kDigits[p[i] & 15]);
  }
  return s;
}

// The GNU build id among a module's notes, or "".
std::string build_id(const dl_phdr_info& info) {
  for (int i = 0; i < info.dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info.dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    auto* p = reinterpret_cast<const unsigned char*>(info.dlpi_addr + ph.p_vaddr);
    const unsigned char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const unsigned char* name = p + sizeof nh;
      const unsigned char* desc = name + ((nh.n_namesz + 3) & ~3u);
      const unsigned char* next = desc + ((nh.n_descsz + 3) & ~3u);
      if (next > end) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return hex(desc, nh.n_descsz);
      p = next;
    }
  }
  return {};
}

std::string self_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
}

std::vector<Module> loaded_modules() {
  std::vector<Module> out;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& mods = *static_cast<std::vector<Module>*>(data);
        Module m;
        m.base = info->dlpi_addr;
        bool any = false;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          const std::uint64_t lo = info->dlpi_addr + ph.p_vaddr;
          const std::uint64_t hi = lo + ph.p_memsz;
          m.lo = any ? std::min(m.lo, lo) : lo;
          m.hi = any ? std::max(m.hi, hi) : hi;
          any = true;
        }
        if (!any) return 0;
        m.name = info->dlpi_name ? info->dlpi_name : "";
        if (mods.empty() && m.name.empty()) m.name = self_path();  // the main executable
        std::string bid = build_id(*info);
        if (!bid.empty()) {
          m.id = "b:" + bid;
        } else {
          struct stat st {};
          if (!m.name.empty() && ::stat(m.name.c_str(), &st) == 0)
            m.id = "f:" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
                   "." + std::to_string(st.st_mtim.tv_nsec);
          else
            m.id = "n:" + m.name;
        }
        mods.push_back(std::move(m));
        return 0;
      },
      &out);
  return out;
}

void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
  const std::size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}
void put_str(std::vector<std::byte>& out, const std::string& s) {
  put_u64(out, s.size());
  const std::size_t at = out.size();
  out.resize(at + s.size());
  if (!s.empty()) std::memcpy(out.data() + at, s.data(), s.size());
}
std::uint64_t take_u64(std::span<const std::byte>& in) {
  std::uint64_t v;
  if (in.size() < sizeof v) throw DecodeError("truncated module table");
  std::memcpy(&v, in.data(), sizeof v);
  in = in.subspan(sizeof v);
  return v;
}
std::string take_str(std::span<const std::byte>& in) {
  const std::uint64_t n = take_u64(in);
  if (n > in.size()) throw DecodeError("truncated module table");
  std::string s(reinterpret_cast<const char*>(in.data()), static_cast<std::size_t>(n));
  in = in.subspan(static_cast<std::size_t>(n));
  return s;
}

// A range of the peer's addresses and how far its module lies from ours (or that it is
// not loaded here).
struct Range {
  std::uint64_t lo, hi;
  std::uint64_t delta;  // local = peer + delta (mod 2^64)
  bool loaded;
  std::string name;
};
struct PeerMap {
  std::vector<Range> ranges;  // sorted by lo
};

std::atomic<const PeerMap*> g_peer{nullptr};

}  // namespace

std::vector<std::byte> encode_module_table() {
  std::vector<std::byte> out;
  const auto mods = loaded_modules();
  put_u64(out, mods.size());
  for (const auto& m : mods) {
    put_u64(out, m.base);
    put_u64(out, m.lo);
    put_u64(out, m.hi);
    put_str(out, m.id);
    put_str(out, m.name);
  }
  return out;
}

void adopt_module_table(std::span<const std::byte> table) {
  const std::uint64_t n = take_u64(table);
  if (n > table.size() / (3 * sizeof(std::uint64_t))) throw DecodeError("malformed module table");
  const auto mine = loaded_modules();
  auto map = std::make_unique<PeerMap>();
  for (std::uint64_t k = 0; k < n; ++k) {
    Module peer;
    peer.base = take_u64(table);
    peer.lo = take_u64(table);
    peer.hi = take_u64(table);
    peer.id = take_str(table);
    peer.name = take_str(table);
    if (peer.hi < peer.lo) throw DecodeError("malformed module table");
    auto same =
        std::find_if(mine.begin(), mine.end(), [&](const Module& m) { return m.id == peer.id; });
    if (k == 0 && (same == mine.end() || same != mine.begin())) {
      throw ProcessError("mpx: this process runs " +
                         (mine.empty() ? std::string("an unknown program") : mine.front().name) +
                         " (" + (mine.empty() ? std::string() : mine.front().id) +
                         ") but its peer runs " + peer.name + " (" + peer.id +
                         "): the binary changed on disk or differs between hosts; start both "
                         "from the same build");
    }
    map->ranges.push_back({peer.lo, peer.hi, same == mine.end() ? 0 : same->base - peer.base,
                           same != mine.end(), peer.name});
  }
  std::sort(map->ranges.begin(), map->ranges.end(),
            [](const Range& a, const Range& b) { return a.lo < b.lo; });
  // Replaced at most once per process (at start-up); an older map stays valid for a
  // reader that loaded it: it is kept, not freed.
  static std::vector<std::unique_ptr<PeerMap>> keep;
  g_peer.store(map.get(), std::memory_order_release);
  keep.push_back(std::move(map));
}

void forget_module_table() noexcept {
  g_peer.store(nullptr, std::memory_order_release);  // an adopted map is kept (see above)
}

std::uintptr_t local_address(std::uint64_t peer_address) {
  const PeerMap* map = g_peer.load(std::memory_order_acquire);
  if (!map) return static_cast<std::uintptr_t>(peer_address);
  const auto& r = map->ranges;
  auto it = std::upper_bound(r.begin(), r.end(), peer_address,
                             [](std::uint64_t a, const Range& x) { return a < x.lo; });
  if (it == r.begin() || peer_address >= std::prev(it)->hi) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(peer_address));
    throw ProcessError(std::string("mpx: the function at ") + buf +
                       " of the sending process is in none of its loaded modules");
  }
  const Range& m = *std::prev(it);
  if (!m.loaded)
    throw ProcessError("mpx: the function sent lives in " + m.name +
                       ", which this process has not loaded (load it before mpx::init, or "
                       "link it into the program)");
  return static_cast<std::uintptr_t>(peer_address + m.delta);
}

std::string executable_identity() {
  const auto mods = loaded_modules();
  if (mods.empty()) return "unknown program";
  return mods.front().name + " (" + mods.front().id + ")";
}

}  // namespace mpx::detail
