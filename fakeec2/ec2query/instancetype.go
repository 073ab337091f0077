package ec2query

import (
	"strconv"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
)

var instanceTypeFilters = filterSet[*catalog.InstanceType]{
	tags: func(*catalog.InstanceType) model.Tags { return nil },
	fields: map[string]fieldFunc[*catalog.InstanceType]{
		"instance-type":      func(t *catalog.InstanceType) []string { return []string{t.Name} },
		"hypervisor":         func(t *catalog.InstanceType) []string { return []string{t.Hypervisor} },
		"bare-metal":         func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.BareMetal)} },
		"current-generation": func(t *catalog.InstanceType) []string { return []string{"true"} },
		"network-info.maximum-network-interfaces":   func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.MaxENIs)} },
		"network-info.ipv4-addresses-per-interface": func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.IPv4PerENI)} },
		"network-info.ipv6-addresses-per-interface": func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.IPv6PerENI)} },
		"network-info.ipv6-supported":               func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.IPv6Supported)} },
		"network-info.efa-supported":                func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.MaxEFA > 0)} },
		"vcpu-info.default-vcpus":                   func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.VCPUs)} },
	},
}

var describeInstanceTypes = describe[catalog.InstanceType]{
	list: func(s *Server, q *qnode) ([]*catalog.InstanceType, error) {
		names, err := q.strings("InstanceType")
		if err != nil || len(names) == 0 {
			return s.region.InstanceTypes(), err
		}
		var items []*catalog.InstanceType
		for _, n := range names {
			t, ok := s.region.InstanceType(n)
			if !ok {
				return nil, model.ErrInvalid("The following supplied instance types do not exist: [%s]", n)
			}
			items = append(items, t)
		}
		return items, nil
	},
	filters: instanceTypeFilters, set: "instanceTypeSet", minMax: 5, maxMax: 100,
	render: renderEach(func(_ *Server, t *catalog.InstanceType) xInstanceType { return xmlInstanceType(t) }),
}
