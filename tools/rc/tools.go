//go:build tools

// Package rc only pins the VPC Resource Controller's module; `go build
// github.com/aws/amazon-vpc-resource-controller-k8s` in this directory
// builds it.
package rc

import _ "github.com/aws/amazon-vpc-resource-controller-k8s"
