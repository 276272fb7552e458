// SPDX-License-Identifier: Apache-2.0
// The objectives unit tests' service file (test/fixtures/objectives/services.json).
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "meshcut/obj/services.h"

namespace meshcut::obj::testing {

inline Services fixture() {
  auto s = load_services(std::string(MESHCUT_FIXTURES_DIR) + "/objectives/services.json");
  REQUIRE(s.ok());
  return *s;
}

}  // namespace meshcut::obj::testing
