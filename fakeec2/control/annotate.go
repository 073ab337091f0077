package control

import (
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// Annotate fills in the vpclab note of every record in recs whose changes
// an instance's metadata service showed late (propagation lag or an
// imdsLag fault). A delayed change belongs to the latest successful call
// of its action, on its ENI (or attachment), that started before it.
func Annotate(recs []ec2query.Record, audit *ec2query.Audit, m *imds.Service) {
	type key struct{ action, id string }
	want := map[string]time.Time{} // action -> the earliest start among recs
	for _, r := range recs {
		if r.ErrorCode != "" || r.ReadOnly {
			continue
		}
		if t, ok := want[r.EventName]; !ok || r.Start().Before(t) {
			want[r.EventName] = r.Start()
		}
	}
	notes := map[uint64]*ec2query.Note{}
	for action, since := range want {
		delays := m.Delays(action, since)
		if len(delays) == 0 {
			continue
		}
		// Every call of the action, by what it names, newest last.
		calls := map[key][]ec2query.Record{}
		for _, r := range audit.Events(ec2query.EventFilter{Action: action}) {
			if r.ErrorCode != "" {
				continue
			}
			for _, id := range []string{r.Param("networkInterfaceId"), r.Param("attachmentId")} {
				if id != "" {
					calls[key{action, id}] = append(calls[key{action, id}], r)
				}
			}
		}
		for _, d := range delays {
			owner := latestBefore(calls[key{action, d.ENIID}], d.Changed)
			if a := latestBefore(calls[key{action, d.AttachmentID}], d.Changed); a != nil && (owner == nil || a.Seq > owner.Seq) {
				owner = a
			}
			if owner == nil {
				continue
			}
			n := notes[owner.Seq]
			if n == nil {
				n = &ec2query.Note{}
				notes[owner.Seq] = n
			}
			if d.VisibleAt.After(n.IMDSVisibleAt) {
				n.IMDSVisibleAt, n.IMDSLag = d.VisibleAt, model.Duration(d.VisibleAt.Sub(d.Changed))
			}
			if !slices.Contains(n.IMDSInstances, d.InstanceID) {
				n.IMDSInstances = append(n.IMDSInstances, d.InstanceID)
			}
			for _, f := range d.Faults {
				if !slices.Contains(n.IMDSFaults, f) {
					n.IMDSFaults = append(n.IMDSFaults, f)
				}
			}
		}
	}
	for i := range recs {
		if n, ok := notes[recs[i].Seq]; ok {
			recs[i].VPCLab = n
		}
	}
}

// latestBefore is the last of calls (oldest first) that started by t.
func latestBefore(calls []ec2query.Record, t time.Time) *ec2query.Record {
	for i := len(calls) - 1; i >= 0; i-- {
		if !calls[i].Start().After(t) {
			return &calls[i]
		}
	}
	return nil
}
