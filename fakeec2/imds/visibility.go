package imds

import (
	"net/netip"
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// ENIView is one ENI as an instance's metadata service lists it now.
type ENIView struct {
	ENIID    string         `json:"eniId"`
	MAC      string         `json:"mac"`
	Device   int            `json:"deviceNumber"`
	IPv4     []netip.Addr   `json:"ipv4"` // primary first, as local-ipv4s lists them
	Prefixes []netip.Prefix `json:"prefixes,omitempty"`
}

// View returns the ENIs instance id's metadata service lists now (every
// change made before the call applied, lags honoured), by device number.
// It is what a client reading macs/ through the instance's endpoint sees.
func (m *Service) View(instanceID string) ([]ENIView, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[instanceID]
	if !ok || v.terminated {
		return nil, model.ErrInstanceNotFound(instanceID)
	}
	v.catchUp(m.region.Now())
	out := make([]ENIView, 0, len(v.enis))
	for _, e := range v.sortedENIs() {
		x := ENIView{ENIID: e.ID, MAC: e.MAC, IPv4: append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...), Prefixes: slices.Clone(e.Prefixes)}
		if e.Attachment != nil {
			x.Device = e.Attachment.DeviceIndex
		}
		out = append(out, x)
	}
	return out, nil
}

// Delay is one change an instance's metadata service shows later than it
// happened: by the instance's propagation lag, the default lag or fault
// rules' imdsLag.
type Delay struct {
	Action       string         `json:"action"`
	ENIID        string         `json:"eniId"`
	AttachmentID string         `json:"attachmentId,omitempty"`
	InstanceID   string         `json:"instanceId"`
	Changed      time.Time      `json:"changed"`
	VisibleAt    time.Time      `json:"visibleAt"`
	Lag          model.Duration `json:"lag"`
	// Faults are the ids of the fault rules that added to the lag.
	Faults []string `json:"faults,omitempty"`
}

// maxDelays bounds the delay log (the oldest are dropped).
const maxDelays = 4096

// recordDelay logs a delayed change (m.mu held).
func (m *Service) recordDelay(d Delay) {
	if len(m.delays) == maxDelays {
		m.delays = slices.Delete(m.delays, 0, maxDelays/4)
	}
	m.delays = append(m.delays, d)
}

// Delays lists the delayed changes of action (every action when empty)
// made since since, in the order they happened (the feed's), once every
// change made before the call has been processed.
func (m *Service) Delays(action string, since time.Time) []Delay {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	var out []Delay
	for _, d := range m.delays {
		if (action == "" || d.Action == action) && !d.Changed.Before(since) {
			out = append(out, d)
		}
	}
	return out
}
