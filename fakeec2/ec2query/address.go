package ec2query

import (
	"github.com/vpclab/vpclab/fakeec2/model"
)

func (s *Server) assignPrivateIPs(q *qnode) (any, error) {
	in := model.AssignPrivateIPsInput{ENIID: q.str("NetworkInterfaceId")}
	var err error
	if in.Addrs, err = q.addrList("PrivateIpAddress", false); err != nil {
		return nil, err
	}
	if in.Count, err = q.count("SecondaryPrivateIpAddressCount"); err != nil {
		return nil, err
	}
	if in.Prefixes, err = q.prefixList("Ipv4Prefix"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = q.count("Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	re, err := q.boolean("AllowReassignment")
	if err != nil {
		return nil, err
	}
	in.AllowReassignment = re != nil && *re
	addrs, pfx, err := s.region.AssignPrivateIPs(in)
	if err != nil {
		return nil, err
	}
	type ip struct {
		PrivateIPAddress string `xml:"privateIpAddress"`
	}
	out := struct {
		ENIID string `xml:"networkInterfaceId"`
		IPs   struct {
			Items []ip `xml:"item"`
		} `xml:"assignedPrivateIpAddressesSet"`
		Prefixes struct {
			Items []xPrefix `xml:"item"`
		} `xml:"assignedIpv4PrefixSet"`
	}{ENIID: in.ENIID}
	for _, a := range addrs {
		out.IPs.Items = append(out.IPs.Items, ip{a.String()})
	}
	for _, p := range pfx {
		out.Prefixes.Items = append(out.Prefixes.Items, xPrefix{p.String()})
	}
	return out, nil
}

func (s *Server) unassignPrivateIPs(q *qnode) (any, error) {
	addrs, err := q.addrList("PrivateIpAddress", false)
	if err != nil {
		return nil, err
	}
	pfx, err := q.prefixList("Ipv4Prefix")
	if err != nil {
		return nil, err
	}
	if err := s.region.UnassignPrivateIPs(q.str("NetworkInterfaceId"), addrs, pfx); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

func (s *Server) assignIPv6(q *qnode) (any, error) {
	in := model.AssignIPv6Input{ENIID: q.str("NetworkInterfaceId")}
	var err error
	if in.Addrs, err = q.addrList("Ipv6Addresses", true); err != nil {
		return nil, err
	}
	if in.Count, err = q.count("Ipv6AddressCount"); err != nil {
		return nil, err
	}
	if in.Prefixes, err = q.prefixList("Ipv6Prefix"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = q.count("Ipv6PrefixCount"); err != nil {
		return nil, err
	}
	a, p, err := s.region.AssignIPv6(in)
	if err != nil {
		return nil, err
	}
	return struct {
		ENIID    string   `xml:"networkInterfaceId"`
		Addrs    xStrings `xml:"assignedIpv6Addresses"`
		Prefixes xStrings `xml:"assignedIpv6PrefixSet"`
	}{in.ENIID, xStrings{addrStrings(a)}, xStrings{prefixStrings(p)}}, nil
}

func (s *Server) unassignIPv6(q *qnode) (any, error) {
	addrs, err := q.addrList("Ipv6Addresses", true)
	if err != nil {
		return nil, err
	}
	pfx, err := q.prefixList("Ipv6Prefix")
	if err != nil {
		return nil, err
	}
	id := q.str("NetworkInterfaceId")
	a, p, err := s.region.UnassignIPv6(id, addrs, pfx)
	if err != nil {
		return nil, err
	}
	return struct {
		ENIID    string   `xml:"networkInterfaceId"`
		Addrs    xStrings `xml:"unassignedIpv6Addresses"`
		Prefixes xStrings `xml:"unassignedIpv6PrefixSet"`
	}{id, xStrings{addrStrings(a)}, xStrings{prefixStrings(p)}}, nil
}
