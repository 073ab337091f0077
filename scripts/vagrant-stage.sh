#!/usr/bin/env bash
# Stages what the Vagrant VM runs, built on this host (make build, make
# kubernetes), for the Vagrantfile's rsync folder: vpclab's binaries and
# the reference CNI plugins (bin/), and Kubernetes mode's pinned build
# (the multi-call Kubernetes binary, containerd, CoreDNS, the images) laid
# out as vpclab's cache. The VM then needs no Go toolchain and no internet.
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
echo "vagrant-stage: $out ($(du -sh "$out" | cut -f1)): bin/ and $(basename "$kdir")"
