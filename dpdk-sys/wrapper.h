/* Every DPDK header lockstep binds to. Compiled with DPDK's own cflags
 * (pkg-config libdpdk), which force-include rte_config.h. */
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_version.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_eth_ring.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_telemetry.h>
#include <rte_pdump.h>
#include <rte_lpm.h>
#include <rte_hash_crc.h>

/* rte_errno is a per-lcore (TLS) macro, invisible to bindgen. */
int lsd_rte_errno(void);
