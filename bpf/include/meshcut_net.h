/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_net.h — BPF C only. The socket-layer constants of the libc headers
 * (sys/socket.h, netinet/tcp.h), which BPF objects cannot include next to the
 * kernel's UAPI headers. Values are the kernel's ABI (include/linux/socket.h).
 */
#ifndef MESHCUT_NET_H
#define MESHCUT_NET_H

#define MC_AF_INET 2
#define MC_AF_INET6 10
#define MC_SOL_TCP 6
#define MC_IPPROTO_TCP 6 /* = IPPROTO_TCP of linux/in.h, for objects without it */
#define MC_MSG_PEEK 2

#endif /* MESHCUT_NET_H */
