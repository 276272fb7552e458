// SPDX-License-Identifier: Apache-2.0
// meshcut-control fit: the model from recorded windows (model.h). FILE holds
// windows as a node serves them or as `run --log` records them: a JSON array
// of windows, a GET /v1/windows reply ({"windows": [...]}), or JSON lines,
// each a window or a run log line (its "window"). Prints per backend the
// fitted queue (mu, scv) and its error on held-out windows.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "meshcut/control/model.h"
#include "meshcut/obj/document.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

// Every window in TEXT (the shapes above), in order.
meshcut::Result<std::vector<json>> windows_of(const std::string& text, const std::string& path) {
  std::vector<json> out;
  auto take = [&](const json& j) {
    if (j.is_array()) {
      for (const json& w : j) out.push_back(w);
    } else if (j.is_object() && j.contains("rows")) {
      out.push_back(j);
    } else if (j.is_object() && j.contains("windows") && j["windows"].is_array()) {
      for (const json& w : j["windows"]) out.push_back(w);
    } else if (j.is_object() && j.contains("window") && j["window"].is_object()) {
      out.push_back(j["window"]);
    }
  };
  json whole = json::parse(text, nullptr, false);
  if (!whole.is_discarded()) {
    take(whole);
  } else {
    std::istringstream in(text);
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded())
        return meshcut::make_error(path + ":" + std::to_string(n) + ": not JSON", 0,
                                   "give a JSON array of windows, a /v1/windows reply, or JSON lines");
      take(j);
    }
  }
  if (out.empty())
    return meshcut::make_error(path + ": no windows in it", 0,
                               "record them with `meshcut-control run --log FILE` or GET /v1/windows");
  return out;
}

}  // namespace

void add_fit_command(CLI::App& app) {
  struct Args {
    std::string windows;
    bool json = false;
    FitOptions fit;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("fit", "fit the model from recorded windows; its held-out error per backend");
  c->add_option("--windows", a->windows, "recorded windows (JSON, a /v1/windows reply, or JSON lines)")->required();
  c->add_option("--holdout-every", a->fit.holdout_every, "every k-th window is held out for the error")
      ->capture_default_str();
  c->add_option("--servers", a->fit.servers, "servers per backend (c of M/G/c)")->capture_default_str();
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] {
    auto fail = [](const meshcut::Error& e) {
      std::fprintf(stderr, "meshcut-control: %s\n", e.format().c_str());
      throw CLI::RuntimeError(1);
    };
    auto text = meshcut::obj::read_file(a->windows);
    if (!text) fail(text.error());
    auto ws = windows_of(*text, a->windows);
    if (!ws) fail(ws.error());
    Model m;
    for (const json& w : *ws) m.add_window(w);
    auto st = m.fit(a->fit);
    if (m.backends().empty())
      fail(st ? meshcut::make_error(a->windows + ": no backend could be fitted", 0, "") : st.error());
    if (!st) std::fprintf(stderr, "meshcut-control: some backends not fitted: %s\n", st.error().format().c_str());
    if (a->json) {
      std::cout << json{{"windows", ws->size()}, {"model", m.to_json()}}.dump(2) << "\n";
      return;
    }
    std::printf("%zu windows\n%-16s %-22s %9s %6s %6s %9s %9s\n", ws->size(), "service", "backend", "mu/s", "scv",
                "fit", "nmae p95", "q90 p95");
    for (const auto& [k, b] : m.backends())
      std::printf("%-16s %-22s %9.1f %6.2f %6zu %9.3f %9.2f\n", k.first.c_str(), k.second.c_str(), b.params().mu,
                  b.params().scv, b.n_fit, b.nmae[2], b.ratio_q90[2]);
  });
}
