// SPDX-License-Identifier: Apache-2.0
#include "meshcut/libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "meshcut/log.h"

namespace meshcut {
namespace {
std::mutex g_mu;
std::string g_last;
bool g_verbose = false;

int print_fn(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof(buf), fmt, args);
  std::string s(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (level == LIBBPF_WARN) {
    std::lock_guard<std::mutex> l(g_mu);
    g_last = s;
  }
  if (g_verbose || level == LIBBPF_WARN) {
    if (g_verbose || log::level() == log::Level::debug)
      log::write(level == LIBBPF_WARN ? log::Level::warn : log::Level::debug, "libbpf", {{"libbpf", s}});
  }
  return 0;
}
}  // namespace

void install_libbpf_logger(bool verbose) {
  g_verbose = verbose;
  libbpf_set_print(print_fn);
}

std::string last_libbpf_message() {
  std::lock_guard<std::mutex> l(g_mu);
  return g_last;
}

}  // namespace meshcut
