// Package netx holds the network-namespace mechanics the fabric, the CNI
// plugin and the tests share: named namespaces, running code inside one,
// sockets bound inside one, and per-namespace sysctls.
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
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netns"
)

// NetnsDir is where named namespaces are bind-mounted (as `ip netns` does).
const NetnsDir = "/var/run/netns"

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(NetnsDir, name) }

// CreateNamed creates a named network namespace without moving the calling
// goroutine into it, brings its loopback up, and returns a handle to it.
func CreateNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("create netns %s: get current: %w", name, err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: keep it locked so the
		// runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		return netns.None(), fmt.Errorf("create netns %s: restore namespace: %w", name, err)
	}
	h, err := netlinksafe.NewHandleAt(ns)
	if err != nil {
		return ns, fmt.Errorf("create netns %s: netlink: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return ns, fmt.Errorf("create netns %s: lo up: %w", name, err)
	}
	return ns, nil
}

// Open returns a handle to a namespace given by name (under NetnsDir) or by
// absolute path (e.g. /proc/1/ns/net).
func Open(nameOrPath string) (netns.NsHandle, error) {
	p := nameOrPath
	if !strings.HasPrefix(p, "/") {
		p = Path(p)
	}
	ns, err := netns.GetFromPath(p)
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %s: %w", nameOrPath, err)
	}
	return ns, nil
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

// Do runs fn on a thread switched into ns and switches back. Sockets
// created inside fn stay in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns do: get current: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns do: enter %s: %w", ns, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime will discard it.
		return errors.Join(ferr, fmt.Errorf("netns do: restore: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Listen opens a listening socket inside ns.
func Listen(ns netns.NsHandle, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, ns, err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket inside ns.
func ListenPacket(ns netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := Do(ns, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, ns, err)
	}
	return pc, nil
}

// DialContextIn returns a DialContext function whose sockets live in ns,
// for an http.Transport that must talk from inside a namespace.
func DialContextIn(ns netns.NsHandle) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(ns, func() (err error) {
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
func Sysctl(ns netns.NsHandle, key, value string) error {
	return Do(ns, func() error {
		if _, err := sysctl.Sysctl(key, value); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl as seen from inside ns.
func ReadSysctl(ns netns.NsHandle, key string) (string, error) {
	var v string
	err := Do(ns, func() error {
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
