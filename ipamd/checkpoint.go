package ipamd

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CheckpointVersion is the VPC CNI's checkpoint format version.
const CheckpointVersion = "vpc-cni-ipam/1"

// Allocation is one checkpointed assignment, in the VPC CNI's JSON shape.
type Allocation struct {
	IPAMKey
	IPv4                string       `json:"ipv4,omitempty"`
	IPv6                string       `json:"ipv6,omitempty"`
	AllocationTimestamp int64        `json:"allocationTimestamp"`
	Metadata            IPAMMetadata `json:"metadata"`
}

// checkpointFile is the file's top level.
type checkpointFile struct {
	Version     string       `json:"version"`
	Allocations []Allocation `json:"allocations"`
}

// WriteCheckpoint writes the allocations atomically: a temporary file in
// the same directory, fsync, rename.
func WriteCheckpoint(path string, allocs []Allocation) error {
	if allocs == nil {
		allocs = []Allocation{}
	}
	b, err := json.Marshal(checkpointFile{Version: CheckpointVersion, Allocations: allocs})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return nil
}

// ReadCheckpoint reads a checkpoint; a missing file is a fresh node (nil).
func ReadCheckpoint(path string) ([]Allocation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	var c checkpointFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if c.Version != CheckpointVersion {
		return nil, fmt.Errorf("checkpoint %s: version %q, want %q", path, c.Version, CheckpointVersion)
	}
	return c.Allocations, nil
}

// RecoveredNetwork is the network name of allocations ipamd derived from
// a pod's host route rather than read from its checkpoint; their
// container id is the host veth's name.
const RecoveredNetwork = "_recovered-from-host"

// recovered are allocations for the routed pod addresses (address -> host
// veth) that allocs lack.
func recovered(allocs []Allocation, routed map[netip.Addr]string) []Allocation {
	have := map[string]bool{}
	for _, a := range allocs {
		have[a.IPv4] = true
	}
	var out []Allocation
	for _, ip := range slices.SortedFunc(maps.Keys(routed), netip.Addr.Compare) {
		if have[ip.String()] {
			continue
		}
		out = append(out, Allocation{IPAMKey: IPAMKey{NetworkName: RecoveredNetwork, ContainerID: routed[ip], IfName: "eth0"},
			IPv4: ip.String(), AllocationTimestamp: time.Now().UnixNano()})
	}
	return out
}
