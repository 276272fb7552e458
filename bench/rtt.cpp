// SPDX-License-Identifier: Apache-2.0
//
// rtt — request/response ping-pong for the socket benchmark (bench/socket_bench.py).
//
//   rtt server --tcp IP:PORT | --unix PATH [--once]
//   rtt client --tcp IP:PORT | --unix PATH --size N --iters K [--warmup W]
//   rtt pair   --size N --iters K [--warmup W] [--server-cpu C]
//                                                   (AF_UNIX socketpair + fork)
//
// The client sends a 4-byte header with the request size, the server answers
// one byte, then each iteration is: write N bytes, read N bytes back, timed with
// clock_gettime(CLOCK_MONOTONIC). Blocking sockets, TCP_NODELAY, full reads and
// writes (a short read or write is continued, never counted as a round trip).
// The client prints one JSON object: median, p99, mean, min, max in µs.
// The server prints "ready" once listening so the caller needs no sleeps.
#include <arpa/inet.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "rtt: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

struct Opts {
  std::string mode;
  std::string tcp;        // IP:PORT
  std::string unix_path;  // path
  size_t size = 64;
  long iters = 10000;
  long warmup = 1000;
  bool once = false;
  int server_cpu = -1;  // pair: move the echo side to this CPU
};

// Full write: sk_msg redirects and large writes may return short counts.
bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Full read. Returns false on error or on EOF before n bytes (eof set if clean EOF at 0).
bool read_all(int fd, char* p, size_t n, bool* eof = nullptr) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) {
      if (eof) *eof = got == 0;
      return false;
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

void set_nodelay(int fd) {
  int one = 1;
  // Fails harmlessly on AF_UNIX.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sockaddr_storage parse_addr(const Opts& o, socklen_t* len) {
  sockaddr_storage ss{};
  if (!o.unix_path.empty()) {
    auto* un = reinterpret_cast<sockaddr_un*>(&ss);
    un->sun_family = AF_UNIX;
    if (o.unix_path.size() >= sizeof un->sun_path) {
      std::fprintf(stderr, "rtt: unix path too long\n");
      std::exit(2);
    }
    std::memcpy(un->sun_path, o.unix_path.c_str(), o.unix_path.size() + 1);
    *len = sizeof(sockaddr_un);
    return ss;
  }
  auto colon = o.tcp.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "rtt: --tcp wants IP:PORT\n");
    std::exit(2);
  }
  auto* in = reinterpret_cast<sockaddr_in*>(&ss);
  in->sin_family = AF_INET;
  in->sin_port = htons(static_cast<uint16_t>(std::atoi(o.tcp.c_str() + colon + 1)));
  if (inet_pton(AF_INET, o.tcp.substr(0, colon).c_str(), &in->sin_addr) != 1) {
    std::fprintf(stderr, "rtt: bad IPv4 address %s\n", o.tcp.c_str());
    std::exit(2);
  }
  *len = sizeof(sockaddr_in);
  return ss;
}

// Serve one connection: header, ack, then echo requests until the client closes.
void serve(int fd) {
  set_nodelay(fd);
  uint32_t size = 0;
  if (!read_all(fd, reinterpret_cast<char*>(&size), sizeof size) || size == 0 || size > (64u << 20)) {
    close(fd);
    return;
  }
  char ack = 'k';
  if (!write_all(fd, &ack, 1)) {
    close(fd);
    return;
  }
  std::vector<char> buf(size);
  for (;;) {
    bool eof = false;
    if (!read_all(fd, buf.data(), size, &eof)) {
      if (!eof) std::fprintf(stderr, "rtt server: short read or error: %s\n", std::strerror(errno));
      break;
    }
    if (!write_all(fd, buf.data(), size)) {
      std::fprintf(stderr, "rtt server: write: %s\n", std::strerror(errno));
      break;
    }
  }
  close(fd);
}

int cmd_server(const Opts& o) {
  socklen_t len = 0;
  sockaddr_storage ss = parse_addr(o, &len);
  int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!o.unix_path.empty()) unlink(o.unix_path.c_str());
  if (bind(lfd, reinterpret_cast<sockaddr*>(&ss), len) != 0) die("bind");
  if (listen(lfd, 64) != 0) die("listen");
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    if (o.once) {
      serve(fd);
      break;
    }
    std::thread(serve, fd).detach();
  }
  close(lfd);
  if (!o.unix_path.empty()) unlink(o.unix_path.c_str());
  return 0;
}

double now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// The timed loop, shared by the TCP/unix client and the socketpair mode.
int run_client(int fd, const Opts& o, const char* transport) {
  set_nodelay(fd);
  uint32_t size = static_cast<uint32_t>(o.size);
  char ack = 0;
  if (!write_all(fd, reinterpret_cast<char*>(&size), sizeof size) || !read_all(fd, &ack, 1)) die("handshake");
  std::vector<char> req(o.size, 'x'), resp(o.size);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(o.iters));
  for (long i = 0; i < o.warmup + o.iters; i++) {
    req[0] = static_cast<char>(i);
    double t0 = now_ns();
    if (!write_all(fd, req.data(), o.size)) die("client write");
    if (!read_all(fd, resp.data(), o.size)) die("client read");
    double t1 = now_ns();
    if (resp[0] != req[0] || resp[o.size - 1] != req[o.size - 1]) {
      std::fprintf(stderr, "rtt: echo mismatch at iteration %ld\n", i);
      return 1;
    }
    if (i >= o.warmup) us.push_back((t1 - t0) / 1e3);
  }
  close(fd);
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {
    size_t idx = static_cast<size_t>(p * static_cast<double>(us.size() - 1) + 0.5);
    return us[std::min(idx, us.size() - 1)];
  };
  double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::printf(
      "{\"socket\": \"%s\", \"size\": %zu, \"iters\": %ld, \"median_us\": %.3f, \"p99_us\": %.3f, "
      "\"mean_us\": %.3f, \"min_us\": %.3f, \"max_us\": %.3f}\n",
      transport, o.size, o.iters, pct(0.5), pct(0.99), mean, us.front(), us.back());
  return 0;
}

int cmd_client(const Opts& o) {
  socklen_t len = 0;
  sockaddr_storage ss = parse_addr(o, &len);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) die("connect");
  return run_client(fd, o, o.unix_path.empty() ? "tcp" : "unix");
}

int cmd_pair(const Opts& o) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {  // echo side; inherits the CPU affinity taskset gave us
    close(sv[0]);
    if (o.server_cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(o.server_cpu, &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
    }
    serve(sv[1]);
    _exit(0);
  }
  close(sv[1]);
  int rc = run_client(sv[0], o, "socketpair");
  int status = 0;
  waitpid(pid, &status, 0);
  return rc;
}

int usage() {
  std::fprintf(stderr,
               "usage: rtt server (--tcp IP:PORT | --unix PATH) [--once]\n"
               "       rtt client (--tcp IP:PORT | --unix PATH) --size N --iters K [--warmup W]\n"
               "       rtt pair --size N --iters K [--warmup W] [--server-cpu C]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  signal(SIGPIPE, SIG_IGN);
  Opts o;
  o.mode = argv[1];
  for (int i = 2; i < argc; i++) {
    std::string_view a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--once")
      o.once = true;
    else if (a == "--tcp" && (v = next()))
      o.tcp = v;
    else if (a == "--unix" && (v = next()))
      o.unix_path = v;
    else if (a == "--size" && (v = next()))
      o.size = std::strtoul(v, nullptr, 10);
    else if (a == "--iters" && (v = next()))
      o.iters = std::strtol(v, nullptr, 10);
    else if (a == "--server-cpu" && (v = next()))
      o.server_cpu = std::atoi(v);
    else if (a == "--warmup" && (v = next()))
      o.warmup = std::strtol(v, nullptr, 10);
    else
      return usage();
  }
  if (o.size == 0 || o.iters <= 0 || o.warmup < 0) return usage();
  if (o.mode == "server" && (o.tcp.empty() != o.unix_path.empty())) return cmd_server(o);
  if (o.mode == "client" && (o.tcp.empty() != o.unix_path.empty())) return cmd_client(o);
  if (o.mode == "pair") return cmd_pair(o);
  return usage();
}
