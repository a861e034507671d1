// mpx/detail/pool_iterator.hpp — the range-for iterator over results pulled one at a
// time (imap's IMapIterator and as_completed's AsCompleted), and the zip of several
// ranges that map takes its arguments from. Not public API.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

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

// The elements of several views taken in parallel, as tuples, until the shortest ends
// (std::views::zip is C++23).
template <class... Views>
class ZipView {
 public:
  explicit ZipView(Views... views) : views_(std::move(views)...) {}

  class iterator {
   public:
    using value_type = std::tuple<std::ranges::range_value_t<Views>...>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(ZipView* owner, std::tuple<std::ranges::iterator_t<Views>...> its)
        : owner_(owner), its_(std::move(its)) {}
    value_type operator*() const {
      return std::apply([](const auto&... it) { return value_type(*it...); }, its_);
    }
    iterator& operator++() {
      std::apply([](auto&... it) { (++it, ...); }, its_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return ((std::get<I>(it.its_) == it.owner_->template view_end<I>()) || ...);
      }
      (std::index_sequence_for<Views...>());
    }

   private:
    ZipView* owner_ = nullptr;
    std::tuple<std::ranges::iterator_t<Views>...> its_;
  };

  template <std::size_t I>
  auto view_end() {
    return std::ranges::end(std::get<I>(views_));
  }
  iterator begin() {
    return iterator(
        this, std::apply([](auto&... v) { return std::tuple(std::ranges::begin(v)...); }, views_));
  }
  std::default_sentinel_t end() { return {}; }

 private:
  std::tuple<Views...> views_;
};

}  // namespace mpx::detail
