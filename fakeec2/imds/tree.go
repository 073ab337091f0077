package imds

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// mdDir is one directory of the metadata tree; values are string leaves or
// *mdDir subdirectories.
type mdDir struct {
	names   []string
	kids    map[string]any
	ordered bool // list in insertion order instead of sorted
}

func newDir() *mdDir { return &mdDir{kids: map[string]any{}} }

func (d *mdDir) set(name string, v any) {
	if _, ok := d.kids[name]; !ok {
		d.names = append(d.names, name)
	}
	d.kids[name] = v
}

func (d *mdDir) dir(name string) *mdDir {
	if x, ok := d.kids[name].(*mdDir); ok {
		return x
	}
	x := newDir()
	d.set(name, x)
	return x
}

func (d *mdDir) listing() string {
	names := slices.Clone(d.names)
	if !d.ordered {
		sort.Strings(names)
	}
	for i, n := range names {
		if _, ok := d.kids[n].(*mdDir); ok {
			names[i] = n + "/"
		}
	}
	return strings.Join(names, "\n")
}

// resolve walks segs (empty segments, from trailing slashes, are ignored).
func (d *mdDir) resolve(segs []string) (string, bool) {
	var cur any = d
	for _, s := range segs {
		if s == "" {
			continue
		}
		dir, ok := cur.(*mdDir)
		if !ok {
			return "", false
		}
		if cur, ok = dir.kids[s]; !ok {
			return "", false
		}
	}
	if dir, ok := cur.(*mdDir); ok {
		return dir.listing(), true
	}
	return cur.(string), true
}

func joinLines[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, "\n")
}

func (m *Service) lookup(v *replica, segs []string, now time.Time) (string, bool) {
	if len(segs) == 1 && segs[0] == "" {
		return strings.Join(versions, "\n"), true
	}
	if !versionRE.MatchString(segs[0]) {
		return "", false
	}
	return m.overlay(v.inst.ID, m.root(v, now), now).resolve(segs[1:])
}

// root is the instance's tree under /latest/ as EC2's state has it now.
func (m *Service) root(v *replica, now time.Time) *mdDir {
	root := newDir()
	root.set("meta-data", m.metadataTree(v, now))
	root.dir("dynamic").dir("instance-identity").set("document", m.identityDocument(v))
	return root
}

func (m *Service) hostname(a netip.Addr) string { return model.PrivateDNSName(a, m.region.Name()) }

// sortedENIs returns the visible ENIs by network card, then device index.
func (v *replica) sortedENIs() []eniView {
	out := make([]eniView, 0, len(v.enis))
	for _, e := range v.enis {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Attachment, out[j].Attachment
		if a.NetworkCardIndex != b.NetworkCardIndex {
			return a.NetworkCardIndex < b.NetworkCardIndex
		}
		return a.DeviceIndex < b.DeviceIndex
	})
	return out
}

func (m *Service) metadataTree(v *replica, now time.Time) *mdDir {
	i := v.inst
	md := newDir()
	md.set("ami-id", i.ImageID)
	md.set("ami-launch-index", "0")
	md.set("ami-manifest-path", "(unknown)")
	bdm := md.dir("block-device-mapping")
	bdm.set("ami", "/dev/xvda")
	bdm.set("root", "/dev/xvda")
	md.set("hostname", m.hostname(i.PrivateIP))
	md.set("instance-action", "none")
	md.set("instance-id", i.ID)
	md.set("instance-life-cycle", "on-demand")
	md.set("instance-type", i.Type)
	md.set("local-hostname", m.hostname(i.PrivateIP))
	md.set("local-ipv4", i.PrivateIP.String())
	md.set("mac", v.primaryMAC)
	md.set("profile", "default-hvm")
	md.set("reservation-id", "r-"+strings.TrimPrefix(i.ID, "i-"))
	md.set("security-groups", strings.Join(v.sgNames, "\n"))
	pl := md.dir("placement")
	pl.set("availability-zone", i.AZ)
	pl.set("availability-zone-id", i.AZID)
	pl.set("region", m.region.Name())
	svc := md.dir("services")
	svc.set("domain", "amazonaws.com")
	svc.set("partition", "aws")

	iam := md.dir("iam")
	iam.set("info", m.iamInfo(i, now))
	iam.dir("security-credentials").set(RoleName, m.roleCredentials(now))

	macs := md.dir("network").dir("interfaces").dir("macs")
	macs.ordered = true
	for _, e := range v.sortedENIs() {
		if e.ID == i.PrimaryENI && len(e.IPv6) > 0 {
			md.set("ipv6", e.IPv6[0].String())
		}
		d := macs.dir(e.MAC)
		d.set("device-number", strconv.Itoa(e.Attachment.DeviceIndex))
		d.set("network-card", strconv.Itoa(e.Attachment.NetworkCardIndex))
		d.set("network-card-index", strconv.Itoa(e.Attachment.NetworkCardIndex))
		d.set("interface-id", e.ID)
		d.set("mac", e.MAC)
		d.set("owner-id", m.region.AccountID())
		if e.PrivateIP.IsValid() {
			d.set("local-hostname", m.hostname(e.PrivateIP))
			d.set("local-ipv4s", joinLines(append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...)))
		}
		if len(e.Prefixes) > 0 {
			d.set("ipv4-prefix", joinLines(e.Prefixes))
		}
		if len(e.IPv6) > 0 {
			d.set("ipv6s", joinLines(e.IPv6))
			d.set("local-ipv6s", joinLines(e.IPv6))
		}
		if len(e.IPv6Prefixes) > 0 {
			d.set("ipv6-prefix", joinLines(e.IPv6Prefixes))
		}
		d.set("security-group-ids", strings.Join(e.SecurityGroups, "\n"))
		d.set("security-groups", strings.Join(e.sgNames, "\n"))
		d.set("subnet-id", e.SubnetID)
		d.set("subnet-ipv4-cidr-block", e.subnetCIDR.String())
		if e.subnetV6.IsValid() {
			d.set("subnet-ipv6-cidr-blocks", e.subnetV6.String())
		}
		d.set("vpc-id", e.VPCID)
		if len(e.vpcCIDRs) > 0 {
			d.set("vpc-ipv4-cidr-block", e.vpcCIDRs[0].String())
			d.set("vpc-ipv4-cidr-blocks", joinLines(e.vpcCIDRs))
		}
		if len(e.vpcV6) > 0 {
			d.set("vpc-ipv6-cidr-blocks", joinLines(e.vpcV6))
		}
	}
	return md
}

func (m *Service) iamInfo(i model.Instance, now time.Time) string {
	b, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": now.UTC().Format(time.RFC3339),
		"InstanceProfileArn": fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", m.region.AccountID(), RoleName),
		"InstanceProfileId":  "AIPAVPCLAB" + strings.ToUpper(strings.TrimPrefix(i.ID, "i-")),
	}, "", "  ")
	return string(b)
}

func (m *Service) roleCredentials(now time.Time) string {
	key, secret := m.opts.RoleAccessKeyID, m.opts.RoleSecretKey
	if key == "" {
		key, secret = "ASIAVPCLABFAKEROLE01", "vpclab/fake/instance/role/secret/key00000"
	}
	b, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": now.UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": key, "SecretAccessKey": secret, "Token": "vpclab-fake-session-token",
		"Expiration": now.Add(6 * time.Hour).UTC().Format(time.RFC3339),
	}, "", "  ")
	return string(b)
}

// identityDoc is /latest/dynamic/instance-identity/document.
type identityDoc struct {
	AccountID               string   `json:"accountId"`
	Architecture            string   `json:"architecture"`
	AvailabilityZone        string   `json:"availabilityZone"`
	BillingProducts         []string `json:"billingProducts"`
	DevpayProductCodes      []string `json:"devpayProductCodes"`
	MarketplaceProductCodes []string `json:"marketplaceProductCodes"`
	ImageID                 string   `json:"imageId"`
	InstanceID              string   `json:"instanceId"`
	InstanceType            string   `json:"instanceType"`
	KernelID                *string  `json:"kernelId"`
	PendingTime             string   `json:"pendingTime"`
	PrivateIP               string   `json:"privateIp"`
	RamdiskID               *string  `json:"ramdiskId"`
	Region                  string   `json:"region"`
	Version                 string   `json:"version"`
}

func (m *Service) identityDocument(v *replica) string {
	i := v.inst
	b, _ := json.MarshalIndent(identityDoc{
		AccountID: m.region.AccountID(), Architecture: architecture(i.Type), AvailabilityZone: i.AZ,
		ImageID: i.ImageID, InstanceID: i.ID, InstanceType: i.Type, PendingTime: i.LaunchTime.UTC().Format("2006-01-02T15:04:05Z"),
		PrivateIP: i.PrivateIP.String(), Region: m.region.Name(), Version: "2017-09-30",
	}, "", "  ")
	return string(b)
}

// graviton matches Arm (Graviton) instance families: a "g" among the
// attribute letters after the generation digit (m6g, c7gn, r6gd, t4g, g5g)
// and the a1 family.
var graviton = regexp.MustCompile(`^(a1|[a-z]+\d+[a-z]*g[a-z]*)(\.|-)`)

func architecture(instanceType string) string {
	if graviton.MatchString(instanceType) {
		return "arm64"
	}
	return "x86_64"
}
