#!/usr/bin/env bash
# The test bed of DESIGN.md §9, built from network namespaces and veth pairs.
#
#   scripts/testbed.sh up [--bump]    build it (idempotent: tears down first)
#   scripts/testbed.sh down           remove everything `up` made
#   scripts/testbed.sh status         list what exists
#
#   ls-client  eth0 10.10.1.2/24 gw 10.10.1.1 ─┐                 ┌─ ls-server eth0 10.10.2.2/24 gw 10.10.2.1
#                                             br-in           br-out
#   ls-primary in0 ───────────────────────────┤                 ├─────── out0 ls-primary
#   ls-backup  in0 ───────────────────────────┘                 └─────── out0 ls-backup
#   ls-primary rep0 ── br-rep ── rep0 ls-backup      (replication link, DPDK,
#                                                     MTU 9000: a replica is its
#                                                     frame plus 50 bytes)
#
# The switch does not learn MACs on the nodes' data ports (learning off), so
# ingress for anything behind the cluster is flooded to every member: the
# primary processes it, each backup keeps a window of it and processes, after
# a takeover, what the dead primary never replicated.
#   ls-primary mgmt0 10.10.9.1 ── br-mgmt ── mgmt0 10.10.9.2 ls-backup   (kernel IP)
#
# The bridges live in their own namespace (ls-sw), so nothing is added to the
# machine's root namespace. Node data ports carry no IP address: lockstep
# owns them through net_af_packet (or net_tap). IPv6 is off everywhere so the
# only traffic is the traffic a test sends.
#
# --bump: `forward` is a bump in the wire, so give the endpoints on-link
# routes to each other's subnet (the router brings the gateways).
#
# Environment:
#   LS_PREFIX  namespace prefix (default "ls-"); tests use a unique one.
#   LS_NODES   node names (default "primary backup"; add "backup2" for a
#              second backup, management address 10.10.9.3).
set -euo pipefail

P=${LS_PREFIX:-ls-}
NODES=${LS_NODES:-primary backup}
SW=${P}sw

ns() { ip netns exec "$1" "${@:2}"; }

quiet_offloads() { # ns dev: veth offloads off, else checksums/sizes are wrong on the wire
    ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

new_ns() {
    ip netns add "$1"
    ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ns "$1" ip link set lo up
}

# link NS DEV BRIDGE [flood]: veth DEV in NS, its peer enslaved to BRIDGE in
# the switch. "flood": the switch never learns MACs from this port, so
# traffic to MACs behind the cluster reaches every member (the primary
# processes it, the backups keep a window of it for a takeover).
link() {
    local ns_=$1 dev=$2 br=$3 peer="${3#br-}-${1#"$P"}"
    peer=${peer:0:15}
    ip link add name "$dev" netns "$ns_" type veth peer name "$peer" netns "$SW"
    quiet_offloads "$ns_" "$dev"
    quiet_offloads "$SW" "$peer"
    if [ "$br" = br-rep ]; then
        ns "$SW" ip link set "$peer" mtu 9000
        ns "$ns_" ip link set "$dev" mtu 9000
    fi
    ns "$SW" ip link set "$peer" master "$br" up
    [ "${4:-}" = flood ] && ns "$SW" bridge link set dev "$peer" learning off
    ns "$ns_" ip link set "$dev" up
}

mgmt_addr() {
    case $1 in
        primary) echo 10.10.9.1 ;;
        backup) echo 10.10.9.2 ;;
        backup2) echo 10.10.9.3 ;;
        *) echo "unknown node '$1' (primary, backup, backup2)" >&2; exit 2 ;;
    esac
}

down() {
    local n
    for n in client server $NODES backup2 sw; do
        ip netns pids "$P$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$P$n" 2>/dev/null || true
    done
}

up() {
    local bump=0
    [ "${1:-}" = "--bump" ] && bump=1
    down
    new_ns "$SW"
    for br in br-in br-out br-rep br-mgmt; do
        ns "$SW" ip link add "$br" type bridge
        # Replication frames carry a full frame plus 50 bytes of headers.
        [ "$br" = br-rep ] && ns "$SW" ip link set "$br" mtu 9000
        # Replication frames go to a group address: flood them to every backup.
        ns "$SW" ip link set "$br" type bridge mcast_snooping 0
        ns "$SW" ip link set "$br" up
    done

    new_ns "${P}client"
    link "${P}client" eth0 br-in
    ns "${P}client" ip addr add 10.10.1.2/24 dev eth0
    ns "${P}client" ip route add default via 10.10.1.1

    new_ns "${P}server"
    link "${P}server" eth0 br-out
    ns "${P}server" ip addr add 10.10.2.2/24 dev eth0
    ns "${P}server" ip route add default via 10.10.2.1

    if [ $bump = 1 ]; then
        ns "${P}client" ip route add 10.10.2.0/24 dev eth0
        ns "${P}server" ip route add 10.10.1.0/24 dev eth0
    fi

    local n
    for n in $NODES; do
        new_ns "$P$n"
        link "$P$n" in0 br-in flood
        link "$P$n" out0 br-out flood
        link "$P$n" rep0 br-rep
        link "$P$n" mgmt0 br-mgmt
        ns "$P$n" ip addr add "$(mgmt_addr "$n")/24" dev mgmt0
    done
}

status() {
    ip netns list | grep "^$P" || echo "no ${P}* namespaces"
}

case ${1:-} in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up [--bump] | down | status" >&2; exit 2 ;;
esac
