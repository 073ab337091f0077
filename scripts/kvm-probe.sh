#!/usr/bin/env bash
# Says whether a guest kernel boots under KVM here: boots KERNEL with
# -enable-kvm and no root disk, and looks for the kernel reaching its
# root mount (it then panics, by design). Prints "kvm" if it did within the
# time limit, "tcg" otherwise (no /dev/kvm, KVM refused, or — as on nested
# hosts where KVM_CREATE_VM works but the guest hangs — no progress).
#
# usage: scripts/kvm-probe.sh KERNEL [SECONDS]
set -euo pipefail

kernel=$1
limit=${2:-20}
if [ ! -w /dev/kvm ]; then
	echo tcg
	exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
timeout "$limit" qemu-system-x86_64 -enable-kvm -m 256 -kernel "$kernel" \
	-append "console=ttyS0 panic=-1" -nographic -no-reboot -display none >"$log" 2>&1 || true
if grep -q -e "VFS: Unable to mount root" -e "Kernel panic" -e "No working init" "$log"; then
	echo kvm
else
	echo tcg
fi
