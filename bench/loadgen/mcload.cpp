// SPDX-License-Identifier: Apache-2.0
// mcload: an open-loop HTTP/1.1 load generator (issue 14 part 1).
//
// Requests are due at intended times drawn from a rate pattern (schedule.h);
// each one's latency is measured from its intended time, so a slow response
// or a busy pool shows up as latency instead of silently lowering the rate
// (no coordinated omission). Service time is measured from the actual send.
//
// One thread, one epoll set, non-blocking sockets, edge-triggered (each fd is
// registered once). The pure parts (histogram, schedule, parser, bookkeeping)
// are in mcload_core; this file is the shell around the sockets.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mcload/histogram.h"
#include "mcload/http.h"
#include "mcload/report.h"
#include "mcload/schedule.h"

using namespace mcload;

namespace {

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

std::string errtext(int e) { return std::string(std::strerror(e)) + " (" + std::to_string(e) + ")"; }

struct Options {
  std::string url, connect, host, path = "/", pattern = "constant", arrival = "poisson";
  std::string json_out, csv_out;
  double rate = 0, duration = 10, warmup = 0, timeout = 5, max_lag_ms = 10, min_rate = 0.95;
  unsigned conns = 0;
  bool per_request = false, strict = false, quiet = false;
  unsigned max_conns = 2000;
  uint64_t seed = 1;
};

struct Target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;
};

// http://HOST[:PORT][/PATH] into host, port and path.
bool parse_url(const std::string& url, std::string& host, std::string& port, std::string& path, std::string& err) {
  const std::string pre = "http://";
  if (url.compare(0, pre.size(), pre) != 0) {
    err = "--url must start with http:// (https is not supported), got '" + url + "'";
    return false;
  }
  std::string rest = url.substr(pre.size());
  auto slash = rest.find('/');
  std::string hp = rest.substr(0, slash);
  path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (!hp.empty() && hp[0] == '[') {
    auto rb = hp.find(']');
    if (rb == std::string::npos) {
      err = "bad IPv6 address in --url '" + url + "'";
      return false;
    }
    host = hp.substr(1, rb - 1);
    port = rb + 1 < hp.size() && hp[rb + 1] == ':' ? hp.substr(rb + 2) : "80";
  } else {
    auto colon = hp.rfind(':');
    host = hp.substr(0, colon);
    port = colon == std::string::npos ? "80" : hp.substr(colon + 1);
  }
  if (host.empty() || port.empty()) {
    err = "no host or port in --url '" + url + "'";
    return false;
  }
  return true;
}

bool resolve(const std::string& host, const std::string& port, Target& t, std::string& err) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    err = "couldn't resolve '" + host + ":" + port + "': " + gai_strerror(rc);
    return false;
  }
  std::memcpy(&t.addr, res->ai_addr, res->ai_addrlen);
  t.len = res->ai_addrlen;
  t.text = host + ":" + port;
  freeaddrinfo(res);
  return true;
}

struct Req {
  uint64_t intended = 0;  // absolute CLOCK_MONOTONIC ns
  uint64_t start = 0;     // when the client began on it (pool: write; per request: connect)
  bool measured = false;  // intended inside the measured run (not the warm-up)
};

struct Conn {
  int fd = -1;
  bool connected = false;
  bool has_req = false;
  Req req;
  ResponseParser parser;
  std::string out;
  size_t out_off = 0;
  uint64_t opened = 0;
  uint64_t retry_at = 0;  // pool: a closed slot reconnects at this time
};

class Engine {
 public:
  Engine(const Options& o, const Target& t, const std::string& host_hdr, const std::string& path)
      : o_(o),
        target_(t),
        limits_{o.min_rate, static_cast<uint64_t>(o.max_lag_ms * 1e6)},
        request_ka_(build_request(host_hdr, path, true)),
        request_close_(build_request(host_hdr, path, false)) {}

  int run(Pattern pattern, Arrival arrival);
  int report(const Pattern& pattern, uint64_t target);

 private:
  bool pool() const { return !o_.per_request; }
  int64_t second_of(uint64_t t) const { return t < t0_ ? -1 : static_cast<int64_t>((t - t0_) / 1'000'000'000u); }
  // The window an event of R at T counts in; the warm-up's events count in warm_.
  Window* win(const Req& r, uint64_t t) { return r.measured ? rec_.at(second_of(t)) : &warm_; }
  void open(Conn& c, uint64_t now);
  void close_conn(Conn& c, uint64_t now);
  void fail(Conn& c, Err e, uint64_t now);
  void start_req(Conn& c, Req r, uint64_t now);
  void flush(Conn& c, uint64_t now);
  void on_event(Conn& c, uint32_t ev);
  void read_all(Conn& c);
  void complete(Conn& c, uint64_t now);
  void dispatch(uint64_t now);
  void check_timeouts(uint64_t now);

  const Options& o_;
  Target target_;
  Limits limits_;
  std::string request_ka_, request_close_;
  int ep_ = -1;
  uint64_t t0_ = 0;
  Recorder rec_;
  Window warm_;  // the warm-up's requests: counted (the server saw them), not reported as latency
  std::deque<Req> queue_;
  std::vector<std::unique_ptr<Conn>> conns_;  // pool slots, or live per-request connections
  std::vector<Conn*> idle_;
  size_t busy_ = 0;
  size_t open_count_ = 0;
  Counts setup_;  // connect errors of the pool before any request
  std::vector<char> buf_ = std::vector<char>(1 << 16);
  std::string first_error_;
  uint64_t target_count_ = 0;  // intended times in the measured run
};

void Engine::open(Conn& c, uint64_t now) {
  c.fd = socket(target_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  c.connected = false;
  c.parser.reset();
  c.opened = now;
  if (c.fd < 0) {
    fail(c, Err::Connect, now);
    return;
  }
  ++open_count_;
  int one = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(c.fd, reinterpret_cast<const sockaddr*>(&target_.addr), target_.len);
  if (rc != 0 && errno != EINPROGRESS) {
    fail(c, Err::Connect, now);
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &c;
  epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
}

void Engine::close_conn(Conn& c, uint64_t now) {
  if (c.fd >= 0) {
    close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    --open_count_;
  }
  c.connected = false;
  std::erase(idle_, &c);
  if (c.has_req) {
    c.has_req = false;
    --busy_;
  }
  c.retry_at = now;
}

void Engine::fail(Conn& c, Err e, uint64_t now) {
  int so = errno;
  if (c.fd >= 0 && e == Err::Connect) {
    socklen_t l = sizeof so;
    int pending = 0;
    if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &pending, &l) == 0 && pending) so = pending;
  }
  if (first_error_.empty()) {
    first_error_ = std::string(err_name(e)) + " error";
    if (e == Err::Connect || e == Err::Reset) first_error_ += ": " + errtext(so);
    if (e == Err::Parse) first_error_ += ": " + c.parser.error();
  }
  Window* w = c.has_req ? win(c.req, now) : nullptr;
  if (!c.has_req) ++setup_.by_error[err_name(e)];  // a pool slot's connect: no request lost
  if (w) {
    ++w->c.errors;
    ++w->c.by_error[err_name(e)];
  }
  close_conn(c, now);
  // A pool slot that failed to connect waits a little before the next try.
  if (e == Err::Connect) c.retry_at = now + 100'000'000u;
}

void Engine::start_req(Conn& c, Req r, uint64_t now) {
  c.has_req = true;
  ++busy_;
  r.start = now;
  c.req = r;
  c.parser.reset();
  c.out = pool() ? request_ka_ : request_close_;
  c.out_off = 0;
  if (Window* w = win(r, now)) ++w->c.sent;
  if (c.connected) flush(c, now);
}

void Engine::flush(Conn& c, uint64_t now) {
  while (c.out_off < c.out.size()) {
    ssize_t n = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // EPOLLOUT (edge) brings us back
      fail(c, Err::Reset, now);
      return;
    }
    c.out_off += static_cast<size_t>(n);
  }
}

void Engine::complete(Conn& c, uint64_t now) {
  const Req& r = c.req;
  if (Window* w = win(r, now)) {
    ++w->c.completed;
    int st = c.parser.status();
    if (st >= 200 && st < 300)
      ++w->c.ok;
    else
      ++w->c.non2xx;
    w->c.bytes += c.parser.body_bytes();
    w->latency.record(now - r.intended);
    w->service.record(now - r.start);
  }
  c.has_req = false;
  --busy_;
  if (!pool() || !c.parser.keep_alive()) {
    close_conn(c, now);
    if (pool()) open(c, now);  // the server ended keep-alive: a fresh connection in the slot
    return;
  }
  c.parser.reset();
  idle_.push_back(&c);
}

void Engine::read_all(Conn& c) {
  for (;;) {
    ssize_t n = recv(c.fd, buf_.data(), buf_.size(), 0);
    uint64_t now = now_ns();
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (c.has_req)
        fail(c, Err::Reset, now);
      else
        close_conn(c, now);
      return;
    }
    if (n == 0) {
      if (!c.has_req) {  // an idle keep-alive connection the server closed
        close_conn(c, now);
        if (pool()) open(c, now);
        return;
      }
      auto st = c.parser.eof();
      if (st == ResponseParser::State::Done)
        complete(c, now);
      else
        fail(c, c.parser.error() == "connection closed before any response" ? Err::Reset : Err::Parse, now);
      if (c.fd >= 0) close_conn(c, now);
      return;
    }
    if (!c.has_req) continue;  // bytes nobody asked for: dropped
    // Bytes past the end of the response are dropped: mcload never pipelines,
    // so a well-behaved server sends none.
    c.parser.feed(buf_.data(), static_cast<size_t>(n));
    if (c.parser.state() == ResponseParser::State::Error) {
      fail(c, Err::Parse, now);
      return;
    }
    if (c.parser.state() == ResponseParser::State::Done) {
      complete(c, now);
      if (c.fd < 0) return;
    }
  }
}

void Engine::on_event(Conn& c, uint32_t ev) {
  uint64_t now = now_ns();
  if (!c.connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      errno = err;
      fail(c, Err::Connect, now);
      return;
    }
    c.connected = true;
    if (c.has_req)
      flush(c, now);
    else if (pool())
      idle_.push_back(&c);
    if (c.fd < 0) return;
  }
  if (c.connected && (ev & EPOLLOUT) && c.has_req && c.out_off < c.out.size()) flush(c, now);
  if (c.fd >= 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) read_all(c);
}

void Engine::dispatch(uint64_t now) {
  while (!queue_.empty()) {
    Conn* c = nullptr;
    if (pool()) {
      if (idle_.empty()) break;
      c = idle_.back();
      idle_.pop_back();
    } else {
      if (open_count_ >= o_.max_conns) break;
      conns_.push_back(std::make_unique<Conn>());
      c = conns_.back().get();
      open(*c, now);
    }
    Req r = queue_.front();
    queue_.pop_front();
    if (c->fd < 0 && !pool()) {  // the socket could not even be created
      c->has_req = true;
      ++busy_;
      c->req = r;
      fail(*c, Err::Connect, now);
      continue;
    }
    start_req(*c, r, now);
  }
  if (!pool()) std::erase_if(conns_, [](const std::unique_ptr<Conn>& c) { return c->fd < 0 && !c->has_req; });
}

void Engine::check_timeouts(uint64_t now) {
  const auto limit = static_cast<uint64_t>(o_.timeout * 1e9);
  for (auto& c : conns_) {
    if (c->fd >= 0 && c->has_req && now - c->req.start > limit)
      fail(*c, Err::Timeout, now);
    else if (c->fd >= 0 && !c->connected && now - c->opened > limit)
      fail(*c, Err::Connect, now);
    else if (pool() && c->fd < 0 && now >= c->retry_at)
      open(*c, now);
  }
}

int Engine::run(Pattern pattern, Arrival arrival) {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    std::cerr << "mcload: epoll_create1: " << errtext(errno) << "\n";
    return 1;
  }
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake-ups at the intended time, not 50 µs later

  uint64_t now = now_ns();
  if (pool()) {
    for (unsigned i = 0; i < o_.conns; ++i) {
      conns_.push_back(std::make_unique<Conn>());
      open(*conns_.back(), now);
    }
    // Wait (up to --timeout) for the pool to connect before the clock starts.
    uint64_t until = now + static_cast<uint64_t>(o_.timeout * 1e9);
    epoll_event evs[256];
    while (idle_.size() < o_.conns && now_ns() < until) {
      int n = epoll_wait(ep_, evs, 256, 10);
      for (int i = 0; i < n; ++i) on_event(*static_cast<Conn*>(evs[i].data.ptr), evs[i].events);
    }
    if (idle_.empty()) {
      std::cerr << "mcload: couldn't open any of the " << o_.conns << " connections to " << target_.text << ": "
                << (first_error_.empty() ? "no answer within --timeout" : first_error_)
                << "\n  hint: is the server listening there (and reachable from this netns)?\n";
      return 1;
    }
    if (idle_.size() < o_.conns)
      std::cerr << "mcload: only " << idle_.size() << " of " << o_.conns << " connections open: " << first_error_
                << "\n";
  }

  const uint64_t base = now_ns() + 1'000'000;  // intended times start 1 ms from now
  t0_ = base + static_cast<uint64_t>(o_.warmup * 1e9);
  const uint64_t end = t0_ + static_cast<uint64_t>(o_.duration * 1e9);
  Schedule warm(Pattern::constant(std::max(pattern.rate_at(0), 1e-9)), arrival, o_.seed ^ 0x9e3779b97f4a7c15ull,
                o_.warmup);
  Schedule sched(pattern, arrival, o_.seed, o_.duration);
  bool in_warmup = o_.warmup > 0;
  auto next_time = [&]() -> std::optional<uint64_t> {
    if (in_warmup) {
      if (auto t = warm.next()) return base + static_cast<uint64_t>(*t * 1e9);
      in_warmup = false;
    }
    if (auto t = sched.next()) return t0_ + static_cast<uint64_t>(*t * 1e9);
    return std::nullopt;
  };
  std::optional<uint64_t> next = next_time();
  const uint64_t drain_until = end + static_cast<uint64_t>(o_.timeout * 1e9) + 100'000'000u;
  uint64_t next_tick = 0;
  epoll_event evs[512];

  for (;;) {
    now = now_ns();
    while (next && *next <= now) {
      Req r{*next, 0, *next >= t0_};
      if (r.measured) ++target_count_;
      if (Window* w = win(r, r.intended)) {
        ++w->c.scheduled;
        w->c.max_lag_ns = std::max(w->c.max_lag_ns, now - r.intended);
        bool waits = pool() ? idle_.size() <= queue_.size() : open_count_ + queue_.size() >= o_.max_conns;
        if (waits) ++w->c.queued;
      }
      queue_.push_back(r);
      next = next_time();
    }
    // The oldest queued request's wait is the pool's shortfall.
    if (!queue_.empty()) {
      if (Window* w = win(queue_.front(), now))
        w->c.max_queue_ns = std::max(w->c.max_queue_ns, now - queue_.front().intended);
    }
    dispatch(now);
    if (now >= next_tick) {
      check_timeouts(now);
      next_tick = now + 5'000'000;
    }
    rec_.close_before(second_of(now));
    if (!next && queue_.empty() && busy_ == 0) break;
    if (now >= drain_until) break;

    // Sleep until the next intended time, a timeout tick, or an event.
    uint64_t wake = std::min(next_tick, next ? *next : drain_until);
    if (!queue_.empty() && (pool() ? !idle_.empty() : open_count_ < o_.max_conns)) wake = now;
    timespec ts{};
    uint64_t d = wake > now ? wake - now : 0;
    ts.tv_sec = static_cast<time_t>(d / 1'000'000'000u);
    ts.tv_nsec = static_cast<long>(d % 1'000'000'000u);
    int n = epoll_pwait2(ep_, evs, 512, &ts, nullptr);
    if (n < 0 && errno != EINTR) {
      std::cerr << "mcload: epoll_pwait2: " << errtext(errno) << "\n";
      return 1;
    }
    for (int i = 0; i < n; ++i) on_event(*static_cast<Conn*>(evs[i].data.ptr), evs[i].events);
  }

  // Whatever is left: queued requests never sent, in-flight ones timed out.
  now = now_ns();
  for (auto& r : queue_) {
    Window* w = r.measured ? rec_.at(second_of(std::min(now, end - 1))) : &warm_;
    ++w->c.errors;
    ++w->c.by_error["unsent"];
  }
  for (auto& c : conns_)
    if (c->fd >= 0 && c->has_req) fail(*c, Err::Timeout, now);
  rec_.finish();
  close(ep_);
  return report(pattern, target_count_);
}

int Engine::report(const Pattern& pattern, uint64_t target) {
  const Window& run = rec_.run();
  const Counts& c = run.c;
  Verdict v = judge(c, target, o_.duration, limits_, pool(), o_.conns);
  std::vector<double> target_rate;
  for (int64_t s = 0; s < static_cast<int64_t>(std::ceil(o_.duration)); ++s)
    target_rate.push_back(pattern.expected(std::min<double>(static_cast<double>(s + 1), o_.duration)) -
                          pattern.expected(static_cast<double>(s)));

  auto us = [](uint64_t ns) { return std::round(static_cast<double>(ns) / 10.0) / 100.0; };
  nlohmann::json errs = nlohmann::json::object();
  for (const auto& [k, n] : c.by_error) errs[k] = n;
  nlohmann::json summary = {
      {"target_requests", target},
      {"target_rate", static_cast<double>(target) / o_.duration},
      {"pattern_mean_rate", pattern.mean_rate(o_.duration)},
      {"scheduled", c.scheduled},
      {"sent", c.sent},
      {"completed", c.completed},
      {"ok", c.ok},
      {"non2xx", c.non2xx},
      {"errors", c.errors},
      {"errors_by_kind", errs},
      {"body_bytes", c.bytes},
      {"achieved_rate", static_cast<double>(c.sent) / o_.duration},
      {"completed_rate", static_cast<double>(c.completed) / o_.duration},
      {"latency_us", histogram_json(run.latency)},
      {"service_us", histogram_json(run.service)},
      {"max_sender_lag_us", us(c.max_lag_ns)},
      {"max_queue_wait_us", us(c.max_queue_ns)},
      {"queued", c.queued},
      {"pool_reconnect_errors", setup_.by_error},
      {"warmup",
       {{"scheduled", warm_.c.scheduled},
        {"sent", warm_.c.sent},
        {"completed", warm_.c.completed},
        {"ok", warm_.c.ok},
        {"errors", warm_.c.errors}}},
      {"kept_up", v.kept_up},
      {"cannot_keep_up", v.reasons},
  };
  nlohmann::json seconds = nlohmann::json::array();
  for (const auto& r : rec_.rows()) {
    double tr = r.second < static_cast<int64_t>(target_rate.size()) ? target_rate[static_cast<size_t>(r.second)] : 0;
    seconds.push_back({{"second", r.second},
                       {"target_rate", tr},
                       {"scheduled", r.c.scheduled},
                       {"sent", r.c.sent},
                       {"completed", r.c.completed},
                       {"ok", r.c.ok},
                       {"non2xx", r.c.non2xx},
                       {"errors", r.c.errors},
                       {"latency_us",
                        {{"p50", us(r.lat[0])},
                         {"p90", us(r.lat[1])},
                         {"p99", us(r.lat[2])},
                         {"p99_9", us(r.lat[3])},
                         {"max", us(r.lat[4])},
                         {"mean", us(r.lat[5])}}},
                       {"service_us", {{"p50", us(r.svc[0])}, {"p99", us(r.svc[1])}, {"max", us(r.svc[2])}}},
                       {"max_sender_lag_us", us(r.c.max_lag_ns)},
                       {"max_queue_wait_us", us(r.c.max_queue_ns)}});
  }
  nlohmann::json doc = {
      {"tool", "mcload"},
      {"config",
       {{"target", target_.text},
        {"pattern", pattern.describe()},
        {"arrival", o_.arrival},
        {"mode", pool() ? "pool" : "per-request"},
        {"conns", pool() ? o_.conns : o_.max_conns},
        {"duration_s", o_.duration},
        {"warmup_s", o_.warmup},
        {"timeout_s", o_.timeout},
        {"seed", o_.seed},
        {"max_lag_ms", o_.max_lag_ms},
        {"min_rate_fraction", o_.min_rate}}},
      {"summary", summary},
      {"seconds", seconds},
  };
  int rc = 0;
  if (!o_.json_out.empty()) {
    std::ofstream f(o_.json_out);
    f << doc.dump(1) << "\n";
    if (!f) {
      std::cerr << "mcload: couldn't write --json " << o_.json_out << ": " << errtext(errno) << "\n";
      rc = 1;
    }
  }
  if (!o_.csv_out.empty()) {
    std::ofstream f(o_.csv_out);
    write_csv(f, rec_.rows(), target_rate);
    if (!f) {
      std::cerr << "mcload: couldn't write --csv " << o_.csv_out << ": " << errtext(errno) << "\n";
      rc = 1;
    }
  }
  if (o_.json_out.empty() && !o_.quiet) std::cout << doc["summary"].dump(1) << "\n";

  char line[768];
  const Histogram& l = run.latency;
  const Histogram& s = run.service;
  std::snprintf(line, sizeof line,
                "mcload: %s, %llu/%llu sent (%.0f/s of %.0f/s), %llu ok, %llu non-2xx, %llu errors; latency "
                "p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f us; service p50 %.0f p99 %.0f us",
                target_.text.c_str(), static_cast<unsigned long long>(c.sent), static_cast<unsigned long long>(target),
                static_cast<double>(c.sent) / o_.duration, static_cast<double>(target) / o_.duration,
                static_cast<unsigned long long>(c.ok), static_cast<unsigned long long>(c.non2xx),
                static_cast<unsigned long long>(c.errors), static_cast<double>(l.percentile(50)) / 1e3,
                static_cast<double>(l.percentile(90)) / 1e3, static_cast<double>(l.percentile(99)) / 1e3,
                static_cast<double>(l.percentile(99.9)) / 1e3, static_cast<double>(l.max()) / 1e3,
                static_cast<double>(s.percentile(50)) / 1e3, static_cast<double>(s.percentile(99)) / 1e3);
  std::cerr << line << "\n";
  if (c.errors && !first_error_.empty()) std::cerr << "mcload: first error: " << first_error_ << "\n";
  if (!v.kept_up) {
    for (const auto& r : v.reasons) std::cerr << "mcload: CANNOT KEEP UP: " << r << "\n";
    std::cerr << "  hint: the numbers above are not the server's at the requested rate; lower --rate, "
              << (pool() ? "raise --conns, " : "raise --max-conns, ") << "or give mcload a CPU of its own (taskset)\n";
    if (o_.strict && rc == 0) rc = 3;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"mcload: open-loop HTTP/1.1 load generator (latency from each request's intended send time)"};
  app.add_option("--url", o.url, "http://HOST[:PORT][/PATH]");
  app.add_option("--connect", o.connect, "IP:PORT to connect to (instead of the --url's host)");
  app.add_option("--host", o.host, "Host header (default: the --url's host, or --connect)");
  app.add_option("--path", o.path, "request path (default: the --url's, or /)");
  app.add_option("--rate", o.rate, "requests/s (the constant pattern's rate)");
  app.add_option("--pattern", o.pattern,
                 "constant | steps:R@Ds,R@Ds,... | sin:MEAN,AMP,PERIOD | file:PATH (CSV time_s,rate)");
  app.add_option("--duration", o.duration, "seconds measured (after --warmup)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "seconds at the pattern's first rate, not measured")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--arrival", o.arrival, "poisson | constant")->check(CLI::IsMember({"poisson", "constant"}));
  auto* conns =
      app.add_option("--conns", o.conns, "keep-alive pool of N connections (requests queue when all are busy)");
  auto* per = app.add_flag("--per-request", o.per_request, "a new connection per request (Connection: close)");
  conns->excludes(per);
  app.add_option("--max-conns", o.max_conns, "--per-request: connections open at once at most (2000)");
  app.add_option("--timeout", o.timeout, "seconds a request may take from its send (5)")->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "random seed of the Poisson arrivals (1)");
  app.add_option("--json", o.json_out, "write the summary and per-second rows as JSON to FILE");
  app.add_option("--csv", o.csv_out, "write per-second rows as CSV to FILE");
  app.add_option("--max-lag-ms", o.max_lag_ms, "cannot keep up: sender lag or pool wait beyond this (10 ms)");
  app.add_option("--min-rate", o.min_rate, "cannot keep up: sent / target below this fraction (0.95)");
  app.add_flag("--strict", o.strict, "exit 3 when it cannot keep up with the rate");
  app.add_flag("--quiet", o.quiet, "no summary JSON on stdout");
  CLI11_PARSE(app, argc, argv);

  std::string err, host, port, path;
  if (!o.url.empty() && !parse_url(o.url, host, port, path, err)) {
    std::cerr << "mcload: " << err << "\n";
    return 2;
  }
  if (!o.connect.empty()) {
    auto colon = o.connect.rfind(':');
    if (colon == std::string::npos) {
      std::cerr << "mcload: --connect wants IP:PORT, got '" << o.connect << "'\n";
      return 2;
    }
    if (host.empty()) host = o.connect.substr(0, colon);
    port = o.connect.substr(colon + 1);
    std::string ip = o.connect.substr(0, colon);
    if (ip.size() > 1 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
    o.connect = ip;
  }
  if (o.url.empty() && o.connect.empty()) {
    std::cerr << "mcload: give --url http://HOST:PORT/PATH or --connect IP:PORT\n";
    return 2;
  }
  if (!o.per_request && o.conns == 0) o.conns = 1;
  if (o.path != "/" || path.empty()) path = o.path;
  Target t;
  if (!resolve(o.connect.empty() ? host : o.connect, port, t, err)) {
    std::cerr << "mcload: " << err << "\n";
    return 2;
  }
  std::string host_hdr = !o.host.empty() ? o.host : (host.find(':') != std::string::npos ? "[" + host + "]" : host);
  if (port != "80") host_hdr += ":" + port;
  if (!o.host.empty()) host_hdr = o.host;

  auto pattern = Pattern::parse(o.pattern, o.rate, err);
  if (!pattern) {
    std::cerr << "mcload: " << err << "\n";
    return 2;
  }
  if (!(pattern->mean_rate(o.duration) > 0)) {
    std::cerr << "mcload: the pattern's rate is 0 over the whole --duration: nothing to send\n";
    return 2;
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  Engine e(o, t, host_hdr, path);
  return e.run(*pattern, o.arrival == "constant" ? Arrival::Constant : Arrival::Poisson);
}
