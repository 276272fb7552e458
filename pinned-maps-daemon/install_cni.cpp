// SPDX-License-Identifier: Apache-2.0
#include "install_cni.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <optional>

#include "meshcut/fd.h"

// How uninstall knows what install did — a marker inside meshcut's own entry:
//
//   {"type":"meshcut", …, "meshcutInstall":{"convertedFrom":"10-bridge.conf","original":"<text>"}}
//
// chosen over a sidecar state file because
//  - one rename publishes the entry and its undo record together: no window, crash or partial
//    failure in which they disagree, and no second file to fsync, lock or clean up;
//  - when the main CNI rewrites its config (and so drops our entry) the undo record goes with it,
//    which is exactly right: nothing of ours is left to undo in that file;
//  - a hidden sidecar is not reliably invisible: libcni's ConfFiles matches on the extension only,
//    so ".meshcut.json" would be read as a network config by some runtimes; and a sidecar survives
//    the main CNI's rewrite, describing a state that no longer exists.
// "original" is the file's exact text before install, so uninstall restores it byte for byte. It
// is only trusted when it still matches: uninstall (and a re-install) compare it, parsed, with the
// file minus meshcut's entry; if someone changed the other plugins since, their version wins and
// the file is re-serialized instead. The meshcut plugin ignores this key (unknown keys are fine).
namespace meshcut::daemon::install {
namespace {

using ojson = nlohmann::ordered_json;

constexpr const char* kConfExts[] = {".conf", ".conflist", ".json"};

std::string join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}
std::string base_name(const std::string& path) {
  auto p = path.rfind('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}
std::string dir_name(const std::string& path) {
  auto p = path.rfind('/');
  if (p == std::string::npos) return ".";
  return p == 0 ? "/" : path.substr(0, p);
}
// Extension as Go's filepath.Ext sees it: from the last dot.
std::string ext_of(const std::string& name) {
  auto p = name.rfind('.');
  return p == std::string::npos ? std::string() : name.substr(p);
}
std::string stem_of(const std::string& name) { return name.substr(0, name.size() - ext_of(name).size()); }
bool is_config_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  auto e = ext_of(name);
  return std::any_of(std::begin(kConfExts), std::end(kConfExts), [&](const char* x) { return e == x; });
}
bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Result<std::string> read_text(const std::string& path, const char* what) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return make_error(std::string("couldn't read ") + what + " '" + path + "'", errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(std::string("couldn't read ") + what + " '" + path + "'", errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) return make_error("couldn't fsync directory '" + dir + "'", errno);
  return ok_status();
}

// Temp file next to PATH (hidden, no config extension), fsync, mode/owner, rename over PATH.
Status write_atomic(const std::string& path, const std::string& data, mode_t mode,
                    std::optional<std::pair<uid_t, gid_t>> owner = std::nullopt) {
  const std::string dir = dir_name(path);
  std::string tmp = join(dir, "." + base_name(path) + ".meshcut-XXXXXX");
  int raw = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (raw < 0)
    return make_error("couldn't create a temp file in '" + dir + "'", errno,
                      "the directory must exist and be writable (run as root on the node)");
  Fd fd(raw);
  auto fail = [&](const std::string& what) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(what, e);
  };
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("couldn't write '" + tmp + "'");
    }
    off += static_cast<size_t>(n);
  }
  if (::fchmod(fd.get(), mode & 07777) != 0) return fail("couldn't chmod '" + tmp + "'");
  if (owner && (owner->first != ::geteuid() || owner->second != ::getegid()) &&
      ::fchown(fd.get(), owner->first, owner->second) != 0 && errno != EPERM)
    return fail("couldn't chown '" + tmp + "'");
  if (::fsync(fd.get()) != 0) return fail("couldn't fsync '" + tmp + "'");
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("couldn't rename '" + tmp + "' to '" + path + "'");
  return fsync_dir(dir);
}

Status remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return make_error("couldn't remove '" + path + "'", errno);
  return fsync_dir(dir_name(path));
}

Result<Fd> lock_dir(const std::string& dir, const char* hint) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return make_error("couldn't open CNI conf dir '" + dir + "'", errno, hint);
  if (::flock(fd.get(), LOCK_EX) != 0) return make_error("couldn't lock CNI conf dir '" + dir + "'", errno);
  return fd;
}

Result<std::string> serialize(const ojson& doc, const std::string& path) {
  try {
    return doc.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return make_error("couldn't serialize the new content of '" + path + "': " + e.what(), EINVAL);
  }
}

// A runtime-usable config: an object; a list has "plugins" as a non-empty array of objects each with
// a string "type"; a single-plugin config has a string "type".
Result<ojson> parse_config(const std::string& path, const std::string& text) {
  ojson doc;
  try {
    doc = ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return make_error("CNI config '" + path + "' is not valid JSON (" + e.what() + ")", EINVAL,
                      "fix or replace the file (the container runtime cannot use it either); meshcut "
                      "changed nothing");
  }
  const char* hint =
      "a CNI config is an object with \"type\" (.conf) or \"plugins\" (.conflist); "
      "fix the file, meshcut changed nothing";
  if (!doc.is_object()) return make_error("CNI config '" + path + "' is not a JSON object", EINVAL, hint);
  auto has_type = [](const ojson& o) { return o.is_object() && o.contains("type") && o["type"].is_string(); };
  if (doc.contains("plugins")) {
    const auto& pl = doc["plugins"];
    if (!pl.is_array() || pl.empty() || !std::all_of(pl.begin(), pl.end(), has_type))
      return make_error("CNI config '" + path +
                            "': \"plugins\" must be a non-empty array of objects with a "
                            "string \"type\"",
                        EINVAL, hint);
  } else if (ext_of(base_name(path)) == ".conflist") {
    return make_error("CNI config '" + path + "' is a .conflist without \"plugins\"", EINVAL, hint);
  } else if (!has_type(doc)) {
    return make_error("CNI config '" + path + "' has no string \"type\"", EINVAL, hint);
  }
  return doc;
}

bool is_list(const ojson& doc) { return doc.contains("plugins"); }
bool is_meshcut(const ojson& p) {
  return p.is_object() && p.contains("type") && p["type"].is_string() && p["type"] == kPluginType;
}
bool has_meshcut(const ojson& list) {
  const auto& pl = list.at("plugins");
  return std::any_of(pl.begin(), pl.end(), is_meshcut);
}

// LIST without any meshcut entry; *marker gets the first entry's install marker (or null).
ojson strip(const ojson& list, ojson* marker) {
  ojson out = list;
  auto& pl = out["plugins"];
  *marker = nullptr;
  for (const auto& p : pl)
    if (is_meshcut(p) && marker->is_null() && p.contains(kMarkerKey) && p[kMarkerKey].is_object())
      *marker = p[kMarkerKey];
  pl.erase(std::remove_if(pl.begin(), pl.end(), is_meshcut), pl.end());
  return out;
}

// Single-plugin .conf → conflist: "name" and "cniVersion" go to the list (in the order they
// appeared), the rest of the object, unchanged and in order, becomes plugins[0].
ojson conf_to_list(const ojson& conf) {
  ojson list = ojson::object(), plugin = ojson::object();
  for (const auto& [k, v] : conf.items()) {
    if (k == "name" || k == "cniVersion")
      list[k] = v;
    else
      plugin[k] = v;
  }
  list["plugins"] = ojson::array({plugin});
  return list;
}

// The inverse, for a list left with exactly one plugin; list-level keys other than name and
// cniVersion (e.g. disableCheck) have no .conf equivalent, so such a list is not converted back.
std::optional<ojson> list_to_conf(const ojson& list) {
  if (list.at("plugins").size() != 1) return std::nullopt;
  ojson conf = ojson::object();
  for (const auto& [k, v] : list.items()) {
    if (k == "name" || k == "cniVersion")
      conf[k] = v;
    else if (k != "plugins")
      return std::nullopt;
  }
  for (const auto& [k, v] : list.at("plugins").at(0).items()) conf[k] = v;
  return conf;
}

// An object parsed from TEXT, or nothing (for text we only inspect, never report on).
std::optional<ojson> parse_quiet(const std::string& text) {
  try {
    auto d = ojson::parse(text);
    if (d.is_object()) return d;
  } catch (const nlohmann::json::exception&) {
  }
  return std::nullopt;
}
// A list whose "plugins" is an array (entries may be anything; is_meshcut checks each).
bool is_usable_list(const std::optional<ojson>& d) {
  return d && d->contains("plugins") && d->at("plugins").is_array();
}

// "original" of MARKER, if parsing it (converted back to a list when CONVERTED) gives STRIPPED.
std::optional<std::string> trusted_original(const ojson& marker, const ojson& stripped, bool converted) {
  if (!marker.is_object() || !marker.contains("original") || !marker["original"].is_string()) return std::nullopt;
  auto d = parse_quiet(marker["original"].get<std::string>());
  if (!d) return std::nullopt;
  if (converted && d->contains("plugins")) return std::nullopt;
  if ((converted ? conf_to_list(*d) : *d) != stripped) return std::nullopt;
  return marker["original"].get<std::string>();
}

// A plain file name with a config extension (the marker is data read back from disk).
std::optional<std::string> converted_from(const ojson& marker) {
  if (!marker.is_object() || !marker.contains("convertedFrom") || !marker["convertedFrom"].is_string())
    return std::nullopt;
  auto n = marker["convertedFrom"].get<std::string>();
  if (n.find('/') != std::string::npos || !is_config_name(n)) return std::nullopt;
  return n;
}

Result<ojson> resolve_entry(const InstallOptions& opt) {
  if (opt.plugin_entry.is_null()) return default_plugin_entry();
  if (!opt.plugin_entry.is_object())
    return make_error("the meshcut conflist entry must be a JSON object", EINVAL,
                      R"(e.g. {"type":"meshcut","pinRoot":"/sys/fs/bpf/meshcut"})");
  auto in = ojson::parse(opt.plugin_entry.dump());
  if (!in.contains("type") || in["type"] != kPluginType)
    return make_error("the meshcut conflist entry must have \"type\": \"meshcut\"", EINVAL,
                      "the runtime runs <cni_bin_dir>/<type>; install-cni installs the binary as 'meshcut'");
  ojson e = ojson::object();
  e["type"] = kPluginType;  // "type" first, as every CNI config writes it
  for (const auto& [k, v] : in.items())
    if (k != "type" && k != kMarkerKey) e[k] = v;
  return e;
}

Status file_mode(const std::string& path, struct stat* st) {
  if (::stat(path.c_str(), st) != 0) return make_error("couldn't stat '" + path + "'", errno);
  return ok_status();
}

// Copy opt.plugin_src to <bin>/meshcut unless it is already there, byte for byte, mode 0755.
Status install_binary(const InstallOptions& opt, InstallReport& rep) {
  auto src = read_text(opt.plugin_src, "the meshcut plugin binary");
  if (!src) {
    Error e = src.error();
    e.hint = "build it (cmake --build build --target meshcut) or pass --plugin-src";
    return e;
  }
  struct stat st;
  if (::stat(opt.cni_bin_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error("CNI bin dir '" + opt.cni_bin_dir + "' is not a directory", errno ? errno : ENOTDIR,
                      "pass --cni-bin-dir (containerd: plugins.\"io.containerd.grpc.v1.cri\".cni.bin_dir)");
  if (::stat(rep.binary_path.c_str(), &st) == 0 && (st.st_mode & 07777) == 0755 &&
      static_cast<size_t>(st.st_size) == src->size()) {
    auto cur = read_text(rep.binary_path, "the installed plugin");
    if (cur && *cur == *src) return ok_status();
  }
  // rename() over a binary that runs right now is safe (no ETXTBSY), unlike open(O_TRUNC).
  if (auto s = write_atomic(rep.binary_path, *src, 0755); !s) return s;
  rep.binary_changed = true;
  rep.actions.push_back("installed " + rep.binary_path);
  return ok_status();
}

}  // namespace

ojson default_plugin_entry() {
  ojson e = ojson::object();
  e["type"] = kPluginType;
  e["pinRoot"] = "/sys/fs/bpf/meshcut";
  e["logFile"] = "/var/log/meshcut-cni.log";
  // libcni passes pod annotations (opt-out, sidecar detection) only to plugins
  // that declare the capability.
  e["capabilities"] = ojson{{"io.kubernetes.cri.pod-annotations", true}};
  return e;
}

Result<std::vector<std::string>> config_files(const std::string& conf_dir) {
  DIR* d = ::opendir(conf_dir.c_str());
  if (!d)
    return make_error("couldn't list CNI conf dir '" + conf_dir + "'", errno,
                      "the main CNI (flannel, Calico, bridge) writes its config there; install it first "
                      "or pass --cni-conf-dir");
  std::vector<std::string> out;
  while (auto* ent = ::readdir(d)) {
    std::string n = ent->d_name;
    if (!is_config_name(n)) continue;
    struct stat st;
    if (::stat(join(conf_dir, n).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());  // byte order, as Go's sort.Strings
  return out;
}

Result<std::string> active_config(const std::string& conf_dir) {
  auto files = config_files(conf_dir);
  if (!files) return files.error();
  if (files->empty())
    return make_error("no CNI config (*.conf, *.conflist, *.json) in '" + conf_dir + "'", ENOENT,
                      "meshcut chains after the node's main CNI: install that first (its config must be "
                      "in this dir) or pass --cni-conf-dir");
  return join(conf_dir, files->front());
}

Result<InstallReport> install(const InstallOptions& opt) {
  InstallReport rep;
  rep.binary_path = join(opt.cni_bin_dir, kPluginType);
  auto entry = resolve_entry(opt);
  if (!entry) return entry.error();
  if (opt.plugin_src.empty())
    return make_error("no meshcut plugin binary given", EINVAL, "pass --plugin-src PATH (the built 'meshcut')");

  auto lock = lock_dir(opt.cni_conf_dir,
                       "the main CNI writes its config there; install it first or pass "
                       "--cni-conf-dir");
  if (!lock) return lock.error();
  auto active = active_config(opt.cni_conf_dir);
  if (!active) return active.error();
  auto text = read_text(*active, "CNI config");
  if (!text) return text.error();
  auto doc = parse_config(*active, *text);
  if (!doc) return doc.error();
  struct stat st;
  if (auto s = file_mode(*active, &st); !s) return s.error();

  // Decide everything before touching anything: a refusal leaves the node as it was.
  std::string target = *active;
  ojson list, marker_in, marker = ojson::object();
  if (is_list(*doc)) {
    bool had = has_meshcut(*doc);
    list = strip(*doc, &marker_in);
    if (auto from = converted_from(marker_in)) {
      marker["convertedFrom"] = *from;
      if (auto orig = trusted_original(marker_in, list, true)) marker["original"] = *orig;
    } else if (!had) {
      marker["original"] = *text;
    } else if (auto orig = trusted_original(marker_in, list, false)) {
      marker["original"] = *orig;
    }
  } else {
    rep.converted = true;
    list = conf_to_list(*doc);
    marker["convertedFrom"] = base_name(*active);
    marker["original"] = *text;
    target = join(opt.cni_conf_dir, stem_of(base_name(*active)) + ".conflist");
    if (exists(target)) {
      // Only a leftover of our own earlier conversion of this very file may be replaced.
      auto t = read_text(target, "CNI config");
      std::optional<ojson> td = t ? parse_quiet(*t) : std::nullopt;
      ojson tm;
      if (is_usable_list(td)) strip(*td, &tm);
      if (converted_from(tm) != base_name(*active))
        return make_error("can't convert '" + *active + "' to a conflist: '" + target + "' already exists", EEXIST,
                          "merge or remove one of the two files; meshcut changed nothing");
    }
    // The converted file must take the .conf's place as the active config.
    auto files = config_files(opt.cni_conf_dir);
    if (!files) return files.error();
    std::vector<std::string> after;
    for (const auto& n : *files)
      if (n != base_name(*active)) after.push_back(n);
    after.push_back(base_name(target));
    std::sort(after.begin(), after.end());
    if (after.front() != base_name(target))
      return make_error("converting '" + *active + "' would make '" + join(opt.cni_conf_dir, after.front()) +
                            "' the active CNI config instead",
                        EINVAL, "rename the files so the main CNI's config sorts first; meshcut changed nothing");
  }
  ojson e = *entry;
  if (!marker.empty()) e[kMarkerKey] = marker;
  list["plugins"].push_back(e);
  auto out = serialize(list, target);
  if (!out) return out.error();
  rep.conf_file = target;

  // Binary first: the entry must never name a plugin the runtime can't find.
  if (auto s = install_binary(opt, rep); !s) return s.error();

  std::optional<std::string> cur;
  if (target == *active)
    cur = *text;
  else if (auto t = read_text(target, "CNI config"))
    cur = *t;
  if (cur != *out) {
    if (auto s = write_atomic(target, *out, st.st_mode, std::pair{st.st_uid, st.st_gid}); !s) return s.error();
    rep.conf_changed = true;
    rep.actions.push_back(std::string(rep.converted ? "wrote converted " : "added meshcut to ") + target);
  }
  if (target != *active) {
    // Only now, with the conflist in place, drop the .conf (it sorts first and would stay active).
    if (auto s = remove_file(*active); !s) return s.error();
    rep.conf_changed = true;
    rep.actions.push_back("removed " + *active + " (kept inside the meshcut entry for uninstall)");
  }
  rep.changed = rep.binary_changed || rep.conf_changed;
  return rep;
}

Result<InstallReport> uninstall(const InstallOptions& opt) {
  InstallReport rep;
  rep.binary_path = join(opt.cni_bin_dir, kPluginType);

  struct stat dst;
  if (::stat(opt.cni_conf_dir.c_str(), &dst) == 0) {
    auto lock = lock_dir(opt.cni_conf_dir, "");
    if (!lock) return lock.error();
    auto files = config_files(opt.cni_conf_dir);
    if (!files) return files.error();
    for (const auto& name : *files) {
      const std::string path = join(opt.cni_conf_dir, name);
      auto text = read_text(path, "CNI config");
      if (!text) return text.error();
      std::optional<ojson> doc = parse_quiet(*text);
      // Not ours to judge: a file that is not a valid list can hold no entry we wrote.
      if (!is_usable_list(doc) || !has_meshcut(*doc)) continue;
      struct stat st;
      if (auto s = file_mode(path, &st); !s) return s.error();
      auto owner = std::pair{st.st_uid, st.st_gid};
      ojson marker;
      ojson list = strip(*doc, &marker);
      rep.conf_file = path;
      rep.conf_changed = true;

      auto from = converted_from(marker);
      if (from && *from != name) {
        const std::string orig_path = join(opt.cni_conf_dir, *from);
        auto conf = list_to_conf(list);
        if (conf && exists(orig_path)) {
          // The main CNI wrote its .conf again since; our converted copy is obsolete.
          if (auto s = remove_file(path); !s) return s.error();
          rep.actions.push_back("removed " + path + " (" + orig_path + " was re-created by the main CNI)");
          continue;
        }
        if (conf) {
          std::string out;
          if (auto orig = trusted_original(marker, list, true)) {
            out = *orig;
          } else {
            auto o = serialize(*conf, orig_path);
            if (!o) return o.error();
            out = *o;
          }
          if (auto s = write_atomic(orig_path, out, st.st_mode, owner); !s) return s.error();
          if (auto s = remove_file(path); !s) return s.error();
          rep.converted = true;
          rep.conf_file = orig_path;
          rep.actions.push_back("restored " + orig_path + ", removed " + path);
          continue;
        }
        rep.actions.push_back("kept " + path + " as a conflist: plugins were added to it since install");
      }
      std::string out;
      if (auto orig = from ? std::nullopt : trusted_original(marker, list, false)) {
        out = *orig;
      } else {
        auto o = serialize(list, path);
        if (!o) return o.error();
        out = *o;
      }
      if (auto s = write_atomic(path, out, st.st_mode, owner); !s) return s.error();
      rep.actions.push_back("removed meshcut from " + path);
    }
  }

  if (exists(rep.binary_path)) {
    if (auto s = remove_file(rep.binary_path); !s) return s.error();
    rep.binary_changed = true;
    rep.actions.push_back("removed " + rep.binary_path);
  }
  rep.changed = rep.binary_changed || rep.conf_changed;
  return rep;
}

bool needs_reinstall(const InstallOptions& opt) {
  auto entry = resolve_entry(opt);
  auto active = active_config(opt.cni_conf_dir);
  if (!entry || !active) return false;
  auto text = read_text(*active, "CNI config");
  if (!text) return false;
  auto doc = parse_config(*active, *text);
  if (!doc) return false;
  if (!is_list(*doc)) return true;  // a .conf: not converted yet, so no meshcut
  const ojson* found = nullptr;
  for (const auto& p : doc->at("plugins"))
    if (is_meshcut(p)) {
      found = &p;
      break;
    }
  if (!found) return true;
  if (!exists(join(opt.cni_bin_dir, kPluginType))) return true;
  // Position is not checked on purpose: another chained plugin that also insists on being last
  // (e.g. a mesh's own CNI) would make the two installers rewrite the file forever.
  ojson have = *found;
  have.erase(kMarkerKey);
  return nlohmann::json::parse(have.dump()) != nlohmann::json::parse(entry->dump());
}

}  // namespace meshcut::daemon::install
