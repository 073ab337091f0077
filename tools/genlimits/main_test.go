package main

import (
	"bytes"
	"os"
	"testing"
)

// TestLimitsUpToDate fails when ipamd/limits.tsv is not what the catalog
// generates (run: go run ./tools/genlimits > ipamd/limits.tsv).
func TestLimitsUpToDate(t *testing.T) {
	var want bytes.Buffer
	if err := write(&want); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../ipamd/limits.tsv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("ipamd/limits.tsv is stale: go run ./tools/genlimits > ipamd/limits.tsv")
	}
}
