// The memory a pool's futures live in: see src/pool/state_memory.hpp.
#include "pool/state_memory.hpp"

#include <pthread.h>
#include <sanitizer/asan_interface.h>  // no-ops unless built with AddressSanitizer

#include <cstdint>
#include <memory>
#include <new>

#include "sys/atfork.hpp"

namespace mpx::detail {

namespace {

// The first region, small: a pool that makes few futures at a time stays in it. The
// next ones are huge pages.
constexpr std::size_t kFirstRegion = std::size_t{64} << 10;

// Chunks of at most this many blocks (of 192 bytes for a Future<int>'s state: 1.5 MiB).
constexpr std::size_t kMaxBlocksPerChunk = 8192;

// Every StateMemory alive, for the fork handlers.
std::mutex g_all_mutex;
StateMemory* g_all = nullptr;  // under g_all_mutex
std::once_flag g_fork_handlers;

}  // namespace

struct ForkGuard {
  // Before fork(): no StateMemory is in use by another thread while the process is
  // copied. Order: the list, then each one (a StateMemory that frees itself releases its
  // own mutex before it takes the list's).
  static void prepare() noexcept {
    g_all_mutex.lock();
    for (StateMemory* m = g_all; m != nullptr; m = m->next_)
      m->mutex_.lock();
  }
  // After fork(), in the parent and in the child (where the thread that took the locks
  // is the one thread left).
  static void release() noexcept {
    for (StateMemory* m = g_all; m != nullptr; m = m->next_)
      m->mutex_.unlock();
    g_all_mutex.unlock();
  }
};

StateMemory::StateMemory()
    : pool_(std::pmr::pool_options{kMaxBlocksPerChunk, kLargestPooled}, &regions_) {
  std::call_once(g_fork_handlers, [] {
    sys::atfork(&ForkGuard::prepare, &ForkGuard::release, &ForkGuard::release);
  });
  std::lock_guard lock(g_all_mutex);
  next_ = g_all;
  if (g_all != nullptr) g_all->prev_ = this;
  g_all = this;
}

StateMemory::~StateMemory() {
  std::lock_guard lock(g_all_mutex);
  if (prev_ != nullptr) {
    prev_->next_ = next_;
  } else {
    g_all = next_;
  }
  if (next_ != nullptr) next_->prev_ = prev_;
}

StateMemory* StateMemory::create() {
  return new StateMemory();
}

void StateMemory::release_owner() noexcept {
  bool unused = false;
  {
    std::lock_guard lock(mutex_);
    owned_ = false;
    // Closed: a block freed from now on takes the mutex (and may be the last).
    for (std::size_t k = 0; k < std::size(cached_); ++k) {
      void* p = cached_[k].exchange(closed(), std::memory_order_acq_rel);
      if (p != nullptr && p != closed()) {
        pool_.deallocate(p, k * 8, alignof(std::max_align_t));
        --live_;
      }
    }
    unused = live_ == 0;
  }
  if (unused) delete this;
}

std::size_t StateMemory::live() const {
  std::lock_guard lock(mutex_);
  return live_ - cached_count();
}

void* StateMemory::closed() noexcept {
  static char tag;
  return &tag;
}

std::size_t StateMemory::cached_count() const noexcept {
  std::size_t n = 0;
  for (const auto& slot : cached_) {
    void* p = slot.load(std::memory_order_relaxed);
    if (p != nullptr && p != closed()) ++n;
  }
  return n;
}

std::size_t StateMemory::reserved() const {
  std::lock_guard lock(mutex_);
  return regions_.reserved();
}

StateMemory::Regions::~Regions() {
  // Unmapped below; AddressSanitizer must not see poison in what is mapped there next.
  for (const sys::Mapping& m : regions_)
    ASAN_UNPOISON_MEMORY_REGION(m.data(), m.size());
}

std::size_t StateMemory::Regions::reserved() const noexcept {
  std::size_t bytes = 0;
  for (const sys::Mapping& m : regions_)
    bytes += m.size();
  return bytes;
}

void* StateMemory::do_allocate(std::size_t bytes, std::size_t alignment) {
  // The owner allocates, never after its release: the cache is open (but see closed()).
  if (std::atomic<void*>* slot = cache_slot(bytes, alignment);
      slot != nullptr && slot->load(std::memory_order_relaxed) != nullptr) {
    void* p = slot->exchange(nullptr, std::memory_order_acquire);
    if (p == closed()) {
      slot->store(p, std::memory_order_relaxed);
    } else if (p != nullptr) {
      ASAN_UNPOISON_MEMORY_REGION(p, bytes);
      return p;  // counted in live_ still
    }
  }
  std::lock_guard lock(mutex_);
  void* p = nullptr;
  if (bytes > kLargestPooled) {
    p = ::operator new (bytes, std::align_val_t{alignment});
  } else {
    p = pool_.allocate(bytes, alignment);
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
  }
  ++live_;
  return p;
}

void StateMemory::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  // Into the cache if its slot is empty (neither full nor closed). The last touch of
  // this object: once cached, the block is the owner's release's to free.
  if (std::atomic<void*>* slot = cache_slot(bytes, alignment); slot != nullptr) {
    ASAN_POISON_MEMORY_REGION(p, bytes);
    void* empty = nullptr;
    if (slot->compare_exchange_strong(empty, p, std::memory_order_release,
                                      std::memory_order_relaxed))
      return;
  }
  bool last = false;
  {
    std::lock_guard lock(mutex_);
    if (bytes > kLargestPooled) {
      ::operator delete (p, std::align_val_t{alignment});
    } else {
      // A freed block is poisoned: AddressSanitizer still sees a use after free of a
      // future's state (the pool resource keeps its bookkeeping outside the blocks).
      ASAN_POISON_MEMORY_REGION(p, bytes);
      pool_.deallocate(p, bytes, alignment);
    }
    last = --live_ == 0 && !owned_;
  }
  if (last) delete this;
}

void* StateMemory::Regions::do_allocate(std::size_t bytes, std::size_t alignment) {
  void* p = next_;
  std::size_t room = static_cast<std::size_t>(end_ - next_);
  if (p == nullptr || std::align(alignment, bytes, p, room) == nullptr) {
    // Mappings are page-aligned; room for a larger alignment too.
    const std::size_t need = bytes + (alignment > 4096 ? alignment : 0);
    const bool small = regions_.empty() && need <= kFirstRegion;
    regions_.push_back(sys::map_anonymous_private(small ? kFirstRegion : need, !small));
    p = regions_.back().data();
    room = regions_.back().size();
    std::align(alignment, bytes, p, room);  // fits: `need` has room for the alignment
    end_ = regions_.back().bytes() + regions_.back().size();
  }
  next_ = static_cast<std::byte*>(p) + bytes;
  return p;
}

}  // namespace mpx::detail
