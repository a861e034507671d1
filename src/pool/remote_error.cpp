// Exceptions across the process boundary: a task's exception is encoded in its worker and
// rethrown in the parent as the same standard or mpx type, or as RemoteError carrying the
// type's name, the message and the worker's pid (DESIGN.md section 2).
#include <unistd.h>

#include <cxxabi.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <typeinfo>

#include "mpx/detail/pool_task.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

namespace {

enum ExceptionCode : uint32_t {
  kRemote = 0,
  kRuntimeError,
  kLogicError,
  kInvalidArgument,
  kOutOfRange,
  kLengthError,
  kDomainError,
  kRangeError,
  kOverflowError,
  kUnderflowError,
  kBadAlloc,
  kMpxError,
  kMpxTimeoutError,
  kMpxValueError,
  kMpxInvalidStateError,
  kMpxDecodeError,
  kMpxUsageError,
};

std::string demangle(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && out ? out : name;
  std::free(out);
  return result;
}

void put_u32(ByteVector& out, uint32_t v) {
  auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}
void put_string(ByteVector& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}
uint32_t get_u32(std::span<const std::byte>& in) {
  uint32_t v = 0;
  if (in.size() < sizeof v) throw DecodeError("truncated exception record");
  std::memcpy(&v, in.data(), sizeof v);
  in = in.subspan(sizeof v);
  return v;
}
std::string get_string(std::span<const std::byte>& in) {
  uint32_t n = get_u32(in);
  if (in.size() < n) throw DecodeError("truncated exception record");
  std::string s(reinterpret_cast<const char*>(in.data()), n);
  in = in.subspan(n);
  return s;
}

}  // namespace

void report_initializer_failure(std::exception_ptr error) noexcept {
  std::string type = "unknown exception";
  std::string message;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    type = demangle(typeid(e).name());
    message = e.what();
  } catch (...) {
  }
  std::fprintf(stderr, "Exception in initializer:\n%s: %s\n", type.c_str(), message.c_str());
  std::fflush(stderr);
}

void encode_exception(std::exception_ptr error, ByteVector& out) {
  uint32_t code = kRemote;
  std::string type = "unknown exception";
  std::string message;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    const std::type_info& t = typeid(e);
    type = demangle(t.name());
    message = e.what();
    if (t == typeid(std::runtime_error))
      code = kRuntimeError;
    else if (t == typeid(std::logic_error))
      code = kLogicError;
    else if (t == typeid(std::invalid_argument))
      code = kInvalidArgument;
    else if (t == typeid(std::out_of_range))
      code = kOutOfRange;
    else if (t == typeid(std::length_error))
      code = kLengthError;
    else if (t == typeid(std::domain_error))
      code = kDomainError;
    else if (t == typeid(std::range_error))
      code = kRangeError;
    else if (t == typeid(std::overflow_error))
      code = kOverflowError;
    else if (t == typeid(std::underflow_error))
      code = kUnderflowError;
    else if (t == typeid(std::bad_alloc))
      code = kBadAlloc;
    else if (t == typeid(mpx::Error))
      code = kMpxError;
    else if (t == typeid(mpx::TimeoutError))
      code = kMpxTimeoutError;
    else if (t == typeid(mpx::ValueError))
      code = kMpxValueError;
    else if (t == typeid(mpx::InvalidStateError))
      code = kMpxInvalidStateError;
    else if (t == typeid(mpx::DecodeError))
      code = kMpxDecodeError;
    else if (t == typeid(mpx::UsageError))
      code = kMpxUsageError;
  } catch (...) {
  }
  put_u32(out, code);
  put_u32(out, static_cast<uint32_t>(::getpid()));
  put_string(out, type);
  put_string(out, message);
}

std::exception_ptr decode_exception(std::span<const std::byte> bytes) {
  try {
    uint32_t code = get_u32(bytes);
    auto pid = static_cast<pid_t>(get_u32(bytes));
    std::string type = get_string(bytes);
    std::string msg = get_string(bytes);
    switch (code) {
      case kRuntimeError:
        return std::make_exception_ptr(std::runtime_error(msg));
      case kLogicError:
        return std::make_exception_ptr(std::logic_error(msg));
      case kInvalidArgument:
        return std::make_exception_ptr(std::invalid_argument(msg));
      case kOutOfRange:
        return std::make_exception_ptr(std::out_of_range(msg));
      case kLengthError:
        return std::make_exception_ptr(std::length_error(msg));
      case kDomainError:
        return std::make_exception_ptr(std::domain_error(msg));
      case kRangeError:
        return std::make_exception_ptr(std::range_error(msg));
      case kOverflowError:
        return std::make_exception_ptr(std::overflow_error(msg));
      case kUnderflowError:
        return std::make_exception_ptr(std::underflow_error(msg));
      case kBadAlloc:
        return std::make_exception_ptr(std::bad_alloc());
      case kMpxError:
        return std::make_exception_ptr(mpx::Error(msg));
      case kMpxTimeoutError:
        return std::make_exception_ptr(mpx::TimeoutError(msg));
      case kMpxValueError:
        return std::make_exception_ptr(mpx::ValueError(msg));
      case kMpxInvalidStateError:
        return std::make_exception_ptr(mpx::InvalidStateError(msg));
      case kMpxDecodeError:
        return std::make_exception_ptr(mpx::DecodeError(msg));
      case kMpxUsageError:
        return std::make_exception_ptr(mpx::UsageError(msg));
      default:
        return std::make_exception_ptr(RemoteError(type, msg, pid));
    }
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace mpx::detail
