//go:build !linux

package imds

import "net"

// setConnTTL is a no-op where the socket options are not wired up.
func setConnTTL(net.Conn, int) {}
