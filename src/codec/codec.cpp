// The codec's cold paths: the tag -> name registry and the DecodeError messages.
#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>

#include "mpx/codec.hpp"

namespace mpx::detail {

namespace {

struct Registry {
  std::mutex mutex;
  std::unordered_map<std::uint64_t, NameFn> names;
};

// Never destroyed: a decode error during static destruction must still find names.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::string hex_tag(std::uint64_t tag) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, tag);
  return buf;
}

}  // namespace

void register_type(std::uint64_t tag, NameFn name) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.names.emplace(tag, name);
}

std::string describe_tag(std::uint64_t tag) {
  NameFn name = nullptr;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.names.find(tag);
    if (it != r.names.end()) name = it->second;
  }
  if (name == nullptr) return "<unregistered type " + hex_tag(tag) + ">";
  return name();
}

void throw_decode_error(NameFn target, std::size_t offset, std::string_view what) {
  throw DecodeError("mpx::decode<" + target() + ">: " + std::string(what) + " (at byte " +
                    std::to_string(offset) + ")");
}

void throw_type_mismatch(NameFn target, std::uint64_t expected, std::uint64_t found) {
  throw DecodeError("mpx::decode<" + target() +
                    ">: type mismatch: the message holds a value of type " + describe_tag(found) +
                    ", not " + target() + " (type tag " + hex_tag(found) + ", expected " +
                    hex_tag(expected) + ")");
}

void throw_truncated(NameFn target, std::size_t offset, std::size_t needed, std::size_t left) {
  throw DecodeError("mpx::decode<" + target() + ">: truncated message: " + std::to_string(needed) +
                    " bytes needed at byte " + std::to_string(offset) + ", " +
                    std::to_string(left) + " left");
}

void throw_bad_count(NameFn target, std::size_t offset, std::uint64_t count, std::size_t left) {
  throw DecodeError("mpx::decode<" + target() + ">: truncated or corrupt message: a count of " +
                    std::to_string(count) + " at byte " + std::to_string(offset) +
                    " cannot fit in the " + std::to_string(left) + " bytes left");
}

}  // namespace mpx::detail
