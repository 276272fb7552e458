// SPDX-License-Identifier: Apache-2.0
//
// floor_loader — loads bench/floor.bpf.c (the minimal sockops + sk_msg
// redirect the socket benchmark compares meshcut with) and pins everything, so
// the redirect stays active after this program exits.
//
//   floor_loader attach --cgroup /sys/fs/cgroup/unified/X --pin /sys/fs/bpf/Y
//   floor_loader stats  --pin /sys/fs/bpf/Y        (JSON counters on stdout)
//   floor_loader detach --pin /sys/fs/bpf/Y        (idempotent)
//
// Pins under DIR: sockhash, counters, sk_msg, sk_skb, sockops_link. libbpf 1.1
// has no link API for sk_msg / sk_skb, so those are classic bpf_prog_attach to
// the map; the pinned programs are what `detach` needs for bpf_prog_detach2.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "mcb_floor.skel.h"

namespace {

constexpr const char* kPins[] = {"sockops_link", "sk_msg", "sk_skb", "sockhash", "counters"};
// Same order as the enum in floor.bpf.c.
constexpr const char* kCounterNames[] = {"inserted", "redirect_msgs", "redirect_bytes", "miss_msgs"};

int usage() {
  std::fprintf(stderr,
               "usage: floor_loader attach --cgroup CGROUP_DIR --pin PIN_DIR\n"
               "       floor_loader stats --pin PIN_DIR\n"
               "       floor_loader detach --pin PIN_DIR\n");
  return 2;
}

std::string pin_path(const std::string& dir, const char* name) { return dir + "/" + name; }

int fail(const char* what, int err) {
  std::fprintf(stderr, "floor_loader: %s: %s\n", what, std::strerror(err < 0 ? -err : err));
  return 1;
}

// Best-effort removal of every pin and the directory; used by detach and to roll
// back a half-done attach. Detaching before unpinning matters: an unpinned
// link or attachment whose fds are still open would otherwise live on.
void detach_all(const std::string& dir, bool verbose) {
  int link_fd = bpf_obj_get(pin_path(dir, "sockops_link").c_str());
  if (link_fd >= 0) {
    if (bpf_link_detach(link_fd) != 0 && verbose)
      std::fprintf(stderr, "floor_loader: link detach: %s\n", std::strerror(errno));
    close(link_fd);
  }
  int map_fd = bpf_obj_get(pin_path(dir, "sockhash").c_str());
  if (map_fd >= 0) {
    const std::pair<const char*, bpf_attach_type> progs[] = {{"sk_msg", BPF_SK_MSG_VERDICT},
                                                             {"sk_skb", BPF_SK_SKB_VERDICT}};
    for (auto [name, type] : progs) {
      int prog_fd = bpf_obj_get(pin_path(dir, name).c_str());
      if (prog_fd < 0) continue;
      if (bpf_prog_detach2(prog_fd, map_fd, type) != 0 && verbose && errno != ENOENT)
        std::fprintf(stderr, "floor_loader: detach %s: %s\n", name, std::strerror(errno));
      close(prog_fd);
    }
    close(map_fd);
  }
  for (const char* name : kPins) unlink(pin_path(dir, name).c_str());
  rmdir(dir.c_str());
}

int cmd_attach(const std::string& cgroup, const std::string& dir) {
  if (dir.rfind("/sys/fs/bpf/", 0) != 0) {
    std::fprintf(stderr, "floor_loader: --pin must be under /sys/fs/bpf/\n");
    return 2;
  }
  int cg_fd = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg_fd < 0) return fail(cgroup.c_str(), errno);
  // A fresh directory only: the rollback below removes every pin in it, which
  // must never hit the pins of an earlier, still active attach.
  if (mkdir(dir.c_str(), 0700) != 0) {
    close(cg_fd);
    return fail(dir.c_str(), errno);
  }

  mcb_floor* skel = mcb_floor__open_and_load();
  if (!skel) {
    int err = errno;
    close(cg_fd);
    detach_all(dir, false);
    return fail("load floor.bpf.o", err);
  }
  int map_fd = bpf_map__fd(skel->maps.floor_sockhash);
  int rc = 0;
  const char* step = "";
  int link_fd = -1;
  // Verdicts first: a socket picks up the map's programs when it is inserted,
  // so they must be in place before sockops starts inserting.
  if ((rc = bpf_prog_attach(bpf_program__fd(skel->progs.floor_sk_msg), map_fd, BPF_SK_MSG_VERDICT, 0))) {
    step = "attach sk_msg";
  } else if ((rc = bpf_obj_pin(bpf_program__fd(skel->progs.floor_sk_msg), pin_path(dir, "sk_msg").c_str()))) {
    step = "pin sk_msg";
  } else if ((rc = bpf_prog_attach(bpf_program__fd(skel->progs.floor_sk_skb), map_fd, BPF_SK_SKB_VERDICT, 0))) {
    step = "attach sk_skb";
  } else if ((rc = bpf_obj_pin(bpf_program__fd(skel->progs.floor_sk_skb), pin_path(dir, "sk_skb").c_str()))) {
    step = "pin sk_skb";
  } else if ((rc = bpf_obj_pin(map_fd, pin_path(dir, "sockhash").c_str()))) {
    step = "pin sockhash";
  } else if ((rc = bpf_obj_pin(bpf_map__fd(skel->maps.floor_counters), pin_path(dir, "counters").c_str()))) {
    step = "pin counters";
  } else if ((link_fd = bpf_link_create(bpf_program__fd(skel->progs.floor_sockops), cg_fd, BPF_CGROUP_SOCK_OPS,
                                        nullptr)) < 0) {
    rc = link_fd;
    step = "link sockops to cgroup";
  } else if ((rc = bpf_obj_pin(link_fd, pin_path(dir, "sockops_link").c_str()))) {
    step = "pin sockops link";
  }
  int err = errno;
  if (rc != 0) {
    // The sk_msg/sk_skb attachments live as long as the map: detach them
    // explicitly while we still hold the fds.
    bpf_prog_detach2(bpf_program__fd(skel->progs.floor_sk_msg), map_fd, BPF_SK_MSG_VERDICT);
    bpf_prog_detach2(bpf_program__fd(skel->progs.floor_sk_skb), map_fd, BPF_SK_SKB_VERDICT);
  }
  if (link_fd >= 0) close(link_fd);
  close(cg_fd);
  mcb_floor__destroy(skel);
  if (rc != 0) {
    detach_all(dir, false);
    return fail(step, err);
  }
  return 0;
}

int cmd_stats(const std::string& dir) {
  int fd = bpf_obj_get(pin_path(dir, "counters").c_str());
  if (fd < 0) return fail("open pinned counters", errno);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) {
    close(fd);
    return fail("possible cpus", ncpu);
  }
  std::vector<__u64> vals(static_cast<size_t>(ncpu));
  std::printf("{");
  for (__u32 i = 0; i < std::size(kCounterNames); i++) {
    __u64 sum = 0;
    if (bpf_map_lookup_elem(fd, &i, vals.data()) == 0)
      for (__u64 v : vals) sum += v;
    std::printf("%s\"%s\": %llu", i ? ", " : "", kCounterNames[i], static_cast<unsigned long long>(sum));
  }
  std::printf("}\n");
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string_view cmd = argv[1];
  std::string cgroup, pin;
  for (int i = 2; i < argc; i++) {
    std::string_view a = argv[i];
    if (a == "--cgroup" && i + 1 < argc)
      cgroup = argv[++i];
    else if (a == "--pin" && i + 1 < argc)
      pin = argv[++i];
    else
      return usage();
  }
  if (pin.empty()) return usage();
  while (pin.size() > 1 && pin.back() == '/') pin.pop_back();
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  if (cmd == "attach" && !cgroup.empty()) return cmd_attach(cgroup, pin);
  if (cmd == "stats") return cmd_stats(pin);
  if (cmd == "detach") {
    detach_all(pin, true);
    return 0;
  }
  return usage();
}
