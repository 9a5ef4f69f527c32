// SPDX-License-Identifier: MIT OR Apache-2.0
//
// What the benchmark's C relays (offload-relay.c, uring-relay.c) share: opening a persistent
// TUN device the way hostkit's fast engine does (IFF_VNET_HDR, the kernel's 10-byte
// virtio_net_hdr, TUNSETOFFLOAD csum|tso4|tso6|tso-ecn), and dying with the failed call named.
// Each relay defines RELAY_NAME (its name in messages) before including this file.

#ifndef RELAY_TUN_H
#define RELAY_TUN_H

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#ifndef RELAY_NAME
#error "define RELAY_NAME before including relay-tun.h"
#endif

#define OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
// hostkit's fast engine uses the kernel's default header, struct virtio_net_hdr (10 bytes).
#define VNET_HDR_LEN ((int)sizeof(struct virtio_net_hdr))

// Reports the failed call (printf-style) with errno's text and exits 1.
__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    int err = errno;
    va_list ap;

    fputs(RELAY_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", strerror(err));
    exit(1);
}

// Attaches to the persistent single-queue TUN device `name` (blocking: io_uring then waits on
// the device's poll rather than failing with EAGAIN; select() does not care).
static int open_tun(const char *name) {
    struct ifreq ifr;
    int fd, hdr_len = VNET_HDR_LEN;

    if (strlen(name) >= IFNAMSIZ) {
        fprintf(stderr, RELAY_NAME ": device name too long: %s\n", name);
        exit(1);
    }
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("open /dev/net/tun for %s", name);
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die("TUNSETIFF %s (IFF_TUN|IFF_NO_PI|IFF_VNET_HDR, single queue)", name);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) < 0)
        die("TUNSETVNETHDRSZ %d on %s", hdr_len, name);
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)OFFLOADS) < 0)
        die("TUNSETOFFLOAD csum|tso4|tso6|tso-ecn on %s", name);
    return fd;
}

#endif
