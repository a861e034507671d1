// mpx/detail/codec_cereal.hpp — the cereal archives the codec runs users' serialize()
// through (not API).
//
// The bytes are those of cereal's BinaryOutputArchive (fundamental types in host byte
// order, sizes as 64-bit integers), but the archives write straight into the message
// and read from a bounded span. cereal::BinaryInputArchive itself is not used for
// reading because it trusts the sizes it reads: a corrupt size makes it allocate that
// many elements (terabytes) before it notices the data is missing. This input archive
// checks every size against the bytes left, checks that a bool is 0 or 1, and limits
// nesting depth, so that hostile bytes give a DecodeError and nothing else.
#pragma once

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <cstdint>
#include <memory>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>

#include "mpx/detail/codec_wire.hpp"

namespace mpx::detail {

class CodecOutputArchive
    : public cereal::OutputArchive<CodecOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit CodecOutputArchive(Bytes& out)
      : cereal::OutputArchive<CodecOutputArchive, cereal::AllowEmptyClassElision>(this),
        writer_{out} {}
  void saveBinary(const void* data, std::size_t size) { writer_.put(data, size); }

 private:
  Writer writer_;
};

class CodecInputArchive
    : public cereal::InputArchive<CodecInputArchive, cereal::AllowEmptyClassElision> {
 public:
  // Deeper nesting than this (recursive user types) is rejected rather than risking the
  // stack; cereal counts several levels per nested object.
  static constexpr int kMaxDepth = 1000;

  explicit CodecInputArchive(Reader& reader)
      : cereal::InputArchive<CodecInputArchive, cereal::AllowEmptyClassElision>(this),
        reader_(reader) {}
  void loadBinary(void* data, std::size_t size) { reader_.copy(data, size); }
  Reader& reader() noexcept { return reader_; }

  void enter() {
    if (++depth_ > kMaxDepth) reader_.fail("nesting deeper than the decoder allows");
  }
  void leave() noexcept { --depth_; }

  // cereal loads a std::shared_ptr<T> that refers back to an object read earlier by
  // static_pointer_cast<T> of whatever was stored under the id the bytes name: hostile
  // bytes could name an object of another type. These hide cereal's members of the same
  // names (cereal calls them on this type) and check that the types agree; the type comes
  // from the prologue of the pointer being read.
  void expect_pointer_type(const std::type_info& type) noexcept { pointer_type_ = &type; }
  void registerSharedPointer(std::uint32_t id, std::shared_ptr<void> ptr) {
    pointer_types_[id & ~cereal::detail::msb_32bit] = pointer_type_;
    InputArchive::registerSharedPointer(id, std::move(ptr));
  }
  std::shared_ptr<void> getSharedPointer(std::uint32_t id) {
    if (id != 0) {
      const auto it = pointer_types_.find(id);
      if (it != pointer_types_.end() &&
          (it->second == nullptr || pointer_type_ == nullptr || *it->second != *pointer_type_)) {
        reader_.fail("a shared pointer that refers to an object of another type");
      }
    }
    return InputArchive::getSharedPointer(id);
  }

 private:
  Reader& reader_;
  int depth_ = 0;
  const std::type_info* pointer_type_ = nullptr;
  std::unordered_map<std::uint32_t, const std::type_info*> pointer_types_;
};

// Found by argument-dependent lookup from cereal's process(): a depth count around
// every value read.
template <class T>
void prologue(CodecInputArchive& ar, const T&) {
  ar.enter();
}
template <class T>
void prologue(CodecInputArchive& ar,
              const cereal::memory_detail::PtrWrapper<std::shared_ptr<T>&>&) {
  ar.enter();
  ar.expect_pointer_type(typeid(T));
}
template <class T>
void epilogue(CodecInputArchive& ar, const T&) noexcept {
  ar.leave();
}

template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar,
                                                                    const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(t));
}

template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    const std::uint8_t b = ar.reader().byte();
    if (b > 1) ar.reader().fail("a bool that is neither 0 nor 1");
    t = b != 0;
  } else {
    ar.loadBinary(std::addressof(t), sizeof(t));
  }
}

template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CodecOutputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CodecInputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar, const cereal::SizeTag<T>& t) {
  const auto n = static_cast<std::uint64_t>(t.size);
  ar.saveBinary(&n, sizeof(n));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, cereal::SizeTag<T>& t) {
  std::uint64_t n = 0;
  ar.loadBinary(&n, sizeof(n));
  // Every element cereal then reads takes at least one byte, except empty classes.
  if (n > ar.reader().remaining()) {
    throw_bad_count(ar.reader().target, ar.reader().offset() - sizeof(n), n,
                    ar.reader().remaining());
  }
  t.size = static_cast<std::remove_reference_t<T>>(n);
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

// Trivially copyable structs that have no cereal functions of their own travel as their
// raw bytes inside cereal types too, as they do at top level. (Whether they have their own
// is asked of cereal's binary archives: asking of these archives would count these very
// functions.)
template <class T>
inline constexpr bool raw_in_cereal_v =
    std::is_class_v<T>&& trivially_encodable_v<T>&& cereal::traits::detail::
            count_output_serializers<T, cereal::BinaryOutputArchive>::value == 0 &&
    cereal::traits::detail::count_input_serializers<T, cereal::BinaryInputArchive>::value == 0;

template <class T>
requires raw_in_cereal_v<T>
void CEREAL_SAVE_FUNCTION_NAME(CodecOutputArchive& ar, const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(T));
}
template <class T>
requires raw_in_cereal_v<T>
void CEREAL_LOAD_FUNCTION_NAME(CodecInputArchive& ar, T& t) {
  ar.loadBinary(static_cast<void*>(std::addressof(t)), sizeof(T));
}

// A user type that cereal can save and load with these archives.
template <class T>
inline constexpr bool cereal_serializable_v =
    cereal::traits::is_output_serializable<T, CodecOutputArchive>::value&&
        cereal::traits::is_input_serializable<T, CodecInputArchive>::value;

}  // namespace mpx::detail

CEREAL_REGISTER_ARCHIVE(mpx::detail::CodecOutputArchive)
CEREAL_REGISTER_ARCHIVE(mpx::detail::CodecInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mpx::detail::CodecInputArchive, mpx::detail::CodecOutputArchive)
