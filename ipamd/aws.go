package ipamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/vpclab/vpclab/internal/httpx"
)

// cloud wraps the EC2 and IMDS clients: every call is rate limited on the
// client side, timed and counted in the awscni_* metrics.
type cloud struct {
	ec2    *ec2.Client
	imds   *imds.Client
	region string
	m      *metrics
	lim    *limiter
	log    *slog.Logger
}

// newCloud builds the clients from the SDK's default configuration: the
// credential chain, AWS_EC2_METADATA_SERVICE_ENDPOINT for IMDS,
// AWS_ENDPOINT_URL_EC2 or AWS_EC2_ENDPOINT for EC2, the standard retryer.
func newCloud(ctx context.Context, c *Config, m *metrics, log *slog.Logger) (*cloud, error) {
	hc := httpx.BodyCopyClient{Client: &http.Client{Timeout: c.HTTPTimeout}}
	awsCfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	cl := &cloud{imds: imds.NewFromConfig(awsCfg), m: m, lim: newLimiter(c.EC2QPS, c.EC2Burst), log: log}
	var region *imds.GetRegionOutput
	err = cl.imdsCall("GetRegion", func() (err error) {
		region, err = cl.imds.GetRegion(ctx, &imds.GetRegionInput{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("region from IMDS: %w", err)
	}
	cl.region = region.Region
	awsCfg.Region = region.Region
	ua := "amazon-vpc-cni-k8s/vpclab"
	if c.Version != "" {
		ua = "amazon-vpc-cni-k8s/" + c.Version
	}
	cl.ec2 = ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
		if c.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(c.EC2Endpoint)
		}
		o.AppID = ua
	})
	return cl, nil
}

// errorCode returns the EC2 error code of err ("" when none).
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// timed runs one EC2 call: rate limit, latency and counters, with the VPC
// CNI's labels (status "200", the error code, or "" when the error has
// none; only errors with a code are counted by api and code).
func (c *cloud) timed(ctx context.Context, api string, f func() error) error {
	if err := c.lim.wait(ctx); err != nil {
		return err
	}
	c.m.ec2Req.WithLabelValues(api).Inc()
	err := c.observe(api, f)
	if err != nil {
		c.m.ec2Err.WithLabelValues(api).Inc()
	}
	if code := errorCode(err); code != "" {
		c.m.apiErr.WithLabelValues(api, code).Inc()
	}
	return err
}

// observe runs f and records its latency under api.
func (c *cloud) observe(api string, f func() error) error {
	t0 := time.Now()
	err := f()
	ms := float64(time.Since(t0).Microseconds()) / 1000
	status := "200"
	if err != nil {
		status = errorCode(err)
	}
	c.m.apiLatency.WithLabelValues(api, strconv.FormatBool(err != nil), status).Observe(ms)
	return err
}

// imdsCall runs one IMDS read, as the VPC CNI's instrumented IMDS client:
// its latency under "GetMetadata", and an error with an AWS error code
// counted (awscni_aws_api_error_count) under the VPC CNI's name for the
// read.
func (c *cloud) imdsCall(name string, f func() error) error {
	err := c.observe("GetMetadata", f)
	if code := errorCode(err); code != "" {
		c.m.apiErr.WithLabelValues(name, code).Inc()
	}
	return err
}

// imdsTopNames and imdsMACNames are the VPC CNI's names for its IMDS reads
// (its typed IMDS client's methods), by path.
var (
	imdsTopNames = map[string]string{"instance-id": "GetInstanceID", "instance-type": "GetInstanceType", "mac": "GetMAC",
		"local-ipv4": "GetLocalIPv4", "placement/availability-zone": "GetAZ", "network/interfaces/macs": "GetMACs"}
	imdsMACNames = map[string]string{"": "GetMACImdsFields", "interface-id": "GetInterfaceID", "device-number": "GetDeviceNumber",
		"network-card": "GetNetworkCard", "local-ipv4s": "GetLocalIPv4s", "ipv4-prefix": "GetIPv4Prefixes", "subnet-id": "GetSubnetID",
		"subnet-ipv4-cidr-block": "GetSubnetIPv4CIDRBlock", "security-group-ids": "GetSecurityGroupIDs", "vpc-id": "GetVpcID",
		"vpc-ipv4-cidr-blocks": "GetVPCIPv4CIDRBlocks"}
)

// imdsAPIName is the VPC CNI's name for the read of an IMDS path
// ("GetMetadata" for one it does not name).
func imdsAPIName(path string) string {
	path = strings.TrimSuffix(path, "/")
	if rest, ok := strings.CutPrefix(path, "network/interfaces/macs/"); ok {
		_, field, _ := strings.Cut(rest, "/")
		if n, ok := imdsMACNames[field]; ok {
			return n
		}
	} else if n, ok := imdsTopNames[path]; ok {
		return n
	}
	return "GetMetadata"
}

// errNotFound marks a metadata key IMDS does not have (404).
var errNotFound = errors.New("not found in IMDS")

// metadata reads one IMDS path (under meta-data/) as trimmed text.
func (c *cloud) metadata(ctx context.Context, path string) (string, error) {
	var out *imds.GetMetadataOutput
	err := c.imdsCall(imdsAPIName(path), func() (err error) {
		out, err = c.imds.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		return err
	})
	if err != nil {
		if strings.Contains(err.Error(), "StatusCode: 404") {
			return "", fmt.Errorf("%s: %w", path, errNotFound)
		}
		return "", fmt.Errorf("imds %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("imds %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// metadataList reads an IMDS list; a 404 is an empty list.
func (c *cloud) metadataList(ctx context.Context, path string) ([]string, error) {
	v, err := c.metadata(ctx, path)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return strings.Fields(v), nil
}

// limiter is a token bucket: qps tokens a second, up to burst.
type limiter struct {
	mu     sync.Mutex
	qps    float64
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(qps float64, burst int) *limiter {
	return &limiter{qps: qps, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

func (l *limiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := time.Now()
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.qps)
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		need := time.Duration((1 - l.tokens) / l.qps * float64(time.Second))
		l.mu.Unlock()
		select {
		case <-time.After(need):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
