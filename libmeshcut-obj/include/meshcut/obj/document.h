// SPDX-License-Identifier: Apache-2.0
// One loader for the documents of the objectives half (the service file, the
// action): JSON or YAML, both read into nlohmann::json so that every check is
// written once. YAML scalars get JSON types the way YAML 1.2's core schema
// says (plain 8080 is a number, quoted "8080" a string, true/false, null/~).
#pragma once

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "meshcut/error.h"

namespace meshcut::obj {

// kAuto: JSON when the first non-space character is '{' or '[', else YAML.
enum class Format { kAuto, kJson, kYaml };

// "json", "yaml"/"yml" or "auto" (""): the hint of a file name's extension or
// a command-line flag. Anything else is kAuto.
Format format_from_hint(std::string_view hint);

// Every document of TEXT: one for JSON; one per document of a YAML stream,
// empty documents left out. Errors name the line (YAML) or byte (JSON).
Result<std::vector<nlohmann::json>> parse_documents(std::string_view text, Format format = Format::kAuto);

// The whole file at PATH, or an error naming it.
Result<std::string> read_file(const std::string& path);

// The JSON type of V in words, for error messages ("a string", "an array").
std::string type_name(const nlohmann::json& v);

// The field checks the document parsers (service file, action, objectives)
// share. They throw DocError, which a parser catches once at its top and
// returns as an Error naming the field.
struct DocError {
  std::string msg;
};
[[noreturn]] void doc_error(const std::string& what);
// V as %.6g, for messages.
std::string format_number(double v);
// DocError "WHERE.KEY is not a known field (expected a, b)" for a key of O not in KEYS.
void only_keys(const nlohmann::json& o, std::initializer_list<const char*> keys, const std::string& where);

}  // namespace meshcut::obj
