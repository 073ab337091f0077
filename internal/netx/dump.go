package netx

import (
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds the retries of a dump the kernel keeps interrupting
// (the same bound netlinksafe uses).
const dumpAttempts = 5

// retryDump runs a netlink dump again while the kernel reports it was
// interrupted by a concurrent change (NLM_F_DUMP_INTR). After the last
// attempt it returns the possibly inconsistent result without the error, as
// netlink did before v1.2.1 and as netlinksafe does.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for range dumpAttempts {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, nil
}

// AddrList is a handle-scoped, interruption-safe netlink AddrList:
// netlinksafe wraps only the package-level one.
func AddrList(h netlinksafe.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return h.Handle.AddrList(link, family) })
}

// NeighList is a handle-scoped, interruption-safe netlink NeighList:
// netlinksafe does not wrap it.
func NeighList(h netlinksafe.Handle, linkIndex, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return h.Handle.NeighList(linkIndex, family) })
}
