// SPDX-License-Identifier: Apache-2.0
#include <meshcut/cni/plan.h>

#include <algorithm>

namespace meshcut::cni {

using json = nlohmann::json;

json Plan::to_json() const {
  json j = {{"enroll", enroll},
            {"pod",
             {{"namespace", pod_namespace},
              {"name", pod_name},
              {"uid", pod_uid},
              {"containerID", container_id},
              {"ifname", ifname},
              {"netns", netns}}},
            {"ipv4", ipv4},
            {"ipv6", ipv6},
            {"podMac", pod_mac},
            {"hostInterfaceCandidates", host_candidates},
            {"shortcuts", {{"intraPod", intra_pod}, {"sameNode", same_node}, {"crossNode", cross_node}}},
            {"attachTc", attach_tc},
            {"result", result}};
  if (!enroll) j["skipReason"] = skip_reason;
  if (!caller_class.empty()) j["callerClass"] = caller_class;
  return j;
}

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string strip_prefix(const std::string& cidr) { return cidr.substr(0, cidr.find('/')); }

// A string field, or "" when absent or of another type (prevResult comes from
// another plugin: tolerate, never throw on its shape).
std::string str(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Why this pod is left alone, or "" if it is meshed.
std::string selection(const NetConf& c, const Plan& p) {
  if (!p.pod_namespace.empty() && contains(c.ns_exclude, p.pod_namespace))
    return "namespace " + p.pod_namespace + " is excluded";
  if (!c.ns_include.empty() && !contains(c.ns_include, p.pod_namespace))
    return "namespace " + (p.pod_namespace.empty() ? std::string("(none)") : p.pod_namespace) +
           " is not in the include list";
  auto opt = c.annotations.find(c.opt_out_annotation);
  if (opt != c.annotations.end() && opt->second == "false")
    return "opted out by annotation " + c.opt_out_annotation + "=false";
  if (c.skip_without_sidecar && !c.annotations.count(c.sidecar_annotation))
    return "no sidecar (annotation " + c.sidecar_annotation + " absent)";
  if (!c.intra_pod && !c.same_node && !c.cross_node) return "every shortcut is switched off";
  if (p.ipv4.empty()) return "the pod has no IPv4 address";
  return "";
}

}  // namespace

Plan make_plan(const NetConf& c, const Env& env) {
  if (c.prev_result.is_null())
    throw CniError{kInvalidConfig, "meshcut must be chained after the main CNI plugin: no prevResult",
                   "add it at the end of a .conflist's \"plugins\" list"};
  Plan p;
  p.container_id = env.container_id;
  p.ifname = env.ifname;
  p.netns = env.netns;
  auto arg = [&](const char* k) {
    auto it = env.kv.find(k);
    return it == env.kv.end() ? std::string() : it->second;
  };
  p.pod_namespace = arg("K8S_POD_NAMESPACE");
  p.pod_name = arg("K8S_POD_NAME");
  p.pod_uid = arg("K8S_POD_UID");
  if (auto it = c.annotations.find(kCallerClassAnnotation); it != c.annotations.end())
    p.caller_class = it->second.substr(0, kCallerClassMax);
  p.result = convert_result(c.prev_result, c.cni_version);

  // The container interface: CNI_IFNAME inside the sandbox. Its index in
  // "interfaces" is what ips[].interface points to.
  static const json kNone = json::array();
  auto field = [&](const char* k) -> const json& {
    auto it = c.prev_result.find(k);
    return it != c.prev_result.end() && it->is_array() ? *it : kNone;
  };
  const json& ifs = field("interfaces");
  int64_t cidx = -1;
  for (size_t i = 0; i < ifs.size(); ++i) {
    const json& f = ifs[i];
    if (!f.is_object()) continue;
    bool in_sandbox = !str(f, "sandbox").empty();
    std::string name = str(f, "name");
    if (in_sandbox && name == env.ifname && cidx < 0) {
      cidx = static_cast<int64_t>(i);
      p.pod_mac = str(f, "mac");
    } else if (!in_sandbox && !name.empty()) {
      p.host_candidates.push_back(name);
    }
  }
  // Some main plugins (Calico) list only the host side and give ips no
  // "interface": then every address is the pod's, and the MAC is read from the
  // pod's interface at apply time.
  for (const auto& ip : field("ips")) {
    if (!ip.is_object() || str(ip, "address").empty()) continue;
    if (cidx >= 0 && ip.contains("interface") && ip["interface"].is_number_integer() &&
        ip["interface"].get<int64_t>() != cidx)
      continue;
    std::string a = strip_prefix(ip["address"].get<std::string>());
    (a.find(':') != std::string::npos ? p.ipv6 : p.ipv4).push_back(a);
  }
  p.intra_pod = c.intra_pod;
  p.same_node = c.same_node;
  p.cross_node = c.cross_node;
  p.skip_reason = selection(c, p);
  p.enroll = p.skip_reason.empty();
  p.attach_tc = p.enroll && p.cross_node;
  return p;
}

}  // namespace meshcut::cni
