// Package testutil holds what the test suites share: unique names for
// kernel objects, building the binaries under test, the environment a
// test ipamd runs with, and an HTTP client for the SDK on loopback.
package testutil

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vpclab/vpclab/fabric"
)

// Name returns prefix followed by random [a-z0-9] characters, n in all, so
// parallel tests never share a namespace or lab name.
func Name(prefix string, n int) string {
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, max(n-len(prefix), 1))
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alpha[int(b[i])%len(alpha)]
	}
	return prefix + string(b)
}

// Build compiles the named commands (e.g. "ipamd", "aws-cni") of this
// module into a new temporary directory and returns it.
func Build(cmds ...string) (string, error) {
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	dir, err := os.MkdirTemp("", "vpclab-bin")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, c := range cmds {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", strings.Join(cmds, " "), err, out)
	}
	return dir, nil
}

// IpamdEnv is the environment of an ipamd run by a test inside a fabric
// node: credentials, the fabric's EC2 and IMDS addresses, and its socket,
// checkpoint and log under dir; extra entries are appended.
func IpamdEnv(dir string, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"AWS_ACCESS_KEY_ID=AKIDNODE", "AWS_SECRET_ACCESS_KEY=secret", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_ENDPOINT=" + fabric.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://" + fabric.IMDSAddr,
		"VPCLAB_IPAMD_SOCKET=" + filepath.Join(dir, "ipamd.sock"), "AWS_VPC_K8S_CNI_BACKING_STORE=" + filepath.Join(dir, "ipam.json"),
		"AWS_VPC_K8S_CNI_LOG_FILE=" + filepath.Join(dir, "ipamd.log")}, extra...)
}

// BufferedClient hands the transport a private copy of the request body.
// The SDK closes its request body as soon as Do returns; against a server
// that answers before the transport's write loop has read the body's EOF
// (any loopback server), that close makes the transport drop the
// connection while the response is still being read. Real EC2's latency
// hides the race.
type BufferedClient struct{}

// Do implements the SDK's HTTPClient.
func (BufferedClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return http.DefaultClient.Do(req)
}

// InNetns runs a command inside a named network namespace (ip netns exec)
// and returns its combined output.
func InNetns(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}
