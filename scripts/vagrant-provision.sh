#!/usr/bin/env bash
# Provisions the Vagrant VM as a single-node kubeadm cluster whose node is
# a vpclab EC2 instance (see Vagrantfile). Idempotent; run as root.
set -euo pipefail

GO_VERSION="${GO_VERSION:-1.26.8}"
K8S_MINOR="${K8S_MINOR:-v1.34}"
SRC="${SRC:-/vagrant}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*"; }

install_packages() {
	log "packages"
	apt-get update -qq
	apt-get install -y -qq ca-certificates curl gpg iproute2 iptables tcpdump iputils-ping procps \
		containerd conntrack socat ebtables util-linux >/dev/null
}

install_go() {
	if [ -x /usr/local/go/bin/go ] && /usr/local/go/bin/go version | grep -q "go${GO_VERSION} "; then
		return
	fi
	log "Go ${GO_VERSION}"
	local arch
	arch="$(dpkg --print-architecture)"
	curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-${arch}.tar.gz" -o /tmp/go.tgz
	rm -rf /usr/local/go
	tar -C /usr/local -xzf /tmp/go.tgz
}

install_kubernetes() {
	log "kubeadm, kubelet, kubectl ${K8S_MINOR}"
	install -d -m 0755 /etc/apt/keyrings
	curl -fsSL "https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/Release.key" | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes.gpg
	echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/ /" >/etc/apt/sources.list.d/kubernetes.list
	apt-get update -qq
	apt-get install -y -qq kubelet kubeadm kubectl >/dev/null
	apt-mark hold kubelet kubeadm kubectl >/dev/null
}

node_os() {
	log "node OS settings (what an EKS AMI sets)"
	swapoff -a
	sed -i '/ swap / s/^/#/' /etc/fstab
	cat >/etc/sysctl.d/90-vpclab.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
SYSCTL
	modprobe br_netfilter 2>/dev/null || true
	sysctl -q --system
	mkdir -p /etc/containerd
	containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >/etc/containerd/config.toml
	systemctl restart containerd
}

build_vpclab() {
	log "building vpclab"
	(cd "$SRC" && PATH="/usr/local/go/bin:$PATH" make build)
	install -d /usr/local/lib/vpclab/cni /etc/vpclab
	find "$SRC/bin" -maxdepth 1 -type f -exec install -m 0755 {} /usr/local/lib/vpclab/ \;
	# The reference CNI plugins (loopback, portmap, bandwidth …) make build
	# compiled from the pinned containernetworking/plugins module.
	install -m 0755 "$SRC"/bin/cni/* /usr/local/lib/vpclab/cni/
	ln -sf /usr/local/lib/vpclab/vpclab /usr/local/bin/vpclab
	install -m 0644 "$SRC/deploy/host-lab.yaml" /etc/vpclab/host-lab.yaml
	install -m 0644 "$SRC/deploy/vpclab-host.service" /etc/systemd/system/vpclab-host.service
	systemctl daemon-reload
	systemctl enable --now vpclab-host.service
	# The install step writes 10-aws.conflist once ipamd is healthy.
	for _ in $(seq 1 60); do
		[ -f /etc/cni/net.d/10-aws.conflist ] && return
		sleep 2
	done
	echo "aws-cni was not installed; see journalctl -u vpclab-host" >&2
	exit 1
}

kubeadm_init() {
	if [ -f /etc/kubernetes/admin.conf ]; then
		return
	fi
	log "kubeadm init"
	local ip
	ip="$(ip -4 -o addr show dev vpceth0 | awk '{print $4}' | cut -d/ -f1)"
	kubeadm init --apiserver-advertise-address "$ip" --pod-network-cidr 192.168.0.0/16 --skip-phases=addon/kube-proxy >/dev/null
	mkdir -p /root/.kube /home/vagrant/.kube
	cp /etc/kubernetes/admin.conf /root/.kube/config
	cp /etc/kubernetes/admin.conf /home/vagrant/.kube/config
	chown -R vagrant: /home/vagrant/.kube
	kubectl --kubeconfig /etc/kubernetes/admin.conf taint nodes --all node-role.kubernetes.io/control-plane- >/dev/null || true
}

install_packages
install_go
install_kubernetes
node_os
build_vpclab
kubeadm_init
log "ready: vagrant ssh -c 'kubectl run web --image=nginx && kubectl get pod -o wide'"
