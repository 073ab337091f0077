package e2e_test

import (
	"testing"

	"github.com/vpclab/vpclab/internal/labtest"
)

func TestE2E(t *testing.T) { labtest.Suite(t, "e2e", true) }

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

func labName() string { return labtest.Name("e", 7) }
