package model

import (
	"net/netip"
	"strings"
)

// AvailabilityZone is one zone of the region.
type AvailabilityZone struct {
	Name   string
	ID     string
	Region string
}

// azLetters are the zones a region has: <region>a, b and c.
const azLetters = "abc"

// AvailabilityZones lists the region's zones.
func (r *Region) AvailabilityZones() []AvailabilityZone {
	var out []AvailabilityZone
	for _, name := range ZoneNames(r.opts.Name) {
		out = append(out, AvailabilityZone{Name: name, ID: AZID(r.opts.Name, name), Region: r.opts.Name})
	}
	return out
}

// ZoneNames are the zones fakeec2 gives a region: <region>a, b and c.
func ZoneNames(region string) []string {
	out := make([]string, 0, len(azLetters))
	for _, l := range azLetters {
		out = append(out, region+string(l))
	}
	return out
}

// validAZ says whether az is one of the region's zones.
func (r *Region) validAZ(az string) bool {
	rest, ok := strings.CutPrefix(az, r.opts.Name)
	return ok && len(rest) == 1 && strings.Contains(azLetters, rest)
}

// PrivateDNSName is EC2's private DNS name for a private IPv4 address:
// ip-10-0-0-5.<region>.compute.internal (ip-…ec2.internal in us-east-1).
// IMDS's hostname, the Query API's privateDnsName and an EKS node's name
// are all this.
func PrivateDNSName(a netip.Addr, region string) string {
	if !a.Is4() {
		return ""
	}
	name := "ip-" + strings.ReplaceAll(a.String(), ".", "-")
	if region == "us-east-1" {
		return name + ".ec2.internal"
	}
	return name + "." + region + ".compute.internal"
}
