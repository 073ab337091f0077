package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/cli"
)

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Demo brings up a small lab named name (vpcdemo when empty), shows pods
// getting VPC addresses, a throttling episode and an exhausted subnet,
// checks the invariants, then tears everything down; also when ctx is
// cancelled (Ctrl-C), at any moment.
func Demo(ctx context.Context, stdout io.Writer, name string) error {
	start := time.Now()
	cfg := Default()
	cfg.Name, cfg.Owner = "vpcdemo", "demo"
	if name != "" {
		cfg.Name = name
	}
	cfg.Subnets = append(cfg.Subnets[:1], SubnetConfig{Name: "tiny", CIDR: "192.168.200.0/28"})
	cfg.Nodes = []NodeConfig{{Name: "node", InstanceType: "m5.large", Count: 2}, {Name: "small", InstanceType: "t3.medium", Subnet: "tiny"}}
	cfg.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "200ms", "VPCLAB_IP_COOLDOWN": "1s", "VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "2s"}
	fmt.Fprintln(stdout, "== bringing up a lab: VPC 192.168.0.0/16, 2 × m5.large in a /19, 1 × t3.medium in a /28")
	interrupted := fmt.Errorf("interrupted; lab %s removed", cfg.Name)
	l, err := New(ctx, cfg, func(f string, a ...any) { fmt.Fprintf(stdout, "  ✓ "+f+"\n", a...) })
	if err != nil {
		if ctx.Err() != nil {
			return interrupted
		}
		return err
	}
	defer func() {
		_ = l.Close()
		fmt.Fprintf(stdout, "== torn down; the demo took %s\n", time.Since(start).Round(100*time.Millisecond))
	}()
	var web []*Pod
	for _, step := range []func(context.Context, io.Writer, *Lab) error{
		func(ctx context.Context, stdout io.Writer, l *Lab) (err error) {
			web, err = demoPods(ctx, stdout, l)
			return err
		},
		func(ctx context.Context, stdout io.Writer, l *Lab) error {
			return demoSecurityGroups(ctx, stdout, l, web[0], web[2])
		},
		demoThrottling, demoExhaustion,
	} {
		if err := step(ctx, stdout, l); err != nil {
			if ctx.Err() != nil {
				return interrupted
			}
			return err
		}
	}
	if err := l.CheckInvariants(ctx); err != nil {
		return fmt.Errorf("invariants: %w", err)
	}
	fmt.Fprintln(stdout, "\n== invariants hold: EC2 == ipamd == kernel, no address twice")
	fmt.Fprintln(stdout, "\n== to see a lab: vpclab up, then vpclab ui (a live page: topology, each node's pool, pod ADD/DEL, EC2 calls with the throttled ones marked);")
	fmt.Fprintln(stdout, "   vpclab scenario run throttling-storm --report storm.html writes the same for a scenario, with its steps")
	return nil
}

func demoPods(ctx context.Context, stdout io.Writer, l *Lab) ([]*Pod, error) {
	n1, n2 := l.Node("node-1"), l.Node("node-2")
	fmt.Fprintln(stdout, "\n== pods get addresses from the VPC")
	var pods []*Pod
	for i, n := range []*Node{n1, n1, n2} {
		p, err := n.AddPod(ctx, "default", fmt.Sprintf("web-%d", i))
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
		fmt.Fprintf(stdout, "  pod %-8s on %-7s %s\n", p.Name, n.Name, p.IP)
	}
	if err := pods[0].Ping(ctx, pods[2].IP.String()); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "  %s → %s across nodes: ok\n", pods[0].Name, pods[2].Name)
	printTopology(stdout, l)
	return pods, nil
}

// demoSecurityGroups moves to's node into a new group, shows a denied and
// then an allowed flow from from, and puts the node's groups back.
func demoSecurityGroups(ctx context.Context, stdout io.Writer, l *Lab, from, to *Pod) error {
	r, node := l.Region(), to.Node()
	fmt.Fprintf(stdout, "\n== security groups: %s's ENIs move into a new group \"web\" (no inbound rule)\n", node.Name)
	g, err := r.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: l.VPCID(), Name: "web", Description: "vpclab demo"})
	if err != nil {
		return err
	}
	before := map[string][]string{}
	for _, e := range r.NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == node.Instance.ID {
			before[e.ID] = e.SecurityGroups
			if err := r.ModifyNetworkInterfaceAttribute(model.ModifyNetworkInterfaceInput{ENIID: e.ID, SecurityGroups: []string{g.ID}}); err != nil {
				return err
			}
		}
	}
	if err := l.Fabric().WaitSynced(ctx); err != nil {
		return err
	}
	if _, err := from.Exec(ctx, "ping", "-c", "1", "-W", "1", to.IP.String()); err == nil {
		return fmt.Errorf("security groups: ping %s → %s passed, but %s admits nothing", from.Name, to.Name, g.ID)
	}
	fmt.Fprintf(stdout, "  %s → %s ping: dropped by %s at %s's ENI\n", from.Name, to.Name, g.ID, node.Name)
	cidr := netip.MustParsePrefix(l.cfg.VPCCIDR) // validated before bring-up
	added, err := r.AuthorizeRules(g.ID, false, []model.SGRule{{Protocol: "icmp", FromPort: 8, ToPort: -1, CIDR: cidr, Description: "echo requests from the VPC"}})
	if err != nil {
		return err
	}
	if err := l.Fabric().WaitSynced(ctx); err != nil {
		return err
	}
	if err := from.Ping(ctx, to.IP.String()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  %s allows icmp echo-request from %s (%s): the ping passes, its reply too (stateful)\n", g.ID, cidr, added[0].ID)
	for id, groups := range before {
		if err := r.ModifyNetworkInterfaceAttribute(model.ModifyNetworkInterfaceInput{ENIID: id, SecurityGroups: groups}); err != nil {
			return err
		}
	}
	return l.Fabric().WaitSynced(ctx)
}

func demoThrottling(ctx context.Context, stdout io.Writer, l *Lab) error {
	n2 := l.Node("node-2")
	fmt.Fprintln(stdout, "\n== throttling: AssignPrivateIpAddresses and CreateNetworkInterface answer RequestLimitExceeded for 3 s")
	if _, err := l.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", For: model.Duration(3 * time.Second)},
		faults.Rule{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", For: model.Duration(3 * time.Second)}); err != nil {
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
	if err := sleep(ctx, time.Until(t0.Add(3500*time.Millisecond))); err != nil {
		return err
	}
	for i := 0; i < 14 && failed > 0; i++ {
		if _, err := n2.AddPod(ctx, "burst", fmt.Sprintf("retry%d", i)); err == nil {
			ok++
			failed--
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	throttled := l.Events(ec2query.EventFilter{ErrorCode: "RequestLimitExceeded"})
	fmt.Fprintf(stdout, "  %d pods started; %d EC2 calls throttled; ipamd kept serving from its pool and backed off\n", ok, len(throttled))
	return nil
}

func demoExhaustion(ctx context.Context, stdout io.Writer, l *Lab) error {
	small := l.Node("small")
	fmt.Fprintln(stdout, "\n== exhaustion: the /28 subnet has 11 usable addresses")
	added := 0
	for i := 0; i < 20; i++ {
		if _, err := small.AddPod(ctx, "fill", fmt.Sprintf("f%d", i)); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stdout, "  pod %d refused: %s\n", i, cli.OneLine(err.Error()))
			break
		}
		added++
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	insufficient := l.Events(ec2query.EventFilter{ErrorCode: "InsufficientFreeAddressesInSubnet"})
	fmt.Fprintf(stdout, "  %d pods fit; %d InsufficientFreeAddressesInSubnet answers in the events\n", added, len(insufficient))
	if m, err := small.Metrics(); err == nil {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "awscni_total_ip_addresses") || strings.HasPrefix(line, "awscni_assigned_ip_addresses") || strings.HasPrefix(line, "awscni_no_available_ip_addresses") {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
		}
	}
	return nil
}

func printTopology(w io.Writer, l *Lab) {
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
