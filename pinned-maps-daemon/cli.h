// SPDX-License-Identifier: Apache-2.0
// What every meshcutd subcommand shares.
#pragma once

#include "meshcut/error.h"

namespace meshcut::daemon {

// Reports E (a log record with the errno text and the hint, and one line
// "meshcutd: ..." on stderr) and returns the exit code 1.
int fail(const Error& e);

}  // namespace meshcut::daemon
