// SPDX-License-Identifier: Apache-2.0
//
// crr — connect / request / response / close, the TCP_CRR of netperf, for the
// connection-rate benchmark (bench/conn_rate_bench.py).
//
//   crr server --tcp IP:PORT [--size N]
//   crr client --tcp IP:PORT --conns K [--size N] [--warmup W]
//
// The server accepts, reads N bytes, answers N bytes and closes (one thread,
// blocking, like a connection-per-request HTTP/1.0 server). The client does K
// times: socket, connect, write N, read N, close, each timed with
// CLOCK_MONOTONIC, and prints one JSON object: conns_per_s, the per-connection
// cost in µs (median, p99, mean, min, max) and the number of failed
// connections. The server prints "ready" once listening so callers need no
// sleeps. The client closes first, so its side's TIME_WAIT stays on the
// client port range; SO_LINGER is left alone (a real client does not reset).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "crr: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

struct Opts {
  std::string mode;
  std::string tcp;
  size_t size = 64;
  long conns = 10000;
  long warmup = 500;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: crr server --tcp IP:PORT [--size N]\n"
               "       crr client --tcp IP:PORT --conns K [--size N] [--warmup W]\n");
  std::exit(2);
}

Opts parse(int argc, char** argv) {
  if (argc < 2) usage();
  Opts o;
  o.mode = argv[1];
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    if (a == "--tcp")
      o.tcp = v;
    else if (a == "--size")
      o.size = std::strtoul(v, nullptr, 10);
    else if (a == "--conns")
      o.conns = std::strtol(v, nullptr, 10);
    else if (a == "--warmup")
      o.warmup = std::strtol(v, nullptr, 10);
    else
      usage();
  }
  if (o.tcp.empty() || o.size == 0 || o.size > (1 << 20) || o.conns <= 0 || o.warmup < 0) usage();
  return o;
}

sockaddr_in addr_of(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) usage();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(s.c_str() + colon + 1)));
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1) usage();
  return a;
}

bool io_all(int fd, char* p, size_t n, bool rd) {
  while (n > 0) {
    ssize_t r = rd ? read(fd, p, n) : write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int server(const Opts& o) {
  signal(SIGPIPE, SIG_IGN);
  sockaddr_in a = addr_of(o.tcp);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind");
  if (listen(ls, 1024) != 0) die("listen");
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<char> buf(o.size);
  for (;;) {
    int c = accept(ls, nullptr, nullptr);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (io_all(c, buf.data(), o.size, true)) io_all(c, buf.data(), o.size, false);
    close(c);
  }
}

// One connection; returns false if any step failed.
bool one_conn(const sockaddr_in& a, std::vector<char>& buf, size_t n) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 && io_all(fd, buf.data(), n, false) &&
            io_all(fd, buf.data(), n, true);
  close(fd);
  return ok;
}

int client(const Opts& o) {
  signal(SIGPIPE, SIG_IGN);
  sockaddr_in a = addr_of(o.tcp);
  std::vector<char> buf(o.size, 'x');
  long failed = 0;
  for (long i = 0; i < o.warmup; i++) failed += !one_conn(a, buf, o.size);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(o.conns));
  uint64_t t0 = now_ns();
  for (long i = 0; i < o.conns; i++) {
    uint64_t s = now_ns();
    if (!one_conn(a, buf, o.size)) {
      failed++;
      continue;
    }
    us.push_back(static_cast<double>(now_ns() - s) / 1e3);
  }
  double wall_s = static_cast<double>(now_ns() - t0) / 1e9;
  if (us.empty()) {
    std::fprintf(stderr, "crr: every connection to %s failed\n", o.tcp.c_str());
    return 1;
  }
  double sum = 0;
  for (double v : us) sum += v;
  std::sort(us.begin(), us.end());
  auto rank = [&](double p) {  // nearest rank, as test/lib/mctest/stats.pct
    size_t k = static_cast<size_t>(p / 100.0 * static_cast<double>(us.size()) + 0.999999);
    return us[std::min(us.size() - 1, k == 0 ? 0 : k - 1)];
  };
  std::printf(
      "{\"conns\": %zu, \"failed\": %ld, \"conns_per_s\": %.1f, \"median_us\": %.2f, "
      "\"p99_us\": %.2f, \"mean_us\": %.2f, \"min_us\": %.2f, \"max_us\": %.2f}\n",
      us.size(), failed, static_cast<double>(us.size()) / wall_s, rank(50), rank(99),
      sum / static_cast<double>(us.size()), us.front(), us.back());
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o = parse(argc, argv);
  if (o.mode == "server") return server(o);
  if (o.mode == "client") return client(o);
  usage();
}
