#!/usr/bin/env bash
# Provisions the Vagrant VM as a one-node Kubernetes cluster whose node is
# the VM itself: vpclab's Kubernetes mode in host mode (the VM's network
# namespace and directories are the EC2 instance "vm"; the fake region,
# the fabric and the control plane run beside it), run by the systemd unit
# vpclab-host. It is the same Kubernetes mode the test suites run, not a
# second path: kubelet, containerd, kube-proxy, CoreDNS and aws-node as a
# DaemonSet, so `kubectl run` pods get addresses from the fake VPC.
#
# VPCLAB_PROVISION picks where the binaries come from:
#   local  (default) built on the host: `make vagrant-stage` stages bin/ and
#          Kubernetes mode's build, the Vagrantfile rsyncs them to STAGE;
#          the VM needs no Go and no internet (Debian packages only if the
#          box lacks one).
#   online built in the VM: Go from go.dev, then make build kubernetes
#          (internet; ~20 min on 2 cores).
# Idempotent; run as root.
set -euo pipefail

MODE="${VPCLAB_PROVISION:-local}"
STAGE="${STAGE:-/opt/vpclab-stage}"
SRC="${SRC:-/vagrant}"
GO_VERSION="${GO_VERSION:-1.26.8}"
INSTANCE_TYPE="${VPCLAB_INSTANCE_TYPE:-m5.large}"
TIME_SCALE="${VPCLAB_TIME_SCALE:-1}"
# 1: security groups for pods (the real VPC Resource Controller in the
# control plane, a trunk ENI on the VM, branch ENIs for selected pods).
SGP="${VPCLAB_SGP:-0}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> [%s] %s\n' "$(date +%T)" "$*"; }

packages() {
	local want=(runc iptables nftables conntrack iproute2 procps iputils-ping util-linux mount kmod rsync busybox-static)
	[ "$MODE" = online ] && want+=(curl ca-certificates make git gcc)
	local need=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
	done
	if [ "${#need[@]}" -gt 0 ]; then
		log "Debian packages: ${need[*]}"
		apt-get update -qq
		apt-get install -y -qq "${need[@]}" >/dev/null
	fi
}

build_online() {
	if ! { [ -x /usr/local/go/bin/go ] && /usr/local/go/bin/go version | grep -q "go${GO_VERSION} "; }; then
		log "Go ${GO_VERSION} from go.dev"
		curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-$(dpkg --print-architecture).tar.gz" -o /tmp/go.tgz
		rm -rf /usr/local/go
		tar -C /usr/local -xzf /tmp/go.tgz
	fi
	log "building vpclab and Kubernetes mode in the VM"
	(cd "$SRC" && PATH="/usr/local/go/bin:$PATH" make build kubernetes && PATH="/usr/local/go/bin:$PATH" bash scripts/vagrant-stage.sh "$STAGE")
}

install_vpclab() {
	if [ ! -x "$STAGE/bin/vpclab" ] || [ ! -d "$STAGE/cache/k8s" ]; then
		echo "vagrant-provision: nothing staged in $STAGE; run make vagrant-stage on the host before vagrant up (or VPCLAB_PROVISION=online)" >&2
		exit 1
	fi
	log "vpclab and Kubernetes mode's build from $STAGE"
	install -d /usr/local/lib/vpclab /var/cache/vpclab /etc/vpclab
	rsync -a --delete "$STAGE/bin/" /usr/local/lib/vpclab/
	rsync -a --delete "$STAGE/cache/" /var/cache/vpclab/
	ln -sf /usr/local/lib/vpclab/vpclab /usr/local/bin/vpclab
	if [ -x "$STAGE/upstream/aws-cni" ]; then
		install -D -m 0755 "$STAGE/upstream/aws-cni" /usr/local/lib/vpclab/upstream/aws-cni
	fi
	local kube
	kube=$(find /var/cache/vpclab/k8s -path '*/bin/kube' -type f | head -n1)
	ln -sf "$kube" /usr/local/bin/kubectl
}

node_os() {
	log "node OS settings (what an EKS AMI sets)"
	swapoff -a
	sed -i '/ swap / s/^/#/' /etc/fstab
	printf 'net.ipv4.ip_forward = 1\n' >/etc/sysctl.d/90-vpclab.conf
	sysctl -q -p /etc/sysctl.d/90-vpclab.conf
	printf 'overlay\nbr_netfilter\n8021q\n' >/etc/modules-load.d/vpclab.conf
	for m in overlay br_netfilter 8021q; do modprobe "$m" 2>/dev/null || true; done
}

node_network() {
	# udev gives every new link a "persistent" MAC address by default
	# (99-default.link): on a pod's host veth that races the CNI plugin,
	# which has already pointed the pod's gateway (169.254.1.1) at the
	# veth's first address, and the pod's packets are then dropped as
	# addressed to another host. The CNI's links keep the MAC they are
	# made with (as EKS's AMIs configure it).
	log "udev: the CNI's links keep their MAC addresses"
	install -d /etc/systemd/network
	printf '[Match]\nOriginalName=eni* vlan*\n\n[Link]\nMACAddressPolicy=none\n' >/etc/systemd/network/10-vpclab-cni.link
	udevadm control --reload 2>/dev/null || true
	# systemd-networkd (this project's box; EKS's AL2023 AMIs too) must
	# leave the CNI's links, routes and rules alone, as those AMIs
	# configure it: it would otherwise run DHCP on pod veths (eni…) and
	# flush the routes and rules the plugin and ipamd add.
	if systemctl is-enabled systemd-networkd >/dev/null 2>&1; then
		log "systemd-networkd: hands off the CNI's links, routes and rules"
		install -d /etc/systemd/network /etc/systemd/networkd.conf.d
		printf '[Match]\nName=eni* vlan* vpceth*\n\n[Link]\nUnmanaged=yes\n' >/etc/systemd/network/10-vpclab-cni.network
		printf '[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n' >/etc/systemd/networkd.conf.d/vpclab.conf
		systemctl restart systemd-networkd
	fi
}

lab_service() {
	log "the lab: instance type ${INSTANCE_TYPE}, time scale ${TIME_SCALE}, security groups for pods ${SGP}"
	local sgp=
	[ "$SGP" = 1 ] && sgp='securityGroupsForPods: true'
	sed -e "s/instanceType: m5.large/instanceType: ${INSTANCE_TYPE}/" -e "s/^kubernetes: {}\$/kubernetes: {${sgp}}/" "$SRC/deploy/host-lab.yaml" >/etc/vpclab/host-lab.yaml
	if [ "$TIME_SCALE" != 1 ]; then
		printf '# This VM is emulated (no KVM): start-up deadlines stretched.\ntimeScale: %s\n' "$TIME_SCALE" >>/etc/vpclab/host-lab.yaml
	fi
	install -m 0755 "$SRC/deploy/vpclab-kubeconfig" /usr/local/lib/vpclab/vpclab-kubeconfig
	install -m 0644 "$SRC/deploy/vpclab-host.service" /etc/systemd/system/vpclab-host.service
	systemctl daemon-reload
	systemctl enable vpclab-host.service >/dev/null 2>&1
	# Start (or restart, to run what was just installed): returns once the
	# cluster is up and the kubeconfigs are written (the unit's
	# ExecStartPost), or fails with the lab's error.
	log "starting vpclab-host (control plane, node, aws-node, CoreDNS)"
	if ! systemctl restart vpclab-host.service; then
		journalctl -u vpclab-host --no-pager -n 40 >&2 || true
		exit 1
	fi
}

packages
if [ "$MODE" = online ]; then
	build_online
elif [ "$MODE" != local ]; then
	echo "vagrant-provision: VPCLAB_PROVISION=$MODE: want local or online" >&2
	exit 2
fi
install_vpclab
node_os
node_network
lab_service
kubectl --kubeconfig /root/.kube/config get nodes -o wide
log "ready: vagrant ssh -c 'kubectl run web --image=vpclab.local/agnhost:$(basename "$(find /var/cache/vpclab/k8s -mindepth 1 -maxdepth 1 | head -n1)" | cut -d- -f1) --image-pull-policy=Never -- netexec && kubectl get pod -o wide'"
