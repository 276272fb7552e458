// SPDX-License-Identifier: Apache-2.0
#include "http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <semaphore>

#include "meshcut/log.h"

namespace meshcut::daemon::http {
namespace {

// The rest of the limits (kWorkers, kMaxConns, kIoTimeoutS in the header).
constexpr int kBacklog = 64;          // beyond kMaxConns the kernel holds (or refuses) connections
constexpr time_t kKeepAliveS = 2;     // wait for a connection's first and next request
constexpr size_t kKeepAliveMax = 16;  // requests per connection
constexpr size_t kMaxPayload = 4096;  // request body, unless the routes set another: 413 beyond
constexpr int kDeferAcceptS = 30;     // TCP_DEFER_ACCEPT: silent connections stay in the kernel
constexpr auto kStopWait = std::chrono::seconds(5);

std::string listen_hint(int err, const std::string& flag) {
  switch (err) {
    case EADDRINUSE: return "another process listens there (another meshcutd?): pick another " + flag + ", or \"off\"";
    case EADDRNOTAVAIL:
      return "no interface of this network namespace has that address: use 127.0.0.1, [::1], 0.0.0.0 or [::]";
    case EAFNOSUPPORT: return "IPv6 is off on this node: use an IPv4 " + flag + " such as 127.0.0.1";
    case EACCES: return "ports below 1024 need CAP_NET_BIND_SERVICE: pick a port above 1023";
    default: return "pick another " + flag + ", or \"off\"";
  }
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

void set_port(sockaddr_storage& ss, uint16_t port) {
  if (ss.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  if (ss.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

// httplib's pool with a bound on accepted connections: when kMaxConns are in
// (kWorkers served, the rest queued), enqueue blocks the accept loop, so a
// flood waits in the listen backlog instead of holding descriptors here.
class BoundedPool : public httplib::TaskQueue {
 public:
  BoundedPool() : pool_(kWorkers), slots_(kMaxConns) {}
  void enqueue(std::function<void()> fn) override {
    slots_.acquire();
    pool_.enqueue([this, fn = std::move(fn)] {
      fn();
      slots_.release();
    });
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
  std::counting_semaphore<kMaxConns> slots_;
};

}  // namespace

// httplib on a socket we bound ourselves (for the errno, the backlog and
// TCP_DEFER_ACCEPT, which bind_to_port does not give).
class Endpoint : public httplib::Server {
 public:
  // Serves on FD until shut: true when leave() ended it (FD is still open),
  // false after an accept error (httplib closed FD).
  bool serve(int fd) {
    svr_sock_ = fd;
    return listen_after_bind();
  }
  // Ends the accept loop and the keep-alive loops of the workers; a blocked
  // accept() is woken by shutdown() on our duplicate (Service::stop). httplib
  // then leaves the descriptor open; Service::run closes it.
  void leave() { svr_sock_ = INVALID_SOCKET; }
};

Result<Fd> listen_on(const Listen& l) {
  Fd s(::socket(l.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid())
    return make_error("couldn't open a socket for " + l.flag + " " + l.addr, errno, listen_hint(errno, l.flag));
  int one = 1;
  // A restart must not wait for the last run's connections in TIME_WAIT.
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Answers go out in one burst; without it a small response waits for a delayed ACK.
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // A connection that sends nothing is not accepted until it does: idle
  // clients cost no worker. 30 s is 5 SYN-ACK retransmits, the default
  // tcp_synack_retries, so the kernel drops one that stays silent that long
  // instead of handing it over. Best effort (a syncookie connection skips it).
  int defer = kDeferAcceptS;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&l.ss), l.len) != 0 || ::listen(s.get(), kBacklog) != 0) {
    int e = errno;
    return make_error("couldn't listen on " + l.addr + " for " + l.what, e, listen_hint(e, l.flag));
  }
  return s;
}

std::string exception_text(std::exception_ptr ep) {
  try {
    if (ep) std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
  }
  return "unknown exception";
}

Service::Service() = default;
Service::~Service() { stop(); }

Status Service::start(Listen l, const std::function<void(httplib::Server&)>& route) {
  if (thread_.joinable()) return make_error(l.what + " is already serving", EALREADY);
  auto sock = listen_on(l);
  if (!sock) return sock.error();
  port_ = bound_port(sock->get());
  set_port(l.ss, port_);  // listening again takes the same port, even when port 0 chose it
  listen_ = std::move(l);
  srv_ = std::make_unique<Endpoint>();
  srv_->set_read_timeout(kIoTimeoutS);
  srv_->set_write_timeout(kIoTimeoutS);
  srv_->set_keep_alive_timeout(kKeepAliveS);
  srv_->set_keep_alive_max_count(kKeepAliveMax);
  srv_->set_payload_max_length(kMaxPayload);
  srv_->new_task_queue = [] { return new BoundedPool(); };
  route(*srv_);
  ctl_ = Fd(::fcntl(sock->get(), F_DUPFD_CLOEXEC, 0));
  if (!ctl_.valid()) return make_error("couldn't duplicate the socket of " + listen_.what, errno);
  thread_ = std::thread([this, fd = sock->release()] { run(fd); });
  return ok_status();
}

void Service::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard l(mu_);
    stopping_ = true;
    srv_->leave();
    // On the listening socket itself: a blocked accept() returns EINVAL.
    if (ctl_.valid()) ::shutdown(ctl_.get(), SHUT_RDWR);
  }
  cv_.notify_all();
  std::unique_lock l(mu_);
  if (cv_.wait_for(l, kStopWait, [&] { return done_; })) {
    l.unlock();
    thread_.join();
    return;
  }
  // A worker stuck past every timeout: leave it the server rather than free
  // what it uses.
  log::warn("an HTTP endpoint did not stop in time; leaving it to the process exit", {{"what", listen_.what}});
  thread_.detach();
  (void)srv_.release();
}

void Service::run(int fd) {
  // A peer that closes before its answer is written must cost an EPIPE, not
  // the process: httplib 0.11 sends without MSG_NOSIGNAL. The workers are
  // started from this thread and inherit the mask (as they do the stop
  // signals main() blocked).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  for (;;) {
    {
      std::lock_guard l(mu_);
      if (stopping_) break;
    }
    bool left = srv_->serve(fd);  // true: stop() made it leave, the socket still open
    int err = errno;
    std::unique_lock l(mu_);
    if (left) {
      ::close(fd);
      fd = -1;
    }
    if (stopping_) break;
    // httplib ends its loop (and closes the socket) on an accept error other
    // than EMFILE, after which it sleeps 1 ms per try: listen again, once a second.
    log::warn("an HTTP endpoint stopped accepting; listening again in 1 s",
              {{"what", listen_.what}, {"addr", listen_.addr}, {"error", errno_text(err)}});
    fd = -1;
    while (fd < 0) {
      if (cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_; })) break;
      auto s = listen_on(listen_);
      if (!s) {
        log::warn("couldn't listen again; trying each second", {{"what", listen_.what}, {"error", s.error().format()}});
        continue;
      }
      ctl_ = Fd(::fcntl(s->get(), F_DUPFD_CLOEXEC, 0));
      fd = s->release();
    }
    if (stopping_) break;
  }
  if (fd >= 0) ::close(fd);  // stopped before it was served
  std::lock_guard l(mu_);
  done_ = true;
  cv_.notify_all();
}

}  // namespace meshcut::daemon::http
