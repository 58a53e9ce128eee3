#!/bin/sh
# A three-node etcd cluster spread over three "regions" (docs/examples.md):
# three network namespaces, one etcd member each, joined through a fourth
# namespace that routes between them, and impair on each member's egress with
# that region's latency matrix (us-east-1.csv, eu-west-1.csv,
# ap-northeast-1.csv beside this script: half of a published inter-region
# round trip per destination region).
#
#   sudo examples/etcd-regions/run.sh up      # cluster + matrices
#   sudo ip netns exec etcdr-us-east-1 etcdctl put k v   # time it
#   sudo examples/etcd-regions/run.sh down
#
# Verbs: up (cluster, then matrices), cluster (the cluster alone, unimpaired),
# matrices (attach the matrices to a running cluster), down (stop everything,
# remove the namespaces). Needs root, iproute2, etcd and etcdctl (Debian
# etcd-server and etcd-client), impair, and sch_fq in the kernel for the
# delays (without it `matrices` fails: impair refuses delay without fq).
# Addresses: 198.18.{1,2,3}.10 (benchmarking range), one /24 per region.
#
# Environment: IMPAIR (the impair binary; default: impair on PATH),
# ETCD_REGIONS_TAG (namespace prefix; default etcdr), ETCD_REGIONS_DIR (data,
# logs and pids; default /dev/shm/TAG, or /tmp/TAG without /dev/shm),
# ETCD_REGIONS_WAIT_S (how long the cluster may take to come up; default 60).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
impair=${IMPAIR:-impair}
tag=${ETCD_REGIONS_TAG:-etcdr}
if [ -d /dev/shm ]; then base=/dev/shm; else base=/tmp; fi
dir=${ETCD_REGIONS_DIR:-$base/$tag}
wait_s=${ETCD_REGIONS_WAIT_S:-60}
regions="us-east-1 eu-west-1 ap-northeast-1"
hub=$tag-hub

# iproute2's ip (netns, veth), not a busybox applet of the same name, which
# a busybox shell may prefer to PATH.
ip=""
for p in /usr/sbin/ip /usr/bin/ip /sbin/ip /bin/ip; do
	if [ -x "$p" ] && "$p" -V 2>&1 | grep -q iproute2; then ip=$p; break; fi
done
[ -n "$ip" ] || { echo "etcd-regions: iproute2's ip is missing" >&2; exit 2; }

# region -> index (its /24 is 198.18.INDEX.0/24)
index() {
	case $1 in
	us-east-1) echo 1 ;;
	eu-west-1) echo 2 ;;
	ap-northeast-1) echo 3 ;;
	*) echo "unknown region $1" >&2; exit 2 ;;
	esac
}
ns() { echo "$tag-$1"; }
ip_of() { echo "198.18.$(index "$1").10"; }

initial_cluster() {
	sep=""
	for r in $regions; do
		printf '%s%s=http://%s:2380' "$sep" "$r" "$(ip_of "$r")"
		sep=","
	done
}

cluster() {
	mkdir -p "$dir"
	"$ip" netns add "$hub"
	"$ip" -n "$hub" link set lo up
	"$ip" netns exec "$hub" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	for r in $regions; do
		i=$(index "$r")
		n=$(ns "$r")
		"$ip" netns add "$n"
		"$ip" -n "$n" link set lo up
		"$ip" link add "$tag-h$i" netns "$hub" type veth peer name eth0 netns "$n"
		"$ip" -n "$hub" addr add "198.18.$i.1/24" dev "$tag-h$i"
		"$ip" -n "$hub" link set "$tag-h$i" up
		"$ip" -n "$n" addr add "$(ip_of "$r")/24" dev eth0
		"$ip" -n "$n" link set eth0 up
		"$ip" -n "$n" route add 198.18.0.0/15 via "198.18.$i.1"
	done
	for r in $regions; do
		a=$(ip_of "$r")
		"$ip" netns exec "$(ns "$r")" etcd --name "$r" --data-dir "$dir/$r.etcd" \
			--listen-peer-urls "http://$a:2380" \
			--initial-advertise-peer-urls "http://$a:2380" \
			--listen-client-urls "http://$a:2379,http://127.0.0.1:2379" \
			--advertise-client-urls "http://$a:2379" \
			--initial-cluster "$(initial_cluster)" \
			--initial-cluster-state new --initial-cluster-token "$tag" \
			--heartbeat-interval 300 --election-timeout 5000 \
			--logger zap --log-level warn >"$dir/$r.etcd.log" 2>&1 &
		echo $! >"$dir/$r.etcd.pid"
	done
	# Healthy: a linearizable read through every member (a quorum answers).
	t=0
	while :; do
		ok=1
		for r in $regions; do
			"$ip" netns exec "$(ns "$r")" etcdctl --endpoints http://127.0.0.1:2379 \
				--command-timeout 5s endpoint health >/dev/null 2>&1 || ok=0
		done
		[ $ok = 1 ] && break
		t=$((t + 1))
		if [ $t -ge "$wait_s" ]; then
			echo "etcd-regions: the cluster did not become healthy in ${wait_s} s" >&2
			for r in $regions; do tail -n 20 "$dir/$r.etcd.log" >&2 || true; done
			exit 1
		fi
		sleep 1
	done
	echo "etcd-regions: cluster up: $(initial_cluster)"
}

matrices() {
	for r in $regions; do
		"$ip" netns exec "$(ns "$r")" "$impair" attach eth0 --matrix "$here/$r.csv" \
			>"$dir/$r.impair.log" 2>&1 &
		echo $! >"$dir/$r.impair.pid"
	done
	for r in $regions; do
		pid=$(cat "$dir/$r.impair.pid")
		t=0
		until grep -q attached "$dir/$r.impair.log" 2>/dev/null; do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "etcd-regions: impair attach in $r failed:" >&2
				cat "$dir/$r.impair.log" >&2
				exit 3
			fi
			t=$((t + 1))
			[ $t -lt 300 ] || { echo "etcd-regions: impair in $r did not attach" >&2; exit 3; }
			sleep 0.1
		done
	done
	echo "etcd-regions: matrices attached ($regions)"
}

stop_pidfile() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || true
	t=0
	while kill -0 "$pid" 2>/dev/null && [ $t -lt 100 ]; do
		sleep 0.1
		t=$((t + 1))
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$1"
}

down() {
	# impair first: SIGTERM detaches and restores each eth0.
	for r in $regions; do stop_pidfile "$dir/$r.impair.pid"; done
	for r in $regions; do stop_pidfile "$dir/$r.etcd.pid"; done
	for r in $regions; do "$ip" netns del "$(ns "$r")" 2>/dev/null || true; done
	"$ip" netns del "$hub" 2>/dev/null || true
	rm -rf "$dir"
}

case ${1:-} in
up) cluster && matrices ;;
cluster) cluster ;;
matrices) matrices ;;
down) down ;;
*)
	echo "usage: $0 up|cluster|matrices|down" >&2
	exit 2
	;;
esac
