#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) box for vagrant-libvirt from Debian
# packages alone — nothing from Vagrant Cloud: debootstrap a root file
# system (cloud kernel, systemd, sshd, sudo, rsync, and what vpclab's
# Kubernetes mode needs on a node: runc, iptables, nftables, conntrack,
# busybox-static for the aws-node image), add the vagrant user with
# Vagrant's well-known insecure key, make it an ext4 image (mkfs -d: no
# loop device, no partition table, no boot loader), and boot it by direct
# kernel boot (the box's Vagrantfile names its kernel and initrd).
#
# It ends by asking whether a guest kernel boots under KVM here
# (scripts/kvm-probe.sh) and writes the answer, kvm or tcg, to
# OUT_DIR/accel: the Vagrantfile picks libvirt's driver from it.
#
# usage: scripts/vagrant-box.sh [OUT_DIR]   (root; writes OUT_DIR/vpclab-bookworm.box and OUT_DIR/accel)
# needs: debootstrap, qemu-utils (qemu-img), e2fsprogs, vagrant (for its key)
set -euo pipefail

out=${1:-.vagrant-box}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
size_gb=${VPCLAB_BOX_DISK_GB:-12}

if [ "$(id -u)" != 0 ]; then
	echo "vagrant-box: needs root (debootstrap)" >&2
	exit 2
fi
for tool in debootstrap qemu-img mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "vagrant-box: $tool is missing (apt-get install debootstrap qemu-utils e2fsprogs)" >&2; exit 2; }
done
key=$(find /usr/share/rubygems-integration /opt/vagrant /usr/lib/ruby -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -n1 || true)
if [ -z "$key" ]; then
	echo "vagrant-box: Vagrant's insecure public key (keys/vagrant.pub) not found; install vagrant" >&2
	exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
box=$work/box
mkdir -p "$box" "$out"

start=$(date +%s)
echo "vagrant-box: debootstrap bookworm from $mirror"
debootstrap --variant=minbase \
	--include=linux-image-cloud-amd64,systemd-sysv,systemd-resolved,openssh-server,sudo,rsync,iproute2,ca-certificates,iptables,nftables,procps,kmod,udev,dbus,mount,runc,conntrack,iputils-ping,tcpdump,busybox-static \
	bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

echo "vagrant-box: the vagrant user, networking, sshd"
chroot "$root" useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chroot "$root" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
install -d -m 700 "$root/home/vagrant/.ssh"
install -m 600 "$key" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
echo '/dev/vda / ext4 defaults 0 1' >"$root/etc/fstab"
echo vpclab >"$root/etc/hostname"
mkdir -p "$root/etc/systemd/network"
# Only the VM's own NIC: networkd must not touch the CNI's pod veths
# (eni…), whose names its usual en* pattern would catch.
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/50-dhcp.network"
chroot "$root" systemctl enable systemd-networkd systemd-resolved ssh >/dev/null 2>&1
: >"$root/etc/machine-id"
cp "$root"/boot/vmlinuz-* "$box/vmlinuz"
cp "$root"/boot/initrd.img-* "$box/initrd.img"
rm -rf "$root/var/cache/apt/archives/"*.deb

echo "vagrant-box: a ${size_gb} GB ext4 image, as qcow2"
truncate -s "${size_gb}G" "$work/disk.raw"
mkfs.ext4 -q -d "$root" -L root "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$box/box.img"
rm -f "$work/disk.raw"

printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size_gb" >"$box/metadata.json"
cat >"$box/Vagrantfile" <<'EOF'
# The vpclab box boots its own kernel directly (no boot loader in the image).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    dir = File.dirname(__FILE__)
    lv.kernel = File.join(dir, "vmlinuz")
    lv.initrd = File.join(dir, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
  end
end
EOF
tar -C "$box" -czf "$out/vpclab-bookworm.box" metadata.json Vagrantfile box.img vmlinuz initrd.img
echo "vagrant-box: $out/vpclab-bookworm.box ($(du -h "$out/vpclab-bookworm.box" | cut -f1)) in $(( $(date +%s) - start )) s"
accel=$(bash "$(dirname "$0")/kvm-probe.sh" "$box/vmlinuz")
echo "$accel" >"$out/accel"
if [ "$accel" = tcg ]; then
	echo "vagrant-box: a guest kernel does not boot under KVM here; the Vagrantfile will use libvirt's qemu driver (TCG: software emulation, ~16x slower)"
else
	echo "vagrant-box: KVM boots guests here"
fi
