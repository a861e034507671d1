// SharedMemoryManager: its server's record of the blocks it made (Python's
// SharedMemoryServer and SharedMemoryTracker), a named object of every such manager.
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mpx/managers.hpp"

namespace mpx {

namespace {

constexpr const char* kSegments = "mpx.SharedMemoryTracker";

// Server side. Each block is made by the server's SharedMemory::create, so the server's
// resource tracker holds its name from the first moment and unlinks it should the
// server die; an orderly end of the server unlinks them here (the object lives as long
// as the server: it is a named one).
struct SegmentsObject {
  std::mutex mu;
  std::vector<mpx::SharedMemory> blocks;  // closed: only their names and tracking are kept

  SegmentsObject() = default;
  SegmentsObject(const SegmentsObject&) = delete;
  SegmentsObject& operator=(const SegmentsObject&) = delete;
  ~SegmentsObject() {
    for (mpx::SharedMemory& block : blocks) {
      try {
        block.unlink();
      } catch (const std::exception&) {  // a user unlinked it already
      }
    }
  }

  std::string create(std::uint64_t size) {
    mpx::SharedMemory block = mpx::SharedMemory::create(static_cast<std::size_t>(size));
    block.close();
    std::string name = block.name();
    std::lock_guard lock(mu);
    blocks.push_back(std::move(block));
    return name;
  }
};

class SegmentsProxy : public BaseProxy {
 public:
  static std::string type_id() { return kSegments; }
  static Bytes make_args() { return encode(std::tuple<>()); }
  static inline const bool registered = detail::register_builtin<SegmentsObject>(
      type_id(), detail::maker<SegmentsObject>(),
      {{"create", detail::method(&SegmentsObject::create)}});
  explicit SegmentsProxy(BaseProxy base) : BaseProxy(std::move(base)) {}
};

}  // namespace

SharedMemoryManager::SharedMemoryManager(std::string address, std::optional<std::string> authkey,
                                         std::string family)
    : BaseManager(std::move(address), std::move(authkey), std::move(family)) {
  register_<SegmentsProxy>(kSegments);
}

mpx::SharedMemory SharedMemoryManager::SharedMemory(std::size_t size) {
  const std::string name =
      get<SegmentsProxy>(kSegments).call<std::string>("create", std::uint64_t{size});
  return mpx::SharedMemory::open(name);
}

mpx::ShareableList SharedMemoryManager::ShareableList(
    std::span<const mpx::ShareableList::Item> items) {
  const std::size_t size = mpx::ShareableList::block_size(items);
  return mpx::ShareableList::make_in(SharedMemory(size), items);
}

mpx::ShareableList SharedMemoryManager::ShareableList(
    std::initializer_list<mpx::ShareableList::Item> items) {
  return ShareableList(std::span<const mpx::ShareableList::Item>(items.begin(), items.size()));
}

}  // namespace mpx
