// SPDX-License-Identifier: Apache-2.0
// What meshcutd's HTTP endpoints (/metrics in metrics.cpp, the objectives API
// in obj_api.cpp) share: a socket bound by hand (for the errno, the backlog and
// TCP_DEFER_ACCEPT), a bounded worker pool, short timeouts, a background thread
// that listens again after an accept error, and a stop that joins it.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "meshcut/error.h"
#include "meshcut/fd.h"

namespace httplib {
class Server;
}

namespace meshcut::daemon::http {

// The endpoints' limits. A request is small and answered in milliseconds, so
// every wait is short: a client that is idle, slow or gone costs one worker
// for a bounded time, and a few of them cannot hold the others off.
inline constexpr size_t kWorkers = 8;       // requests served at once
inline constexpr ptrdiff_t kMaxConns = 32;  // accepted, not yet done; beyond it accept pauses
inline constexpr time_t kIoTimeoutS = 2;    // each read or write of one request/response

// Where to listen, and how to name it in messages.
struct Listen {
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string addr;  // as the operator wrote it: "127.0.0.1:9464"
  std::string flag;  // the option that sets it, for the hints: "--metrics-addr"
  std::string what;  // what is served there: "/metrics"
};

// A bound, listening socket for L (errors name L.flag and say how to fix them).
Result<Fd> listen_on(const Listen& l);

// The text of an exception caught by httplib's exception handler.
std::string exception_text(std::exception_ptr ep);

class Endpoint;

// One endpoint served on a background thread until stop() (or destruction).
// Idle or slow clients are cut off after a few seconds and a bounded pool
// serves the rest (limits in http_server.cpp). Not movable (the thread holds
// it): own it through a pointer.
class Service {
 public:
  Service();
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Binds L (errors at once: bad address, port in use), lets ROUTE set the
  // handlers (and the payload limit: 4096 unless it sets another), serves.
  Status start(Listen l, const std::function<void(httplib::Server&)>& route);
  void stop();
  // The port bound (the real one when L asked for port 0); 0 before start.
  uint16_t port() const { return port_; }

 private:
  void run(int fd);

  Listen listen_;
  std::unique_ptr<Endpoint> srv_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool done_ = false;
  uint16_t port_ = 0;
  Fd ctl_;  // a duplicate of the listening socket, to wake accept() at stop
};

}  // namespace meshcut::daemon::http
