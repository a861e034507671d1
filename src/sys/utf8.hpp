// src/sys/utf8.hpp — UTF-8 validation, as Python's 'utf-8' codec checks it (strict: no
// overlong forms, no surrogates, nothing past U+10FFFF). Used by subprocess's text mode
// and by ShareableList's str items.
#pragma once

#include <cstddef>
#include <string_view>

namespace mpx::sys {

// One step over the sequence starting at s[0] (s not empty). `length`: its length when
// s holds all of it and it is valid; 0 when `error` says why it is invalid, or, with no
// error, when s ends inside a sequence that is valid so far.
struct Utf8Step {
  std::size_t length = 0;
  const char* error = nullptr;  // "invalid start byte" or "invalid continuation byte"
};
Utf8Step utf8_step(std::string_view s) noexcept;

// Whether all of `s` is valid UTF-8.
bool valid_utf8(std::string_view s) noexcept;

}  // namespace mpx::sys
