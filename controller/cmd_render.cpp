// SPDX-License-Identifier: Apache-2.0
// meshcut-control render --istio: an action as the Istio objects that would
// enforce it (istio.h), as multi-document YAML or (--json) one JSON array, to
// stdout or --out FILE. The action is the node's action document, or a
// document holding it as "action" (`explain --json`, a `run --log` line).
// Bad input (an unreadable file, an action the service file refutes, a class
// Istio cannot match) is reported with its fix, exit code 2, nothing written.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "meshcut/control/istio.h"
#include "meshcut/obj/document.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

constexpr int kBadInput = 2;

meshcut::Result<json> load_action(const std::string& path) {
  auto text = meshcut::obj::read_file(path);
  if (!text)
    return meshcut::make_error("--action: " + text.error().what, text.error().err,
                               "give the action document the controller pushes (JSON or YAML)");
  std::string ext = path.substr(path.find_last_of('.') == std::string::npos ? path.size() : path.rfind('.') + 1);
  auto docs = meshcut::obj::parse_documents(*text, meshcut::obj::format_from_hint(ext));
  if (!docs) return meshcut::make_error("--action " + path + ": " + docs.error().what, 0, "");
  if (docs->size() != 1)
    return meshcut::make_error("--action " + path + ": expected one document, got " + std::to_string(docs->size()), 0,
                               "give one action");
  json doc = docs->front();
  if (doc.is_object() && !doc.contains("generation") && doc.contains("action") && doc["action"].is_object())
    doc = doc["action"];
  return doc;
}

// TEXT to PATH through PATH.tmp and a rename: a failed write leaves PATH as it was.
meshcut::Status write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return meshcut::make_error("--out: couldn't create '" + tmp + "'", errno, "check the directory exists");
    f << text;
    f.flush();
    if (!f) {
      int err = errno;
      std::remove(tmp.c_str());
      return meshcut::make_error("--out: couldn't write '" + tmp + "'", err, "");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return meshcut::make_error("--out: couldn't rename '" + tmp + "' to '" + path + "'", err, "");
  }
  return meshcut::ok_status();
}

}  // namespace

void add_render_command(CLI::App& app) {
  struct Args {
    std::string action, services, out = "-";
    bool istio = false, json = false;
    IstioOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("render", "write an action as the resources a mesh would enforce it with");
  c->add_flag("--istio", a->istio, "Istio: DestinationRule, VirtualService, EnvoyFilter (the only target)")->required();
  c->add_option("--action", a->action, "the action document (JSON or YAML), or a document with it as \"action\"")
      ->required();
  c->add_option("--services", a->services, "the service file (services, endpoints with pod names, caller classes)")
      ->required();
  c->add_option("--out", a->out, "output file, - for stdout")->capture_default_str();
  c->add_option("--root-namespace", a->opt.root_namespace, "Istio's root namespace (the EnvoyFilter's)")
      ->capture_default_str();
  c->add_option("--pod-label", a->opt.pod_label, "pod label whose value is the pod's name (one pod per subset)")
      ->capture_default_str();
  c->add_option("--cluster-domain", a->opt.cluster_domain, "the hosts' domain")->capture_default_str();
  c->add_flag("--json", a->json, "a JSON array of the objects instead of multi-document YAML");
  c->callback([a] {
    auto fail = [](const meshcut::Error& e) {
      std::fprintf(stderr, "meshcut-control render: %s\n", e.format().c_str());
      throw CLI::RuntimeError(kBadInput);
    };
    auto services = meshcut::obj::load_services(a->services);
    if (!services) {
      meshcut::Error e = services.error();
      e.what = "--services: " + e.what;
      if (e.hint.empty()) e.hint = "give the service file meshcutd watches (services.h)";
      fail(e);
    }
    auto action = load_action(a->action);
    if (!action) fail(action.error());
    auto r = render_istio(*action, *services, a->opt);
    if (!r) fail(r.error());
    std::string text;
    if (a->json) {
      text = to_json(*r).dump(2) + "\n";
      for (const std::string& n : r->notes) std::fprintf(stderr, "meshcut-control render: note: %s\n", n.c_str());
    } else {
      text = to_yaml(*r);
    }
    if (a->out == "-") {
      std::cout << text << std::flush;
      return;
    }
    auto st = write_file(a->out, text);
    if (!st) fail(st.error());
  });
}
