// mpx/detail/pool_progress.hpp — mpx::progress(), a tqdm-like bar over an iterable
// (included by mpx/futures.hpp; this file is not a public header of its own).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <iterator>
#include <string>
#include <type_traits>
#include <utility>

namespace mpx {

// The range progress() returns: the elements of the wrapped iterable, unchanged.
template <class Iterable>
class Progress {
 public:
  Progress(Iterable&& iterable, std::size_t total, bool draw)
      : iterable_(std::forward<Iterable>(iterable)), total_(total), draw_(draw) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() {
    if (draw_ && drawn_) {
      render(true);
      std::fputc('\n', stderr);
    }
  }

  class iterator {
   public:
    using Inner = decltype(std::begin(std::declval<std::remove_reference_t<Iterable>&>()));
    using difference_type = std::ptrdiff_t;
    using value_type = std::remove_cvref_t<decltype(*std::declval<Inner&>())>;
    iterator(Progress* owner, Inner inner) : owner_(owner), inner_(std::move(inner)) {}
    decltype(auto) operator*() { return *inner_; }
    iterator& operator++() {
      ++inner_;
      owner_->step();
      return *this;
    }
    void operator++(int) { ++*this; }
    template <class Sentinel>
    friend bool operator==(const iterator& it, const Sentinel& end) {
      return it.inner_ == end;
    }

   private:
    Progress* owner_;
    Inner inner_;
  };

  auto begin() {
    start_ = std::chrono::steady_clock::now();
    if (draw_) render(false);
    return iterator(this, std::begin(iterable_));
  }
  auto end() { return std::end(iterable_); }
  std::size_t count() const noexcept { return count_; }

 private:
  void step() {
    ++count_;
    if (!draw_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ >= std::chrono::milliseconds(100) || count_ == total_) render(false);
  }

  void render(bool final) {
    auto now = std::chrono::steady_clock::now();
    last_ = now;
    drawn_ = true;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(count_) / secs : 0.0;
    char line[160];
    if (total_ > 0) {
      constexpr int kWidth = 30;
      std::size_t shown = count_ > total_ ? total_ : count_;
      int filled = static_cast<int>(kWidth * shown / total_);
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.resize(kWidth, '-');
      double eta = rate > 0 ? static_cast<double>(total_ - shown) / rate : 0.0;
      std::snprintf(line, sizeof line, "\r%3d%% |%s| %zu/%zu [%.1fs, %.1f it/s, eta %.1fs]",
                    static_cast<int>(100 * shown / total_), bar.c_str(), count_, total_, secs, rate,
                    eta);
    } else {
      std::snprintf(line, sizeof line, "\r%zu it [%.1fs, %.1f it/s]", count_, secs, rate);
    }
    std::fputs(line, stderr);
    if (final) std::fflush(stderr);
  }

  Iterable iterable_;
  std::size_t total_;
  bool draw_;
  bool drawn_ = false;
  std::size_t count_ = 0;
  std::chrono::steady_clock::time_point start_{};
  std::chrono::steady_clock::time_point last_{};
};

// Wraps an iterable (imap, imap_unordered, as_completed, Executor::map, any range) to
// draw a progress bar on stderr (count, percentage, rate, ETA) as it is consumed, when
// stderr is a terminal; silent otherwise. total 0: unknown (count and rate only).
// An lvalue iterable is referenced (keep it alive); an rvalue one is moved in.
//
//   for (int r : mpx::progress(pool.imap(work, jobs), jobs.size())) use(r);
template <class Iterable>
Progress<Iterable> progress(Iterable&& iterable, std::size_t total = 0) {
  return Progress<Iterable>(std::forward<Iterable>(iterable), total, ::isatty(2) == 1);
}

}  // namespace mpx
