// SPDX-License-Identifier: Apache-2.0
#include "mcload/http.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace mcload {

namespace {

constexpr size_t kMaxLine = 8192;
constexpr size_t kMaxHeaders = 65536;

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string build_request(std::string_view host, std::string_view path, bool keep_alive) {
  std::string r;
  r.reserve(64 + host.size() + path.size());
  r.append("GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  r.append("\r\nUser-Agent: mcload\r\nAccept: */*\r\n");
  if (!keep_alive) r.append("Connection: close\r\n");
  r.append("\r\n");
  return r;
}

void ResponseParser::reset() { *this = ResponseParser{}; }

ResponseParser::State ResponseParser::fail(std::string why) {
  error_ = std::move(why);
  state_ = State::Error;
  return state_;
}

// Appends to line_ up to and including '\n'; true with OUT set (no CR LF)
// once a whole line is in.
bool ResponseParser::line(const char*& p, const char* end, std::string& out) {
  const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
  const char* stop = nl ? nl : end;
  line_.append(p, static_cast<size_t>(stop - p));
  header_bytes_ += static_cast<size_t>(stop - p);
  p = nl ? nl + 1 : end;
  if (line_.size() > kMaxLine) {
    fail("response line longer than " + std::to_string(kMaxLine) + " bytes");
    return false;
  }
  if (!nl) return false;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  out.swap(line_);
  line_.clear();
  return true;
}

ResponseParser::State ResponseParser::on_status(const std::string& l) {
  // HTTP/1.1 200 OK
  if (l.size() < 12 || l.compare(0, 7, "HTTP/1.") != 0 || !std::isdigit(static_cast<unsigned char>(l[7])) ||
      l[8] != ' ' || !std::isdigit(static_cast<unsigned char>(l[9])) ||
      !std::isdigit(static_cast<unsigned char>(l[10])) || !std::isdigit(static_cast<unsigned char>(l[11])) ||
      (l.size() > 12 && l[12] != ' '))
    return fail("bad status line \"" + l.substr(0, 80) + "\"");
  minor_ = l[7] - '0';
  keep_alive_ = minor_ >= 1;
  status_ = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
  phase_ = Phase::Headers;
  return state_;
}

ResponseParser::State ResponseParser::on_header(const std::string& l) {
  auto colon = l.find(':');
  if (colon == std::string::npos || colon == 0) return fail("bad header line \"" + l.substr(0, 80) + "\"");
  std::string name = lower(strip(std::string_view(l).substr(0, colon)));
  std::string value = lower(strip(std::string_view(l).substr(colon + 1)));
  if (name == "content-length") {
    if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), ::isdigit))
      return fail("bad Content-Length \"" + value + "\"");
    uint64_t v = std::stoull(value);
    if (has_length_ && v != length_) return fail("conflicting Content-Length headers");
    has_length_ = true;
    length_ = v;
  } else if (name == "transfer-encoding") {
    auto comma = value.rfind(',');
    chunked_ = strip(comma == std::string::npos ? std::string_view(value)
                                                : std::string_view(value).substr(comma + 1)) == "chunked";
  } else if (name == "connection") {
    if (value.find("close") != std::string::npos)
      keep_alive_ = false;
    else if (value.find("keep-alive") != std::string::npos)
      keep_alive_ = true;
  }
  return state_;
}

ResponseParser::State ResponseParser::header_done() {
  if (status_ >= 100 && status_ < 200) {  // an interim response (100 Continue): the real one follows
    phase_ = Phase::StatusLine;
    has_length_ = chunked_ = false;
    return state_;
  }
  if (status_ == 204 || status_ == 304) {
    phase_ = Phase::Done;
  } else if (chunked_) {
    phase_ = Phase::ChunkSize;  // chunked wins over Content-Length (RFC 9112 6.3)
  } else if (has_length_) {
    left_ = length_;
    phase_ = length_ ? Phase::Body : Phase::Done;
  } else {
    keep_alive_ = false;
    phase_ = Phase::UntilClose;
  }
  if (phase_ == Phase::Done) state_ = State::Done;
  return state_;
}

size_t ResponseParser::feed(const char* data, size_t n) {
  const char* p = data;
  const char* end = data + n;
  std::string l;
  while (p < end && state_ == State::Incomplete) {
    switch (phase_) {
      case Phase::StatusLine:
        if (line(p, end, l)) {
          if (l.empty() && status_ == 0) break;  // a stray CR LF before the response
          on_status(l);
        }
        break;
      case Phase::Headers:
        if (line(p, end, l)) {
          if (l.empty())
            header_done();
          else
            on_header(l);
        }
        if (state_ == State::Incomplete && header_bytes_ > kMaxHeaders)
          fail("response headers longer than " + std::to_string(kMaxHeaders) + " bytes");
        break;
      case Phase::Body:
      case Phase::ChunkData: {
        uint64_t take = std::min<uint64_t>(left_, static_cast<uint64_t>(end - p));
        p += take;
        left_ -= take;
        body_bytes_ += take;
        if (left_ == 0) {
          phase_ = phase_ == Phase::Body ? Phase::Done : Phase::ChunkDataEnd;
          if (phase_ == Phase::Done) state_ = State::Done;
        }
        break;
      }
      case Phase::ChunkSize:
        if (line(p, end, l)) {
          std::string_view hex = strip(std::string_view(l).substr(0, l.find(';')));
          if (hex.empty() || hex.size() > 15 || !std::all_of(hex.begin(), hex.end(), ::isxdigit)) {
            fail("bad chunk size \"" + l.substr(0, 40) + "\"");
            break;
          }
          left_ = std::stoull(std::string(hex), nullptr, 16);
          phase_ = left_ ? Phase::ChunkData : Phase::Trailers;
        }
        break;
      case Phase::ChunkDataEnd:
        if (line(p, end, l)) {
          if (!l.empty())
            fail("chunk data longer than its size");
          else
            phase_ = Phase::ChunkSize;
        }
        break;
      case Phase::Trailers:
        if (line(p, end, l) && l.empty()) {
          phase_ = Phase::Done;
          state_ = State::Done;
        }
        break;
      case Phase::UntilClose:
        body_bytes_ += static_cast<uint64_t>(end - p);
        p = end;
        break;
      case Phase::Done: state_ = State::Done; break;
    }
  }
  return static_cast<size_t>(p - data);
}

ResponseParser::State ResponseParser::eof() {
  if (state_ != State::Incomplete) return state_;
  if (phase_ == Phase::UntilClose) {
    phase_ = Phase::Done;
    state_ = State::Done;
    return state_;
  }
  if (phase_ == Phase::StatusLine && status_ == 0 && line_.empty())
    return fail("connection closed before any response");
  return fail("connection closed in the middle of the response");
}

}  // namespace mcload
