#!/bin/bash
# shellcheck disable=SC2015,SC2317,SC2154 # `a && b || c`; functions called via wait_for; cmd comes from $X/env
# Stage 2 of the soft-RoCE guest: runs with the host's bash inside the chroot
# of the host root (see init). Copied into the per-run xfer share by
# scripts/softroce, so editing it needs no initramfs rebuild.
#
# Job: attach stdout/stderr to the virtio-serial ports that the host streams
# live, build the soft-RoCE "hosts" (dummy or veth+bridge with policy
# routing, one rxe device each), wait for the ports to be ACTIVE, run the
# command with the caller's environment in the caller's cwd, and write its
# exit code to /run/softroce/rc.
#
# Everything here runs under TCG, where every fork+exec costs milliseconds:
# hence bash builtins (read, printf, echo > /proc/sys/...), `ip -b` and
# `rdma -b` batches instead of loops of commands.

set -uo pipefail
X=/run/softroce          # xfer share (host's per-run temp dir)
S=/run/softroce-state    # tmpfs state of the initramfs (modules done marker)
# shellcheck source=/dev/null
. "$X/config"

# --verbose: milestones into the kernel log (shown on the console with the
# guest uptime), to see where the boot time goes.
mark() { ((VERBOSE)) && echo "softroce: stage2: $*" >/dev/kmsg || :; }
mark start

fail() {
	echo "softroce: guest: $*" >&2
	echo 125 >"$X/rc"
	exit 125
}

# A sleep without fork+exec of /bin/sleep: read with timeout on a pipe that
# never delivers data.
exec {_sleep_fd}<> <(:)
nap() { read -r -t "$1" -u "$_sleep_fd" _ || :; }

# Wait until a condition (a shell function) holds, at most $1 seconds.
wait_for() {
	local limit=$1 i=0
	shift
	until "$@"; do
		((i++ >= limit * 50)) && return 1
		nap 0.02
	done
}

# --- stdout/stderr: virtio-serial ports named by the host -----------------
declare -A port
ports_ready() {
	local p name
	for p in /sys/class/virtio-ports/vport*; do
		[[ -r $p/name ]] || continue
		read -r name <"$p/name" || continue
		[[ -n $name && -c /dev/${p##*/} ]] && port[$name]=/dev/${p##*/}
	done
	[[ -n ${port[rcpg.stdout]:-} && -n ${port[rcpg.stderr]:-} ]]
}
wait_for 20 ports_ready || fail "virtio-serial ports rcpg.stdout/rcpg.stderr did not appear"
exec </dev/null >"${port[rcpg.stdout]}" 2>"${port[rcpg.stderr]}"
mark ports

echo softroce >/proc/sys/kernel/hostname
ulimit -l unlimited    # registered memory (rxe pins pages)
ulimit -n 65536

# --- modules (loaded in the background by init) ----------------------------
# -s: the file is created before the code is written into it.
modules_done() { [[ -s $S/modules.a && -s $S/modules.b ]]; }
wait_for 120 modules_done || fail "RDMA modules did not finish loading in 120 s"
read -r mrc_a <"$S/modules.a"
read -r mrc_b <"$S/modules.b"
[[ $mrc_a == 0 && $mrc_b == 0 ]] || fail "loading the RDMA kernel modules failed (rerun with --verbose)"
mark modules

# --- network and rxe devices -----------------------------------------------
sysctl_set() { echo "$2" >"/proc/sys/${1//.//}"; }
ipb=$S/ip.batch rdmab=$S/rdma.batch
{
	echo "link set lo up"
	if ((HOSTS == 1)); then
		echo "link add dummy0 type dummy"
		echo "addr add 10.77.0.1/24 dev dummy0"
		echo "link set dummy0 up"
	else
		# All "hosts" live in one network namespace (rxe in 6.1 is not
		# netns aware: its UDP socket and routing use init_net only).
		# Each host is one end of a veth pair whose other end is a bridge
		# port, so packets between hosts really cross a wire.
		echo "link add br0 type bridge"
		echo "link set br0 up"
		for ((i = 0; i < HOSTS; i++)); do
			echo "link add eth-h$i type veth peer name br-h$i"
			echo "link set br-h$i master br0"
			echo "link set br-h$i up"
			echo "addr add 10.77.0.$((i + 1))/24 dev eth-h$i noprefixroute"
			echo "link set eth-h$i up"
		done
		# Every address is local, so the `local` table (pref 0) would send
		# host-to-host traffic through lo. Move it behind per-interface
		# tables selected by the output interface (rxe routes with
		# oif = its netdev). `from` rules are avoided on purpose: they also
		# match on input and break plain local TCP between the addresses.
		echo "rule add pref 1000 lookup local"
		echo "rule del pref 0"
		for ((i = 0; i < HOSTS; i++)); do
			t=$((100 + i))
			echo "route add 10.77.0.0/24 dev eth-h$i src 10.77.0.$((i + 1)) table $t"
			# ARP for the device's own address needs a local route here.
			echo "route add local 10.77.0.$((i + 1)) dev eth-h$i table $t"
			echo "rule add pref $t oif eth-h$i lookup $t"
		done
	fi
} >"$ipb"
for ((i = 0; i < HOSTS; i++)); do
	if ((HOSTS == 1)); then nd=dummy0; else nd=eth-h$i; fi
	echo "link add rxe$i type rxe netdev $nd"
done >"$rdmab"

# veth delivers through the per-CPU backlog (netif_rx); the default limit of
# 1000 packets overflows in bursts under TCG and every drop costs an RC
# retransmission timeout.
sysctl_set net.core.netdev_max_backlog 20000
if ((HOSTS > 1)); then
	# Set before the interfaces exist so that conf/default applies to them;
	# the kernel takes max(all, dev) or all||dev for these knobs.
	for c in all default; do
		sysctl_set net.ipv4.conf.$c.rp_filter 0   # replies come in on another host's veth
		sysctl_set net.ipv4.conf.$c.accept_local 1 # packets from our own addresses
		sysctl_set net.ipv4.conf.$c.arp_ignore 1   # answer ARP only on the owning veth
		sysctl_set net.ipv4.conf.$c.arp_announce 2
	done
fi
ip -b "$ipb" || fail "network setup failed (ip -b)"
rdma -b "$rdmab" || fail "rxe setup failed (rdma -b)"
mark "ip+rdma"

# A port is usable when ACTIVE and its RoCE v2 GID for the IPv4 address is
# in the table (rdma_cm and perftest -x need it); both come asynchronously.
rxe_ready() {
	local i j st gid want
	for ((i = 0; i < HOSTS; i++)); do
		{ read -r st <"/sys/class/infiniband/rxe$i/ports/1/state"; } 2>/dev/null || return 1
		[[ $st == *ACTIVE* ]] || return 1
		printf -v want '0000:0000:0000:0000:0000:ffff:0a4d:%04x' $((i + 1))
		for j in 0 1 2 3 4 5 6 7; do
			{ read -r gid <"/sys/class/infiniband/rxe$i/ports/1/gids/$j"; } 2>/dev/null || continue
			[[ $gid == "$want" ]] && continue 2
		done
		return 1
	done
}
wait_for 30 rxe_ready || fail "rxe ports did not become ACTIVE (with IPv4 GID) in 30 s"
mark "rxe ready, running the command"

# --- the command -----------------------------------------------------------
# Drop init's environment; take the caller's (written by the host script as
# `export` lines plus the array `cmd`).
while read -r v; do unset "$v"; done < <(compgen -e)
# shellcheck source=/dev/null
. "$X/env"
cd -- "$PWD_LOGICAL" 2>/dev/null || cd -- "${CWD:-/}" || fail "cannot cd to $PWD_LOGICAL"
exec {_sleep_fd}<&-
unset -f fail nap wait_for ports_ready modules_done sysctl_set rxe_ready
BASH_ARGV0=softroce # bash's own errors (e.g. command not found) name us, not stage2.sh
"${cmd[@]}"
rc=$?
mark "command exited ($rc)"
echo "$rc" >"$X/rc"
exit "$rc"
