package fakeec2

import (
	"net"
	"syscall"
)

// setConnTTL sends what is written next on c with IP TTL (IPv6 hop limit)
// ttl, as EC2 does for IMDS token responses (http-put-response-hop-limit),
// and returns a function restoring the previous value. It does nothing for
// connections without a socket (tests' in-memory pipes).
func setConnTTL(c net.Conn, ttl int) (restore func()) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_TTL
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_UNICAST_HOPS
	}
	prev := -1
	_ = raw.Control(func(fd uintptr) {
		if v, err := syscall.GetsockoptInt(int(fd), level, opt); err == nil {
			prev = v
			_ = syscall.SetsockoptInt(int(fd), level, opt, ttl)
		}
	})
	return func() {
		if prev < 0 {
			return
		}
		_ = raw.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), level, opt, prev) })
	}
}
