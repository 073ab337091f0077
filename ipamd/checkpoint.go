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

// Checkpoint is what ipamd persists: the VPC CNI's allocations and, as
// vpclab's extension (a field the VPC CNI ignores when it reads the file),
// the addresses released within the cooldown, so a restart keeps the
// cooldown's promise to the pods that just let them go.
type Checkpoint struct {
	Allocations []Allocation
	Cooling     []Cooling
}

// Cooling is one released address still in cooldown.
type Cooling struct {
	IPv4 string `json:"ipv4"`
	// Released is when the pod let it go, in Unix nanoseconds.
	Released int64 `json:"releasedTimestamp"`
}

// checkpointFile is the file's top level.
type checkpointFile struct {
	Version     string       `json:"version"`
	Allocations []Allocation `json:"allocations"`
	Cooling     []Cooling    `json:"vpclabCooling,omitempty"`
}

// WriteCheckpoint writes the checkpoint atomically: a temporary file in
// the same directory, fsync, rename.
func WriteCheckpoint(path string, ck Checkpoint) error {
	allocs := ck.Allocations
	if allocs == nil {
		allocs = []Allocation{}
	}
	b, err := json.Marshal(checkpointFile{Version: CheckpointVersion, Allocations: allocs, Cooling: ck.Cooling})
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

// ReadCheckpoint reads a checkpoint. A missing file is an error that
// errors.Is fs.ErrNotExist: a fresh node, or one whose file was lost.
func ReadCheckpoint(path string) (Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	var c checkpointFile
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if c.Version != CheckpointVersion {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: version %q, want %q", path, c.Version, CheckpointVersion)
	}
	return Checkpoint{Allocations: c.Allocations, Cooling: c.Cooling}, nil
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
