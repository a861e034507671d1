// src/pool/state_memory.hpp — the memory a pool's futures live in.
//
// A burst of submits makes thousands of future states at once. From the heap, each
// 4 KiB of them is a fresh page and one page fault: about 10 us in the virtual machines
// mpx is measured on, where faulting in a 2 MiB huge page costs 40 times less per byte
// (10 000 Future<int>: 4.4 ms of faults, or 0.15 ms). A pool's StateMemory serves them
// (and the nodes of the pool's queue of pending tasks) from a pool allocator
// (std::pmr::unsynchronized_pool_resource, under a mutex) whose chunks come from one
// small region and then from 2 MiB transparent huge pages: one fault per 2 MiB, and a
// freed state's block is the next one's. A pool that makes few futures at a time never
// touches more than the small region.
//
// Lifetime: a future may outlive its pool. The pool gives its StateMemory up
// (release_owner()); the StateMemory deletes itself, regions and all, once no block is
// allocated either. Until then the memory stays reserved for the pool's futures (as
// much as were alive at once), not returned to the system.
//
// A freed block of a small size waits in a one-block cache of its size (an atomic
// pointer: no mutex) for the next allocation of that size: a loop of
// apply_async(...).get() frees a state and allocates the next on the caller's path,
// and took the mutex and the pool resource for each. The owner's release closes the
// cache (later frees take the mutex) and frees what it held.
//
// Fork: a fork() while another thread is inside a StateMemory would leave its mutex
// locked in the child forever. A pthread_atfork handler takes every StateMemory's mutex
// before the fork and releases them after, in parent and child alike.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <vector>

#include "sys/mapping.hpp"

namespace mpx::detail {

class StateMemory final : public std::pmr::memory_resource {
 public:
  // Blocks larger than this come from operator new (never pooled).
  static constexpr std::size_t kLargestPooled = 512;

  static StateMemory* create();
  // The owner is gone: deletes the memory now, or once the last block is freed.
  void release_owner() noexcept;

  // Blocks allocated and not yet freed, and bytes of regions mapped (tests).
  std::size_t live() const;
  std::size_t reserved() const;

 private:
  // The pool's upstream: bump allocation from regions, freed all at once when the
  // StateMemory goes (the pool resource returns nothing earlier anyway).
  class Regions final : public std::pmr::memory_resource {
   public:
    Regions() = default;
    Regions(const Regions&) = delete;
    Regions& operator=(const Regions&) = delete;
    ~Regions() override;
    std::size_t reserved() const noexcept;

   private:
    void* do_allocate(std::size_t bytes, std::size_t alignment) override;
    void do_deallocate(void*, std::size_t, std::size_t) override {}
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
      return this == &other;
    }
    std::vector<sys::Mapping> regions_;
    std::byte* next_ = nullptr;
    std::byte* end_ = nullptr;
  };

  StateMemory();
  ~StateMemory() override;
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  // The cache of freed blocks: one per size up to kCachedLargest, a multiple of 8 bytes
  // (nullptr: none for that request). A slot holds nullptr, a block, or closed(). Sizes
  // from the largest alignment served on: the pool resource then finds a block's pool
  // from its size alone (release_owner() frees cached blocks without their alignment).
  static constexpr std::size_t kCachedLargest = 512;
  std::atomic<void*>* cache_slot(std::size_t bytes, std::size_t alignment) noexcept {
    if (bytes < alignof(std::max_align_t) || bytes % 8 != 0 || bytes > kCachedLargest ||
        alignment > alignof(std::max_align_t))
      return nullptr;
    return &cached_[bytes / 8];
  }
  static void* closed() noexcept;
  std::size_t cached_count() const noexcept;

  friend struct ForkGuard;
  mutable std::mutex mutex_;
  Regions regions_;                              // under mutex_
  std::pmr::unsynchronized_pool_resource pool_;  // under mutex_
  std::size_t live_ = 0;                         // under mutex_; cached blocks too
  std::atomic<void*> cached_[kCachedLargest / 8 + 1] = {};
  bool owned_ = true;            // under mutex_
  StateMemory* prev_ = nullptr;  // the list of all, under the list's mutex
  StateMemory* next_ = nullptr;
};

// Engine's handle: gives the memory up when the engine goes.
struct ReleaseStateMemory {
  void operator()(StateMemory* memory) const noexcept { memory->release_owner(); }
};
using StateMemoryHandle = std::unique_ptr<StateMemory, ReleaseStateMemory>;

}  // namespace mpx::detail
