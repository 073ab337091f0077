package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/lab"
)

const stateDir = "/run/vpclab"

func supervisorSock(name string) string { return filepath.Join(stateDir, name+".sock") }

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i:]
			break
		}
	}
	pos, err := parseFlags(fs, args)
	return append(pos, tail...), err
}

func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if len(args) > 0 && args[0] == "--" {
			return append(pos, args...), nil
		}
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, ",") }
func (e *envFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("--env %q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// labConfig builds the lab config from up's flags.
func labConfig(args []string) (lab.Config, bool, error) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	file := fs.String("f", "", "lab YAML file")
	name := fs.String("name", "vpclab", "lab name")
	nodes := fs.Int("nodes", 0, "number of nodes")
	itype := fs.String("instance-type", "", "instance type of the nodes")
	cidr := fs.String("subnet-cidr", "", "CIDR of the (first) subnet")
	fg := fs.Bool("foreground", false, "run the lab in this process until interrupted")
	var env envFlag
	fs.Var(&env, "env", "aws-node environment KEY=VALUE (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return lab.Config{}, false, err
	}
	if len(pos) > 0 {
		return lab.Config{}, false, usagef("unexpected argument %q", pos[0])
	}
	cfg := lab.DefaultConfig()
	if *file != "" {
		if cfg, err = lab.LoadConfig(*file); err != nil {
			return lab.Config{}, false, usagef("-f %s", err)
		}
	}
	if cfg.Name == "" || *name != "vpclab" {
		cfg.Name = *name
	}
	if *nodes < 0 || *nodes > 200 {
		return lab.Config{}, false, usagef("--nodes %d: want 1..200", *nodes)
	}
	if *nodes > 0 {
		cfg.Nodes = cfg.Nodes[:1]
		cfg.Nodes[0].Count = *nodes
	}
	if *itype != "" {
		for i := range cfg.Nodes {
			cfg.Nodes[i].InstanceType = *itype
		}
	}
	if *cidr != "" {
		cfg.Subnets[0].CIDR = *cidr
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		cfg.Env[k] = v
	}
	if err := cfg.Validate(); err != nil {
		return lab.Config{}, false, usagef("%v", err)
	}
	return cfg, *fg, nil
}

func needRoot() error {
	if os.Geteuid() != 0 {
		return usagef("must run as root (network and mount namespaces)")
	}
	return nil
}

func cmdUp(args []string, stdout io.Writer) error {
	cfg, fg, err := labConfig(args)
	if err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(stateDir, cfg.Name)); err == nil {
		return usagef("lab %q already exists (vpclab down --name %s, or vpclab gc)", cfg.Name, cfg.Name)
	}
	if fg {
		return serve(cfg, stdout)
	}
	b, _ := json.Marshal(cfg)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	cfgFile := filepath.Join(stateDir, cfg.Name+".config.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return err
	}
	self, _ := os.Executable()
	cmd := exec.Command(self, "serve-lab", cfgFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, _ := cmd.StdoutPipe()
	logf, _ := os.Create(filepath.Join(stateDir, cfg.Name+".log"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			fmt.Fprintf(stdout, "lab %s is up; `vpclab status`, `vpclab down --name %s`\n", cfg.Name, cfg.Name)
			return nil
		}
		if strings.HasPrefix(line, "error: ") {
			_ = cmd.Wait()
			return fmt.Errorf("%s", strings.TrimPrefix(line, "error: "))
		}
		fmt.Fprintln(stdout, line)
	}
	_ = cmd.Wait()
	b, _ = os.ReadFile(filepath.Join(stateDir, cfg.Name+".log"))
	return fmt.Errorf("supervisor exited: %s", strings.TrimSpace(string(b)))
}

func cmdServeLab(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("serve-lab CONFIG")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	os.Remove(args[0])
	var cfg lab.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	return serve(cfg, stdout)
}

// serve runs a lab and its supervisor API until down or a signal.
func serve(cfg lab.Config, stdout io.Writer) error {
	ctx := context.Background()
	l, err := lab.New(ctx, cfg, func(f string, a ...any) { fmt.Fprintf(stdout, "  ✓ "+f+"\n", a...) })
	if err != nil {
		fmt.Fprintf(stdout, "error: %v\n", firstLine(err.Error()))
		return err
	}
	defer l.Close()
	sock := supervisorSock(cfg.Name)
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintf(stdout, "error: %v\n", err)
		return err
	}
	defer os.Remove(sock)
	done := make(chan struct{})
	srv := &http.Server{Handler: supervisor(l, done)}
	go func() { _ = srv.Serve(ln) }()
	printSummary(stdout, l)
	fmt.Fprintln(stdout, "ready")
	sig := make(chan os.Signal, 1)
	signalNotify(sig)
	select {
	case <-done:
	case <-sig:
	}
	_ = srv.Close()
	return nil
}

func printSummary(w io.Writer, l *lab.Lab) {
	fmt.Fprintf(w, "EC2 API: %s   (aws --endpoint-url %s ec2 describe-network-interfaces)\n", l.EC2Endpoint(), l.EC2Endpoint())
	for _, n := range l.Nodes() {
		fmt.Fprintf(w, "node %-10s %s %-10s %s\n", n.Name, n.Instance.ID, n.Instance.Type, n.Instance.PrivateIP)
	}
}

// Status is `vpclab status -o json`.
type Status struct {
	Name        string         `json:"name"`
	EC2Endpoint string         `json:"ec2Endpoint"`
	VPCID       string         `json:"vpcId"`
	Nodes       []NodeStatus   `json:"nodes"`
	Subnets     []SubnetStatus `json:"subnets"`
}

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name         string      `json:"name"`
	InstanceID   string      `json:"instanceId"`
	InstanceType string      `json:"instanceType"`
	PrivateIP    string      `json:"privateIp"`
	NetNS        string      `json:"netns"`
	MountNS      string      `json:"mountns"`
	ENIs         []ENIStatus `json:"enis"`
	Pods         []PodStatus `json:"pods"`
}

// ENIStatus is one ENI of a node.
type ENIStatus struct {
	ID        string   `json:"id"`
	Device    int      `json:"device"`
	SubnetID  string   `json:"subnetId"`
	Addresses int      `json:"addresses"`
	Used      int      `json:"used"`
	Free      int      `json:"free"`
	Prefixes  []string `json:"prefixes,omitempty"`
}

// PodStatus is one pod.
type PodStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	IP        string `json:"ip"`
	Node      string `json:"node"`
	NetNS     string `json:"netns"`
}

// SubnetStatus is one subnet's free-address count.
type SubnetStatus struct {
	ID        string `json:"id"`
	CIDR      string `json:"cidr"`
	AZ        string `json:"az"`
	Available int    `json:"available"`
}

func status(l *lab.Lab) Status {
	s := Status{Name: l.Name(), EC2Endpoint: l.EC2Endpoint(), VPCID: l.VPCID()}
	enis := l.Region().NetworkInterfaces()
	for _, n := range l.Nodes() {
		ns := NodeStatus{Name: n.Name, InstanceID: n.Instance.ID, InstanceType: n.Instance.Type, PrivateIP: n.Instance.PrivateIP.String(), NetNS: n.NetNS(), MountNS: n.MountNS()}
		pods := n.Pods()
		for _, p := range pods {
			ns.Pods = append(ns.Pods, PodStatus{Namespace: p.Namespace, Name: p.Name, IP: p.IP.String(), Node: n.Name, NetNS: p.NetNS()})
		}
		for _, e := range enis {
			if e.Attachment == nil || e.Attachment.InstanceID != n.Instance.ID {
				continue
			}
			es := ENIStatus{ID: e.ID, Device: e.Attachment.DeviceIndex, SubnetID: e.SubnetID, Addresses: 1 + len(e.SecondaryIPs)}
			for _, p := range pods {
				for _, a := range e.SecondaryIPs {
					if a == p.IP {
						es.Used++
					}
				}
				for _, pf := range e.Prefixes {
					if pf.Contains(p.IP) {
						es.Used++
					}
				}
			}
			for _, pf := range e.Prefixes {
				es.Prefixes = append(es.Prefixes, pf.String())
			}
			es.Free = len(e.SecondaryIPs) + 16*len(e.Prefixes) - es.Used
			ns.ENIs = append(ns.ENIs, es)
		}
		sort.Slice(ns.ENIs, func(i, j int) bool { return ns.ENIs[i].Device < ns.ENIs[j].Device })
		s.Nodes = append(s.Nodes, ns)
	}
	for _, sn := range l.Region().Subnets() {
		s.Subnets = append(s.Subnets, SubnetStatus{ID: sn.ID, CIDR: sn.CIDR.String(), AZ: sn.AZ, Available: sn.AvailableIPs})
	}
	return s
}

// supervisor is the HTTP API a running lab serves on its unix socket.
func supervisor(l *lab.Lab, done chan struct{}) http.Handler {
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, code int, err error) { js(w, code, map[string]string{"error": err.Error()}) }
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { js(w, 200, status(l)) })
	mux.HandleFunc("POST /pods", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Node, Namespace, Name string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			fail(w, 400, err)
			return
		}
		n := l.Node(req.Node)
		if req.Node == "" {
			n = l.Nodes()[0]
		}
		if n == nil {
			fail(w, 404, fmt.Errorf("no node %q", req.Node))
			return
		}
		p, err := n.AddPod(r.Context(), req.Namespace, req.Name)
		if err != nil {
			fail(w, 409, err)
			return
		}
		js(w, 201, PodStatus{Namespace: p.Namespace, Name: p.Name, IP: p.IP.String(), Node: n.Name, NetNS: p.NetNS()})
	})
	mux.HandleFunc("DELETE /pods/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		for _, n := range l.Nodes() {
			for _, p := range n.Pods() {
				if p.Namespace == r.PathValue("ns") && p.Name == r.PathValue("name") {
					if err := n.DelPod(r.Context(), p); err != nil {
						fail(w, 500, err)
						return
					}
					w.WriteHeader(204)
					return
				}
			}
		}
		fail(w, 404, fmt.Errorf("no pod %s/%s", r.PathValue("ns"), r.PathValue("name")))
	})
	mux.HandleFunc("GET /nodes/{name}/metrics", func(w http.ResponseWriter, r *http.Request) {
		n := l.Node(r.PathValue("name"))
		if n == nil {
			fail(w, 404, fmt.Errorf("no node %q", r.PathValue("name")))
			return
		}
		m, err := n.Metrics()
		if err != nil {
			fail(w, 502, err)
			return
		}
		_, _ = io.WriteString(w, m)
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
		go func() { time.Sleep(50 * time.Millisecond); close(done) }()
	})
	return mux
}

// client talks to a running lab's supervisor.
func client(name string) (*http.Client, error) {
	sock := supervisorSock(name)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no running lab %q (vpclab up first)", name)
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}, nil
}

func call(name, method, path string, body any, out any) error {
	c, err := client(name)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://lab"+path, rd)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if s, ok := out.(*string); ok {
			*s = string(b)
			return nil
		}
		return json.Unmarshal(b, out)
	}
	return nil
}

func nameFlag(fs *flag.FlagSet) *string {
	return fs.String("name", "vpclab", "lab name")
}

func cmdDown(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	name := nameFlag(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	if err := call(*name, "POST", "/down", nil, nil); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(stateDir, *name)); os.IsNotExist(err) {
			os.Remove(filepath.Join(stateDir, *name+".log"))
			fmt.Fprintf(stdout, "lab %s is down\n", *name)
			return nil
		}
	}
	return fmt.Errorf("lab %s did not shut down within a minute (vpclab gc)", *name)
}

func cmdGC(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	if err := needRoot(); err != nil {
		return err
	}
	for _, n := range lab.Labs(stateDir) {
		if c, err := client(n); err == nil {
			if resp, err := c.Get("http://lab/status"); err == nil {
				resp.Body.Close()
				continue // alive
			}
		}
		if err := lab.GC(n, stateDir); err != nil {
			return err
		}
		os.Remove(supervisorSock(n))
		fmt.Fprintf(stdout, "removed leftovers of lab %s\n", n)
	}
	// Supervisor logs of labs that are gone.
	logs, _ := filepath.Glob(filepath.Join(stateDir, "*.log"))
	for _, l := range logs {
		n := strings.TrimSuffix(filepath.Base(l), ".log")
		if _, err := os.Stat(filepath.Join(stateDir, n)); os.IsNotExist(err) {
			os.Remove(l)
		}
	}
	return nil
}

func cmdStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	name := nameFlag(fs)
	format := fs.String("o", "table", "table or json")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return usagef("-o %q: want table or json", *format)
	}
	var s Status
	if err := call(*name, "GET", "/status", nil, &s); err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(stdout, "lab %s  vpc %s  EC2 API %s\n\n", s.Name, s.VPCID, s.EC2Endpoint)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tINSTANCE\tTYPE\tENI\tDEV\tSUBNET\tADDRS\tUSED\tFREE\tPREFIXES")
	for _, n := range s.Nodes {
		for _, e := range n.ENIs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\n", n.Name, n.InstanceID, n.InstanceType, e.ID, e.Device, e.SubnetID, e.Addresses, e.Used, e.Free, strings.Join(e.Prefixes, ","))
		}
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tCIDR\tAZ\tAVAILABLE")
	for _, sn := range s.Subnets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", sn.ID, sn.CIDR, sn.AZ, sn.Available)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	return printPods(stdout, s)
}

func printPods(stdout io.Writer, s Status) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP")
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\n", p.Namespace, p.Name, n.Name, p.IP)
		}
	}
	return tw.Flush()
}

func splitPod(s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		ns, name = "default", s
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", usagef("pod %q: want NAMESPACE/NAME", s)
	}
	return ns, name, nil
}

func cmdPods(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("pods add|del|list")
	}
	fs := flag.NewFlagSet("pods", flag.ContinueOnError)
	name := nameFlag(fs)
	node := fs.String("node", "", "node for pods add (default the first)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "add", "del":
		if len(pos) != 1 {
			return usagef("pods %s NAMESPACE/NAME", args[0])
		}
		ns, pod, err := splitPod(pos[0])
		if err != nil {
			return err
		}
		if args[0] == "del" {
			return call(*name, "DELETE", "/pods/"+url.PathEscape(ns)+"/"+url.PathEscape(pod), nil, nil)
		}
		var p PodStatus
		if err := call(*name, "POST", "/pods", map[string]string{"Node": *node, "Namespace": ns, "Name": pod}, &p); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s/%s on %s: %s\n", p.Namespace, p.Name, p.Node, p.IP)
		return nil
	case "list":
		var s Status
		if err := call(*name, "GET", "/status", nil, &s); err != nil {
			return err
		}
		return printPods(stdout, s)
	}
	return usagef("pods %q: want add, del or list", args[0])
}

func findPod(name, ref string) (PodStatus, error) {
	ns, pod, err := splitPod(ref)
	if err != nil {
		return PodStatus{}, err
	}
	var s Status
	if err := call(name, "GET", "/status", nil, &s); err != nil {
		return PodStatus{}, err
	}
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if p.Namespace == ns && p.Name == pod {
				return p, nil
			}
		}
	}
	return PodStatus{}, usagef("no pod %s/%s", ns, pod)
}

func cmdExec(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	name := nameFlag(fs)
	node := fs.String("node", "", "run on this node (its network and mount namespaces) instead of in a pod")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	var nsArgs []string
	if *node != "" {
		if len(pos) < 2 || pos[0] != "--" {
			return usagef("exec --node NODE -- CMD...")
		}
		var s Status
		if err := call(*name, "GET", "/status", nil, &s); err != nil {
			return err
		}
		for _, n := range s.Nodes {
			if n.Name == *node {
				nsArgs = []string{"--net=" + n.NetNS, "--mount=" + n.MountNS}
			}
		}
		if nsArgs == nil {
			return usagef("no node %q", *node)
		}
		pos = append([]string{""}, pos...)
	} else {
		if len(pos) < 3 || pos[1] != "--" {
			return usagef("exec POD -- CMD... (or exec --node NODE -- CMD...)")
		}
		p, err := findPod(*name, pos[0])
		if err != nil {
			return err
		}
		nsArgs = []string{"--net=" + p.NetNS}
	}
	cmd := exec.Command("nsenter", append(append(nsArgs, "--"), pos[2:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	return cmd.Run()
}

func cmdPing(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	name := nameFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("ping POD_A POD_B|IP")
	}
	a, err := findPod(*name, pos[0])
	if err != nil {
		return err
	}
	dst := pos[1]
	if net.ParseIP(dst) == nil {
		b, err := findPod(*name, dst)
		if err != nil {
			return err
		}
		dst = b.IP
	}
	out, err := exec.Command("nsenter", "--net="+a.NetNS, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", dst).CombinedOutput()
	fmt.Fprint(stdout, string(out))
	if err != nil {
		return fmt.Errorf("ping %s -> %s failed", pos[0], pos[1])
	}
	return nil
}

// control calls the fake EC2's control API of a running lab.
func control(name, method, path string, body any, out any) error {
	var s Status
	if err := call(name, "GET", "/status", nil, &s); err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.EC2Endpoint+fakeec2.ControlPrefix+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		return usagef("%s", e.Error)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

func cmdEvents(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	name := nameFlag(fs)
	action := fs.String("action", "", "only this EC2 action")
	errorsOnly := fs.Bool("errors", false, "only failed calls")
	follow := fs.Bool("follow", false, "keep printing new events")
	format := fs.String("o", "json", "json (one record per line) or table")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *format != "json" && *format != "table" {
		return usagef("-o %q: want json or table", *format)
	}
	var since uint64
	for {
		q := url.Values{}
		if *action != "" {
			q.Set("action", *action)
		}
		if *errorsOnly {
			q.Set("errors", "true")
		}
		q.Set("since", strconv.FormatUint(since, 10))
		if *follow {
			q.Set("wait", "10s")
		}
		var recs []map[string]any
		if err := control(*name, "GET", "events?"+q.Encode(), nil, &recs); err != nil {
			return err
		}
		for _, r := range recs {
			if seq, ok := r["seq"].(float64); ok && uint64(seq) > since {
				since = uint64(seq)
			}
			if *format == "json" {
				b, _ := json.Marshal(r)
				fmt.Fprintln(stdout, string(b))
			} else {
				fmt.Fprintf(stdout, "%v  %-32v %-28v %v\n", r["eventTime"], r["eventName"], r["errorCode"], r["sourceIPAddress"])
			}
		}
		if !*follow {
			return nil
		}
	}
}

func cmdFaults(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("faults add|list|clear")
	}
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	name := nameFlag(fs)
	r := fakeec2.FaultRule{}
	fs.StringVar(&r.Action, "action", "", "EC2 action or glob")
	fs.StringVar(&r.Code, "code", "", "EC2 error code")
	fs.IntVar(&r.Count, "count", 0, "hit at most N calls")
	fs.Float64Var(&r.Probability, "probability", 0, "hit probability (0 = always)")
	lat := fs.Duration("latency", 0, "added latency")
	imdsLag := fs.Duration("imds-lag", 0, "delay of the call's changes in IMDS")
	forD := fs.Duration("for", 0, "active window")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	switch args[0] {
	case "add":
		r.Latency, r.IMDSLag, r.For = fakeec2.Duration(*lat), fakeec2.Duration(*imdsLag), fakeec2.Duration(*forD)
		if err := r.Validate(); err != nil {
			return usagef("%v", err)
		}
		var added []fakeec2.FaultRule
		if err := control(*name, "POST", "faults", r, &added); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s\n", added[0].ID)
		return nil
	case "list":
		var rules []fakeec2.FaultRule
		if err := control(*name, "GET", "faults", nil, &rules); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tACTION\tCODE\tCOUNT\tPROB\tLATENCY\tIMDS-LAG\tHITS")
		for _, x := range rules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%g\t%v\t%v\t%d\n", x.ID, x.Action, x.Code, x.Count, x.Probability, time.Duration(x.Latency), time.Duration(x.IMDSLag), x.Hits)
		}
		return tw.Flush()
	case "clear":
		return control(*name, "DELETE", "faults", nil, nil)
	}
	return usagef("faults %q: want add, list or clear", args[0])
}

func cmdThrottle(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("throttle set|off")
	}
	fs := flag.NewFlagSet("throttle", flag.ContinueOnError)
	name := nameFlag(fs)
	scale := fs.Float64("scale", 1, "refill time scale")
	action := fs.String("action", "", "override one action's bucket")
	capacity := fs.Float64("capacity", 0, "bucket capacity for --action")
	refill := fs.Float64("refill", 0, "tokens per second for --action")
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	cfg := fakeec2.ThrottleConfig{}
	switch args[0] {
	case "off":
	case "set":
		cfg.Enabled, cfg.TimeScale = true, *scale
		if *action != "" {
			if *capacity < 1 || *refill < 0 {
				return usagef("--capacity must be ≥ 1 and --refill ≥ 0")
			}
			b, _ := json.Marshal(map[string]map[string]float64{*action: {"capacity": *capacity, "refill": *refill}})
			_ = json.Unmarshal(b, &cfg.Overrides)
		}
	default:
		return usagef("throttle %q: want set or off", args[0])
	}
	if err := control(*name, "PUT", "throttling", cfg, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "throttling %s\n", map[bool]string{true: "on", false: "off"}[cfg.Enabled])
	return nil
}

func cmdMetrics(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	name := nameFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("metrics NODE")
	}
	var m string
	if err := call(*name, "GET", "/nodes/"+url.PathEscape(pos[0])+"/metrics", nil, &m); err != nil {
		return err
	}
	fmt.Fprint(stdout, m)
	return nil
}
