package scenarios

import (
	"time"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

// fast are the pool timers scaled for CI (the VPC CNI's 5 s tick, 30 s
// decrease spacing, 1 min ENI lifetime and 30 s cooldown would make each
// scenario minutes long without changing its decisions). The real VPC CNI
// ignores the VPCLAB_* knobs; of these it has only IP_COOLDOWN_PERIOD.
func fast(extra map[string]string) map[string]string {
	env := map[string]string{"VPCLAB_POOL_INTERVAL": "100ms", "VPCLAB_DECREASE_INTERVAL": "200ms", "VPCLAB_MIN_ENI_LIFETIME": "0s",
		"VPCLAB_IP_COOLDOWN": "0s", "IP_COOLDOWN_PERIOD": "0", "VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "500ms", "VPCLAB_RECONCILE_INTERVAL": "2s"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func world(typ, cidr string, nodes int, env map[string]string) lab.Config {
	return lab.Config{VPCCIDR: "10.0.0.0/16", Subnets: []lab.SubnetConfig{{Name: "a", CIDR: cidr}},
		Nodes: []lab.NodeConfig{{Name: "node", InstanceType: typ, Count: nodes}}, Env: fast(env)}
}

func dur(d time.Duration) model.Duration { return model.Duration(d) }

// both is for scenarios whose expectations the real VPC CNI meets too
// (measured against lab.UpstreamVersion).
var both = []string{lab.CNIVpclab, lab.CNIUpstream}

// Builtin are the scenarios the suite runs, each pinning one behaviour of
// the VPC CNI's IPAM with exact numbers.
var Builtin = []Scenario{
	{
		Name: "warm ENI default on m5.large", Labels: []string{"warm-pool"}, Implementations: both,
		Lab: world("m5.large", "10.0.0.0/24", 1, nil),
		Steps: []Step{
			{Name: "idle node", Expect: Expect{TotalIPs: Int(9), ENIs: Int(1)}},
			{Name: "one pod: a whole spare ENI", AddPods: 1, Expect: Expect{TotalIPs: Int(18), AssignedIPs: Int(1), ENIs: Int(2), FailedAdds: Int(0)}},
			{Name: "pod gone: the second ENI released", DelPods: 1, Expect: Expect{TotalIPs: Int(9), AssignedIPs: Int(0), ENIs: Int(1)}},
		},
	},
	{
		Name: "WARM_IP_TARGET=2 MINIMUM_IP_TARGET=12", Labels: []string{"warm-pool"}, Implementations: both,
		Lab: world("m5.large", "10.0.0.0/24", 1, map[string]string{"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "12"}),
		Steps: []Step{
			{Name: "minimum at start", Expect: Expect{TotalIPs: Int(12), ENIs: Int(2)}},
			{Name: "12 pods: 2 warm", AddPods: 12, Expect: Expect{TotalIPs: Int(14), AssignedIPs: Int(12), FailedAdds: Int(0)}},
			{Name: "20 pods: 2 warm", AddPods: 8, Expect: Expect{TotalIPs: Int(22), AssignedIPs: Int(20), ENIs: Int(3), FailedAdds: Int(0)}},
			{Name: "back to 0 pods: the minimum", DelPods: 20, Expect: Expect{TotalIPs: Int(12), AssignedIPs: Int(0)}},
		},
	},
	{
		Name: "the same 20 pods with WARM_ENI_TARGET=1 cost whole-ENI calls only", Labels: []string{"warm-pool"}, Implementations: both,
		Lab: world("m5.large", "10.0.0.0/24", 1, nil),
		Steps: []Step{
			{Name: "20 pods", AddPods: 20,
				// Two ENIs attached (create, attach, modify each): 6 calls,
				// where WARM_IP_TARGET=2 pays one assignment per few pods.
				Expect: Expect{FailedAdds: Int(0), ENIs: Int(3), TotalIPs: Int(27), MaxMutatingCalls: Int(6)}},
		},
	},
	{
		Name: "max pods t3.medium", Labels: []string{"warm-pool", "max-pods"}, Implementations: both,
		Lab: world("t3.medium", "10.0.0.0/24", 1, nil),
		Steps: []Step{{Name: "16 pods: 15 fit (3 ENIs × 5), the 16th is refused", AddPods: 16, PodTimeout: dur(3 * time.Second),
			Expect: Expect{Pods: Int(15), FailedAdds: Int(1), ENIs: Int(3), TotalIPs: Int(15)}}},
	},
	{
		Name: "max pods t3.nano", Labels: []string{"warm-pool", "max-pods"}, Implementations: both,
		Lab:   world("t3.nano", "10.0.0.0/24", 1, nil),
		Steps: []Step{{Name: "3 pods: 2 fit", AddPods: 3, PodTimeout: dur(3 * time.Second), Expect: Expect{Pods: Int(2), FailedAdds: Int(1), ENIs: Int(2)}}},
	},
	{
		// Upstream retries a refused batch with one address
		// (tryAssignIPs), so a subnet's last addresses serve pods; a 120 s
		// pause after the first InsufficientFreeAddressesInSubnet would
		// strand them.
		Name: "the subnet's last addresses are used", Labels: []string{"exhaustion"}, Implementations: both,
		// A /28: 11 usable, the node's primary address and 10 secondaries
		// (an m5.xlarge ENI would hold 14). WARM_IP_TARGET=12 makes every
		// batch ask for more than the subnet has.
		Lab: world("m5.xlarge", "10.0.0.0/28", 1, map[string]string{"WARM_IP_TARGET": "12"}),
		Steps: []Step{
			{Name: "warm: batches of 12 refused, one at a time fills the subnet", Expect: Expect{TotalIPs: Int(10), Events: map[string][2]int{"InsufficientFreeAddressesInSubnet": {1, -1}}}},
			{Name: "10 pods on the subnet's last addresses", AddPods: 10, Expect: Expect{Pods: Int(10), FailedAdds: Int(0), TotalIPs: Int(10)}},
		},
	},
	{
		// A persistent, non-throttling error (here CreateNetworkInterface
		// answering InvalidParameterValue) backs off, doubling from 250 ms,
		// instead of being retried at every pool check (upstream: its 5 s
		// pool tick).
		Name: "a persistent EC2 error backs off", Labels: []string{"throttling"}, Implementations: both,
		Lab: world("m5.large", "10.0.0.0/24", 1, nil),
		Steps: []Step{
			{Name: "5 pods need a second ENI; creating one always fails", AddPods: 5,
				Faults: []faults.Rule{{Action: "CreateNetworkInterface", Code: "InvalidParameterValue"}},
				Expect: Expect{Pods: Int(5), ENIs: Int(1)}},
			{Name: "15 s later: a handful of attempts, not one per pool check", Sleep: dur(15 * time.Second),
				Expect: Expect{ENIs: Int(1), Events: map[string][2]int{"InvalidParameterValue": {2, 9}}}},
		},
	},
	{
		Name: "subnet exhaustion across two nodes", Labels: []string{"exhaustion"}, Implementations: both,
		// A /27 has 27 usable addresses: two primary ENIs with 9
		// secondaries each leave 7, too few for another ENI's 10.
		Lab: world("m5.large", "10.0.0.0/27", 2, nil),
		Steps: []Step{
			{Name: "node-1 fills up", Node: "node-1", AddPods: 10, PodTimeout: dur(2 * time.Second),
				Expect: Expect{Pods: Int(9), FailedAdds: Int(1), ENIs: Int(1), Events: map[string][2]int{"InsufficientFreeAddressesInSubnet": {1, -1}}}},
			{Name: "node-2 fills up", Node: "node-2", AddPods: 10, PodTimeout: dur(2 * time.Second), Expect: Expect{Pods: Int(9), FailedAdds: Int(1), ENIs: Int(1)}},
			{Name: "a pod goes", Node: "node-1", DelPods: 1, Expect: Expect{Pods: Int(8)}},
			{Name: "its address serves the next pod", Node: "node-1", AddPods: 1, Expect: Expect{Pods: Int(9), FailedAdds: Int(0)}},
		},
	},
	{
		Name: "throttling storm during a 100-pod burst", Labels: []string{"throttling"}, Implementations: both,
		Lab: world("m5.4xlarge", "10.0.0.0/22", 1, nil),
		Steps: []Step{
			{Name: "warm", Expect: Expect{TotalIPs: Int(29)}},
			// Four sandboxes at a time, as a kubelet's pod workers run them.
			{Name: "burst under RequestLimitExceeded for 3 s", AddPods: 100, Parallel: 4, PodTimeout: dur(20 * time.Second),
				Faults: []faults.Rule{
					{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", For: dur(3 * time.Second)},
					{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", For: dur(3 * time.Second)},
					{Action: "AttachNetworkInterface", Code: "RequestLimitExceeded", For: dur(3 * time.Second)},
				},
				// Every pod starts; the throttled calls stay bounded (the
				// SDK's 3 attempts inside ipamd's doubling back-off).
				Expect: Expect{Pods: Int(100), FailedAdds: Int(0), AssignedIPs: Int(100), Events: map[string][2]int{"RequestLimitExceeded": {1, 30}}}},
		},
	},
	{
		// vpclab only: without an API server the real VPC CNI takes max
		// pods from eni-max-pods.txt (29 for m5.large, the secondary-IP
		// figure) and never grows the pool past it, so 17 pods keep 2
		// prefixes (32 addresses) there.
		Name: "prefix delegation", Labels: []string{"prefix"},
		Lab: world("m5.large", "10.0.0.0/24", 1, map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}),
		Steps: []Step{
			{Name: "one /28 at start", Expect: Expect{Prefixes: Int(1), TotalIPs: Int(16)}},
			{Name: "first pod: a warm prefix", AddPods: 1, Expect: Expect{Prefixes: Int(2), TotalIPs: Int(32)}},
			{Name: "16 pods: still 2", AddPods: 15, Expect: Expect{Prefixes: Int(2), AssignedIPs: Int(16)}},
			{Name: "17 pods: 3", AddPods: 1, Expect: Expect{Prefixes: Int(3)}},
			{Name: "pods gone: back to 1", DelPods: 17, Expect: Expect{Prefixes: Int(1), AssignedIPs: Int(0)}},
		},
	},
	{
		Name: "fragmented subnet in prefix mode", Labels: []string{"prefix", "exhaustion"}, Implementations: both,
		// A /27 has free addresses but no aligned /28 without reserved ones.
		// WARM_PREFIX_TARGET=1: the real VPC CNI refuses prefix delegation
		// with no target at all.
		Lab: world("m5.large", "10.0.0.0/27", 1, map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}),
		Steps: []Step{{Name: "no prefix to be had", AddPods: 1, PodTimeout: dur(2 * time.Second),
			Expect: Expect{Prefixes: Int(0), FailedAdds: Int(1), Events: map[string][2]int{"InsufficientCidrBlocks": {1, -1}}}}},
	},
	{
		Name: "Deployment scale-up while EC2 throttles (Kubernetes)", Labels: []string{"kubernetes", "throttling"}, Implementations: both,
		// The kubelet adds the pods through containerd; ADDs that find no
		// address fail the sandbox (FailedCreatePodSandBox) and are
		// retried by the kubelet until the throttled calls go through.
		Lab: func() lab.Config {
			c := world("m5.large", "10.0.0.0/24", 1, nil)
			c.Kubernetes = &lab.KubernetesConfig{}
			return c
		}(),
		Steps: []Step{
			{Name: "5 replicas", Apply: webDeployment, Expect: Expect{Running: map[string]int{"app=web": 5}, ENIs: Int(2)}},
			{Name: "scale to 20 while the first 3 ENI creations and IP assignments are throttled",
				// Counted, not timed: however slow the machine, the calls
				// the scale-up makes are the ones refused.
				Faults: []faults.Rule{{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", Count: 3},
					{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", Count: 3}},
				Kubectl: []string{"scale", "deployment/web", "--replicas=20"},
				Expect: Expect{Running: map[string]int{"app=web": 20}, PodRestarts: map[string]int{"app=web": 0}, ENIs: Int(3),
					Events: map[string][2]int{"RequestLimitExceeded": {1, -1}}, PodEvents: map[string][2]int{"FailedCreatePodSandBox": {1, -1}}}},
			{Name: "scale to 2", Kubectl: []string{"scale", "deployment/web", "--replicas=2"}, Expect: Expect{Running: map[string]int{"app=web": 2}}},
		},
	},
	{
		Name: "ipamd killed mid-churn", Labels: []string{"restart"}, Implementations: both,
		Lab: world("m5.large", "10.0.0.0/24", 1, map[string]string{"WARM_IP_TARGET": "3"}),
		Steps: []Step{
			{AddPods: 10, Expect: Expect{AssignedIPs: Int(10)}},
			{Name: "SIGKILL and restart", RestartIpamd: true, Expect: Expect{AssignedIPs: Int(10)}},
			{AddPods: 5, DelPods: 3, Expect: Expect{AssignedIPs: Int(12), FailedAdds: Int(0)}},
			{Name: "again", RestartIpamd: true, Expect: Expect{AssignedIPs: Int(12), TotalIPs: Int(15)}},
		},
	},
	{
		Name: "IMDS lags EC2 by 1.5 s", Labels: []string{"imds"}, Implementations: both,
		Lab: func() lab.Config {
			c := world("m5.large", "10.0.0.0/24", 1, nil)
			c.Timing.IMDSLag = dur(1500 * time.Millisecond)
			return c
		}(),
		Steps: []Step{{Name: "pods beyond the primary ENI wait for IMDS, none gets an address early", AddPods: 14, PodTimeout: dur(15 * time.Second),
			Expect: Expect{Pods: Int(14), FailedAdds: Int(0), ENIs: Int(3)}}},
	},
	{
		Name: "leaked ENI", Labels: []string{"restart", "leak"},
		Lab: world("m5.large", "10.0.0.0/24", 1, map[string]string{"VPCLAB_LEAKED_ENI_INTERVAL": "300ms", "VPCLAB_LEAKED_ENI_GRACE": "5m"}),
		Steps: []Step{{Name: "an ENI left detached an hour ago is deleted after the grace period", LeakENIs: 2,
			Expect: Expect{LeakedENIs: Int(0), ENIs: Int(1)}}},
	},
	{
		// vpclab only: the real VPC CNI's decrease counts the cooling
		// address as its one warm address and releases the usable one, so
		// the next pod waits for a refill (measured: its ADD fails for
		// the step's 1 s).
		Name: "cooldown", Labels: []string{"warm-pool"},
		Lab:      world("m5.large", "10.0.0.0/24", 1, map[string]string{"WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1", "VPCLAB_IP_COOLDOWN": "3s", "IP_COOLDOWN_PERIOD": "3"}),
		Cooldown: dur(3 * time.Second),
		Steps: []Step{
			// The pause lets the pool's decrease run: it must keep the one
			// usable warm address, not count the cooling one as warm.
			{AddPods: 1, DelPods: 1, Sleep: dur(time.Second)},
			{Name: "a new pod does not get the cooling address", AddPods: 1, PodTimeout: dur(time.Second), Expect: Expect{FailedAdds: Int(0)}},
		},
	},
	{
		Name: "slow attaches respect the ENI limit", Labels: []string{"warm-pool", "attach"}, Implementations: both,
		Lab: func() lab.Config {
			c := world("m5.large", "10.0.0.0/24", 1, nil)
			c.Timing.AttachLatency = dur(time.Second)
			return c
		}(),
		Steps: []Step{{AddPods: 28, PodTimeout: dur(8 * time.Second), Expect: Expect{Pods: Int(27), FailedAdds: Int(1), ENIs: Int(3),
			Events: map[string][2]int{"AttachmentLimitExceeded": {0, 0}}}}},
	},
}

// webDeployment is agnhost's HTTP server as a 5-replica Deployment.
const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: web, image: "` + k8s.AgnhostImage + `", imagePullPolicy: Never, args: [netexec, --http-port=8080]}
`
