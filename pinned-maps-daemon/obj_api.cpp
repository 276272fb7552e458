// SPDX-License-Identifier: Apache-2.0
#include "obj_api.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <mutex>
#include <optional>

#include "http_server.h"
#include "meshcut/log.h"

namespace meshcut::obj {
namespace {

using json = nlohmann::json;
constexpr const char* kJson = "application/json";
constexpr size_t kMaxToken = 64 * 1024;
constexpr const char* kListenHint =
    "use HOST:PORT with an IPv4 address or localhost: 127.0.0.1:9465 (the default), or e.g. 0.0.0.0:9465 "
    "together with --api-token-file";

ApiReply err(int status, const std::string& what) { return {status, json{{"error", what}}}; }

void send(httplib::Response& res, const ApiReply& r) {
  res.status = r.status;
  // Replace, not throw, on invalid UTF-8 (a path echoed back).
  res.set_content(r.body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

daemon::http::Listen parse_listen(const std::string& addr) {
  auto bad = [&](const std::string& why) {
    return make_error("invalid API listen address '" + addr + "': " + why, EINVAL, kListenHint);
  };
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) throw bad("no :PORT");
  std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p > 65535)
    throw bad("the port must be a number from 0 (any free port) to 65535");
  daemon::http::Listen l{.addr = addr, .flag = "--api-addr", .what = "the objectives API"};
  auto* sa = reinterpret_cast<sockaddr_in*>(&l.ss);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(static_cast<uint16_t>(p));
  if (::inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &sa->sin_addr) != 1)
    throw bad("'" + host + "' is not an IPv4 address or localhost");
  l.len = sizeof(sockaddr_in);
  return l;
}

bool loopback(const daemon::http::Listen& l) {
  return (ntohl(reinterpret_cast<const sockaddr_in*>(&l.ss)->sin_addr.s_addr) >> 24) == 127;
}

// The token in PATH, trailing whitespace trimmed.
Result<std::string> read_token(const std::string& path) {
  const std::string hint = "--api-token-file must name a readable file holding the bearer token (a mounted Secret)";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return make_error("couldn't open the API token file '" + path + "'", errno, hint);
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error("couldn't read the API token file '" + path + "'", errno, hint);
    if (n == 0) break;
    s.append(buf, static_cast<size_t>(n));
    if (s.size() > kMaxToken) return make_error("the API token file '" + path + "' is larger than 64 KiB", EFBIG, hint);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.empty()) return make_error("the API token file '" + path + "' is empty", ENODATA, hint);
  return s;
}

// Equal, in a time that does not depend on where A and B differ.
bool same(std::string_view a, std::string_view b) {
  volatile unsigned char d = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) d = d | static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return d == 0;
}

// A non-negative integer, or nullopt.
std::optional<uint64_t> parse_u64(const std::string& s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

struct ApiServer::Impl {
  ApiOptions opts;
  ApiHandlers h;
  std::mutex mu;  // the token state below
  std::string token;
  std::string token_error;  // why there is no token now ("" when there is)
  struct stat key {};       // the file's identity and mtime when read
  daemon::http::Service svc;

  static bool same_file(const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
  }

  // The reply refusing REQ, or nullopt when it may go on.
  std::optional<ApiReply> authorize(const httplib::Request& req) {
    if (opts.token_file.empty()) return std::nullopt;
    std::string expected;
    {
      std::lock_guard l(mu);
      struct stat st {};
      if (::stat(opts.token_file.c_str(), &st) != 0) {
        token.clear();
        token_error = make_error("couldn't stat the API token file '" + opts.token_file + "'", errno).format();
        key = {};
      } else if (!same_file(st, key)) {  // rotated (or first seen again): read it anew
        auto t = read_token(opts.token_file);
        key = st;
        token = t ? *t : "";
        token_error = t ? "" : t.error().format();
        if (t)
          log::info("read the objectives API token anew", {{"file", opts.token_file}});
        else
          log::warn("the objectives API refuses every request", {{"error", token_error}});
      }
      if (!token_error.empty()) return err(503, token_error + "; every request is refused until it is fixed");
      expected = token;
    }
    std::string h = req.get_header_value("Authorization");
    if (h.size() < 7 || strncasecmp(h.c_str(), "Bearer ", 7) != 0)
      return err(401, "this API needs an 'Authorization: Bearer TOKEN' header");
    std::string_view got(h);
    got.remove_prefix(7);
    while (!got.empty() && got.front() == ' ') got.remove_prefix(1);
    if (!same(got, expected)) return err(401, "wrong bearer token");
    return std::nullopt;
  }

  ApiReply call(const char* name, const std::function<ApiReply()>& fn) {
    try {
      return fn();
    } catch (const std::exception& e) {
      log::error("an objectives API handler failed", {{"handler", name}, {"error", e.what()}});
      return err(500, std::string("the ") + name + " handler failed: " + e.what());
    } catch (...) {
      return err(500, std::string("the ") + name + " handler failed with an unknown exception");
    }
  }

  ApiReply dispatch(const httplib::Request& req) {
    if (auto no = authorize(req)) return *no;
    const std::string& m = req.method;
    auto only = [&](std::initializer_list<const char*> allowed) -> std::optional<ApiReply> {
      for (const auto& [k, v] : req.params)
        if (std::find_if(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; }) == allowed.end())
          return err(400, "unknown query parameter '" + k + "' for " + req.path);
      return std::nullopt;
    };
    if (req.path == "/v1/windows") {
      if (m != "GET" && m != "HEAD") return err(405, "method " + m + " not allowed on /v1/windows: use GET");
      if (auto bad = only({"since", "max"})) return *bad;
      uint64_t v[2] = {0, 0};
      const char* names[2] = {"since", "max"};
      for (int i = 0; i < 2; ++i) {
        if (req.get_param_value_count(names[i]) > 1) return err(400, std::string(names[i]) + " given more than once");
        if (!req.has_param(names[i])) continue;
        auto x = parse_u64(req.get_param_value(names[i]));
        if (!x)
          return err(400, std::string(names[i]) + " must be a non-negative integer, got '" +
                              req.get_param_value(names[i]) + "'");
        v[i] = *x;
      }
      if (!h.windows) return err(501, "GET /v1/windows is not served by this meshcutd");
      return call("windows", [&] { return h.windows(v[0], static_cast<size_t>(v[1])); });
    }
    if (req.path == "/v1/action") {
      if (auto bad = only({})) return *bad;
      if (m == "PUT") {
        json action;
        try {
          action = json::parse(req.body);
        } catch (const json::parse_error& e) {
          return err(400, std::string("malformed JSON in the action: ") + e.what());
        }
        if (!action.is_object())
          return err(400, std::string("the action must be a JSON object, not ") + action.type_name());
        if (!h.put_action) return err(501, "PUT /v1/action is not served by this meshcutd");
        return call("put_action", [&] { return h.put_action(action); });
      }
      if (m == "DELETE") {
        if (!h.clear) return err(501, "DELETE /v1/action is not served by this meshcutd");
        return call("clear", [&] { return h.clear(); });
      }
      return err(405, "method " + m + " not allowed on /v1/action: use PUT or DELETE");
    }
    if (req.path == "/v1/status") {
      if (m != "GET" && m != "HEAD") return err(405, "method " + m + " not allowed on /v1/status: use GET");
      if (auto bad = only({})) return *bad;
      if (!h.status) return err(501, "GET /v1/status is not served by this meshcutd");
      return call("status", [&] { return h.status(); });
    }
    return err(404, "no such path '" + req.path + "': the API serves /v1/windows, /v1/action, /v1/status");
  }

  void route(httplib::Server& s) {
    s.set_payload_max_length(opts.max_body);
    auto d = [this](const httplib::Request& req, httplib::Response& res) {
      ApiReply r = dispatch(req);
      if (r.status == 401) res.set_header("WWW-Authenticate", "Bearer");
      if (r.status == 405) res.set_header("Allow", req.path == "/v1/action" ? "PUT, DELETE" : "GET");
      send(res, r);
    };
    s.Get(".*", d).Put(".*", d).Post(".*", d).Delete(".*", d).Patch(".*", d).Options(".*", d);
    // httplib's own refusals (a body too large, a malformed request line): a JSON body too.
    s.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413)
        send(res, err(413, "the body is larger than " + std::to_string(opts.max_body) + " bytes"));
      else if (res.status == 400)
        send(res, err(400, "malformed HTTP request"));
      else
        send(res, err(res.status, "HTTP " + std::to_string(res.status)));
    });
    s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      send(res, err(500, "internal error: " + daemon::http::exception_text(ep)));
    });
  }
};

ApiServer ApiServer::start(const ApiOptions& opts, ApiHandlers handlers) {
  auto l = parse_listen(opts.listen);
  if (!loopback(l) && opts.token_file.empty())
    throw make_error("the objectives API on " + opts.listen + " (not a loopback address) needs a bearer token", EINVAL,
                     "give --api-token-file FILE (a mounted Secret holding the token), or listen on 127.0.0.1");
  if (opts.max_body == 0) throw make_error("the API's max body must be at least 1 byte", EINVAL);
  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  impl->h = std::move(handlers);
  if (!opts.token_file.empty()) {
    if (::stat(opts.token_file.c_str(), &impl->key) != 0)
      throw make_error("couldn't stat the API token file '" + opts.token_file + "'", errno,
                       "--api-token-file must name a readable file holding the bearer token (a mounted Secret)");
    auto t = read_token(opts.token_file);
    if (!t) throw t.error();
    impl->token = *t;
  }
  Impl* self = impl.get();
  if (auto st = impl->svc.start(std::move(l), [self](httplib::Server& s) { self->route(s); }); !st) throw st.error();
  log::info("serving the objectives API", {{"addr", opts.listen},
                                           {"port", impl->svc.port()},
                                           {"auth", opts.token_file.empty() ? "loopback only" : "bearer token"}});
  return ApiServer(std::move(impl));
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiServer::ApiServer(ApiServer&&) noexcept = default;
ApiServer& ApiServer::operator=(ApiServer&&) noexcept = default;
ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (impl_) impl_->svc.stop();
}

uint16_t ApiServer::port() const { return impl_ ? impl_->svc.port() : 0; }

}  // namespace meshcut::obj
