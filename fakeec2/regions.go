package fakeec2

import (
	"slices"
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
	out := make([]AvailabilityZone, 0, len(azLetters))
	for _, l := range azLetters {
		name := r.opts.Name + string(l)
		out = append(out, AvailabilityZone{Name: name, ID: azID(r.opts.Name, name), Region: r.opts.Name})
	}
	return out
}

// validAZ says whether az is one of the region's zones.
func (r *Region) validAZ(az string) bool {
	rest, ok := strings.CutPrefix(az, r.opts.Name)
	return ok && len(rest) == 1 && strings.Contains(azLetters, rest)
}

var azFilters = filterSet[*AvailabilityZone]{
	tags: func(*AvailabilityZone) Tags { return nil },
	fields: map[string]fieldFunc[*AvailabilityZone]{
		"zone-name":            func(z *AvailabilityZone) []string { return []string{z.Name} },
		"zone-id":              func(z *AvailabilityZone) []string { return []string{z.ID} },
		"region-name":          func(z *AvailabilityZone) []string { return []string{z.Region} },
		"group-name":           func(z *AvailabilityZone) []string { return []string{z.Region} },
		"network-border-group": func(z *AvailabilityZone) []string { return []string{z.Region} },
		"state":                func(*AvailabilityZone) []string { return []string{"available"} },
		"zone-type":            func(*AvailabilityZone) []string { return []string{"availability-zone"} },
		"opt-in-status":        func(*AvailabilityZone) []string { return []string{"opt-in-not-required"} },
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
	var zones []*AvailabilityZone
	for _, z := range s.region.AvailabilityZones() {
		zones = append(zones, &z)
	}
	for _, n := range names {
		if !slices.ContainsFunc(zones, func(z *AvailabilityZone) bool { return z.Name == n }) {
			return nil, errInvalid("The zone '%s' does not exist.", n)
		}
	}
	for _, id := range ids {
		if !slices.ContainsFunc(zones, func(z *AvailabilityZone) bool { return z.ID == id }) {
			return nil, errInvalid("The zone id '%s' does not exist.", id)
		}
	}
	if len(names) > 0 || len(ids) > 0 {
		zones = slices.DeleteFunc(zones, func(z *AvailabilityZone) bool {
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
	tags: func(*regionInfo) Tags { return nil },
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
