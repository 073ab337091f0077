package fakeec2_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
)

type figures struct {
	rps      float64
	p50, p99 time.Duration
}

// measure runs op from workers goroutines for d and reports throughput and
// latency percentiles.
func measure(d time.Duration, workers int, op func() error) (figures, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return figures{}, firstErr
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	return figures{rps: float64(len(lat)) / el.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

func printFigures(name string, f, floor figures) {
	fmt.Printf("BENCH %s_rps %.0f req/s\n", name, f.rps)
	fmt.Printf("BENCH %s_p50 %.3f ms\n", name, float64(f.p50.Microseconds())/1000)
	fmt.Printf("BENCH %s_p99 %.3f ms\n", name, float64(f.p99.Microseconds())/1000)
	fmt.Printf("BENCH %s_floor_rps %.0f req/s\n", name, floor.rps)
	fmt.Printf("BENCH %s_floor_p50 %.3f ms\n", name, float64(floor.p50.Microseconds())/1000)
	fmt.Printf("BENCH %s_floor_p99 %.3f ms\n", name, float64(floor.p99.Microseconds())/1000)
	fmt.Printf("BENCH %s_vs_floor %.2f (target >= 0.30)\n", name, f.rps/floor.rps)
}

// cannedHandler is the floor: a trivial net/http handler that answers every
// request with fixed bytes (a response captured from the fake, so the SDK
// decodes exactly the same document).
func cannedHandler(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		_, _ = w.Write(body)
	})
}

func capture(t testing.TB, url string, form url.Values) []byte {
	resp, err := http.PostForm(url, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("capture %v: %d %s", form, resp.StatusCode, b)
	}
	return b
}

// BenchmarkQueryAPI prints requests/s and p50/p99 latency through the SDK
// over loopback HTTP, for DescribeNetworkInterfaces with 100 ENIs and for an
// Assign+Unassign pair, each next to the same client against a trivial
// handler on the same machine.
func BenchmarkQueryAPI(b *testing.B) {
	const workers = 4
	d := 2 * time.Second
	e := &env{}
	r := model.NewRegion(model.Options{Seed: 1})
	s := fakeec2.NewServer(r, fakeec2.ServerOptions{})
	hs := httptest.NewServer(s)
	defer hs.Close()
	e.region, e.srv, e.http, e.ec2 = r, s, hs, newClient(hs.URL, 1)
	v, _ := e.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	sn, _ := e.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.0.0.0/20")})
	var ids []string
	for i := 0; i < 100; i++ {
		out, err := e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: sn.Subnet.SubnetId, SecondaryPrivateIpAddressCount: aws.Int32(4)})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, *out.NetworkInterface.NetworkInterfaceId)
	}
	for i := 0; i < b.N; i++ {
		// DescribeNetworkInterfaces, 100 ENIs.
		describe := func(c *ec2.Client) func() error {
			return func() error {
				out, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
				if err == nil && len(out.NetworkInterfaces) != 100 {
					err = fmt.Errorf("got %d ENIs", len(out.NetworkInterfaces))
				}
				return err
			}
		}
		ours, err := measure(d, workers, describe(e.ec2))
		if err != nil {
			b.Fatal(err)
		}
		floorSrv := httptest.NewServer(cannedHandler(capture(b, hs.URL, url.Values{"Action": {"DescribeNetworkInterfaces"}, "Version": {"2016-11-15"}})))
		floor, err := measure(d, workers, describe(newClient(floorSrv.URL, 1)))
		floorSrv.Close()
		if err != nil {
			b.Fatal(err)
		}
		printFigures("describe_network_interfaces_100", ours, floor)

		// Assign + Unassign one address, each worker on its own ENI.
		var next sync.Mutex
		k := 0
		pair := func(c *ec2.Client, check bool) func() error {
			var eni string
			return func() error {
				if eni == "" {
					next.Lock()
					eni = ids[k%len(ids)]
					k++
					next.Unlock()
				}
				as, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), SecondaryPrivateIpAddressCount: aws.Int32(1)})
				if err != nil {
					return err
				}
				addr := "10.0.0.9"
				if check {
					addr = *as.AssignedPrivateIpAddresses[0].PrivateIpAddress
				}
				_, err = c.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), PrivateIpAddresses: []string{addr}})
				return err
			}
		}
		ours, err = measurePerWorker(d, workers, func() func() error { return pair(e.ec2, true) })
		if err != nil {
			b.Fatal(err)
		}
		assignBody := capture(b, hs.URL, url.Values{"Action": {"AssignPrivateIpAddresses"}, "Version": {"2016-11-15"}, "NetworkInterfaceId": {ids[0]}, "SecondaryPrivateIpAddressCount": {"1"}})
		floorSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
			if strings.Contains(string(body), "Action=Unassign") {
				_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<UnassignPrivateIpAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><return>true</return></UnassignPrivateIpAddressesResponse>`))
				return
			}
			_, _ = w.Write(assignBody)
		}))
		floor, err = measurePerWorker(d, workers, func() func() error { return pair(newClient(floorSrv.URL, 1), false) })
		floorSrv.Close()
		if err != nil {
			b.Fatal(err)
		}
		printFigures("assign_unassign_pair", ours, floor)
	}
	if err := r.CheckInvariants(); err != nil {
		b.Fatal(err)
	}
}

// measurePerWorker is measure with one op per worker: workers take an op
// from a pool, run it and put it back, so each op is used by one goroutine
// at a time.
func measurePerWorker(d time.Duration, workers int, mk func() func() error) (figures, error) {
	ops := make(chan func() error, workers)
	for i := 0; i < workers; i++ {
		ops <- mk()
	}
	return measure(d, workers, func() error {
		op := <-ops
		err := op()
		ops <- op
		return err
	})
}
