// SPDX-License-Identifier: Apache-2.0
// meshcutd's HTTP API for the objectives controller (issue 15, "Interface"):
//   GET    /v1/windows?since=N&max=M  the windows after sequence number N (at most M)
//   PUT    /v1/action                 the action in the body (a JSON object)
//   GET    /v1/status                 services, the current action, what the actuators did
//   DELETE /v1/action                 back to no control
// Local-only by default; on any other address every request must carry
// "Authorization: Bearer TOKEN", TOKEN read from a file (a Kubernetes Secret,
// re-read when it changes). Every reply is JSON; every error is
// {"error": "what was wrong"} and reaches no handler.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "meshcut/error.h"

namespace meshcut::obj {

struct ApiOptions {
  // HOST:PORT, HOST an IPv4 address or "localhost"; port 0 takes a free one
  // (ApiServer::port() says which). A HOST outside 127.0.0.0/8 needs token_file.
  std::string listen = "127.0.0.1:9465";
  // The bearer token, trailing whitespace trimmed; "" is none (loopback only).
  std::string token_file;
  size_t max_body = 1 << 20;  // PUT bodies beyond it: 413
};

// What a handler answers: the status and the JSON body sent as is.
struct ApiReply {
  int status;
  nlohmann::json body;
};

// The handlers run on the server's workers (several at once: they do their
// own locking). An exception becomes a 500 with its message. An empty one
// answers 501.
struct ApiHandlers {
  // GET /v1/windows?since=N&max=M: both optional non-negative integers,
  // absent is 0 (max 0: as many as the handler gives). Other parameters: 400.
  std::function<ApiReply(uint64_t since, size_t max)> windows;
  // PUT /v1/action: the body, parsed, always a JSON object.
  std::function<ApiReply(const nlohmann::json& action)> put_action;
  // GET /v1/status
  std::function<ApiReply()> status;
  // DELETE /v1/action
  std::function<ApiReply()> clear;
};

class ApiServer {
 public:
  // Checks the options, reads the token file, binds and serves on a
  // background thread. Throws meshcut::Error (what failed, errno, how to fix
  // it) on a bad listen address, a non-loopback address without a token file,
  // an unreadable or empty token file, or a bind failure.
  static ApiServer start(const ApiOptions& opts, ApiHandlers handlers);
  // Stops serving and joins the workers; idempotent (the destructor calls it).
  void stop();
  // The port bound (the real one when the options asked for port 0).
  uint16_t port() const;

  ApiServer(ApiServer&&) noexcept;
  ApiServer& operator=(ApiServer&&) noexcept;
  ~ApiServer();

  struct Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshcut::obj
