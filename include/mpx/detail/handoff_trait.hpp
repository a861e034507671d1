// mpx/detail/handoff_trait.hpp — how an mpx object reaches a child that is not a fork
// (spawn, forkserver): its file descriptors travel by SCM_RIGHTS, a few bytes with them.
// Not public API. An object type that can travel specialises Handoff<T> next to its
// definition:
//   static void save(const T&, HandoffWriter&);  // in the parent, at start()
//   static T load(HandoffReader&);               // in the child, before its target runs
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>
#include <vector>

namespace mpx::detail {

// The sender's side: fds it keeps open until they are sent, and bytes.
struct HandoffWriter {
  std::vector<std::byte>& bytes;
  std::vector<int>& fds;
  void put_fd(int fd) {
    const std::size_t index = fds.size();
    fds.push_back(fd);
    put(&index, sizeof index);
  }
  void put(const void* p, std::size_t n) {
    const std::size_t at = bytes.size();
    bytes.resize(at + n);
    std::memcpy(bytes.data() + at, p, n);
  }
};

// The receiver's side: the fds received (each taken once; those left are closed by the
// receiver) and the bytes.
struct HandoffReader {
  std::span<const std::byte>& bytes;
  std::vector<int>& fds;
  // The fd put_fd sent, now owned by the caller.
  int take_fd() {
    std::size_t index = 0;
    get(&index, sizeof index);
    if (index >= fds.size() || fds[index] < 0)
      throw std::runtime_error("mpx: a handed-off object names an fd that did not arrive");
    const int fd = fds[index];
    fds[index] = -1;
    return fd;
  }
  void get(void* p, std::size_t n) {
    if (bytes.size() < n) throw std::runtime_error("mpx: a handed-off object is truncated");
    std::memcpy(p, bytes.data(), n);
    bytes = bytes.subspan(n);
  }
};

template <class T>
struct Handoff;  // undefined: T cannot be handed to a child that is not a fork

template <class T>
concept HandedOff = requires(const T& t, HandoffWriter& w, HandoffReader& r) {
  Handoff<T>::save(t, w);
  { Handoff<T>::load(r) } -> std::same_as<T>;
};

}  // namespace mpx::detail
