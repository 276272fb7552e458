// SPDX-License-Identifier: Apache-2.0
#include "meshcut/error.h"

#include <cstring>

namespace meshcut {

std::string errno_text(int err) {
  if (err < 0) err = -err;
  if (err == 524) return "not supported by this kernel";  // ENOTSUPP, kernel-internal
  return std::strerror(err);
}

std::string Error::format() const {
  std::string s = what;
  if (err != 0) s += ": " + errno_text(err) + " (" + std::to_string(err) + ")";
  if (!hint.empty()) s += "\n  hint: " + hint;
  return s;
}

Error make_error(std::string what, int err, std::string hint) {
  return Error{std::move(what), err < 0 ? -err : err, std::move(hint)};
}

}  // namespace meshcut
