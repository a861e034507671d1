#include "sys/utf8.hpp"

namespace mpx::sys {

Utf8Step utf8_step(std::string_view s) noexcept {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {1, nullptr};
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, "invalid start byte"};
  }
  for (std::size_t i = 1; i < len; ++i) {
    if (i >= s.size()) return {0, nullptr};
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
      return {0, "invalid continuation byte"};
  }
  return {len, nullptr};
}

bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Step step = utf8_step(s.substr(i));
    if (step.length == 0) return false;
    i += step.length;
  }
  return true;
}

}  // namespace mpx::sys
