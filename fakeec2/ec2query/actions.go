package ec2query

import ()

// handler decodes one action's parameters, calls the model and returns the
// response body (its fields become children of <ActionResponse>).
type handler func(s *Server, q *qnode) (any, error)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"CreateVpc":                          (*Server).createVpc,
		"DescribeVpcs":                       describeVpcs.handle,
		"CreateSubnet":                       (*Server).createSubnet,
		"DescribeSubnets":                    describeSubnets.handle,
		"CreateSecurityGroup":                (*Server).createSecurityGroup,
		"DescribeSecurityGroups":             describeSecurityGroups.handle,
		"DeleteSecurityGroup":                (*Server).deleteSecurityGroup,
		"AuthorizeSecurityGroupIngress":      (*Server).authorizeIngress,
		"AuthorizeSecurityGroupEgress":       (*Server).authorizeEgress,
		"RevokeSecurityGroupIngress":         (*Server).revokeIngress,
		"RevokeSecurityGroupEgress":          (*Server).revokeEgress,
		"DescribeSecurityGroupRules":         describeSecurityGroupRules.handle,
		"ModifySecurityGroupRules":           (*Server).modifySecurityGroupRules,
		"RunInstances":                       (*Server).runInstances,
		"TerminateInstances":                 (*Server).terminateInstances,
		"DescribeInstances":                  describeInstances.handle,
		"DescribeInstanceTypes":              describeInstanceTypes.handle,
		"ModifyInstanceMetadataOptions":      (*Server).modifyInstanceMetadataOptions,
		"CreateNetworkInterface":             (*Server).createNetworkInterface,
		"DeleteNetworkInterface":             (*Server).deleteNetworkInterface,
		"DescribeNetworkInterfaces":          describeNetworkInterfaces.handle,
		"AttachNetworkInterface":             (*Server).attachNetworkInterface,
		"DetachNetworkInterface":             (*Server).detachNetworkInterface,
		"ModifyNetworkInterfaceAttribute":    (*Server).modifyNetworkInterfaceAttribute,
		"AssignPrivateIpAddresses":           (*Server).assignPrivateIPs,
		"UnassignPrivateIpAddresses":         (*Server).unassignPrivateIPs,
		"AssignIpv6Addresses":                (*Server).assignIPv6,
		"UnassignIpv6Addresses":              (*Server).unassignIPv6,
		"CreateTags":                         (*Server).createTags,
		"DeleteTags":                         (*Server).deleteTags,
		"AssociateTrunkInterface":            (*Server).associateTrunk,
		"DisassociateTrunkInterface":         (*Server).disassociateTrunk,
		"DescribeTrunkInterfaceAssociations": describeTrunkAssociations.handle,
		"CreateNetworkInterfacePermission":   (*Server).createNetworkInterfacePermission,
		"DescribeRegions":                    describeRegions.handle,
		"DescribeAvailabilityZones":          describeAvailabilityZones.handle,
	}
}

// Actions returns the names of every supported EC2 action.
func Actions() []string {
	out := make([]string, 0, len(handlers))
	for a := range handlers {
		out = append(out, a)
	}
	return out
}

type returnTrue struct {
	Return bool `xml:"return"`
}

type xStrings struct {
	Items []string `xml:"item"`
}
