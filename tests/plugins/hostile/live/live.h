/* live.h -- what the "live" hostile plugins share: they behave while the
 * probe watches and attack once a4psd runs them.  Issue 10's attacker told
 * the probe apart by its uid, gVisor, its mounts and its descriptors; these
 * plugins use the two cheapest of those tells, so the test proves that
 * passing the probe buys them nothing. */
#ifndef HOSTILE_LIVE_H
#define HOSTILE_LIVE_H

#include <unistd.h>

#include "hostile.h"

/* True inside the sandbox: a4ps-probe runs as nobody (65534) with its own
 * directory mounted at /probe.  a4psd has neither. */
static inline int live_in_probe(void)
{
    return getuid() == 65534 || access("/probe", F_OK) == 0;
}

#endif
