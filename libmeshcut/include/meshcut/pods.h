// SPDX-License-Identifier: Apache-2.0
// Pod records as the CNI plugin writes them (mc_cni_pods) and their removal,
// shared by the plugin (DEL, GC) and meshcutd (garbage collection, detach).
#pragma once

#include <string>

#include "meshcut/maps.h"

namespace meshcut::pods {

std::string container_id(const mc_cni_key& k);
std::string ifname(const mc_cni_key& k);

// Removes our tc filter from the recorded host veth, but only if that ifindex
// still names the recorded device (after the veth is gone the number may
// belong to another pod's).
void detach_tc_if_same(const mc_cni_pod& rec);
// Removes the record and what it stands for (tc filter, mc_pods entry, IPs
// still owned by it). Logs, never fails.
void remove(const PinnedMaps& maps, const mc_cni_key& key, const mc_cni_pod& rec);
// Puts our tc filter back on the host veths of records that had it, where
// another agent removed it. Returns how many (logged).
int reattach_tc(const PinnedMaps& maps, int tc_veth_prog_fd);
// Records whose network namespace is gone (a DEL that never came): removed.
// The caller holds the pin lock. Returns how many.
int gc_stale(const PinnedMaps& maps);

}  // namespace meshcut::pods
