#!/usr/bin/env bash
# Stages what the Vagrant VM runs, built on this host (make build, make
# kubernetes), for the Vagrantfile's rsync folder: vpclab's binaries and
# the reference CNI plugins (bin/), and Kubernetes mode's pinned build
# (the multi-call Kubernetes binary, containerd, CoreDNS, the images) laid
# out as vpclab's cache. The VM then needs no Go toolchain and no internet.
#
# With VPCLAB_SGP=1 it also stages the real VPC CNI's plugin (aws-cni,
# built here if the cache lacks it): make vagrant-e2e then pairs it with
# vpclab's ipamd for a branch ENI pod on the VM's kernel, which has 8021q.
#
# usage: scripts/vagrant-stage.sh [OUT_DIR]   (default .vagrant-stage)
set -euo pipefail

out=${1:-.vagrant-stage}
go=${GO:-go}
if [ ! -x bin/vpclab ] || [ ! -d bin/cni ]; then
	echo "vagrant-stage: bin/ is not built (make build)" >&2
	exit 2
fi
kdir=$("$go" run ./tools/kbuild -print-dir)
[ -x "$kdir/bin/kube" ] || { echo "vagrant-stage: the Kubernetes build is missing in $kdir (make kubernetes)" >&2; exit 2; }

mkdir -p "$out/bin" "$out/cache/k8s"
# rsync keeps what did not change (the multi-call binary is large).
rsync -a --delete bin/ "$out/bin/"
# agnhost and coredns are inside their images; the VM needs only those.
rsync -a --delete --delete-excluded --exclude /bin/agnhost --exclude /bin/coredns "$kdir/" "$out/cache/k8s/$(basename "$kdir")/"
find "$out/cache/k8s" -mindepth 1 -maxdepth 1 ! -name "$(basename "$kdir")" -exec rm -rf {} +
rm -rf "$out/upstream"
if [ "${VPCLAB_SGP:-0}" = 1 ]; then
	app=$("$go" run ./tools/kbuild -upstream-cni)
	install -D -m 0755 "$app/aws-cni" "$out/upstream/aws-cni"
fi
echo "vagrant-stage: $out ($(du -sh "$out" | cut -f1)): bin/ and $(basename "$kdir")$([ -d "$out/upstream" ] && echo ", upstream's aws-cni")"
