// Package version holds the version string ipamd and the CNI plugin
// exchange in the ClientVersion handshake. Like open-source VPC CNI builds
// it is empty unless set with
// -ldflags "-X github.com/vpclab/vpclab/internal/version.Version=v1.2.3".
package version

// Version is this build's version ("" by default).
var Version = ""
