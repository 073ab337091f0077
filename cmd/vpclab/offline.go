package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/lab"
)

func signalNotify(c chan os.Signal) { signal.Notify(c, os.Interrupt, syscall.SIGTERM) }

// MaxPods is the EKS max-pods figure for an instance type: ENIs (of the
// default network card) × (IPv4 per ENI − 1) + 2; with prefix delegation
// each slot holds 16 addresses and the result is capped at 110 (fewer than
// 30 vCPUs) or 250.
func MaxPods(t *fakeec2.InstanceType, prefix bool) int {
	enis := t.MaxENIs
	if c, ok := t.Card(t.DefaultCard); ok && c.MaxENIs > 0 {
		enis = c.MaxENIs
	}
	if !prefix {
		return enis*(t.IPv4PerENI-1) + 2
	}
	n := enis*(t.IPv4PerENI-1)*16 + 2
	limit := 250
	if t.VCPUs > 0 && t.VCPUs < 30 {
		limit = 110
	}
	return min(n, limit)
}

func cmdMaxPods(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("max-pods", flag.ContinueOnError)
	itype := fs.String("instance-type", "", "instance type")
	prefix := fs.Bool("prefix-delegation", false, "prefix delegation (ENABLE_PREFIX_DELEGATION)")
	all := fs.Bool("all", false, "a table of every instance type")
	_ = fs.String("cni-version", "", "VPC CNI version (the limits are the same for v1.9+)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *all {
		names := fakeec2.InstanceTypeNames()
		sort.Strings(names)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "INSTANCE TYPE\tMAX PODS\tMAX PODS (PREFIX)")
		for _, n := range names {
			t, _ := fakeec2.LookupInstanceType(n)
			fmt.Fprintf(tw, "%s\t%d\t%d\n", n, MaxPods(t, false), MaxPods(t, true))
		}
		return tw.Flush()
	}
	if *itype == "" {
		return usagef("--instance-type is required (or --all)")
	}
	t, ok := fakeec2.LookupInstanceType(*itype)
	if !ok {
		return usagef("--instance-type %q: unknown instance type", *itype)
	}
	fmt.Fprintln(stdout, MaxPods(t, *prefix))
	return nil
}

// cmdDemo brings up a small lab, shows pods getting VPC addresses, a
// throttling episode and an exhausted subnet, then tears everything down.
func cmdDemo(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	if err := needRoot(); err != nil {
		return err
	}
	start := time.Now()
	ctx := context.Background()
	cfg := lab.DefaultConfig()
	cfg.Name = "vpcdemo"
	cfg.Subnets = append(cfg.Subnets[:1], lab.SubnetConfig{Name: "tiny", CIDR: "192.168.200.0/28", AZ: "eu-west-1a"})
	cfg.Nodes = []lab.NodeConfig{{Name: "node", InstanceType: "m5.large", Count: 2}, {Name: "small", InstanceType: "t3.medium", Subnet: "tiny"}}
	cfg.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "200ms", "VPCLAB_IP_COOLDOWN": "1s", "VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "2s"}
	if _, err := os.Stat(stateDir + "/" + cfg.Name); err == nil {
		_ = lab.GC(cfg.Name, stateDir)
	}
	fmt.Fprintln(stdout, "== bringing up a lab: VPC 192.168.0.0/16, 2 × m5.large in a /19, 1 × t3.medium in a /28")
	l, err := lab.New(ctx, cfg, func(f string, a ...any) { fmt.Fprintf(stdout, "  ✓ "+f+"\n", a...) })
	if err != nil {
		return err
	}
	defer func() {
		_ = l.Close()
		fmt.Fprintf(stdout, "== torn down; the demo took %s\n", time.Since(start).Round(100*time.Millisecond))
	}()
	n1, n2, small := l.Node("node-1"), l.Node("node-2"), l.Node("small")
	fmt.Fprintln(stdout, "\n== pods get addresses from the VPC")
	var pods []*lab.Pod
	for i, n := range []*lab.Node{n1, n1, n2} {
		p, err := n.AddPod(ctx, "default", fmt.Sprintf("web-%d", i))
		if err != nil {
			return err
		}
		pods = append(pods, p)
		fmt.Fprintf(stdout, "  pod %-8s on %-7s %s\n", p.Name, n.Name, p.IP)
	}
	if err := pods[0].Ping(ctx, pods[2].IP.String()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  %s → %s across nodes: ok\n", pods[0].Name, pods[2].Name)
	printTopology(stdout, l)

	fmt.Fprintln(stdout, "\n== throttling: AssignPrivateIpAddresses and CreateNetworkInterface answer RequestLimitExceeded for 3 s")
	if _, err := l.Faults().Add(fakeec2.FaultRule{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", For: fakeec2.Duration(3 * time.Second)},
		fakeec2.FaultRule{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", For: fakeec2.Duration(3 * time.Second)}); err != nil {
		return err
	}
	t0 := time.Now()
	ok, failed := 0, 0
	for i := 0; i < 14; i++ {
		if _, err := n2.AddPod(ctx, "burst", fmt.Sprintf("b%d", i)); err == nil {
			ok++
		} else {
			failed++
		}
	}
	time.Sleep(time.Until(t0.Add(3500 * time.Millisecond)))
	for i := 0; i < 14 && failed > 0; i++ {
		if _, err := n2.AddPod(ctx, "burst", fmt.Sprintf("retry%d", i)); err == nil {
			ok++
			failed--
		}
	}
	throttled := l.Events(fakeec2.EventFilter{ErrorCode: "RequestLimitExceeded"})
	fmt.Fprintf(stdout, "  %d pods started; %d EC2 calls throttled; ipamd kept serving from its pool and backed off\n", ok, len(throttled))

	fmt.Fprintln(stdout, "\n== exhaustion: the /28 subnet has 11 usable addresses")
	added := 0
	for i := 0; i < 20; i++ {
		if _, err := small.AddPod(ctx, "fill", fmt.Sprintf("f%d", i)); err != nil {
			fmt.Fprintf(stdout, "  pod %d refused: %s\n", i, firstLine(err.Error()))
			break
		}
		added++
	}
	time.Sleep(time.Second)
	insufficient := l.Events(fakeec2.EventFilter{ErrorCode: "InsufficientFreeAddressesInSubnet"})
	fmt.Fprintf(stdout, "  %d pods fit; %d InsufficientFreeAddressesInSubnet answers in the events\n", added, len(insufficient))
	if m, err := small.Metrics(); err == nil {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "awscni_total_ip_addresses") || strings.HasPrefix(line, "awscni_assigned_ip_addresses") || strings.HasPrefix(line, "awscni_no_available_ip_addresses") {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
		}
	}
	if err := l.CheckInvariants(ctx); err != nil {
		return fmt.Errorf("invariants: %w", err)
	}
	fmt.Fprintln(stdout, "\n== invariants hold: EC2 == ipamd == kernel, no address twice")
	return nil
}

func printTopology(w io.Writer, l *lab.Lab) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tINSTANCE\tENI\tDEV\tADDRESSES")
	for _, n := range l.Nodes() {
		for _, e := range l.Region().NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.Instance.ID {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", n.Name, n.Instance.ID, e.ID, e.Attachment.DeviceIndex, 1+len(e.SecondaryIPs))
			}
		}
	}
	tw.Flush()
}
