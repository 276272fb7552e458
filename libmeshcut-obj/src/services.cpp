// SPDX-License-Identifier: Apache-2.0
#include "meshcut/obj/services.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>
#include <unordered_map>
#include <utility>

namespace meshcut::obj {
namespace {

using nlohmann::json;

// Thrown inside the parser only (document.h's DocError), caught in
// parse_services: every check is one line, and a bad file returns one message
// and no partial result.
using Bad = DocError;
[[noreturn]] void bad(const std::string& where, const std::string& what) { doc_error(where + ": " + what); }

std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// V[KEY], or nullptr when absent or null (Kubernetes writes null for "unset").
const json* field(const json& v, const char* key) {
  if (!v.is_object()) return nullptr;
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& object_at(const json& v, const char* key, const std::string& where, const std::string& path) {
  const json* f = field(v, key);
  if (!f) bad(where, path + " is missing");
  if (!f->is_object()) bad(where, path + " must be an object, got " + type_name(*f));
  return *f;
}

const json* array_at(const json& v, const char* key, const std::string& where, const std::string& path, bool required) {
  const json* f = field(v, key);
  if (!f) {
    if (required) bad(where, path + " is missing");
    return nullptr;
  }
  if (!f->is_array()) bad(where, path + " must be an array, got " + type_name(*f));
  return f;
}

std::optional<std::string> string_at(const json& v, const char* key, const std::string& where, const std::string& path,
                                     bool required) {
  const json* f = field(v, key);
  if (!f) {
    if (required) bad(where, path + " is missing");
    return std::nullopt;
  }
  if (!f->is_string()) bad(where, path + " must be a string, got " + type_name(*f) + " " + shown(*f));
  return f->get<std::string>();
}

std::string nonempty_string_at(const json& v, const char* key, const std::string& where, const std::string& path) {
  std::string s = *string_at(v, key, where, path, true);
  if (s.empty()) bad(where, path + " is empty");
  return s;
}

uint16_t port_at(const json& v, const char* key, const std::string& where, const std::string& path) {
  const json* f = field(v, key);
  if (!f) bad(where, path + " is missing");
  if (!f->is_number_integer() || f->get<int64_t>() < 1 || f->get<int64_t>() > 65535)
    bad(where, path + " must be an integer 1..65535, got " + shown(*f));
  return static_cast<uint16_t>(f->get<int64_t>());
}

std::vector<std::string> strings_at(const json& v, const char* key, const std::string& where, const std::string& path) {
  std::vector<std::string> out;
  const json* a = array_at(v, key, where, path, false);
  if (!a) return out;
  for (size_t i = 0; i < a->size(); ++i) {
    const json& e = (*a)[i];
    std::string p = path + "[" + std::to_string(i) + "]";
    if (!e.is_string()) bad(where, p + " must be a string, got " + type_name(e) + " " + shown(e));
    if (e.get<std::string>().empty()) bad(where, p + " is empty");
    out.push_back(e.get<std::string>());
  }
  return out;
}

void check_api_version(const json& item, const std::string& where, std::initializer_list<const char*> accepted) {
  auto v = string_at(item, "apiVersion", where, "apiVersion", false);
  if (!v) return;
  for (const char* a : accepted)
    if (*v == a) return;
  std::string want;
  for (const char* a : accepted) want += std::string(want.empty() ? "" : " or ") + a;
  bad(where, "apiVersion is '" + *v + "' (expected " + want + ")");
}

struct RawPort {
  std::string name;
  uint16_t port = 0;
  json target;  // null, an integer or a name
};
struct RawService {
  std::string where;
  std::string name, ns, cluster_ip;
  uint32_t cluster_ip_be = 0;
  bool managed = true;  // false: headless or IPv6, left out
  std::vector<RawPort> ports;
};
struct RawSlicePort {
  std::string name;
  uint16_t port = 0;
};
struct RawEndpoint {
  std::string where;
  std::string ip;
  uint32_t ip_be = 0;
  std::string node, pod;
};
struct RawSlice {
  std::string where;
  std::vector<RawSlicePort> ports;
  std::vector<RawEndpoint> endpoints;  // ready ones only
};

RawService parse_service(const json& item, const std::string& item_where) {
  check_api_version(item, item_where, {"v1"});
  RawService s;
  const json& md = object_at(item, "metadata", item_where, "metadata");
  s.name = nonempty_string_at(md, "name", item_where, "metadata.name");
  s.ns = string_at(md, "namespace", item_where, "metadata.namespace", false).value_or("default");
  if (s.ns.empty()) s.ns = "default";
  s.where = item_where + " (Service " + s.ns + "/" + s.name + ")";
  const json& spec = object_at(item, "spec", s.where, "spec");
  auto cip = string_at(spec, "clusterIP", s.where, "spec.clusterIP", true);
  s.cluster_ip = *cip;
  if (s.cluster_ip == "None" || s.cluster_ip.find(':') != std::string::npos) {
    s.managed = false;
  } else {
    auto ip = parse_ipv4(s.cluster_ip);
    if (!ip) bad(s.where, "spec.clusterIP '" + s.cluster_ip + "' is not an IPv4 address (nor None)");
    s.cluster_ip_be = *ip;
  }
  const json* ports = array_at(spec, "ports", s.where, "spec.ports", true);
  std::set<std::string> names;
  for (size_t i = 0; i < ports->size(); ++i) {
    const json& p = (*ports)[i];
    std::string path = "spec.ports[" + std::to_string(i) + "]";
    if (!p.is_object()) bad(s.where, path + " must be an object, got " + type_name(p));
    RawPort rp;
    rp.name = string_at(p, "name", s.where, path + ".name", false).value_or("");
    rp.port = port_at(p, "port", s.where, path + ".port");
    std::string proto = string_at(p, "protocol", s.where, path + ".protocol", false).value_or("TCP");
    if (const json* t = field(p, "targetPort")) {
      if (t->is_number_integer()) {
        if (t->get<int64_t>() < 1 || t->get<int64_t>() > 65535)
          bad(s.where, path + ".targetPort must be an integer 1..65535 or a port name, got " + shown(*t));
      } else if (!t->is_string() || t->get<std::string>().empty()) {
        bad(s.where, path + ".targetPort must be an integer 1..65535 or a port name, got " + shown(*t));
      }
      rp.target = *t;
    }
    if (!names.insert(rp.name).second)
      bad(s.where, path + ".name '" + rp.name + "' is used by another port of the Service (names must be unique)");
    if (proto != "TCP") continue;  // UDP, SCTP: not managed
    s.ports.push_back(std::move(rp));
  }
  return s;
}

void parse_slice(const json& item, const std::string& item_where, std::map<std::string, std::vector<RawSlice>>& out) {
  check_api_version(item, item_where, {"discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"});
  const json& md = object_at(item, "metadata", item_where, "metadata");
  std::string name = string_at(md, "name", item_where, "metadata.name", false).value_or("");
  std::string ns = string_at(md, "namespace", item_where, "metadata.namespace", false).value_or("default");
  if (ns.empty()) ns = "default";
  std::string where = item_where + " (EndpointSlice " + ns + "/" + (name.empty() ? "?" : name) + ")";
  const json& labels = object_at(md, "labels", where, "metadata.labels");
  std::string svc = nonempty_string_at(labels, "kubernetes.io/service-name", where,
                                       "metadata.labels[\"kubernetes.io/service-name\"]");
  std::string type = nonempty_string_at(item, "addressType", where, "addressType");
  if (type != "IPv4") return;  // IPv6, FQDN: not managed
  RawSlice sl;
  sl.where = where;
  if (const json* ports = array_at(item, "ports", where, "ports", false)) {
    for (size_t i = 0; i < ports->size(); ++i) {
      const json& p = (*ports)[i];
      std::string path = "ports[" + std::to_string(i) + "]";
      if (!p.is_object()) bad(where, path + " must be an object, got " + type_name(p));
      std::string proto = string_at(p, "protocol", where, path + ".protocol", false).value_or("TCP");
      RawSlicePort sp{string_at(p, "name", where, path + ".name", false).value_or(""),
                      port_at(p, "port", where, path + ".port")};
      if (proto == "TCP") sl.ports.push_back(std::move(sp));
    }
  }
  const json* eps = array_at(item, "endpoints", where, "endpoints", false);
  for (size_t i = 0; eps && i < eps->size(); ++i) {
    const json& e = (*eps)[i];
    std::string path = "endpoints[" + std::to_string(i) + "]";
    if (!e.is_object()) bad(where, path + " must be an object, got " + type_name(e));
    const json* addrs = array_at(e, "addresses", where, path + ".addresses", true);
    if (addrs->empty()) bad(where, path + ".addresses is empty");
    const json& a0 = (*addrs)[0];
    if (!a0.is_string()) bad(where, path + ".addresses[0] must be a string, got " + type_name(a0));
    auto ip = parse_ipv4(a0.get<std::string>());
    if (!ip) bad(where, path + ".addresses[0] '" + a0.get<std::string>() + "' is not an IPv4 address");
    RawEndpoint re;
    re.where = path;
    re.ip = a0.get<std::string>();
    re.ip_be = *ip;
    re.node = string_at(e, "nodeName", where, path + ".nodeName", false).value_or("");
    if (const json* ref = field(e, "targetRef")) {
      if (!ref->is_object()) bad(where, path + ".targetRef must be an object, got " + type_name(*ref));
      re.pod = string_at(*ref, "name", where, path + ".targetRef.name", false).value_or("");
    }
    bool ready = true;  // unset: ready, as Kubernetes reads it
    if (const json* cond = field(e, "conditions")) {
      if (!cond->is_object()) bad(where, path + ".conditions must be an object, got " + type_name(*cond));
      if (const json* r = field(*cond, "ready")) {
        if (!r->is_boolean()) bad(where, path + ".conditions.ready must be true or false, got " + shown(*r));
        ready = r->get<bool>();
      }
    }
    if (ready) sl.endpoints.push_back(std::move(re));
  }
  out[ns + "/" + svc].push_back(std::move(sl));
}

std::vector<CallerClass> parse_classes(const json& item, const std::string& item_where) {
  auto api = string_at(item, "apiVersion", item_where + " (CallerClasses)", "apiVersion", true);
  std::string where = item_where + " (CallerClasses)";
  if (*api != "meshcut.io/v1alpha1") bad(where, "apiVersion is '" + *api + "' (expected meshcut.io/v1alpha1)");
  const json& spec = object_at(item, "spec", where, "spec");
  const json* cls = array_at(spec, "classes", where, "spec.classes", true);
  if (cls->size() > kMaxNamedClasses)
    bad(where, "spec.classes lists " + std::to_string(cls->size()) + " classes (at most " +
                   std::to_string(kMaxNamedClasses) + ": class 0 is 'default', for callers no rule matches)");
  std::vector<CallerClass> out;
  for (size_t i = 0; i < cls->size(); ++i) {
    const json& c = (*cls)[i];
    std::string path = "spec.classes[" + std::to_string(i) + "]";
    if (!c.is_object()) bad(where, path + " must be an object, got " + type_name(c));
    CallerClass cc;
    cc.id = static_cast<uint32_t>(i + 1);
    cc.name = nonempty_string_at(c, "name", where, path + ".name");
    if (cc.name == kDefaultClassName)
      bad(where, path + ".name 'default' is reserved (class 0: callers no rule matches)");
    for (const auto& o : out)
      if (o.name == cc.name) bad(where, path + ".name '" + cc.name + "' is used by another class");
    cc.namespaces = strings_at(c, "namespaces", where, path + ".namespaces");
    cc.pods = strings_at(c, "pods", where, path + ".pods");
    if (const json* a = field(c, "annotation")) {
      if (!a->is_object()) bad(where, path + ".annotation must be an object {key, value}, got " + type_name(*a));
      std::string k = nonempty_string_at(*a, "key", where, path + ".annotation.key");
      std::string v = *string_at(*a, "value", where, path + ".annotation.value", true);
      cc.annotation = std::make_pair(k, v);
    }
    if (cc.namespaces.empty() && cc.pods.empty() && !cc.annotation)
      bad(where, path + " ('" + cc.name + "') has no rule: give namespaces, pods or annotation");
    out.push_back(std::move(cc));
  }
  return out;
}

struct Item {
  const json* v;
  std::string where;
};

// The items of every document: a List's items, an array's elements, or the document itself.
std::vector<Item> items_of(const std::vector<json>& docs) {
  std::vector<Item> items;
  for (size_t d = 0; d < docs.size(); ++d) {
    std::string prefix = docs.size() > 1 ? "document " + std::to_string(d + 1) : "";
    auto join = [&](const std::string& s) { return prefix.empty() ? s : prefix + ": " + s; };
    const json& doc = docs[d];
    const json* list = nullptr;
    if (doc.is_array()) {
      list = &doc;
    } else if (doc.is_object() && doc.value("kind", json()) == "List") {
      list = array_at(doc, "items", join("List"), "items", true);
    }
    if (!list) {
      if (!doc.is_object())
        bad(prefix.empty() ? "the service file" : prefix, "must be an object, got " + type_name(doc));
      items.push_back({&doc, prefix.empty() ? "the document" : prefix});
      continue;
    }
    for (size_t i = 0; i < list->size(); ++i) items.push_back({&(*list)[i], join("items[" + std::to_string(i) + "]")});
  }
  return items;
}

Services build(const std::vector<json>& docs) {
  std::vector<RawService> raw;
  std::map<std::string, std::vector<RawSlice>> slices;  // "ns/service" -> its slices
  Services out;
  bool have_classes = false;
  for (const Item& it : items_of(docs)) {
    const json& item = *it.v;
    if (!item.is_object()) bad(it.where, "must be an object, got " + type_name(item));
    auto kind = string_at(item, "kind", it.where, "kind", true);
    if (*kind == "Service") {
      raw.push_back(parse_service(item, it.where));
      for (size_t j = 0; j + 1 < raw.size(); ++j)
        if (raw[j].ns == raw.back().ns && raw[j].name == raw.back().name)
          bad(raw.back().where, "the Service is listed twice (first at " + raw[j].where + ")");
    } else if (*kind == "EndpointSlice") {
      parse_slice(item, it.where, slices);
    } else if (*kind == "CallerClasses") {
      if (have_classes) bad(it.where, "a second CallerClasses item (give every class in one)");
      out.classes = parse_classes(item, it.where);
      have_classes = true;
    } else {
      bad(it.where, "kind '" + *kind + "' is not one of Service, EndpointSlice, CallerClasses");
    }
  }
  for (const RawService& rs : raw) {
    if (!rs.managed) continue;
    for (const RawPort& rp : rs.ports) {
      Service s;
      s.name = rs.name;
      s.ns = rs.ns;
      if (rs.ports.size() > 1) {
        if (rp.name.empty())
          bad(rs.where, "the Service has several TCP ports, and port " + std::to_string(rp.port) +
                            " has no name (each port is its own managed service, keyed by its name)");
        s.port_name = rp.name;
      }
      s.cluster_ip = rs.cluster_ip;
      s.cluster_ip_be = rs.cluster_ip_be;
      s.port = rp.port;
      auto sit = slices.find(rs.ns + "/" + rs.name);
      if (sit != slices.end()) {
        for (const RawSlice& sl : sit->second) {
          uint16_t target = 0;
          if (!sl.ports.empty()) {
            for (const auto& sp : sl.ports)
              if (sp.name == rp.name) target = sp.port;
            if (target == 0) continue;  // this slice does not serve the port
          } else if (rp.target.is_null()) {
            target = rp.port;
          } else if (rp.target.is_number_integer()) {
            target = static_cast<uint16_t>(rp.target.get<int64_t>());
          } else {
            bad(sl.where, "ports is missing, and Service " + s.key() + " names its targetPort '" +
                              rp.target.get<std::string>() + "' (list the port: ports: [{name, port}])");
          }
          for (const RawEndpoint& re : sl.endpoints) {
            bool dup = false;
            for (const auto& e : s.endpoints) dup = dup || (e.ip_be == re.ip_be && e.port == target);
            if (dup) continue;
            Endpoint e;
            e.ip = re.ip;
            e.ip_be = re.ip_be;
            e.port = target;
            e.node = re.node;
            e.pod = re.pod;
            s.endpoints.push_back(std::move(e));
          }
        }
      }
      if (s.endpoints.size() > MC_OBJ_MAX_BACKENDS)
        bad("service " + s.key(), "has " + std::to_string(s.endpoints.size()) + " ready endpoints (at most " +
                                      std::to_string(MC_OBJ_MAX_BACKENDS) + " per service)");
      for (const Service& o : out.services)
        if (o.cluster_ip_be == s.cluster_ip_be && o.port == s.port)
          bad("service " + s.key(),
              "ClusterIP " + s.cluster_ip + ":" + std::to_string(s.port) + " is also service " + o.key() + "'s");
      out.services.push_back(std::move(s));
      if (out.services.size() > MC_OBJ_MAX_SERVICES)
        bad("the service file", "has more than " + std::to_string(MC_OBJ_MAX_SERVICES) +
                                    " managed services (Service TCP ports); the first one over is " +
                                    out.services.back().key());
    }
  }
  assign_ids(out, nullptr);
  return out;
}

}  // namespace

std::optional<uint32_t> parse_ipv4(std::string_view s) {
  if (s.empty() || s.size() > 15) return std::nullopt;
  in_addr a{};
  if (inet_pton(AF_INET, std::string(s).c_str(), &a) != 1) return std::nullopt;
  return a.s_addr;
}

std::string Endpoint::addr() const { return ip + ":" + std::to_string(port); }
uint16_t Endpoint::port_be() const { return htons(port); }
mc_obj_addr Endpoint::key() const { return mc_obj_addr{ip_be, port_be(), 0}; }

std::string Service::key() const { return ns + "/" + name + (port_name.empty() ? "" : ":" + port_name); }
uint16_t Service::port_be() const { return htons(port); }
mc_obj_addr Service::vip() const { return mc_obj_addr{cluster_ip_be, port_be(), 0}; }

const Endpoint* Service::find_endpoint(std::string_view addr_or_pod) const {
  for (const auto& e : endpoints)
    if (e.addr() == addr_or_pod) return &e;
  for (const auto& e : endpoints)
    if (!e.pod.empty() && e.pod == addr_or_pod) return &e;
  return nullptr;
}

const Endpoint* Service::endpoint_at(uint32_t index) const {
  for (const auto& e : endpoints)
    if (e.index == index) return &e;
  return nullptr;
}

const Service* Services::find(std::string_view key) const {
  for (const auto& s : services)
    if (s.key() == key) return &s;
  return nullptr;
}

const Service* Services::find_id(uint32_t id) const {
  for (const auto& s : services)
    if (s.id == id) return &s;
  return nullptr;
}

std::string Services::class_name(uint32_t id) const {
  if (id == kDefaultClass) return kDefaultClassName;
  for (const auto& c : classes)
    if (c.id == id) return c.name;
  return "class" + std::to_string(id);
}

std::optional<uint32_t> Services::class_id(std::string_view name) const {
  if (name == kDefaultClassName) return kDefaultClass;
  for (const auto& c : classes)
    if (c.name == name) return c.id;
  return std::nullopt;
}

Result<Services> parse_services(std::string_view text, Format format) {
  auto docs = parse_documents(text, format);
  if (!docs) return make_error("service file: " + docs.error().what, 0);
  try {
    return build(*docs);
  } catch (const Bad& b) {
    return make_error("service file: " + b.msg, 0);
  }
}

Result<Services> load_services(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.error();
  std::string ext = path.substr(path.find_last_of('.') == std::string::npos ? path.size() : path.rfind('.') + 1);
  auto s = parse_services(*text, format_from_hint(ext));
  if (!s) return make_error(path + ": " + s.error().what, 0);
  return s;
}

void assign_ids(Services& next, const Services* prev) {
  std::unordered_map<std::string, const Service*> old;
  if (prev)
    for (const auto& s : prev->services) old[s.key()] = &s;
  std::vector<bool> used(MC_OBJ_MAX_SERVICES, false);
  std::vector<bool> kept(next.services.size(), false);
  for (size_t i = 0; i < next.services.size(); ++i) {
    auto it = old.find(next.services[i].key());
    if (it == old.end() || it->second->id >= MC_OBJ_MAX_SERVICES) continue;
    next.services[i].id = it->second->id;
    used[it->second->id] = true;
    kept[i] = true;
  }
  uint32_t free_id = 0;
  for (size_t i = 0; i < next.services.size(); ++i) {
    if (kept[i]) continue;
    while (free_id < MC_OBJ_MAX_SERVICES && used[free_id]) ++free_id;
    next.services[i].id = free_id;
    if (free_id < MC_OBJ_MAX_SERVICES) used[free_id] = true;
  }
  for (auto& s : next.services) {
    auto it = old.find(s.key());
    const Service* p = it == old.end() ? nullptr : it->second;
    std::vector<bool> bused(MC_OBJ_MAX_BACKENDS, false);
    std::vector<bool> bkept(s.endpoints.size(), false);
    for (size_t i = 0; p && i < s.endpoints.size(); ++i) {
      for (const auto& pe : p->endpoints) {
        if (pe.ip_be == s.endpoints[i].ip_be && pe.port == s.endpoints[i].port && pe.index < MC_OBJ_MAX_BACKENDS &&
            !bused[pe.index]) {
          s.endpoints[i].index = pe.index;
          bused[pe.index] = true;
          bkept[i] = true;
          break;
        }
      }
    }
    uint32_t free_b = 0;
    for (size_t i = 0; i < s.endpoints.size(); ++i) {
      if (bkept[i]) continue;
      while (free_b < MC_OBJ_MAX_BACKENDS && bused[free_b]) ++free_b;
      s.endpoints[i].index = free_b;
      if (free_b < MC_OBJ_MAX_BACKENDS) bused[free_b] = true;
    }
  }
}

bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

uint32_t classify(const Services& s, std::string_view ns, std::string_view pod,
                  const std::map<std::string, std::string>& annotations) {
  for (const auto& c : s.classes) {
    if (!c.namespaces.empty() && std::find(c.namespaces.begin(), c.namespaces.end(), ns) == c.namespaces.end())
      continue;
    if (!c.pods.empty() &&
        std::none_of(c.pods.begin(), c.pods.end(), [&](const std::string& g) { return glob_match(g, pod); }))
      continue;
    if (c.annotation) {
      auto it = annotations.find(c.annotation->first);
      if (it == annotations.end() || it->second != c.annotation->second) continue;
    }
    return c.id;
  }
  return kDefaultClass;
}

nlohmann::json to_json(const Services& s) {
  json svcs = json::array();
  for (const auto& v : s.services) {
    json eps = json::array();
    for (const auto& e : v.endpoints)
      eps.push_back({{"index", e.index}, {"ip", e.ip}, {"port", e.port}, {"node", e.node}, {"pod", e.pod}});
    svcs.push_back({{"id", v.id},
                    {"key", v.key()},
                    {"name", v.name},
                    {"namespace", v.ns},
                    {"port_name", v.port_name},
                    {"cluster_ip", v.cluster_ip},
                    {"port", v.port},
                    {"endpoints", eps}});
  }
  json cls = json::array();
  cls.push_back({{"id", kDefaultClass}, {"name", kDefaultClassName}});
  for (const auto& c : s.classes) {
    json j = {{"id", c.id}, {"name", c.name}, {"namespaces", c.namespaces}, {"pods", c.pods}};
    if (c.annotation) j["annotation"] = {{"key", c.annotation->first}, {"value", c.annotation->second}};
    cls.push_back(j);
  }
  return {{"services", svcs}, {"classes", cls}};
}

}  // namespace meshcut::obj
