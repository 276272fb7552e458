// SPDX-License-Identifier: Apache-2.0
//
// hold — many held TCP connections and a ping-pong among them, for the scale
// benchmark (bench/scale_bench.py).
//
//   hold server --tcp IP:PORT[,IP:PORT...]
//       accepts without limit and echoes whatever arrives (epoll, one thread);
//       prints "ready" once listening on every address.
//   hold client --tcp IP:PORT[,IP:PORT...] [--size N]
//       reads commands on stdin, one per line, answers one JSON line each:
//         open N     opens N more connections, round-robin over the addresses,
//                    non-blocking, up to 512 handshakes in flight:
//                    {"open": N, "held": H, "sec": S, "failed": F}
//         ping K I   I round trips of --size bytes, each on the next of K
//                    connections spread evenly over all held ones (blocking
//                    write, then read back): {"held": H, "iters": I,
//                    "p50_us": ..., "p99_us": ..., "mean_us": ...}
//         quit       resets every connection (no TIME_WAIT left) and exits 0
//
// Raise RLIMIT_NOFILE before starting it (the benchmark does; root may go to
// fs.nr_open). Errors go to stderr with errno text; exit 1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "hold: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::vector<sockaddr_in> parse_addrs(const std::string& list) {
  std::vector<sockaddr_in> out;
  std::stringstream ss(list);
  std::string one;
  while (std::getline(ss, one, ',')) {
    auto colon = one.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    if (colon == std::string::npos || inet_pton(AF_INET, one.substr(0, colon).c_str(), &a.sin_addr) != 1) {
      std::fprintf(stderr, "hold: '%s' is not IPv4:PORT\n", one.c_str());
      std::exit(2);
    }
    a.sin_port = htons(static_cast<uint16_t>(std::atoi(one.c_str() + colon + 1)));
    out.push_back(a);
  }
  if (out.empty()) {
    std::fprintf(stderr, "hold: --tcp wants IP:PORT[,IP:PORT...]\n");
    std::exit(2);
  }
  return out;
}

void raise_nofile() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

int server(const std::vector<sockaddr_in>& addrs) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<int> listeners;
  for (const auto& a : addrs) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) die("bind");
    if (listen(l, 65535) != 0) die("listen");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = (1ull << 32) | static_cast<uint32_t>(l);
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    listeners.push_back(l);
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<epoll_event> evs(1024);
  std::vector<char> buf(1 << 16);
  for (;;) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
      if (evs[i].data.u64 >> 32) {
        int c;
        while ((c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = static_cast<uint32_t>(c);
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
          std::fprintf(stderr, "hold: accept: %s (raise the file limit?)\n", std::strerror(errno));
        }
        continue;
      }
      ssize_t r = read(fd, buf.data(), buf.size());
      if (r > 0) {
        // Echo in full; the client sends one small message at a time.
        for (ssize_t off = 0; off < r;) {
          ssize_t w = write(fd, buf.data() + off, static_cast<size_t>(r - off));
          if (w < 0 && errno != EINTR && errno != EAGAIN) break;
          if (w > 0) off += w;
        }
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
      }
    }
  }
}

struct Client {
  std::vector<sockaddr_in> addrs;
  std::vector<int> held;
  size_t size = 64;
  size_t next_addr = 0;

  void open(long n) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    long started = 0, failed = 0, inflight = 0;
    const long window = 512;
    std::vector<epoll_event> evs(window);
    double t0 = now_s();
    while (started < n || inflight > 0) {
      while (started < n && inflight < window) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0) die("socket (raise the file limit?)");
        const auto& a = addrs[next_addr++ % addrs.size()];
        started++;
        if (connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
          held.push_back(s);
          continue;
        }
        if (errno != EINPROGRESS) {
          failed++;
          close(s);
          continue;
        }
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.fd = s;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
        inflight++;
      }
      int k = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 10000);
      if (k == 0) {
        std::fprintf(stderr, "hold: %ld handshakes pending after 10 s\n", inflight);
        break;
      }
      for (int i = 0; i < k; i++) {
        int s = evs[i].data.fd;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr);
        inflight--;
        if (err) {
          failed++;
          close(s);
          continue;
        }
        int fl = fcntl(s, F_GETFL);
        fcntl(s, F_SETFL, fl & ~O_NONBLOCK);
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        held.push_back(s);
      }
    }
    close(ep);
    std::printf("{\"open\": %ld, \"held\": %zu, \"sec\": %.6f, \"failed\": %ld}\n", n, held.size(), now_s() - t0,
                failed);
    std::fflush(stdout);
  }

  void ping(long k, long iters) {
    if (held.empty() || k < 1 || iters < 1) {
      std::printf("{\"error\": \"nothing held\"}\n");
      std::fflush(stdout);
      return;
    }
    size_t stride = std::max<size_t>(1, held.size() / static_cast<size_t>(k));
    std::vector<char> out(size, 'p'), in(size);
    std::vector<double> us;
    us.reserve(static_cast<size_t>(iters));
    size_t idx = 0;
    long errors = 0;
    for (long i = 0; i < iters; i++) {
      int s = held[(idx * stride) % held.size()];
      idx = (idx + 1) % static_cast<size_t>(k);
      double t0 = now_s();
      if (write(s, out.data(), size) != static_cast<ssize_t>(size)) {
        errors++;
        continue;
      }
      size_t got = 0;
      while (got < size) {
        ssize_t r = read(s, in.data() + got, size - got);
        if (r <= 0) {
          if (r < 0 && errno == EINTR) continue;
          break;
        }
        got += static_cast<size_t>(r);
      }
      if (got != size || std::memcmp(in.data(), out.data(), size) != 0) {
        errors++;
        continue;
      }
      us.push_back((now_s() - t0) * 1e6);
    }
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) {
      if (us.empty()) return 0.0;
      size_t r = static_cast<size_t>(std::max(1.0, std::ceil(p / 100.0 * static_cast<double>(us.size()))));
      return us[std::min(us.size(), r) - 1];
    };
    double mean = 0;
    for (double v : us) mean += v;
    mean = us.empty() ? 0 : mean / static_cast<double>(us.size());
    std::printf(
        "{\"held\": %zu, \"iters\": %ld, \"errors\": %ld, \"p50_us\": %.2f, \"p99_us\": %.2f, "
        "\"mean_us\": %.2f}\n",
        held.size(), iters, errors, pct(50), pct(99), mean);
    std::fflush(stdout);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: hold server|client --tcp IP:PORT[,...] [--size N]\n");
    return 2;
  }
  std::string mode = argv[1], tcp;
  size_t size = 64;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--tcp")
      tcp = argv[i + 1];
    else if (k == "--size")
      size = static_cast<size_t>(std::max(1, std::atoi(argv[i + 1])));
    else {
      std::fprintf(stderr, "hold: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  auto addrs = parse_addrs(tcp);
  raise_nofile();
  if (mode == "server") return server(addrs);
  if (mode != "client") {
    std::fprintf(stderr, "hold: mode must be server or client\n");
    return 2;
  }
  Client c;
  c.addrs = addrs;
  c.size = size;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream ls(line);
    std::string cmd;
    ls >> cmd;
    if (cmd == "open") {
      long n = 0;
      ls >> n;
      c.open(n);
    } else if (cmd == "ping") {
      long k = 0, iters = 0;
      ls >> k >> iters;
      c.ping(k, iters);
    } else if (cmd == "quit") {
      break;
    } else if (!cmd.empty()) {
      std::printf("{\"error\": \"unknown command %s\"}\n", cmd.c_str());
      std::fflush(stdout);
    }
  }
  // Reset, not FIN: 100,000 connections in TIME_WAIT would slow the next
  // run's connect()s (its port search skips them) for a minute.
  linger lg{1, 0};
  for (int s : c.held) {
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(s);
  }
  return 0;
}
