package ec2query

import (
	"github.com/vpclab/vpclab/fakeec2/model"
	"slices"
)

var azFilters = filterSet[*model.AvailabilityZone]{
	tags: func(*model.AvailabilityZone) model.Tags { return nil },
	fields: map[string]fieldFunc[*model.AvailabilityZone]{
		"zone-name":            func(z *model.AvailabilityZone) []string { return []string{z.Name} },
		"zone-id":              func(z *model.AvailabilityZone) []string { return []string{z.ID} },
		"region-name":          func(z *model.AvailabilityZone) []string { return []string{z.Region} },
		"group-name":           func(z *model.AvailabilityZone) []string { return []string{z.Region} },
		"network-border-group": func(z *model.AvailabilityZone) []string { return []string{z.Region} },
		"state":                func(*model.AvailabilityZone) []string { return []string{"available"} },
		"zone-type":            func(*model.AvailabilityZone) []string { return []string{"availability-zone"} },
		"opt-in-status":        func(*model.AvailabilityZone) []string { return []string{"opt-in-not-required"} },
	},
}

type xAZ struct {
	ZoneName           string    `xml:"zoneName"`
	ZoneID             string    `xml:"zoneId"`
	ZoneState          string    `xml:"zoneState"`
	RegionName         string    `xml:"regionName"`
	GroupName          string    `xml:"groupName"`
	NetworkBorderGroup string    `xml:"networkBorderGroup"`
	OptInStatus        string    `xml:"optInStatus"`
	ZoneType           string    `xml:"zoneType"`
	Messages           *struct{} `xml:"messageSet"`
}

// describeAvailabilityZones lists the served region's zones.
func (s *Server) describeAvailabilityZones(q *qnode) (any, error) {
	names, err := q.strings("ZoneName")
	if err != nil {
		return nil, err
	}
	ids, err := q.strings("ZoneId")
	if err != nil {
		return nil, err
	}
	if _, err := q.boolean("AllAvailabilityZones"); err != nil {
		return nil, err
	}
	var zones []*model.AvailabilityZone
	for _, z := range s.region.AvailabilityZones() {
		zones = append(zones, &z)
	}
	for _, n := range names {
		if !slices.ContainsFunc(zones, func(z *model.AvailabilityZone) bool { return z.Name == n }) {
			return nil, model.ErrInvalid("The zone '%s' does not exist.", n)
		}
	}
	for _, id := range ids {
		if !slices.ContainsFunc(zones, func(z *model.AvailabilityZone) bool { return z.ID == id }) {
			return nil, model.ErrInvalid("The zone id '%s' does not exist.", id)
		}
	}
	if len(names) > 0 || len(ids) > 0 {
		zones = slices.DeleteFunc(zones, func(z *model.AvailabilityZone) bool {
			return !slices.Contains(names, z.Name) && !slices.Contains(ids, z.ID)
		})
	}
	if zones, err = filterItems(zones, azFilters, q); err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xAZ `xml:"item"`
		} `xml:"availabilityZoneInfo"`
	}{}
	for _, z := range zones {
		out.Set.Items = append(out.Set.Items, xAZ{ZoneName: z.Name, ZoneID: z.ID, ZoneState: "available", RegionName: z.Region, GroupName: z.Region,
			NetworkBorderGroup: z.Region, OptInStatus: "opt-in-not-required", ZoneType: "availability-zone", Messages: &struct{}{}})
	}
	return out, nil
}

type regionInfo struct {
	Name     string
	Endpoint string
}

var regionFilters = filterSet[*regionInfo]{
	tags: func(*regionInfo) model.Tags { return nil },
	fields: map[string]fieldFunc[*regionInfo]{
		"region-name":   func(r *regionInfo) []string { return []string{r.Name} },
		"endpoint":      func(r *regionInfo) []string { return []string{r.Endpoint} },
		"opt-in-status": func(*regionInfo) []string { return []string{"opt-in-not-required"} },
	},
}

type xRegion struct {
	RegionName     string `xml:"regionName"`
	RegionEndpoint string `xml:"regionEndpoint"`
	OptInStatus    string `xml:"optInStatus"`
}

// describeRegions lists the one region this server serves (requests signed
// for any other are refused, so listing others would mislead).
func (s *Server) describeRegions(q *qnode) (any, error) {
	names, err := q.strings("RegionName")
	if err != nil {
		return nil, err
	}
	if _, err := q.boolean("AllRegions"); err != nil {
		return nil, err
	}
	regions := []*regionInfo{{Name: s.region.Name(), Endpoint: "ec2." + s.region.Name() + ".amazonaws.com"}}
	if len(names) > 0 && !slices.Contains(names, s.region.Name()) {
		regions = nil
	}
	if regions, err = filterItems(regions, regionFilters, q); err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xRegion `xml:"item"`
		} `xml:"regionInfo"`
	}{}
	for _, r := range regions {
		out.Set.Items = append(out.Set.Items, xRegion{RegionName: r.Name, RegionEndpoint: r.Endpoint, OptInStatus: "opt-in-not-required"})
	}
	return out, nil
}
