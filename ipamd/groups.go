package ipamd

import (
	"context"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// syncGroups gives every managed ENI the primary ENI's security groups
// (IMDS security-group-ids) when they differ from the last ones seen, as
// the VPC CNI does at start-up and then every 30 s. Its first look finds
// every group new (its cache starts empty), so each ENI held at start-up
// gets them once. A refused ModifyNetworkInterfaceAttribute is logged (and
// counted by timed); the next change retries it. Only an IMDS failure is
// an error.
func (d *Daemon) syncGroups(ctx context.Context) error {
	base := "network/interfaces/macs/" + d.primaryMAC + "/"
	groups, err := d.cloud.metadataList(ctx, base+"security-group-ids")
	if err != nil {
		return err
	}
	sorted := slices.Sorted(slices.Values(groups))
	d.mu.Lock()
	changed := !slices.Equal(sorted, d.groupsSorted) // nil at start: every group is new, as in the VPC CNI's empty cache
	d.groupsSorted = sorted
	var ids []string
	for _, e := range d.ds.ENIs() {
		ids = append(ids, e.ID)
	}
	d.mu.Unlock()
	if !changed {
		return nil
	}
	if d.c.CustomNetworking {
		// As the VPC CNI: the ENIs are the ENIConfig's, with its groups
		// (the primary's only serve as its default for new ENIs).
		d.log.Info("security groups of the primary ENI (custom networking: not applied to other ENIs)", "groups", groups)
		return nil
	}
	d.log.Info("security groups of the primary ENI", "groups", groups, "enis", len(ids))
	slices.Sort(ids)
	for _, id := range ids {
		if err := d.cloud.setGroups(ctx, id, groups); err != nil {
			d.log.Warn("unable to update an ENI's security groups", "eni", id, "groups", groups, "err", err)
		}
	}
	return nil
}

// groupLoop runs syncGroups every GroupsInterval.
func (d *Daemon) groupLoop(ctx context.Context) {
	every(ctx, d.c.GroupsInterval, func() {
		if err := d.syncGroups(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("security groups from IMDS", "err", err)
		}
	})
}

// setGroups replaces an ENI's security groups.
func (c *cloud) setGroups(ctx context.Context, id string, groups []string) error {
	return c.timed(ctx, "ModifyNetworkInterfaceAttribute", func() error {
		_, err := c.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id), Groups: groups})
		return err
	})
}
