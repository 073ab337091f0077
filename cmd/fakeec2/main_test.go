package main

import (
	"os"
	"testing"

	"github.com/vpclab/vpclab/internal/labtest"
)

// TestMain removes the binaries the plain tests built once they are done.
func TestMain(m *testing.M) { os.Exit(labtest.Main(m)) }
