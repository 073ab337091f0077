package ipamd

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the VPC CNI's awscni_* series, on a private registry.
type metrics struct {
	reg              *prometheus.Registry
	buildInfo        *prometheus.GaugeVec
	ipamdErr         *prometheus.CounterVec
	actionInProgress *prometheus.GaugeVec
	eniMax           prometheus.Gauge
	ipMax            prometheus.Gauge
	reconcile        *prometheus.CounterVec
	addReq           prometheus.Counter
	delReq           *prometheus.CounterVec
	apiLatency       *prometheus.SummaryVec
	apiErr           *prometheus.CounterVec
	ec2Req           *prometheus.CounterVec
	ec2Err           *prometheus.CounterVec
	eniAllocated     prometheus.Gauge
	totalIPs         prometheus.Gauge
	assignedIPs      prometheus.Gauge
	forceRemovedENIs prometheus.Counter
	forceRemovedIPs  prometheus.Counter
	totalPrefixes    prometheus.Gauge
	noAvailableIP    prometheus.Counter
	assignedPerENI   *prometheus.GaugeVec
	assignedPerCidr  *prometheus.GaugeVec
	awsUtilsErr      *prometheus.CounterVec
	startup          *prometheus.HistogramVec
	nodeInit         *prometheus.HistogramVec
	throttled        *prometheus.CounterVec
	podENIErr        *prometheus.CounterVec
}

func newMetrics(version string) *metrics {
	m := &metrics{
		reg:              prometheus.NewRegistry(),
		buildInfo:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_build_info", Help: "VPC CNI Build Information"}, []string{"version", "goversion"}),
		ipamdErr:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ipamd_error_count", Help: "The number of errors encountered in ipamd"}, []string{"fn"}),
		podENIErr:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_pod_eni_error_count", Help: "The number of errors encountered for pod ENIs"}, []string{"fn"}),
		actionInProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_ipamd_action_inprogress", Help: "The number of ipamd actions in progress"}, []string{"fn"}),
		eniMax:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_eni_max", Help: "The maximum number of ENIs that can be attached to the instance, accounting for unmanaged ENIs"}),
		ipMax:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_ip_max", Help: "The maximum number of IP addresses that can be allocated to the instance"}),
		reconcile:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_reconcile_count", Help: "The number of times ipamd reconciles on ENIs and IP/Prefix addresses"}, []string{"fn"}),
		addReq:           prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_add_ip_req_count", Help: "The number of add IP address requests"}),
		delReq:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_del_ip_req_count", Help: "The number of delete IP address requests"}, []string{"reason"}),
		apiLatency:       prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "awscni_aws_api_latency_ms", Help: "AWS API call latency in ms"}, []string{"api", "error", "status"}),
		apiErr:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_aws_api_error_count", Help: "The number of times AWS API returns an error"}, []string{"api", "error"}),
		ec2Req:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ec2api_req_count", Help: "The number of requests made to EC2 APIs by CNI"}, []string{"fn"}),
		ec2Err:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ec2api_error_count", Help: "The number of failed EC2 APIs requests"}, []string{"fn"}),
		eniAllocated:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_eni_allocated", Help: "The number of ENIs allocated"}),
		totalIPs:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_total_ip_addresses", Help: "The total number of IP addresses"}),
		assignedIPs:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_assigned_ip_addresses", Help: "The number of IP addresses assigned to pods"}),
		forceRemovedENIs: prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_force_removed_enis", Help: "The number of ENIs force removed while they had assigned pods"}),
		forceRemovedIPs:  prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_force_removed_ips", Help: "The number of IPs force removed while they had assigned pods"}),
		totalPrefixes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "awscni_total_ipv4_prefixes", Help: "The total number of IPv4 prefixes"}),
		noAvailableIP:    prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_no_available_ip_addresses", Help: "The number of pod IP assignments that fail due to no available IP addresses"}),
		assignedPerENI:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_assigned_ip_per_eni", Help: "The number of IP addresses assigned per ENI"}, []string{"eni"}),
		assignedPerCidr:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "awscni_assigned_ip_per_cidr", Help: "The total number of IP addresses assigned per cidr"}, []string{"cidr"}),
		awsUtilsErr:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_aws_utils_error_count", Help: "The number of errors not handled in awsutils library"}, []string{"fn", "error"}),
		startup: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "awscni_ipamd_startup_duration_seconds",
			Help: "The duration of IPAMD startup from process start to ready to serve CNI requests"}, []string{"success", "with_api_server", "failure_reason"}),
		nodeInit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "awscni_ipamd_node_initialization_duration_seconds",
			Help: "The duration of node initialization during IPAMD startup"}, []string{"success"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_vpclab_backoff_count", Help: "Pool actions postponed by a back-off (vpclab)"}, []string{"reason"}),
	}
	m.reg.MustRegister(m.buildInfo, m.ipamdErr, m.podENIErr, m.actionInProgress, m.eniMax, m.ipMax, m.reconcile, m.addReq, m.delReq,
		m.apiLatency, m.apiErr, m.ec2Req, m.ec2Err, m.eniAllocated, m.totalIPs, m.assignedIPs, m.forceRemovedENIs,
		m.forceRemovedIPs, m.totalPrefixes, m.noAvailableIP, m.assignedPerENI, m.assignedPerCidr, m.awsUtilsErr, m.startup, m.nodeInit, m.throttled,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	return m
}
