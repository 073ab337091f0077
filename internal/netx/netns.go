// Package netx holds what the fabric, the CNI plugin and the tests need of
// network namespaces beyond the CNI project's pkg/ns: named namespaces
// (created, listed and removed by a prefix that is ours), sockets bound
// inside a namespace, sysctls and netlink handles for one.
package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netns"
)

// NetnsDir is where named namespaces are bind-mounted (as `ip netns` does).
const NetnsDir = "/var/run/netns"

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(NetnsDir, name) }

// CreateNamed creates a named network namespace without moving the calling
// goroutine into it, brings its loopback up, and returns it. (pkg/ns only
// creates namespaces under names of its own choosing, in its test utils.)
func CreateNamed(name string) (ns.NetNS, error) {
	if err := newNamed(name); err != nil {
		return nil, err
	}
	n, err := ns.GetNS(Path(name))
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	h, err := Handle(n)
	if err != nil {
		return n, fmt.Errorf("create netns %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return n, fmt.Errorf("create netns %s: lo up: %w", name, err)
	}
	return n, nil
}

// newNamed creates and bind-mounts a namespace, restoring the calling
// thread's own namespace afterwards.
func newNamed(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("create netns %s: get current: %w", name, err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: keep it locked so the
		// runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		return fmt.Errorf("create netns %s: restore namespace: %w", name, err)
	}
	return nil
}

// Handle returns an interruption-safe netlink handle working in n.
func Handle(n ns.NetNS) (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		return h, fmt.Errorf("netlink handle in %s: %w", n.Path(), err)
	}
	return h, nil
}

// Open returns a namespace given by name (under NetnsDir) or by absolute
// path (e.g. /proc/1/ns/net).
func Open(nameOrPath string) (ns.NetNS, error) {
	p := nameOrPath
	if !strings.HasPrefix(p, "/") {
		p = Path(p)
	}
	n, err := ns.GetNS(p)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nameOrPath, err)
	}
	return n, nil
}

// DeleteNamed unmounts and removes a named namespace; its links, routes and
// the tc programs on them go with it once nothing else holds it. A missing
// namespace is not an error.
func DeleteNamed(name string) error {
	if err := netns.DeleteNamed(name); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if _, serr := os.Stat(Path(name)); os.IsNotExist(serr) {
			return nil
		}
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// ListNamed returns the names of named namespaces starting with prefix.
func ListNamed(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", NetnsDir, err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Listen opens a listening socket inside ns.
func Listen(n ns.NetNS, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, n.Path(), err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket inside ns.
func ListenPacket(n ns.NetNS, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func(ns.NetNS) (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, n.Path(), err)
	}
	return pc, nil
}

// DialContextIn returns a DialContext function whose sockets live in ns,
// for an http.Transport that must talk from inside a namespace. Each dial
// opens the namespace by its path and closes it after, so the caller may
// close n while a dial is still running: an http.Transport finishes a dial
// its request gave up on in the background.
func DialContextIn(n ns.NetNS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	path := n.Path()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h, err := ns.GetNS(path)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, path, err)
		}
		defer h.Close()
		var c net.Conn
		err = h.Do(func(ns.NetNS) (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// Sysctl writes value to a sysctl as seen from inside ns. Keys use dots
// ("net.ipv4.ip_forward") or, when they hold an interface name, slashes
// ("net/ipv4/conf/eth0.5/rp_filter"), as the CNI project's sysctl package
// reads them.
func Sysctl(n ns.NetNS, key, value string) error {
	return n.Do(func(ns.NetNS) error {
		if _, err := sysctl.Sysctl(key, value); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl as seen from inside ns.
func ReadSysctl(n ns.NetNS, key string) (string, error) {
	var v string
	err := n.Do(func(ns.NetNS) error {
		var err error
		v, err = sysctl.Sysctl(key)
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", key, err)
		}
		v = strings.TrimSpace(v)
		return nil
	})
	return v, err
}
