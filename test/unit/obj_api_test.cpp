// SPDX-License-Identifier: Apache-2.0
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "obj_api.h"

using namespace meshcut;
using namespace meshcut::obj;
using json = nlohmann::json;

namespace {

struct Calls {
  std::vector<std::pair<uint64_t, size_t>> windows;
  std::vector<json> actions;
};

ApiHandlers fake(Calls& c) {
  ApiHandlers h;
  h.windows = [&c](uint64_t since, size_t max) {
    c.windows.emplace_back(since, max);
    return ApiReply{200, json{{"since", since}, {"max", max}}};
  };
  h.put_action = [&c](const json& a) {
    c.actions.push_back(a);
    return ApiReply{200, json{{"accepted", true}}};
  };
  h.status = [] { return ApiReply{200, json{{"ok", true}}}; };
  h.clear = []() -> ApiReply { throw std::runtime_error("boom"); };
  return h;
}

std::string tmpdir() {
  char t[] = "/tmp/obj_api_test.XXXXXX";
  REQUIRE(::mkdtemp(t));
  return t;
}

void write(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::trunc) << s; }

json body(const httplib::Result& r) { return json::parse(r->body); }

}  // namespace

TEST_CASE("the objectives API passes windows queries through and refuses bad input", "[obj-api]") {
  Calls c;
  ApiOptions o;
  o.listen = "127.0.0.1:0";
  o.max_body = 64;
  auto srv = ApiServer::start(o, fake(c));
  REQUIRE(srv.port() != 0);
  httplib::Client cl("127.0.0.1", srv.port());

  auto r = cl.Get("/v1/windows?since=42&max=7");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  CHECK(body(r) == json{{"since", 42}, {"max", 7}});
  REQUIRE(c.windows.size() == 1);
  CHECK(c.windows[0] == std::pair<uint64_t, size_t>{42, 7});

  for (const char* q : {"since=-1", "since=abc", "since=", "max=1.5", "since=99999999999999999999"}) {
    r = cl.Get((std::string("/v1/windows?") + q).c_str());
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(body(r)["error"].get<std::string>().find("must be a non-negative integer") != std::string::npos);
  }
  r = cl.Get("/v1/windows?sinse=1");
  CHECK(r->status == 400);
  CHECK(body(r) == json{{"error", "unknown query parameter 'sinse' for /v1/windows"}});
  CHECK(c.windows.size() == 1);

  r = cl.Put("/v1/action", R"({"generation": 1})", "application/json");
  CHECK(r->status == 200);
  CHECK(body(r) == json{{"accepted", true}});
  REQUIRE(c.actions.size() == 1);
  CHECK(c.actions[0] == json{{"generation", 1}});

  r = cl.Put("/v1/action", R"({"generation": )", "application/json");
  CHECK(r->status == 400);
  CHECK(body(r)["error"].get<std::string>().rfind("malformed JSON in the action: [json.exception.parse_error.101] "
                                                  "parse error at line 1, column 16",
                                                  0) == 0);
  r = cl.Put("/v1/action", "[1]", "application/json");
  CHECK(r->status == 400);
  CHECK(body(r) == json{{"error", "the action must be a JSON object, not array"}});
  r = cl.Put("/v1/action", std::string(65, ' '), "application/json");
  CHECK(r->status == 413);
  CHECK(body(r) == json{{"error", "the body is larger than 64 bytes"}});
  CHECK(c.actions.size() == 1);

  r = cl.Get("/v1/nope");
  CHECK(r->status == 404);
  CHECK(body(r) == json{{"error", "no such path '/v1/nope': the API serves /v1/windows, /v1/action, /v1/status"}});
  r = cl.Post("/v1/action", "{}", "application/json");
  CHECK(r->status == 405);
  CHECK(r->get_header_value("Allow") == "PUT, DELETE");
  CHECK(body(r) == json{{"error", "method POST not allowed on /v1/action: use PUT or DELETE"}});
  r = cl.Delete("/v1/action");
  CHECK(r->status == 500);
  CHECK(body(r) == json{{"error", "the clear handler failed: boom"}});
  r = cl.Get("/v1/status");
  CHECK(r->status == 200);
  CHECK(body(r) == json{{"ok", true}});
  srv.stop();
}

TEST_CASE("the objectives API with a token file wants the bearer token and follows its rotation", "[obj-api]") {
  Calls c;
  std::string dir = tmpdir(), tok = dir + "/token";
  write(tok, "s3cret\n");
  ApiOptions o;
  o.listen = "localhost:0";
  o.token_file = tok;
  auto srv = ApiServer::start(o, fake(c));
  httplib::Client cl("127.0.0.1", srv.port());

  auto r = cl.Get("/v1/windows");
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->get_header_value("WWW-Authenticate") == "Bearer");
  CHECK(body(r) == json{{"error", "this API needs an 'Authorization: Bearer TOKEN' header"}});
  r = cl.Get("/v1/windows", {{"Authorization", "Bearer s3cre"}});
  CHECK(r->status == 401);
  CHECK(body(r) == json{{"error", "wrong bearer token"}});
  CHECK(c.windows.empty());
  r = cl.Get("/v1/windows", {{"Authorization", "Bearer s3cret"}});
  CHECK(r->status == 200);
  CHECK(c.windows.size() == 1);

  // The Secret rotates: a new token, a later mtime.
  write(tok, "n3w\n");
  timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 10, 0}};
  REQUIRE(::utimensat(AT_FDCWD, tok.c_str(), later, 0) == 0);
  r = cl.Get("/v1/windows", {{"Authorization", "Bearer s3cret"}});
  CHECK(r->status == 401);
  r = cl.Get("/v1/windows", {{"Authorization", "Bearer n3w"}});
  CHECK(r->status == 200);
  CHECK(c.windows.size() == 2);
  srv.stop();
  ::unlink(tok.c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("the objectives API refuses to start without what it needs", "[obj-api]") {
  Calls c;
  ApiOptions o;
  o.listen = "0.0.0.0:0";
  try {
    ApiServer::start(o, fake(c));
    FAIL("started on 0.0.0.0 without a token file");
  } catch (const Error& e) {
    CHECK(e.format().find("--api-token-file") != std::string::npos);
  }
  o.listen = "127.0.0.1:0";
  o.token_file = "/nonexistent/meshcut/token";
  try {
    ApiServer::start(o, fake(c));
    FAIL("started with a missing token file");
  } catch (const Error& e) {
    CHECK(e.err == ENOENT);
    CHECK(e.format().find("No such file or directory") != std::string::npos);
  }
  std::string dir = tmpdir(), tok = dir + "/token";
  write(tok, "\n\n");
  o.token_file = tok;
  try {
    ApiServer::start(o, fake(c));
    FAIL("started with an empty token file");
  } catch (const Error& e) {
    CHECK(e.format().find("is empty") != std::string::npos);
  }
  o.listen = "127.0.0.1:port";
  o.token_file.clear();
  CHECK_THROWS_AS(ApiServer::start(o, fake(c)), Error);
  ::unlink(tok.c_str());
  ::rmdir(dir.c_str());
}
