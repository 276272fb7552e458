// SPDX-License-Identifier: Apache-2.0
// mcload's HTTP/1.1 response parser, whole and in every split of its bytes;
// and the bookkeeping that turns responses into per-second rows and a verdict.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>

#include "mcload/http.h"
#include "mcload/report.h"

using namespace mcload;
using State = ResponseParser::State;

namespace {

// Feed RESP in pieces of at most STEP bytes; returns consumed bytes.
size_t feed_split(ResponseParser& p, const std::string& resp, size_t step) {
  size_t off = 0;
  while (off < resp.size() && p.state() == State::Incomplete) {
    size_t n = std::min(step, resp.size() - off);
    size_t used = p.feed(resp.data() + off, n);
    off += used;
    if (used < n) break;
  }
  return off;
}

const std::string kLength = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 11\r\n\r\nhello world";
const std::string kChunked =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";

}  // namespace

TEST_CASE("request line and Host header", "[mcload-http]") {
  CHECK(build_request("web:8080", "/1k.bin", true) ==
        "GET /1k.bin HTTP/1.1\r\nHost: web:8080\r\nUser-Agent: mcload\r\nAccept: */*\r\n\r\n");
  CHECK(build_request("h", "/", false).find("Connection: close\r\n\r\n") != std::string::npos);
}

TEST_CASE("Content-Length body, whole and split at every byte", "[mcload-http]") {
  for (size_t step : {kLength.size(), size_t{1}, size_t{2}, size_t{7}, size_t{30}}) {
    ResponseParser p;
    INFO("step " << step);
    CHECK(feed_split(p, kLength, step) == kLength.size());
    CHECK(p.state() == State::Done);
    CHECK(p.status() == 200);
    CHECK(p.body_bytes() == 11);
    CHECK(p.keep_alive());
  }
}

TEST_CASE("chunked body with extensions and trailers, split at every byte", "[mcload-http]") {
  for (size_t step = 1; step <= kChunked.size(); ++step) {
    ResponseParser p;
    INFO("step " << step);
    REQUIRE(feed_split(p, kChunked, step) == kChunked.size());
    REQUIRE(p.state() == State::Done);
    CHECK(p.body_bytes() == 16);
  }
}

TEST_CASE("keep-alive: the next response's bytes are not consumed", "[mcload-http]") {
  std::string two = kLength + "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  ResponseParser p;
  size_t used = p.feed(two.data(), two.size());
  CHECK(used == kLength.size());
  CHECK(p.state() == State::Done);
  p.reset();
  CHECK(p.feed(two.data() + used, two.size() - used) == two.size() - used);
  CHECK(p.state() == State::Done);
  CHECK(p.status() == 404);
  CHECK(p.body_bytes() == 0);
}

TEST_CASE("Connection: close, HTTP/1.0, body up to the close", "[mcload-http]") {
  ResponseParser a;
  std::string r = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
  a.feed(r.data(), r.size());
  CHECK(a.state() == State::Done);
  CHECK_FALSE(a.keep_alive());
  ResponseParser b;
  std::string r10 = "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\nbody bytes";
  b.feed(r10.data(), r10.size());
  CHECK(b.state() == State::Incomplete);
  CHECK(b.eof() == State::Done);
  CHECK(b.body_bytes() == 10);
  CHECK_FALSE(b.keep_alive());
}

TEST_CASE("no body for 204 and 304; 100 Continue is skipped", "[mcload-http]") {
  ResponseParser p;
  std::string r = "HTTP/1.1 204 No Content\r\n\r\n";
  p.feed(r.data(), r.size());
  CHECK(p.state() == State::Done);
  ResponseParser q;
  std::string c = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad";
  CHECK(feed_split(q, c, 3) == c.size());
  CHECK(q.state() == State::Done);
  CHECK(q.status() == 500);
}

TEST_CASE("malformed responses and early closes are errors with a reason", "[mcload-http]") {
  auto err = [](const std::string& r) {
    ResponseParser p;
    p.feed(r.data(), r.size());
    if (p.state() == State::Incomplete) p.eof();
    return p.state() == State::Error ? p.error() : std::string("no error");
  };
  CHECK(err("SSH-2.0-OpenSSH\r\n").find("bad status line") != std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\n").find("bad Content-Length") != std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").find("conflicting") !=
        std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").find("bad chunk size") != std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n").find("longer than its size") !=
        std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").find("middle of the response") != std::string::npos);
  CHECK(err("").find("before any response") != std::string::npos);
  CHECK(err("HTTP/1.1 200 OK\r\n" + std::string(9000, 'a')).find("longer than") != std::string::npos);
}

TEST_CASE("recorder: per-second rows, run totals merged, late events counted once", "[mcload-report]") {
  Recorder rec;
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < 100; ++i) {
      Window* w = rec.at(s);
      ++w->c.scheduled;
      ++w->c.sent;
      ++w->c.completed;
      ++w->c.ok;
      w->latency.record(static_cast<uint64_t>(1000 * (i + 1) * (s + 1)));
      w->service.record(500);
    }
  CHECK(rec.at(-1) == nullptr);  // the warm-up
  rec.close_before(2);
  REQUIRE(rec.rows().size() == 2);
  ++rec.at(0)->c.errors;  // late, for a closed second: into the run only
  rec.at(5)->c.scheduled += 1;
  rec.finish();
  REQUIRE(rec.rows().size() == 6);  // seconds 3 and 4 are empty rows
  CHECK(rec.rows()[3].c.scheduled == 0);
  CHECK(rec.rows()[1].lat[4] == 200'000);
  CHECK(rec.run().c.scheduled == 301);
  CHECK(rec.run().c.errors == 1);
  CHECK(rec.run().latency.count() == 300);
  CHECK(rec.run().latency.max() == 300'000);
  std::ostringstream csv;
  write_csv(csv, rec.rows(), {100, 100, 100});
  std::string text = csv.str();
  CHECK(std::count(text.begin(), text.end(), '\n') == 7);
  CHECK(text.rfind("second,target_rate,", 0) == 0);
}

TEST_CASE("verdict: cannot keep up on low rate, sender lag or pool exhaustion", "[mcload-report]") {
  Limits lim;
  Counts c;
  c.sent = 960;
  CHECK(judge(c, 1000, 1.0, lim, true, 4).kept_up);
  c.sent = 900;
  auto v = judge(c, 1000, 1.0, lim, true, 4);
  CHECK_FALSE(v.kept_up);
  REQUIRE(v.reasons.size() == 1);
  CHECK(v.reasons[0].find("90.0 % of the target") != std::string::npos);
  c.sent = 1000;
  c.max_lag_ns = 50'000'000;
  c.max_queue_ns = 60'000'000;
  c.queued = 7;
  v = judge(c, 1000, 1.0, lim, true, 4);
  REQUIRE(v.reasons.size() == 2);
  CHECK(v.reasons[0].find("sender lag 50.0 ms") != std::string::npos);
  CHECK(v.reasons[1].find("pool exhausted: all 4 connections busy") != std::string::npos);
  CHECK(judge(c, 1000, 1.0, lim, false, 0).reasons.size() == 1);  // no pool, no pool verdict
}
