package imds

import (
	"net"
	"syscall"
)

// setConnTTL makes every packet sent on c from now on carry IP TTL (IPv6
// hop limit) ttl, as EC2 does for IMDS token responses
// (http-put-response-hop-limit). It does nothing for connections without a
// socket (in-memory pipes).
func setConnTTL(c net.Conn, ttl int) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_TTL
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_UNICAST_HOPS
	}
	_ = raw.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), level, opt, ttl) })
}
