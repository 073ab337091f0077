package ipamd

// Custom networking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true), as the VPC
// CNI does it: the node's ENIConfig — a cluster-scoped object of the
// crd.k8s.amazonaws.com API named by the node's labels or annotations —
// says in which subnet, with which security groups, new ENIs are created;
// pods get addresses from those ENIs only, never from the primary ENI (it
// stays in the node's own subnet).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

const (
	// DefaultENIConfigKey is the node label and annotation that name the
	// node's ENIConfig unless ENI_CONFIG_LABEL_DEF / ENI_CONFIG_ANNOTATION_DEF
	// name others.
	DefaultENIConfigKey = "k8s.amazonaws.com/eniConfig"
	// ExternalENIConfigLabel names the node's ENIConfig before anything
	// else (set by whatever manages the node out of band).
	ExternalENIConfigLabel = "vpc.amazonaws.com/externalEniConfig"
	// DefaultENIConfigName is the ENIConfig of a node that names none.
	DefaultENIConfigName = "default"
	// FeatureCustomNetworking is the CNINode feature that tells the VPC
	// Resource Controller the node's ENIConfig (its branch ENIs go to that
	// subnet too).
	FeatureCustomNetworking = "CustomNetworking"

	eniConfigPath = "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs/"
)

// ENIConfigSpec is an ENIConfig's spec.
type ENIConfigSpec struct {
	Subnet         string   `json:"subnet"`
	SecurityGroups []string `json:"securityGroups,omitempty"`
}

// eniConfigName is the VPC CNI's choice of a node's ENIConfig: the
// external label, else the annotation, else the label, else "default".
func eniConfigName(labels, annotations map[string]string, labelKey, annotationKey string) string {
	if v, ok := labels[ExternalENIConfigLabel]; ok {
		return v
	}
	if v, ok := annotations[annotationKey]; ok {
		return v
	}
	if v, ok := labels[labelKey]; ok {
		return v
	}
	return DefaultENIConfigName
}

// eniConfig reads one ENIConfig.
func (k *kubeClient) eniConfig(ctx context.Context, name string) (ENIConfigSpec, error) {
	var obj struct {
		Spec ENIConfigSpec `json:"spec"`
	}
	if err := k.do(ctx, http.MethodGet, eniConfigPath+url.PathEscape(name), nil, &obj); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusNotFound {
			return ENIConfigSpec{}, fmt.Errorf("ENIConfig %q does not exist", name)
		}
		return ENIConfigSpec{}, fmt.Errorf("ENIConfig %q: %w", name, err)
	}
	if obj.Spec.Subnet == "" {
		return ENIConfigSpec{}, fmt.Errorf("ENIConfig %q names no subnet (spec.subnet)", name)
	}
	return obj.Spec, nil
}

// initCustomNetworking checks what custom networking needs at start-up and,
// with pod ENIs on, tells the controller the node's ENIConfig in its
// CNINode (as the VPC CNI: only for a name other than "default").
func (d *Daemon) initCustomNetworking(ctx context.Context) error {
	if !d.c.CustomNetworking {
		return nil
	}
	if d.kube == nil {
		return errors.New("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true needs the Kubernetes API (the node's ENIConfig); run ipamd in aws-node in a cluster")
	}
	v, err := d.readNode(ctx)
	if err != nil {
		return fmt.Errorf("custom networking: the node's ENIConfig: %w", err)
	}
	name := v.ENIConfig
	d.log.Info("custom networking", "node", d.c.NodeName, "eniConfig", name)
	if !d.c.EnablePodENI || name == DefaultENIConfigName {
		return nil
	}
	if err := d.kube.addCNINodeFeature(ctx, FeatureCustomNetworking, name); err != nil {
		d.m.podENIErr.WithLabelValues("nodeInit").Inc()
		return fmt.Errorf("adding the %s feature to the CNINode: %w", FeatureCustomNetworking, err)
	}
	return nil
}

// customENIPlace is where custom networking puts a new ENI: the node's
// ENIConfig's subnet (checked to be in the instance's VPC and zone: EC2
// would create it elsewhere and refuse the attach) and its security
// groups, or the primary ENI's when it names none.
func (d *Daemon) customENIPlace(ctx context.Context) (subnetChoice, []string, error) {
	d.mu.Lock()
	name, primaryGroups := d.nodeView.ENIConfig, d.groupsSorted
	d.mu.Unlock()
	if name == "" {
		name = DefaultENIConfigName
	}
	spec, err := d.kube.eniConfig(ctx, name)
	if err != nil {
		return subnetChoice{}, nil, err
	}
	subnets, err := d.cloud.describeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{spec.Subnet}})
	if err != nil {
		return subnetChoice{}, nil, fmt.Errorf("ENIConfig %q: %w", name, err)
	}
	if len(subnets) != 1 {
		return subnetChoice{}, nil, fmt.Errorf("ENIConfig %q: subnet %s not found", name, spec.Subnet)
	}
	s := subnets[0]
	if vpc, az := aws.ToString(s.VpcId), aws.ToString(s.AvailabilityZone); vpc != d.vpcID || az != d.az {
		return subnetChoice{}, nil, fmt.Errorf("ENIConfig %q: subnet %s is in %s/%s, the instance in %s/%s", name, spec.Subnet, vpc, az, d.vpcID, d.az)
	}
	cidr, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
	if err != nil {
		return subnetChoice{}, nil, fmt.Errorf("ENIConfig %q: subnet %s: %w", name, spec.Subnet, err)
	}
	groups := spec.SecurityGroups
	if len(groups) == 0 {
		d.log.Warn("the ENIConfig names no security group; new ENIs get the primary ENI's", "eniConfig", name, "groups", primaryGroups)
		groups = primaryGroups
	}
	return subnetChoice{id: spec.Subnet, cidr: cidr, free: int(aws.ToInt32(s.AvailableIpAddressCount))}, slices.Clone(groups), nil
}

// preScaleCustom is the VPC CNI's pre-scaling at start-up as far as custom
// networking makes it fatal: the pool is filled once, and a node that
// still has no address for pods (no ENIConfig, a wrong subnet, no room)
// fails start-up, so it never turns Ready with nothing to give.
func (d *Daemon) preScaleCustom(ctx context.Context) error {
	if !d.c.CustomNetworking || d.c.DisableProvisioning {
		return nil
	}
	s := d.ds.GetStats()
	if !d.tooLow(s) {
		return nil
	}
	err := d.increase(ctx, s)
	if d.ds.GetStats().TotalIPs > 0 {
		return nil
	}
	d.m.podENIErr.WithLabelValues("nodeInit").Inc()
	if err == nil {
		err = errors.New("no room for an ENI")
	}
	return fmt.Errorf("custom networking: failed to attach any ENI for pods: %w", err)
}
