// SPDX-License-Identifier: Apache-2.0
#include "meshcut/obj/document.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace meshcut::obj {
namespace {

using nlohmann::json;

struct YamlError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string where(const YAML::Node& n) {
  auto m = n.Mark();
  if (m.is_null()) return "";
  return " (line " + std::to_string(m.line + 1) + ")";
}

// A plain scalar typed as YAML 1.2's core schema does; a quoted one (tag "!")
// stays a string, so "8080" is still an error where a number is wanted.
json scalar(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (*b == '+') ++b;
  if (*b != '-') {
    uint64_t u = 0;
    auto r = std::from_chars(b, e, u);
    if (r.ec == std::errc() && r.ptr == e) return u;
  } else {
    int64_t i = 0;
    auto r = std::from_chars(b, e, i);
    if (r.ec == std::errc() && r.ptr == e) return i;
  }
  // Floats: digits, '.', exponent; not inf/nan spellings (an error later names the field).
  bool numeric = true;
  for (char c : std::string_view(b, static_cast<size_t>(e - b)))
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+')) numeric = false;
  if (numeric) {
    errno = 0;
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size() && errno == 0 && std::isfinite(d)) return d;
  }
  return s;
}

json convert(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null: return nullptr;
    case YAML::NodeType::Scalar: return scalar(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& c : n) a.push_back(convert(c));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) throw YamlError("a mapping key is not a scalar" + where(kv.first));
        const std::string& k = kv.first.Scalar();
        if (o.contains(k)) throw YamlError("duplicate key '" + k + "'" + where(kv.first));
        o[k] = convert(kv.second);
      }
      return o;
    }
  }
  return nullptr;
}

}  // namespace

Format format_from_hint(std::string_view hint) {
  if (hint == "json" || hint == "JSON") return Format::kJson;
  if (hint == "yaml" || hint == "yml" || hint == "YAML") return Format::kYaml;
  return Format::kAuto;
}

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a non-integer number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "an unsupported value";
  }
}

Result<std::vector<json>> parse_documents(std::string_view text, Format format) {
  if (format == Format::kAuto) {
    size_t i = text.find_first_not_of(" \t\r\n");
    format = (i != std::string_view::npos && (text[i] == '{' || text[i] == '[')) ? Format::kJson : Format::kYaml;
  }
  std::vector<json> docs;
  if (format == Format::kJson) {
    try {
      docs.push_back(json::parse(text));
    } catch (const json::exception& e) {
      return make_error("not valid JSON: " + std::string(e.what()), 0);
    }
    return docs;
  }
  try {
    for (const auto& n : YAML::LoadAll(std::string(text))) {
      if (n.IsNull()) continue;
      docs.push_back(convert(n));
    }
  } catch (const YAML::Exception& e) {
    return make_error("not valid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ", column " +
                          std::to_string(e.mark.column + 1) + ")",
                      0);
  } catch (const YamlError& e) {
    return make_error("not valid YAML: " + std::string(e.what()), 0);
  }
  return docs;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error("couldn't open '" + path + "'", errno);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return make_error("couldn't read '" + path + "'", errno);
  return ss.str();
}

void doc_error(const std::string& what) { throw DocError{what}; }

std::string format_number(double v) {
  char b[64];
  snprintf(b, sizeof b, "%.6g", v);
  return b;
}

void only_keys(const nlohmann::json& o, std::initializer_list<const char*> keys, const std::string& where) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool known = false;
    for (const char* k : keys) known = known || it.key() == k;
    if (!known) {
      std::string list;
      for (const char* k : keys) list += std::string(list.empty() ? "" : ", ") + k;
      doc_error(where + "." + it.key() + " is not a known field (expected " + list + ")");
    }
  }
}

}  // namespace meshcut::obj
