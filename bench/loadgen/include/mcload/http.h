// SPDX-License-Identifier: Apache-2.0
// mcload's HTTP/1.1 response parser: incremental (bytes arrive in any split),
// pure logic, included by mcload and its unit tests. It reads the status line,
// the headers it needs (Content-Length, Transfer-Encoding: chunked,
// Connection) and skips the body: by length, by chunks (extensions and
// trailers allowed), or up to the close when neither is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mcload {

// The request mcload sends: GET PATH with a Host header.
std::string build_request(std::string_view host, std::string_view path, bool keep_alive);

class ResponseParser {
 public:
  enum class State { Incomplete, Done, Error };

  // Feed the next bytes; returns how many were consumed. Stops at the end of
  // the response (a keep-alive connection's next bytes are not consumed);
  // Error with error() set on a malformed response.
  size_t feed(const char* data, size_t n);
  // The peer closed: a body delimited by the close is complete now,
  // anything else unfinished is an error.
  State eof();
  State state() const { return state_; }
  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  uint64_t body_bytes() const { return body_bytes_; }
  const std::string& error() const { return error_; }
  // Set before feeding the response to a HEAD request (never sent by mcload,
  // but 1xx/204/304 have no body either).
  void reset();

 private:
  enum class Phase { StatusLine, Headers, Body, ChunkSize, ChunkData, ChunkDataEnd, Trailers, UntilClose, Done };
  State fail(std::string why);
  bool line(const char*& p, const char* end, std::string& out);
  State header_done();
  State on_status(const std::string& l);
  State on_header(const std::string& l);

  Phase phase_ = Phase::StatusLine;
  State state_ = State::Incomplete;
  std::string line_;
  int status_ = 0;
  int minor_ = 1;
  bool keep_alive_ = true;
  bool chunked_ = false;
  bool has_length_ = false;
  uint64_t length_ = 0;
  uint64_t left_ = 0;
  uint64_t body_bytes_ = 0;
  size_t header_bytes_ = 0;
  std::string error_;
};

}  // namespace mcload
