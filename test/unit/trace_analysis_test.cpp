// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`'s correlation on recorded events, without root or BPF.
// test/fixtures/trace/app_20ms.jsonl: the first 70 events (5 requests) that
// `meshcutd trace --dump-events` wrote during test/netns/test_trace.py's "app"
// scenario: client app (pod A, uid 0) -> sidecar A -> sidecar B (uid 1337)
// -> server app (pod B, uid 65534), which sleeps 20 ms per request.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "trace_analysis.h"

using json = nlohmann::json;
using namespace meshcut::daemon;

namespace {

constexpr uint64_t kPodA = 3445, kPodB = 3452;

std::string fixture(const std::string& name) { return std::string(MESHCUT_FIXTURES_DIR) + "/trace/" + name; }

std::vector<std::string> lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

std::vector<mc_trace_event> events(const std::string& path) {
  std::vector<mc_trace_event> out;
  for (const auto& l : lines(path)) {
    auto e = trace_event_from_json(json::parse(l));
    REQUIRE(e);
    out.push_back(*e);
  }
  return out;
}

json analyze(uint64_t pod_filter = 0) {
  return analyze_trace(events(fixture("app_20ms.jsonl")), 1337, {{kPodA, "ns/a"}, {kPodB, "ns/b"}}, pod_filter);
}

}  // namespace

TEST_CASE("a dumped event reads back to the same line", "[trace]") {
  auto ls = lines(fixture("app_20ms.jsonl"));
  REQUIRE(ls.size() == 70);
  for (const auto& l : ls) {
    auto e = trace_event_from_json(json::parse(l));
    REQUIRE(e);
    CHECK(trace_event_json(*e).dump() == l);
  }
}

TEST_CASE("a malformed event is refused", "[trace]") {
  auto j = json::parse(lines(fixture("app_20ms.jsonl")).at(0));
  CHECK(trace_event_from_json(j));
  for (const char* k : {"ts_ns", "dir", "local", "sock_cookie"}) {
    auto bad = j;
    bad.erase(k);
    CHECK_FALSE(trace_event_from_json(bad));
  }
  auto bad = j;
  bad["dir"] = "sideways";
  CHECK_FALSE(trace_event_from_json(bad));
  bad = j;
  bad["local"] = "10.0.0.1";
  CHECK_FALSE(trace_event_from_json(bad));
}

TEST_CASE("recorded events: five requests along six sockets", "[trace]") {
  json r = analyze();
  CHECK(r["requests"] == 5);
  CHECK(r["incomplete_requests"] == 0);
  CHECK(r["incomplete_chains"] == 0);
  CHECK(r["sockets"] == json{{"seen", 6}, {"paired", 6}, {"proxy", 4}, {"proxy_linked", 4}});
  REQUIRE(r["chains"].size() == 1);
  const auto& c = r["chains"][0];
  CHECK(c["requests"] == 5);
  REQUIRE(c["sockets"].size() == 6);
  std::vector<std::string> roles, pods;
  for (const auto& s : c["sockets"]) {
    roles.push_back(s["role"]);
    pods.push_back(s["pod"]);
  }
  CHECK(roles == std::vector<std::string>{"app", "proxy", "proxy", "proxy", "proxy", "app"});
  CHECK(pods == std::vector<std::string>{"ns/a", "ns/a", "ns/a", "ns/b", "ns/b", "ns/b"});
  CHECK(c["sockets"][0]["uid"] == 0);
  CHECK(c["sockets"][5]["uid"] == 65534);
  CHECK(c["sockets"][0]["remote"] == "10.250.41.3:8080");
}

TEST_CASE("recorded events: the latency split", "[trace]") {
  json r = analyze();
  CAPTURE(r.dump());
  const auto& p = r["parts"];
  // Hand-checkable: request 1 is the client's send at ts 8646855086029 to the
  // last byte of its answer at 8646879433275 (24.347 ms, 112 B out, 8+100 B
  // back); the server app read at ..858597865 and answered 20.3 ms later.
  CHECK(p["total"] == json{{"avg_ms", 21.764}, {"p50_ms", 21.328}, {"p90_ms", 24.347}, {"n", 5}, {"share", 1.0}});
  CHECK(p["app"] == json{{"avg_ms", 20.278}, {"p50_ms", 20.29}, {"p90_ms", 20.462}, {"n", 5}, {"share", 0.932}});
  CHECK(p["proxy"] == json{{"avg_ms", 0.689}, {"p50_ms", 0.382}, {"p90_ms", 2.093}, {"n", 5}, {"share", 0.032}});
  CHECK(p["kernel"] == json{{"avg_ms", 0.797}, {"p50_ms", 0.547}, {"p90_ms", 1.947}, {"n", 5}, {"share", 0.037}});
  std::vector<double> totals, starts;
  for (const auto& q : r["request_list"]) {
    totals.push_back(q["total_ms"]);
    starts.push_back(q["t_ms"]);
  }
  CHECK(totals == std::vector<double>{24.347, 20.868, 20.888, 21.328, 21.39});
  CHECK(starts == std::vector<double>{0.0, 29.557, 55.632, 81.711, 108.199});
  CHECK(r["request_list"][0] == json{{"t_ms", 0.0},
                                     {"sockets", 6},
                                     {"total_ms", 24.347},
                                     {"proxy_ms", 2.093},
                                     {"kernel_ms", 1.947},
                                     {"app_ms", 20.308},
                                     {"request_bytes", 112},
                                     {"response_bytes", 108}});
  std::vector<std::string> hops;
  for (const auto& h : r["hops"]) hops.push_back(h["hop"].get<std::string>() + " " + h["kind"].get<std::string>());
  CHECK(hops == std::vector<std::string>{"1->2 kernel", "2->3 proxy", "3->4 kernel", "4->5 proxy", "5->6 kernel",
                                         "app 6 app", "6->5 kernel", "5->4 proxy", "4->3 kernel", "3->2 proxy",
                                         "2->1 kernel"});
  for (const auto& h : r["hops"]) CHECK(h["n"] == 5);
  CHECK(r["hops"][1] == json{{"hop", "2->3"},
                             {"kind", "proxy"},
                             {"dir", "request"},
                             {"who", "python3"},
                             {"avg_ms", 0.331},
                             {"p50_ms", 0.086},
                             {"p90_ms", 1.38},
                             {"n", 5},
                             {"share", 0.015}});
  CHECK(r["hops"][5] == json{{"hop", "app 6"},
                             {"kind", "app"},
                             {"dir", "request->response"},
                             {"who", "python3"},
                             {"avg_ms", 20.278},
                             {"p50_ms", 20.29},
                             {"p90_ms", 20.462},
                             {"n", 5},
                             {"share", 0.932}});
  // The parts add up to the client's latency, request by request.
  REQUIRE(r["request_list"].size() == 5);
  for (const auto& q : r["request_list"]) {
    CHECK(q["sockets"] == 6);
    CHECK(q["request_bytes"] == 112);
    CHECK(q["response_bytes"] == 108);
    CHECK(q["total_ms"].get<double>() ==
          Approx(q["proxy_ms"].get<double>() + q["kernel_ms"].get<double>() + q["app_ms"].get<double>()).margin(0.002));
  }
}

TEST_CASE("recorded events: --pod keeps only requests touching that netns", "[trace]") {
  CHECK(analyze(kPodB)["requests"] == 5);
  json none = analyze(99);
  CHECK(none["requests"] == 0);
  CHECK(none["chains"].empty());
  CHECK(none["sockets"]["paired"] == 6);  // the sockets are still seen and paired
}

TEST_CASE("no events: an empty report", "[trace]") {
  json r = analyze_trace({}, 1337, {}, 0);
  CHECK(r["requests"] == 0);
  CHECK(r["sockets"]["seen"] == 0);
  CHECK(r["parts"]["total"]["avg_ms"] == 0.0);
  CHECK(r["hops"].empty());
}
