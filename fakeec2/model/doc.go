// Package model is fakeec2's region: VPCs, subnets with exact free-address
// accounting, security groups, instances of real instance types with their
// ENI, IPv4 and branch limits, ENIs (primary, secondary, trunk, branch),
// secondary addresses and prefixes, and trunk VLAN associations.
//
// A Region holds the state and enforces the limits and invariants EC2
// enforces; every mutation returns an EC2-shaped *Error on refusal and
// publishes a Change on the region's feed. Changes carry copies of what they
// touched, so followers (IMDS, the fabric) never read the region's internals
// and never run under its lock.
//
// The package knows nothing of HTTP, XML, SigV4 or YAML: the Query API
// (package ec2query), IMDS (imds), the control API (control) and world
// loading (world) are built on it.
package model
