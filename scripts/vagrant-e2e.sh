#!/usr/bin/env bash
# make vagrant-e2e: the Vagrant cluster end to end with libvirt and the box
# built here. Boots the VM, provisions it from binaries built on this host,
# waits for the node and aws-node Ready, runs a pod, checks its address is
# the fake VPC's and that `vpclab status` in the VM agrees (the address is
# a secondary address of the node's ENIs), then destroys the VM. Prints each
# phase's time. VPCLAB_KEEP=1 keeps the VM.
#
# VPCLAB_SGP=1 brings the cluster up with security groups for pods (the
# real VPC Resource Controller) and then runs a pod a SecurityGroupPolicy
# selects with the real VPC CNI's plugin (aws-cni, staged from this host)
# in place of vpclab's, against vpclab's ipamd: the controller's branch
# ENI and annotation, the plugin's 802.1Q link on the trunk (the VM's
# kernel has 8021q; the CI machine's has not), EC2's view of the branch.
#
# Needs root (libvirt's system connection, the box build) and Debian's
# qemu-system-x86, libvirt-daemon-system, dnsmasq-base, vagrant,
# vagrant-libvirt, debootstrap and qemu-utils; missing ones are installed
# with apt-get. Where there is no systemd (a CI container) libvirtd and
# virtlogd are started here and stopped at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
# The box's kernel is read by libvirt's qemu user straight from Vagrant's
# box directory: keep Vagrant's home where that user can read it (root's
# home is private), and apart from the user's own boxes.
export VAGRANT_HOME=${VAGRANT_HOME:-$PWD/.vagrant-box/home}
vpc_cidr=10.20.0.0/16 # deploy/host-lab.yaml
instance_type=${VPCLAB_INSTANCE_TYPE:-m5.large}
phases=()
t0=$(date +%s)
started_daemons=()

phase() { # phase NAME COMMAND...: runs it, records its time
	local name=$1 start
	shift
	start=$(date +%s)
	echo "=== $name"
	"$@"
	phases+=("$(printf '%-34s %5d s' "$name" $(( $(date +%s) - start )))")
}

report() {
	echo "=== phase times"
	printf '%s\n' "${phases[@]}"
	printf '%-34s %5d s\n' total $(( $(date +%s) - t0 ))
}

cleanup() {
	local rc=$?
	if [ "${VPCLAB_KEEP:-0}" != 1 ] && [ -n "${vm_up:-}" ]; then
		echo "=== destroy (cleanup)"
		vagrant destroy -f >/dev/null 2>&1 || true
	fi
	for d in "${started_daemons[@]}"; do pkill -x "$d" || true; done
	[[ " ${started_daemons[*]} " == *" libvirtd "* ]] && drop_libvirt_chains
	[ "$rc" = 0 ] || { report; echo "vagrant-e2e: FAILED" >&2; }
}
trap cleanup EXIT

# drop_libvirt_chains removes the iptables chains libvirtd made at its start
# (and the jumps into them), when it ran here for this script only.
drop_libvirt_chains() {
	local ipt table rule chain
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		for table in filter nat mangle; do
			while read -r rule; do
				# shellcheck disable=SC2086 # a rule's words
				"$ipt" -t "$table" -D ${rule#-A } || true
			done < <("$ipt" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ -j LIBVIRT_[A-Z]+$')
			for chain in $("$ipt" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(LIBVIRT_[A-Z]*\)$/\1/p'); do
				"$ipt" -t "$table" -F "$chain" || true
				"$ipt" -t "$table" -X "$chain" || true
			done
		done
	done
}

deps() {
	local need=()
	command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
	command -v libvirtd >/dev/null || need+=(libvirt-daemon-system)
	command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
	command -v vagrant >/dev/null || need+=(vagrant)
	vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt || need+=(vagrant-libvirt)
	command -v debootstrap >/dev/null || need+=(debootstrap)
	command -v qemu-img >/dev/null || need+=(qemu-utils)
	command -v rsync >/dev/null || need+=(rsync)
	if [ "${#need[@]}" -gt 0 ]; then
		echo "installing: ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
}

libvirt() {
	if virsh -c qemu:///system version >/dev/null 2>&1; then
		return
	fi
	# No service manager started them (no systemd here): start them.
	for d in virtlogd libvirtd; do
		if ! pgrep -x "$d" >/dev/null; then
			"$d" -d
			started_daemons+=("$d")
		fi
	done
	for _ in $(seq 1 50); do
		virsh -c qemu:///system version >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "vagrant-e2e: libvirtd does not answer on qemu:///system" >&2
	return 1
}

box() {
	if [ -f .vagrant-box/vpclab-bookworm.box ] && [ -f .vagrant-box/accel ]; then
		echo "box: .vagrant-box/vpclab-bookworm.box (kept; rm -r .vagrant-box to rebuild)"
	else
		bash scripts/vagrant-box.sh .vagrant-box
	fi
	echo "accelerator: $(cat .vagrant-box/accel)"
}

in_vm() { vagrant ssh -c "$1" -- -q; }

# lab_status is the VM's lab as `vpclab status -o json` shows it.
lab_status() { in_vm 'sudo vpclab --name host status -o json'; }

# kube_version is the pinned Kubernetes version (agnhost's image tag).
kube_version() { sed -n 's/^\tKubeVersion *= *"\(v[^"]*\)"/\1/p' lab/k8s/build.go; }

pod_check() {
	in_vm 'kubectl wait --for=condition=Ready node --all --timeout=30m && kubectl -n kube-system rollout status daemonset/aws-node --timeout=30m'
	local pods
	pods=$(in_vm "kubectl get node -o jsonpath='{.items[0].status.capacity.pods}'")
	want=$(bin/vpclab max-pods --instance-type "$instance_type")
	echo "node max pods: $pods (EKS's for $instance_type: $want)"
	[ "$pods" = "$want" ] || { echo "vagrant-e2e: the node's max pods $pods, want $want" >&2; return 1; }
	local version
	version=$(kube_version)
	in_vm "kubectl run e2e --image=vpclab.local/agnhost:$version --image-pull-policy=Never --restart=Never -- netexec --http-port=8080 &&
		kubectl wait --for=condition=Ready pod/e2e --timeout=20m"
	ip=$(in_vm "kubectl get pod e2e -o jsonpath='{.status.podIP}'")
	echo "pod e2e: $ip"
	python3 -c "import ipaddress,sys; sys.exit(0 if ipaddress.ip_address('$ip') in ipaddress.ip_network('$vpc_cidr') else 1)" ||
		{ echo "vagrant-e2e: pod address $ip is not in the VPC $vpc_cidr" >&2; return 1; }
	local status
	status=$(lab_status)
	tr -d ' \n' <<<"$status" | grep -o '"secondary":\[[^]]*\]' | grep -qF "\"$ip\"" ||
		{ echo "vagrant-e2e: vpclab status in the VM does not show $ip on the node's ENIs" >&2; return 1; }
	echo "vpclab status: $ip is a secondary address of the node's ENIs"
	in_vm "exec 3<>/dev/tcp/$ip/8080 && printf 'GET /hostname HTTP/1.0\r\n\r\n' >&3 && timeout 20 cat <&3" | grep -q '^e2e' ||
		{ echo "vagrant-e2e: the pod does not answer on $ip:8080 from the VM" >&2; return 1; }
	echo "the VM reaches the pod at $ip:8080"
}

# sgp_check: a pod a SecurityGroupPolicy selects, wired by upstream's plugin
# against vpclab's ipamd (VPCLAB_SGP=1).
sgp_check() {
	local status sg version ann ip vid
	status=$(lab_status)
	sg=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["enis"][0]["groups"][0])' <<<"$status")
	echo "the pod's group: $sg (the VPC's default group)"
	# shellcheck disable=SC2016 # expanded in the VM
	in_vm 'for i in $(seq 1 900); do
			n=$(kubectl get node -o jsonpath="{.items[0].status.allocatable.vpc\.amazonaws\.com/pod-eni}")
			if [ -n "$n" ] && [ "$n" != 0 ]; then echo "node allocatable vpc.amazonaws.com/pod-eni: $n"; exit 0; fi
			sleep 2
		done
		echo "vagrant-e2e: the node never advertised vpc.amazonaws.com/pod-eni" >&2; exit 1'
	in_vm 'sudo install -m 0755 /usr/local/lib/vpclab/upstream/aws-cni /opt/cni/bin/aws-cni'
	echo "the node's aws-cni is now the real VPC CNI's plugin"
	version=$(kube_version)
	in_vm "printf '%s\n' 'apiVersion: vpcresources.k8s.aws/v1beta1' 'kind: SecurityGroupPolicy' 'metadata: {name: e2e, namespace: default}' \
		'spec: {podSelector: {matchLabels: {role: sgp}}, securityGroups: {groupIds: [$sg]}}' '---' \
		'apiVersion: v1' 'kind: Pod' 'metadata: {name: sgp, labels: {role: sgp}}' \
		'spec: {terminationGracePeriodSeconds: 1, containers: [{name: web, image: \"vpclab.local/agnhost:$version\", imagePullPolicy: Never, args: [netexec, --http-port=8080]}]}' |
		kubectl apply -f - && kubectl wait --for=condition=Ready pod/sgp --timeout=20m"
	ann=$(in_vm "kubectl get pod sgp -o jsonpath='{.metadata.annotations.vpc\\.amazonaws\\.com/pod-eni}'")
	echo "pod sgp: vpc.amazonaws.com/pod-eni $ann"
	read -r ip vid < <(python3 -c 'import json,sys; a=json.loads(sys.argv[1])[0]; print(a["privateIp"], a["vlanId"])' "$ann")
	[ "$(in_vm "kubectl get pod sgp -o jsonpath='{.status.podIP}'")" = "$ip" ] ||
		{ echo "vagrant-e2e: the pod's address is not its branch ENI's $ip" >&2; return 1; }
	in_vm "ip -d link show vlan.eth.$vid" | grep -q "vlan protocol 802.1Q id $vid " ||
		{ echo "vagrant-e2e: no 802.1Q link vlan.eth.$vid (upstream's plugin makes it) in the VM" >&2; return 1; }
	echo "upstream's plugin made vlan.eth.$vid (802.1Q id $vid) on the trunk's link"
	status=$(lab_status)
	python3 -c '
import json, sys
s = json.load(sys.stdin)
ip, vid = sys.argv[1], int(sys.argv[2])
for e in s["nodes"][0]["enis"]:
    for b in e.get("branches") or []:
        if b["ip"] == ip and b["vlan"] == vid:
            print("EC2: branch %s on trunk %s, VLAN %d, %s, groups %s" % (b["id"], e["id"], vid, ip, b.get("groups")))
            sys.exit(0)
sys.exit("vagrant-e2e: EC2 has no branch ENI with %s on VLAN %d on the node trunk" % (ip, vid))
' "$ip" "$vid" <<<"$status"
}

phase "deps (Debian packages)" deps
phase "libvirt" libvirt
phase "box" box
phase "stage (make, host build)" make vagrant-stage
vagrant destroy -f >/dev/null 2>&1 || true
vm_up=1
phase "vagrant up (boot, rsync)" vagrant up --provider=libvirt --no-provision
phase "provision (cluster up)" vagrant provision
phase "node, aws-node, pod" pod_check
if [ "${VPCLAB_SGP:-0}" = 1 ]; then
	phase "branch ENI pod (upstream plugin)" sgp_check
fi
if [ "${VPCLAB_KEEP:-0}" != 1 ]; then
	phase "vagrant destroy" vagrant destroy -f
	vm_up=
fi
report
echo "vagrant-e2e: PASS"
