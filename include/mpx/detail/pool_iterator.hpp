// mpx/detail/pool_iterator.hpp — the range-for iterator over results pulled one at a
// time: imap's IMapIterator and as_completed's AsCompleted. Not public API.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>
#include <type_traits>

namespace mpx::detail {

// An input iterator over source->next() (a std::optional<T>), which ends at the first
// nullopt. `Ref` is what *it gives: T& where the loop may move the value out (imap's
// results), const T& where it is a shared handle (as_completed's futures).
// Blocks and throws where next() does: at begin() and at each ++.
template <class Source, class Ref>
class PullIterator {
 public:
  using value_type = std::remove_cvref_t<Ref>;
  using difference_type = std::ptrdiff_t;
  PullIterator() = default;
  explicit PullIterator(Source* source) : source_(source) { ++*this; }
  Ref operator*() const { return *current_; }
  std::add_pointer_t<Ref> operator->() const { return &*current_; }
  PullIterator& operator++() {
    current_ = source_->next();
    if (!current_) source_ = nullptr;
    return *this;
  }
  void operator++(int) { ++*this; }
  friend bool operator==(const PullIterator& it, std::default_sentinel_t) { return !it.source_; }

 private:
  Source* source_ = nullptr;
  mutable std::optional<value_type> current_;  // mutable: *it may give T& on a const it
};

}  // namespace mpx::detail
