// SPDX-License-Identifier: Apache-2.0
// Error channel (written down once, STYLE.md 8):
//  - at the libbpf / syscall boundary: raw errno, turned into an Error at once;
//  - between modules: Result<T> (std::expected is not in g++ 12's C++20);
//  - exceptions only for unrecoverable start-up failures in main().
// Every Error says what failed, the errno text and number, and how to fix it.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace meshcut {

struct Error {
  std::string what;  // "couldn't attach sockops to cgroup '/sys/fs/cgroup/x'"
  int err = 0;       // positive errno, 0 if none
  std::string hint;  // "run: mount -t bpf bpf /sys/fs/bpf", may be empty

  // "what: Operation not permitted (1)\n  hint: ..."; errno 524 reads
  // "not supported by this kernel (524)".
  std::string format() const;
};

// errno text, with the kernel-internal ENOTSUPP (524) that libbpf passes up.
std::string errno_text(int err);

Error make_error(std::string what, int err, std::string hint = {});

template <typename T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}
  Result(Error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

}  // namespace meshcut
