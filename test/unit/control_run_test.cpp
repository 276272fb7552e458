// SPDX-License-Identifier: Apache-2.0
// The run loop (controller/run.h) against two twins standing in for two nodes:
// the action reaches both, the windows of both come back merged, a node that
// is down or refuses keeps the other controlled, a late node's windows are
// read later and not lost, objectives changed at run time change the next
// action, static holds one action, none pushes nothing. Then the HTTP link
// against a real server: a refusal's reason, a late answer's timeout, a port
// nobody listens on, and --nodes parsing.
#include <httplib.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "meshcut/control/run.h"
#include "meshcut/control/twin.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

TwinConfig scenario(uint64_t seed) {
  TwinConfig c;
  c.classes = {"premium", "freemium"};
  c.seed = seed;
  TwinService s1{"default/s1",
                 {{"s1-a", "", 1, ServiceTime::exponential(10)}, {"s1-b", "", 1, ServiceTime::exponential(20)}},
                 {{"premium", Pattern::constant(30)}, {"freemium", Pattern::constant(30)}}};
  c.services.push_back(s1);
  return c;
}

Objectives objectives(double bound_ms) {
  auto o = parse_objectives(R"({"apiVersion": "meshcut.io/v1alpha1", "kind": "Objectives", "spec": {
    "services": [{"service": "default/s1", "latency": {"percentile": 95, "boundMs": )" +
                            std::to_string(bound_ms) + R"(}, "classWeights": {"premium": 3, "freemium": 1}}],
    "grid": {"routingStep": 0.2, "admissionStep": 0.2}}})");
  REQUIRE(o.ok());
  return *o;
}

// A node: a twin behind NodeLink, with switches for the failures.
struct TwinNode {
  std::unique_ptr<Twin> twin;
  bool down = false, refuse = false;
  size_t puts = 0, clears = 0;
};

class TwinLink final : public NodeLink {
 public:
  explicit TwinLink(TwinNode* n) : n_(n) {}
  meshcut::Result<json> windows_since(uint64_t seq) override {
    if (n_->down) return meshcut::make_error("node down", ECONNREFUSED, "");
    return n_->twin->store().windows_since(seq, 600);
  }
  meshcut::Status put_action(const json& a) override {
    if (n_->down) return meshcut::make_error("node down", ECONNREFUSED, "");
    if (n_->refuse) return meshcut::make_error("PUT /v1/action refused (HTTP 409): stale generation", 0, "");
    ++n_->puts;
    return n_->twin->apply(a);
  }
  meshcut::Status clear() override {
    ++n_->clears;
    n_->twin->clear();
    return meshcut::ok_status();
  }

 private:
  TwinNode* n_;
};

struct Bed {
  TwinNode a, b;
  std::unique_ptr<Controller> ctl;
  explicit Bed(RunOptions opt, double bound_ms = 60) {
    auto ta = Twin::create(scenario(1)), tb = Twin::create(scenario(2));
    REQUIRE(ta.ok());
    REQUIRE(tb.ok());
    a.twin = std::move(*ta);
    b.twin = std::move(*tb);
    std::vector<std::unique_ptr<NodeLink>> links;
    links.push_back(std::make_unique<TwinLink>(&a));
    links.push_back(std::make_unique<TwinLink>(&b));
    ctl = std::make_unique<Controller>(a.twin->services(), objectives(bound_ms), opt,
                                       std::vector<NodeAddr>{{"a", "127.0.0.1", 1}, {"b", "127.0.0.1", 2}},
                                       std::move(links));
  }
  // A second passes on both nodes (a down node keeps running), then the controller's window.
  TickReport second() {
    a.twin->step();
    b.twin->step();
    return ctl->tick();
  }
};

double offered_all(const json& window) {
  double o = 0;
  for (const json& r : window["rows"])
    if (r["backend"] == "all") o += r["rate"]["offered"].get<double>();
  return o;
}

RunOptions quick(RunPolicy p) {
  RunOptions o;
  o.policy = p;
  o.learn_windows = 40;
  o.policy_options.ttl_ms = 3000;
  return o;
}

}  // namespace

TEST_CASE("run: the action reaches both nodes and the windows of both come back merged", "[control-run]") {
  Bed bed(quick(RunPolicy::kSearch), 150);  // a bound some load can be carried within
  auto first = bed.second();
  CHECK(first.nodes_answered == 2);
  CHECK(first.nodes[0].windows == 0);  // the first read only sets the cursor: old windows are not this run's
  CHECK(first.phase == "learn");
  TickReport r;
  for (int i = 0; i < 60; ++i) {
    r = bed.second();
    REQUIRE(r.nodes_answered == 2);
    REQUIRE(r.nodes[0].windows == 1);
    REQUIRE(r.nodes[1].windows == 1);
  }
  CHECK(r.phase == "control");
  REQUIRE(r.action.is_object());
  const uint64_t gen = r.action["generation"].get<uint64_t>();
  CHECK(bed.a.twin->generation() == gen);
  CHECK(bed.b.twin->generation() == gen);
  CHECK(r.nodes_pushed == 2);
  // Merged: both nodes' offered load (60/s each) adds up, and the merged window's sources say so.
  CHECK(r.window["sources"] == 2);
  double a_off = offered_all(bed.a.twin->store().windows_since(bed.a.twin->store().last_seq() - 1, 1)["windows"][0]);
  double b_off = offered_all(bed.b.twin->store().windows_since(bed.b.twin->store().last_seq() - 1, 1)["windows"][0]);
  CHECK(offered_all(r.window) == Approx(a_off + b_off));
  REQUIRE(r.services.size() == 1);
  CHECK(r.services[0].offered_rps == Approx(a_off + b_off));
  CHECK(r.services[0].controlled);
  CHECK(r.services[0].predicted_ms > 0);
  // The model was fed by both: every backend fitted.
  CHECK(bed.ctl->model().backends().size() == 2);
  std::string prom = bed.ctl->prometheus();
  CHECK(prom.find("meshcut_control_node_up{node=\"a\"} 1") != std::string::npos);
  CHECK(prom.find("meshcut_control_node_windows_total{node=\"b\"} 60") != std::string::npos);
  CHECK(prom.find("meshcut_control_objective_met{service=\"default/s1\"}") != std::string::npos);
  CHECK(prom.find("meshcut_control_action_weight{service=\"default/s1\",backend=") != std::string::npos);
}

TEST_CASE("run: a node down keeps the other controlled; its windows are read when it is back", "[control-run]") {
  Bed bed(quick(RunPolicy::kSearch));
  for (int i = 0; i < 45; ++i) bed.second();
  bed.b.down = true;
  const uint64_t b_gen = bed.b.twin->generation();
  for (int i = 0; i < 3; ++i) {
    auto r = bed.second();
    CHECK(r.nodes_answered == 1);
    CHECK(r.nodes_pushed == 1);
    CHECK(r.nodes[0].pushed);
    CHECK_FALSE(r.nodes[1].pushed);
    CHECK(r.nodes[1].error.find("node down") != std::string::npos);
    CHECK(bed.a.twin->generation() == r.action["generation"].get<uint64_t>());
    CHECK(r.window["sources"] == 1);
  }
  CHECK(bed.b.twin->generation() == b_gen);
  CHECK(bed.ctl->prometheus().find("meshcut_control_node_fetch_errors_total{node=\"b\"} 3") != std::string::npos);
  CHECK(bed.ctl->prometheus().find("meshcut_control_node_up{node=\"b\"} 0") != std::string::npos);
  // Back (or late): the three windows it had meanwhile, plus this one, come concatenated; none missed.
  bed.b.down = false;
  auto r = bed.second();
  CHECK(r.nodes_answered == 2);
  CHECK(r.nodes[1].windows == 4);
  CHECK(r.nodes[1].missed == 0);
  CHECK(bed.b.twin->generation() == r.action["generation"].get<uint64_t>());
  // Rates of the concatenated node stay per second (about 60/s), not 4 x.
  CHECK(offered_all(r.window) < 200);
  CHECK(offered_all(r.window) > 80);
}

TEST_CASE("run: a node that refuses the action is counted; the other stays controlled", "[control-run]") {
  Bed bed(quick(RunPolicy::kSearch));
  for (int i = 0; i < 45; ++i) bed.second();
  bed.b.refuse = true;
  auto r = bed.second();
  CHECK(r.nodes_answered == 2);
  CHECK(r.nodes[0].pushed);
  CHECK_FALSE(r.nodes[1].pushed);
  CHECK(r.nodes[1].error.find("409") != std::string::npos);
  CHECK(bed.ctl->prometheus().find("meshcut_control_node_refused_total{node=\"b\"} 1") != std::string::npos);
  // It is tried again every window: when it takes actions again, it is controlled again.
  bed.b.refuse = false;
  r = bed.second();
  CHECK(r.nodes[1].pushed);
  CHECK(bed.b.twin->generation() == r.action["generation"].get<uint64_t>());
}

TEST_CASE("run: objectives changed at run time change the next window's action", "[control-run]") {
  Bed bed(quick(RunPolicy::kSearch), 200);  // loose: everything admitted
  TickReport r;
  for (int i = 0; i < 50; ++i) r = bed.second();
  REQUIRE(r.phase == "control");
  auto has_rate = [](const json& action) {
    for (const auto& [cls, e] : action["services"]["default/s1"]["classes"].items())
      if (e.contains("rate")) return true;
    return false;
  };
  CHECK_FALSE(has_rate(r.action));
  // 120/s offered against ~150/s of capacity: a p95 of 25 ms cannot be held without turning load away.
  bed.ctl->set_objectives(objectives(25));
  r = bed.second();
  CHECK(r.services[0].bound_ms == 25);
  CHECK(has_rate(r.action));
}

TEST_CASE("run: static holds one action; none pushes nothing and clears", "[control-run]") {
  {
    Bed bed(quick(RunPolicy::kStatic));
    std::vector<json> actions;
    for (int i = 0; i < 50; ++i) {
      auto r = bed.second();
      if (r.phase == "control") {
        json a = r.action;
        a.erase("generation");
        actions.push_back(a);
      }
    }
    REQUIRE(actions.size() >= 5);
    for (const json& a : actions) CHECK(a == actions.front());
    CHECK(bed.a.twin->generation() > 0);
  }
  {
    Bed bed(quick(RunPolicy::kNone));
    REQUIRE(bed.ctl->clear_all().ok());
    for (int i = 0; i < 5; ++i) {
      auto r = bed.second();
      CHECK(r.action.is_null());
      CHECK(r.phase == "control");
    }
    CHECK(bed.a.puts == 0);
    CHECK(bed.a.clears == 1);
    CHECK(bed.a.twin->generation() == 0);
  }
}

TEST_CASE("run: the HTTP link: a refusal's reason, a late node's timeout, nobody listening", "[control-run]") {
  httplib::Server srv;
  std::atomic<int> delay_ms{0};
  srv.Get("/v1/windows", [&](const httplib::Request& req, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    res.set_content(
        json{{"last_seq", 7}, {"missed", 0}, {"windows", json::array()}, {"since", req.get_param_value("since")}}
            .dump(),
        "application/json");
  });
  srv.Put("/v1/action", [](const httplib::Request&, httplib::Response& res) {
    res.status = 409;
    res.set_content(R"({"error": "generation 5 is not newer than 9, the one in force"})", "application/json");
  });
  srv.Delete("/v1/action",
             [](const httplib::Request&, httplib::Response& res) { res.set_content("{}", "application/json"); });
  int port = srv.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread t([&] { srv.listen_after_bind(); });
  NodeAddr addr{"n1", "127.0.0.1", static_cast<uint16_t>(port)};
  auto link = http_node(addr, "", 0.3);
  auto w = link->windows_since(3);
  REQUIRE(w.ok());
  CHECK((*w)["last_seq"] == 7);
  CHECK((*w)["since"] == "3");
  auto p = link->put_action(json{{"generation", 5}});
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().err == 0);
  CHECK(p.error().what.find("HTTP 409") != std::string::npos);
  CHECK(p.error().what.find("not newer than 9") != std::string::npos);
  CHECK(link->clear().ok());
  delay_ms = 1000;
  auto t0 = std::chrono::steady_clock::now();
  auto late = link->windows_since(0);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_FALSE(late.ok());
  CHECK(took < 0.9);
  CHECK(late.error().what.find("n1") != std::string::npos);
  srv.stop();
  t.join();
  auto gone = http_node(addr, "", 0.3)->windows_since(0);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().err == ECONNREFUSED);
  CHECK(gone.error().hint.find("--api-addr") != std::string::npos);
}

TEST_CASE("run: --nodes parsing and policy names", "[control-run]") {
  auto n = parse_nodes("10.0.0.1:9465,b=node-b.local:19465");
  REQUIRE(n.ok());
  REQUIRE(n->size() == 2);
  CHECK((*n)[0].name == "10.0.0.1:9465");
  CHECK((*n)[0].port == 9465);
  CHECK((*n)[1].name == "b");
  CHECK((*n)[1].host == "node-b.local");
  for (const char* bad :
       {"", "10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "h:12a", "a,,b:1", "=h:1", "x=h:1,x=h:2"}) {
    auto r = parse_nodes(bad);
    CAPTURE(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().what.find("--nodes") != std::string::npos);
  }
  CHECK(run_policy_from_string("static").ok());
  auto bad = run_policy_from_string("ppo2");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().hint.find("search") != std::string::npos);
}
