package lab_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/lab"
)

func TestLab(t *testing.T) {
	if name := os.Getenv(childEnv); name != "" {
		runChild(name)
	}
	labtest.Suite(t, "lab", true)
}

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

func uniqueName() string { return labtest.Name("l", 7) }

func testConfig() lab.Config {
	c := lab.Default()
	c.Name = uniqueName()
	c.Owner = "test"
	c.BinDir = *bins
	c.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "100ms", "VPCLAB_IP_COOLDOWN": "0s"}
	return c
}

const childEnv = "VPCLAB_LAB_CHILD"

// runChild brings a lab up, says "ready" and waits to be killed.
func runChild(name string) {
	c := lab.Default()
	c.Name = name
	c.BinDir = os.Getenv("VPCLAB_BIN")
	c.Nodes[0].Count = 1
	l, err := lab.New(context.Background(), c, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := l.Nodes()[0].AddPod(context.Background(), "default", "orphan"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	os.Exit(0)
}

// labNames lists the labs with anything on the machine.
func labNames() []string {
	var out []string
	for _, l := range lab.Labs("") {
		out = append(out, l.Name)
	}
	return out
}
