// Package world declares a whole fake region in YAML (VPCs, subnets,
// security groups, instances, throttling, faults, timing, credentials) and
// applies it through the model's own operations, so a world file can never
// build a state the API could not.
package world

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/yamlx"
)

// Config declares a world: region settings, VPCs with subnets and security
// groups, instances, throttling, faults and timing. It loads from YAML (or
// JSON, which is YAML) and is applied through the model's own operations,
// so a config can never build a state the API could not.
type Config struct {
	Region    string `yaml:"region"`
	AccountID string `yaml:"accountId"`
	// MaxInstances caps the region's non-terminated instances (default
	// 1000): RunInstances beyond it answers InstanceLimitExceeded.
	MaxInstances int               `yaml:"maxInstances"`
	Seed         uint64            `yaml:"seed"`
	Strict       bool              `yaml:"strict"`
	Credentials  map[string]string `yaml:"credentials"`
	Timing       model.Timing      `yaml:"timing"`
	// Allocation is how the region picks addresses and prefixes a caller
	// did not name (default: random from the seed, avoiding recent releases).
	Allocation model.Allocation `yaml:"allocation"`
	// Throttling, when present, replaces the default throttling settings.
	Throttling    *ec2query.ThrottleConfig `yaml:"throttling"`
	Faults        []faults.Rule            `yaml:"faults"`
	InstanceTypes []catalog.InstanceType   `yaml:"instanceTypes"`
	VPCs          []VPCConfig              `yaml:"vpcs"`
	Instances     []InstanceConfig         `yaml:"instances"`
}

// VPCConfig declares one VPC.
type VPCConfig struct {
	Name           string                `yaml:"name"`
	CIDR           string                `yaml:"cidr"`
	ExtraCIDRs     []string              `yaml:"extraCidrs"`
	IPv6           bool                  `yaml:"ipv6"`
	Tags           model.Tags            `yaml:"tags"`
	Subnets        []SubnetConfig        `yaml:"subnets"`
	SecurityGroups []SecurityGroupConfig `yaml:"securityGroups"`
}

// SubnetConfig declares one subnet.
type SubnetConfig struct {
	Name     string     `yaml:"name"`
	CIDR     string     `yaml:"cidr"`
	AZ       string     `yaml:"az"`
	IPv6CIDR string     `yaml:"ipv6Cidr"`
	Tags     model.Tags `yaml:"tags"`
}

// SecurityGroupConfig declares one security group.
type SecurityGroupConfig struct {
	Name        string     `yaml:"name"`
	Description string     `yaml:"description"`
	Tags        model.Tags `yaml:"tags"`
}

// InstanceConfig declares instances to run.
type InstanceConfig struct {
	Name           string     `yaml:"name"`
	Type           string     `yaml:"type"`
	Subnet         string     `yaml:"subnet"` // subnet name (or id)
	SecurityGroups []string   `yaml:"securityGroups"`
	Count          int        `yaml:"count"`
	PrivateIP      string     `yaml:"privateIp"`
	Tags           model.Tags `yaml:"tags"`
	Metadata       struct {
		HTTPTokens   string `yaml:"httpTokens"`
		HTTPEndpoint string `yaml:"httpEndpoint"`
		HopLimit     int    `yaml:"hopLimit"`
	} `yaml:"metadata"`
	// IMDS is the listen address of the instances' metadata service
	// (default an ephemeral loopback port). A fixed port needs count 1.
	IMDS string `yaml:"imds"`
	// IMDSLag overrides timing.imdsLag for these instances.
	IMDSLag *model.Duration `yaml:"imdsLag"`
}

// LoadConfig reads a YAML config file; unknown fields are errors.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig decodes YAML config bytes strictly.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := yamlx.Decode(b, &c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	for i := range c.Faults {
		if err := c.Faults[i].Validate(); err != nil {
			return nil, fmt.Errorf("config faults[%d]: %w", i, err)
		}
	}
	if err := c.Allocation.Check(); err != nil {
		return nil, fmt.Errorf("config %w", err)
	}
	return &c, nil
}

// RegionOptions returns the Options a region built from this config needs.
func (c *Config) RegionOptions() model.Options {
	return model.Options{Name: c.Region, AccountID: c.AccountID, Seed: c.Seed, AttachLatency: durationOf(c.Timing.AttachLatency),
		DetachLatency: durationOf(c.Timing.DetachLatency), ConsistencyLag: durationOf(c.Timing.ConsistencyLag),
		ENILag: durationOf(c.Timing.ENILag), AddressLag: durationOf(c.Timing.AddressLag), RemovalLag: durationOf(c.Timing.RemovalLag), ExtraInstanceTypes: c.InstanceTypes, MaxInstances: c.MaxInstances,
		Allocation: c.Allocation}
}

// ServerOptions returns the ServerOptions the config asks for.
func (c *Config) ServerOptions() fakeec2.ServerOptions {
	o := fakeec2.ServerOptions{API: ec2query.Options{Seed: c.Seed, Strict: c.Strict, Credentials: c.Credentials}, IMDS: imds.Options{Lag: durationOf(c.Timing.IMDSLag)}}
	for k, v := range c.Credentials { // the instance role signs with a configured key
		if o.IMDS.RoleAccessKeyID == "" || k < o.IMDS.RoleAccessKeyID {
			o.IMDS.RoleAccessKeyID, o.IMDS.RoleSecretKey = k, v
		}
	}
	if c.Throttling != nil {
		o.API.Throttle = *c.Throttling
	}
	return o
}

// World maps the config's names to the ids the region gave them.
type World struct {
	VPCs           map[string]string
	Subnets        map[string]string
	SecurityGroups map[string]string
	// Instances maps an instance config name to its instance ids.
	Instances map[string][]string
	// IMDS maps instance id to the configured IMDS listen address.
	IMDS map[string]string
}

// Apply builds the declared world in the region and installs the faults on
// the server (when not nil).
func (c *Config) Apply(r *model.Region, s *fakeec2.Server) (*World, error) {
	w := &World{VPCs: map[string]string{}, Subnets: map[string]string{}, SecurityGroups: map[string]string{}, Instances: map[string][]string{}, IMDS: map[string]string{}}
	for vi, vc := range c.VPCs {
		if err := w.applyVPC(r, vi, vc); err != nil {
			return nil, err
		}
	}
	for ii, ic := range c.Instances {
		if err := w.applyInstances(r, s, ii, ic); err != nil {
			return nil, err
		}
	}
	if s != nil && len(c.Faults) > 0 {
		if _, err := s.Faults().Add(c.Faults...); err != nil {
			return nil, fmt.Errorf("config faults: %w", err)
		}
	}
	return w, nil
}

// applyVPC creates one declared VPC with its subnets and security groups.
func (w *World) applyVPC(r *model.Region, vi int, vc VPCConfig) error {
	cidr, err := netip.ParsePrefix(vc.CIDR)
	if err != nil {
		return fmt.Errorf("config vpcs[%d] (%s): cidr %q: %w", vi, vc.Name, vc.CIDR, err)
	}
	in := model.CreateVPCInput{CIDR: cidr, AmazonProvidedIPv6: vc.IPv6, Tags: vc.Tags}
	for _, e := range vc.ExtraCIDRs {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return fmt.Errorf("config vpcs[%d] (%s): extraCidrs %q: %w", vi, vc.Name, e, err)
		}
		in.ExtraCIDRs = append(in.ExtraCIDRs, p)
	}
	v, err := r.CreateVPC(in)
	if err != nil {
		return fmt.Errorf("config vpcs[%d] (%s): %w", vi, vc.Name, err)
	}
	w.VPCs[vc.Name] = v.ID
	w.SecurityGroups[vc.Name+"/default"] = v.DefaultGroupID
	for si, sc := range vc.Subnets {
		p, err := netip.ParsePrefix(sc.CIDR)
		if err != nil {
			return fmt.Errorf("config vpcs[%d].subnets[%d] (%s): cidr %q: %w", vi, si, sc.Name, sc.CIDR, err)
		}
		in := model.CreateSubnetInput{VPCID: v.ID, CIDR: p, AZ: sc.AZ, Tags: sc.Tags}
		if sc.IPv6CIDR != "" {
			if in.IPv6CIDR, err = netip.ParsePrefix(sc.IPv6CIDR); err != nil {
				return fmt.Errorf("config vpcs[%d].subnets[%d] (%s): ipv6Cidr %q: %w", vi, si, sc.Name, sc.IPv6CIDR, err)
			}
		}
		sn, err := r.CreateSubnet(in)
		if err != nil {
			return fmt.Errorf("config vpcs[%d].subnets[%d] (%s): %w", vi, si, sc.Name, err)
		}
		if _, dup := w.Subnets[sc.Name]; dup {
			return fmt.Errorf("config vpcs[%d].subnets[%d]: duplicate subnet name %q", vi, si, sc.Name)
		}
		w.Subnets[sc.Name] = sn.ID
	}
	for gi, gc := range vc.SecurityGroups {
		desc := gc.Description
		if desc == "" {
			desc = gc.Name
		}
		g, err := r.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: v.ID, Name: gc.Name, Description: desc, Tags: gc.Tags})
		if err != nil {
			return fmt.Errorf("config vpcs[%d].securityGroups[%d] (%s): %w", vi, gi, gc.Name, err)
		}
		w.SecurityGroups[gc.Name] = g.ID
	}
	return nil
}

// applyInstances launches one instance declaration.
func (w *World) applyInstances(r *model.Region, s *fakeec2.Server, ii int, ic InstanceConfig) error {
	subnet := ic.Subnet
	if id, ok := w.Subnets[subnet]; ok {
		subnet = id
	}
	var groups []string
	for _, g := range ic.SecurityGroups {
		id, ok := w.SecurityGroups[g]
		if !ok {
			id = g
		}
		groups = append(groups, id)
	}
	in := model.RunInstancesInput{InstanceType: ic.Type, SubnetID: subnet, MinCount: max(ic.Count, 1), SecurityGroups: groups, Tags: ic.Tags,
		Metadata: model.MetadataOptions{HTTPTokens: ic.Metadata.HTTPTokens, HTTPEndpoint: ic.Metadata.HTTPEndpoint, HopLimit: ic.Metadata.HopLimit}}
	if ic.PrivateIP != "" {
		a, err := netip.ParseAddr(ic.PrivateIP)
		if err != nil {
			return fmt.Errorf("config instances[%d] (%s): privateIp %q: %w", ii, ic.Name, ic.PrivateIP, err)
		}
		in.PrivateIP = a
	}
	if ic.IMDS != "" {
		_, port, err := net.SplitHostPort(ic.IMDS)
		if err != nil {
			return fmt.Errorf("config instances[%d] (%s): imds %q: %w", ii, ic.Name, ic.IMDS, err)
		}
		if port != "0" && ic.Count > 1 {
			return fmt.Errorf("config instances[%d] (%s): imds %q: a fixed port cannot serve %d instances (use port 0)", ii, ic.Name, ic.IMDS, ic.Count)
		}
	}
	if ic.IMDSLag != nil && *ic.IMDSLag < 0 {
		return fmt.Errorf("config instances[%d] (%s): imdsLag %v is negative", ii, ic.Name, *ic.IMDSLag)
	}
	insts, err := r.RunInstances(in)
	if err != nil {
		return fmt.Errorf("config instances[%d] (%s): %w", ii, ic.Name, err)
	}
	for _, i := range insts {
		w.Instances[ic.Name] = append(w.Instances[ic.Name], i.ID)
		if ic.IMDS != "" {
			w.IMDS[i.ID] = ic.IMDS
		}
		if ic.IMDSLag != nil && s != nil {
			if err := s.IMDS().SetLag(i.ID, time.Duration(*ic.IMDSLag)); err != nil {
				return fmt.Errorf("config instances[%d] (%s): imdsLag: %w", ii, ic.Name, err)
			}
		}
	}
	return nil
}

func durationOf(d model.Duration) time.Duration { return time.Duration(d) }
