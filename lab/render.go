package lab

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/lab/k8s"
)

// Text renderings of what the control socket returns, as `vpclab` prints
// them.

// WriteStatus prints a lab's status: nodes with their ipamd, ENIs, subnets
// and pods.
func WriteStatus(w io.Writer, s Status) error {
	if !s.Ready {
		_, err := fmt.Fprintf(w, "lab %s is still coming up (owned by %s)\n", s.Name, s.Owner)
		return err
	}
	fmt.Fprintf(w, "lab %s  vpc %s  EC2 API %s  owner %s\n\n", s.Name, s.VPCID, s.EC2Endpoint, s.Owner)
	table(w, "NODE\tINSTANCE\tTYPE\tCNI\tIPAMD", func(row func(...any)) {
		for _, n := range s.Nodes {
			row(n.Name, n.InstanceID, n.InstanceType, n.CNI.Spec, n.Ipamd.Summary())
		}
	})
	// IMDS: "=" when the node's metadata service agrees with EC2, else how
	// it lags (addresses missing or extra, the ENI not listed yet, or
	// listed though EC2 has it no longer).
	table(w, "NODE\tENI\tDEV\tSUBNET\tADDRS\tUSED\tFREE\tPREFIXES\tGROUPS\tIMDS", func(row func(...any)) {
		for _, n := range s.Nodes {
			for _, e := range n.ENIs {
				row(n.Name, e.ID, e.Device, e.SubnetID, e.Addresses, e.Used, e.Free, strings.Join(e.Prefixes, ","), strings.Join(e.Groups, ","), e.IMDS.String())
			}
		}
	})
	table(w, "SUBNET\tCIDR\tAZ\tAVAILABLE", func(row func(...any)) {
		for _, sn := range s.Subnets {
			row(sn.ID, sn.CIDR, sn.AZ, sn.Available)
		}
	})
	return WritePods(w, s)
}

// WritePods prints a lab's pods.
func WritePods(w io.Writer, s Status) error {
	return table(w, "POD\tNODE\tIP", func(row func(...any)) {
		for _, n := range s.Nodes {
			for _, p := range n.Pods {
				row(p.Namespace+"/"+p.Name, n.Name, p.IP)
			}
		}
	})
}

// WriteFaults prints fault rules with their hit counts.
func WriteFaults(w io.Writer, rules []faults.Rule) error {
	return table(w, "ID\tACTION\tCODE\tCOUNT\tPROB\tLATENCY\tIMDS-LAG\tHITS\tLAST DELAYED", func(row func(...any)) {
		for _, x := range rules {
			last := ""
			if len(x.Delayed) > 0 {
				last = x.Delayed[len(x.Delayed)-1]
			}
			row(x.ID, x.Action, x.Code, x.Count, x.Probability, time.Duration(x.Latency), time.Duration(x.IMDSLag), x.Hits, last)
		}
	})
}

// WriteEvent prints one audit record as a line (OK for calls that
// succeeded), with how late instance metadata showed its changes, if late.
func WriteEvent(w io.Writer, r ec2query.Record) {
	code := r.ErrorCode
	if code == "" {
		code = "OK"
	}
	late := ""
	if n := r.VPCLab; n != nil {
		late = fmt.Sprintf("  imds +%s (visible %s)", time.Duration(n.IMDSLag), n.IMDSVisibleAt.Format(time.RFC3339Nano))
	}
	detail := ""
	if d := eventDetail(r); d != "" {
		detail = "  " + d
	}
	fmt.Fprintf(w, "%s  %-32s %-28s %s%s%s\n", r.EventTime.Format(time.RFC3339Nano), r.EventName, code, r.SourceIPAddress, detail, late)
}

// eventDetail summarises a security group call's request in one cell: the
// group and the rules (or rule ids) it adds, removes or changes; for
// ModifyNetworkInterfaceAttribute, the ENI and its new groups.
func eventDetail(r ec2query.Record) string {
	m, _ := r.RequestParameters.(map[string]any)
	if m == nil {
		return ""
	}
	str := func(v any) string { s, _ := v.(string); return s }
	list := func(v any) []any {
		if l, ok := v.([]any); ok {
			return l
		}
		if v != nil {
			return []any{v}
		}
		return nil
	}
	var parts []string
	switch {
	case strings.Contains(r.EventName, "SecurityGroup"):
		if g := str(m["groupId"]); g != "" {
			parts = append(parts, g)
		} else if n := str(m["groupName"]); n != "" {
			parts = append(parts, n)
		}
		for _, p := range list(m["ipPermissions"]) {
			pm, _ := p.(map[string]any)
			rule := str(pm["ipProtocol"])
			if from, to := str(pm["fromPort"]), str(pm["toPort"]); from != "" && from != "-1" {
				rule += " " + from
				if to != from {
					rule += "-" + to
				}
			}
			var peers []string
			for _, k := range [][2]string{{"ipRanges", "cidrIp"}, {"ipv6Ranges", "cidrIpv6"}, {"groups", "groupId"}} {
				for _, x := range list(pm[k[0]]) {
					if xm, ok := x.(map[string]any); ok {
						peers = append(peers, str(xm[k[1]]))
					}
				}
			}
			parts = append(parts, rule+" "+strings.Join(peers, ","))
		}
		for _, id := range list(m["securityGroupRuleId"]) {
			parts = append(parts, str(id))
		}
		for _, x := range list(m["securityGroupRule"]) {
			if xm, ok := x.(map[string]any); ok {
				parts = append(parts, str(xm["securityGroupRuleId"]))
			}
		}
	case r.EventName == "ModifyNetworkInterfaceAttribute" && m["securityGroupId"] != nil:
		var gs []string
		for _, g := range list(m["securityGroupId"]) {
			gs = append(gs, str(g))
		}
		parts = append(parts, str(m["networkInterfaceId"])+" groups "+strings.Join(gs, ","))
	}
	return strings.Join(parts, "; ")
}

// Summary is an ipamd's state in one cell: running (pid, restarts) or
// exited with its last log line.
func (s IpamdState) Summary() string {
	r := ""
	if s.Restarts > 0 {
		r = fmt.Sprintf(", %d restarts", s.Restarts)
	}
	switch s.State {
	case "running":
		return fmt.Sprintf("running (pid %d%s)", s.PID, r)
	case "exited":
		return fmt.Sprintf("EXITED %s%s: %s", s.Exit, r, s.LastLog)
	}
	return s.State
}

// table writes a header and rows, aligned, then a blank line.
func table(w io.Writer, header string, rows func(row func(...any))) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(func(cells ...any) {
		s := make([]string, len(cells))
		for i, c := range cells {
			s[i] = fmt.Sprint(c)
		}
		fmt.Fprintln(tw, strings.Join(s, "\t"))
	})
	err := tw.Flush()
	fmt.Fprintln(w)
	return err
}

// WriteSummary prints where a lab is and the commands to type next
// (nameHint is " --name N" when the lab has a name of its own).
func WriteSummary(w io.Writer, s Status, nameHint string) {
	fmt.Fprintf(w, "EC2 API: %s (region %s)\n", s.EC2Endpoint, s.Region)
	node := "node-1"
	for i, n := range s.Nodes {
		fmt.Fprintf(w, "node %-10s %s %-10s %s\n", n.Name, n.InstanceID, n.InstanceType, n.PrivateIP)
		if i == 0 {
			node = n.Name
		}
	}
	if s.Kubeconfig != "" {
		fmt.Fprintf(w, "kubeconfig: %s\nlab %s is up. Next:\n  vpclab kubectl get nodes -o wide%s\n  vpclab kubectl run web --image %s%s\n  vpclab kubectl get pods -o wide%s\n",
			s.Kubeconfig, s.Name, nameHint, k8s.AgnhostImage, nameHint, nameHint)
	} else {
		fmt.Fprintf(w, "lab %s is up. Next:\n  vpclab status%s\n  vpclab pods add default/web --node %s%s\n", s.Name, nameHint, node, nameHint)
	}
	fmt.Fprintf(w, "  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x /usr/bin/aws --endpoint-url %s --region %s ec2 describe-network-interfaces   # AWS CLI v2\n", s.EC2Endpoint, s.Region)
	fmt.Fprintf(w, "  vpclab ui%s   # a live page: topology, pools, pods and EC2 calls over time\n", nameHint)
	fmt.Fprintf(w, "  vpclab down%s\n", nameHint)
}
