// Package vethname names a pod's host-side interfaces as the VPC CNI does,
// for the plugin that creates them and for ipamd, which finds pods by them
// when its checkpoint is lost.
package vethname

import (
	"crypto/sha1"
	"encoding/hex"
)

// Host is the VPC CNI's host-side name: prefix + the first 11 hex
// characters of SHA-1("<namespace>.<pod>").
func Host(prefix, namespace, pod string) string {
	h := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(h[:])[:11]
}
