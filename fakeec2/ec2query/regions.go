package ec2query

import (
	"slices"

	"github.com/vpclab/vpclab/fakeec2/model"
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

var describeAvailabilityZones = describe[model.AvailabilityZone]{
	list: func(s *Server, q *qnode) ([]*model.AvailabilityZone, error) {
		zones := ptrs(s.region.AvailabilityZones())
		if _, err := q.boolean("AllAvailabilityZones"); err != nil {
			return nil, err
		}
		for _, p := range []struct {
			param string
			key   func(*model.AvailabilityZone) string
			what  string
		}{{"ZoneName", func(z *model.AvailabilityZone) string { return z.Name }, "zone"}, {"ZoneId", func(z *model.AvailabilityZone) string { return z.ID }, "zone id"}} {
			want, err := q.strings(p.param)
			if err != nil || len(want) == 0 {
				if err != nil {
					return nil, err
				}
				continue
			}
			for _, w := range want {
				if !slices.ContainsFunc(zones, func(z *model.AvailabilityZone) bool { return p.key(z) == w }) {
					return nil, model.ErrInvalid("The %s '%s' does not exist.", p.what, w)
				}
			}
			zones = slices.DeleteFunc(zones, func(z *model.AvailabilityZone) bool { return !slices.Contains(want, p.key(z)) })
		}
		return zones, nil
	},
	filters: azFilters, set: "availabilityZoneInfo", minMax: 5, maxMax: 1000,
	render: renderEach(func(_ *Server, z *model.AvailabilityZone) xAZ {
		return xAZ{ZoneName: z.Name, ZoneID: z.ID, ZoneState: "available", RegionName: z.Region, GroupName: z.Region,
			NetworkBorderGroup: z.Region, OptInStatus: "opt-in-not-required", ZoneType: "availability-zone", Messages: &struct{}{}}
	}),
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
var describeRegions = describe[regionInfo]{
	list: func(s *Server, q *qnode) ([]*regionInfo, error) {
		names, err := q.strings("RegionName")
		if err != nil {
			return nil, err
		}
		if _, err := q.boolean("AllRegions"); err != nil {
			return nil, err
		}
		if len(names) > 0 && !slices.Contains(names, s.region.Name()) {
			return nil, nil
		}
		return []*regionInfo{{Name: s.region.Name(), Endpoint: "ec2." + s.region.Name() + ".amazonaws.com"}}, nil
	},
	filters: regionFilters, set: "regionInfo", minMax: 5, maxMax: 1000,
	render: renderEach(func(_ *Server, r *regionInfo) xRegion {
		return xRegion{RegionName: r.Name, RegionEndpoint: r.Endpoint, OptInStatus: "opt-in-not-required"}
	}),
}
