// SPDX-License-Identifier: Apache-2.0
// `meshcutd objectives status|apply|clear`: the operator's side of the
// objectives API (the running daemon holds the services and the windows; the
// CLI asks it, never writes the maps itself).
#include <httplib.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli.h"
#include "commands.h"
#include "meshcut/obj/document.h"

namespace meshcut::daemon {
namespace {

Result<std::string> read_token(const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream f(path);
  if (!f) return make_error("couldn't read the API token file '" + path + "'", errno);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

// One call to the API; the reply's JSON body, or an error with its message.
Result<nlohmann::json> call(const ObjectivesArgs& a, const std::string& method, const std::string& path,
                            const std::string& body = "") {
  auto tok = read_token(a.token_file);
  if (!tok) return tok.error();
  httplib::Client cli("http://" + a.api_addr);
  cli.set_connection_timeout(3);
  cli.set_read_timeout(10);
  httplib::Headers h;
  if (!tok->empty()) h.emplace("Authorization", "Bearer " + *tok);
  httplib::Result r = method == "GET"   ? cli.Get(path.c_str(), h)
                      : method == "PUT" ? cli.Put(path.c_str(), h, body, "application/json")
                                        : cli.Delete(path.c_str(), h);
  if (!r)
    return make_error(
        "couldn't reach meshcutd's objectives API at " + a.api_addr + " (" + httplib::to_string(r.error()) + ")",
        ECONNREFUSED, "is `meshcutd run` up with --api-addr " + a.api_addr + "?");
  nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
  if (r->status != 200) {
    std::string msg = j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r->body;
    return make_error("meshcutd refused: " + msg, r->status == 401 ? EACCES : EINVAL,
                      r->status == 401 ? "pass --api-token-file with the daemon's token" : "");
  }
  return j;
}

}  // namespace

int cmd_objectives(const ObjectivesArgs& a) {
  if (a.verb == "status") {
    auto j = call(a, "GET", "/v1/status");
    if (!j) return fail(j.error());
    if (a.json) {
      std::printf("%s\n", j->dump(2).c_str());
      return 0;
    }
    const auto& act = (*j)["action"];
    std::printf("objectives: %s, %zu service(s), action generation %llu%s\n",
                (*j)["enabled"].get<bool>() ? "on" : "off", (*j)["services"].size(),
                static_cast<unsigned long long>(act.value("generation", 0ull)),
                act.value("expired", false) ? " (expired: no control)" : "");
    for (const auto& s : (*j)["services"])
      std::printf("  %s %s:%d  %zu endpoint(s)\n", s.value("key", "").c_str(), s.value("cluster_ip", "").c_str(),
                  s.value("port", 0), s.value("endpoints", nlohmann::json::array()).size());
    std::printf("  %-24s %-22s %-10s %9s %9s %9s %9s\n", "service", "backend", "class", "offered", "blocked",
                "requests", "completed");
    for (const auto& t : (*j)["totals"])
      std::printf("  %-24s %-22s %-10s %9llu %9llu %9llu %9llu\n", t.value("service", "").c_str(),
                  t.value("backend", "").c_str(), t.value("class", "").c_str(),
                  static_cast<unsigned long long>(t.value("offered", 0ull)),
                  static_cast<unsigned long long>(t.value("blocked", 0ull)),
                  static_cast<unsigned long long>(t.value("requests", 0ull)),
                  static_cast<unsigned long long>(t.value("completed", 0ull)));
    std::printf("counters:");
    for (const auto& [k, v] : (*j)["counters"].items())
      if (v.get<uint64_t>()) std::printf(" %s=%llu", k.c_str(), static_cast<unsigned long long>(v.get<uint64_t>()));
    std::printf("\n");
    return 0;
  }
  if (a.verb == "apply") {
    // Read and parsed here (JSON or YAML), so a malformed file never reaches the daemon.
    auto text = obj::read_file(a.file);
    if (!text) return fail(text.error());
    auto docs = obj::parse_documents(*text, obj::format_from_hint(a.file));
    if (!docs) return fail(docs.error());
    if (docs->size() != 1)
      return fail(
          make_error("'" + a.file + "' holds " + std::to_string(docs->size()) + " documents, want one action", EINVAL));
    auto j = call(a, "PUT", "/v1/action", (*docs)[0].dump());
    if (!j) return fail(j.error());
    std::printf("applied generation %llu\n", static_cast<unsigned long long>(j->value("generation", 0ull)));
    return 0;
  }
  auto j = call(a, "DELETE", "/v1/action");
  if (!j) return fail(j.error());
  std::printf("cleared: no control (plain routing, no blocking)\n");
  return 0;
}

}  // namespace meshcut::daemon
