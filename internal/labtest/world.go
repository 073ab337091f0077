package labtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/httpx"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

// TB is what the harness needs of a test: a *testing.T or *testing.B, or
// GinkgoT() in a spec.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// must fails the test on err.
func must(t TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// World is a region with one VPC and subnet, its EC2 server (also over
// HTTP, for the SDK), and a fabric making it real. Everything is removed
// when the spec ends.
type World struct {
	Name   string
	Region *model.Region
	Server *fakeec2.Server
	Fabric *fabric.Fabric
	// EC2 is an SDK client of the server.
	EC2    *ec2.Client
	VPC    string
	Subnet string
}

// WorldOptions shape a World; zero values are the common case.
type WorldOptions struct {
	Seed       uint64
	SubnetCIDR string // default 10.0.0.0/24 in the VPC 10.0.0.0/16
	Internet   bool
	// VLAN is the trunk datapath (nil: the fabric probes the kernel).
	VLAN vlan.Datapath
}

// NewWorld builds a world; prefix starts its name (and its kernel objects').
func NewWorld(t TB, prefix string, o WorldOptions) *World {
	t.Helper()
	if o.SubnetCIDR == "" {
		o.SubnetCIDR = "10.0.0.0/24"
	}
	w := &World{Name: Name(prefix, 7)}
	w.Region = model.NewRegion(model.Options{Seed: o.Seed})
	w.Server = fakeec2.NewServer(w.Region, fakeec2.ServerOptions{})
	hs := httptest.NewServer(w.Server)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = w.Server.Close() })
	w.EC2 = ec2.New(ec2.Options{Region: w.Region.Name(), BaseEndpoint: aws.String(hs.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		HTTPClient:  httpx.BodyCopyClient{}, Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 1 })})
	v, err := w.Region.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	must(t, err, "vpc")
	w.VPC = v.ID
	sn, err := w.Region.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix(o.SubnetCIDR)})
	must(t, err, "subnet")
	w.Subnet = sn.ID
	w.Fabric, err = fabric.New(fabric.Config{Name: w.Name, Region: w.Region, IMDS: w.Server.IMDS(), EC2: w.Server.APIHandler(), Internet: o.Internet, VLAN: o.VLAN})
	must(t, err, "fabric")
	t.Cleanup(func() {
		must(t, w.Fabric.Close(), "fabric close")
		if left, _ := netx.ListNamed(w.Name + "-"); len(left) > 0 {
			t.Fatalf("namespaces left after the fabric closed: %v", left)
		}
	})
	return w
}

// Sync waits until the fabric has made every change real.
func (w *World) Sync(t TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, w.Fabric.WaitSynced(ctx), "fabric sync")
}

// Launch runs an instance of type typ in the world's subnet and waits for
// its namespace.
func (w *World) Launch(t TB, typ string) model.Instance {
	t.Helper()
	insts, err := w.Region.RunInstances(model.RunInstancesInput{InstanceType: typ, SubnetID: w.Subnet})
	must(t, err, "RunInstances")
	w.Sync(t)
	return insts[0]
}

// Namespace returns an instance's namespace: path, name and an open handle
// (closed when the test ends).
func (w *World) Namespace(t TB, inst model.Instance) (string, string, ns.NetNS) {
	t.Helper()
	p, ok := w.Fabric.NodeNamespace(inst.ID)
	if !ok {
		t.Fatalf("no namespace for %s", inst.ID)
	}
	h, err := ns.GetNS(p)
	must(t, err, "namespace")
	t.Cleanup(func() { _ = h.Close() })
	return p, filepath.Base(p), h
}

// IpamdEnv is the environment of an ipamd run inside a world's instance:
// credentials, the fabric's EC2 and IMDS addresses, and its socket,
// checkpoint and log under dir; extra KEY=VALUE entries are appended.
func IpamdEnv(dir string, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"AWS_ACCESS_KEY_ID=AKIDVPCLABNODE", "AWS_SECRET_ACCESS_KEY=vpclab", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_ENDPOINT=" + fabric.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://" + fabric.IMDSAddr,
		"VPCLAB_IPAMD_SOCKET=" + filepath.Join(dir, "ipamd.sock"), "AWS_VPC_K8S_CNI_BACKING_STORE=" + filepath.Join(dir, "ipam.json"),
		"AWS_VPC_K8S_CNI_LOG_FILE=" + filepath.Join(dir, "ipamd.log")}, extra...)
}

// Ipamd is an ipamd process inside an instance's namespace.
type Ipamd struct {
	Dir    string // socket, checkpoint and log
	Conn   *grpc.ClientConn
	cmd    *exec.Cmd
	exited chan struct{}
}

// Socket is the ipamd's gRPC socket.
func (p *Ipamd) Socket() string { return filepath.Join(p.Dir, "ipamd.sock") }

// Log returns the last lines of the ipamd's log.
func (p *Ipamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "ipamd.log"))
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(len(lines)-40, 0):], "\n")
}

// Kill SIGKILLs the ipamd (its process group) and waits for it.
func (p *Ipamd) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Exited says whether the process has exited.
func (p *Ipamd) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// StartIpamd runs bin (an ipamd) in namespace nsName with IpamdEnv(dir,
// env…), and waits until its gRPC health check answers SERVING. It is
// killed when the test ends.
func StartIpamd(t TB, nsName, bin, dir string, env ...string) *Ipamd {
	t.Helper()
	p := &Ipamd{Dir: dir, cmd: exec.Command("ip", "netns", "exec", nsName, bin), exited: make(chan struct{})}
	p.cmd.Env = IpamdEnv(dir, env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, p.cmd.Start(), "start ipamd")
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.Kill)
	conn, err := grpc.NewClient("unix://"+p.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err, "grpc client")
	t.Cleanup(func() { _ = conn.Close() })
	p.Conn = conn
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if p.Exited() {
			t.Fatalf("ipamd exited:\n%s", p.Log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipamd not serving after 30 s (%v, %v):\n%s", r, err, p.Log())
		}
	}
}

// HTTPIn is an HTTP client whose connections start inside ns.
func HTTPIn(n ns.NetNS) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(n), DisableKeepAlives: true}}
}
