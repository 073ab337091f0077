package fakeec2_test

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestConcurrentChurn runs 32 goroutines doing random create, attach,
// assign, unassign, detach, delete, trunk association and disassociation
// against one region while a checker verifies the invariants throughout,
// under each address allocation policy.
func TestConcurrentChurn(t *testing.T) {
	for _, policy := range []string{model.AllocRandom, model.AllocLowest} {
		t.Run(policy, func(t *testing.T) { churn(t, policy) })
	}
}

func churn(t *testing.T, policy string) {
	r := model.NewRegion(model.Options{Seed: 99, Allocation: model.Allocation{Policy: policy}})
	v, err := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	// A small subnet so exhaustion and fragmentation happen often.
	sn, err := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/25")})
	if err != nil {
		t.Fatal(err)
	}
	var insts []string
	for _, typ := range []string{"m5.large", "t3.medium", "t3.nano", "c5.xlarge"} {
		out, err := r.RunInstances(model.RunInstancesInput{InstanceType: typ, SubnetID: sn.ID})
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, out[0].ID)
	}
	// A trunk on each instance that supports trunking (m5.large, c5.xlarge).
	var trunks []string
	for _, id := range []string{insts[0], insts[3]} {
		tr, err := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: sn.ID, InterfaceType: "trunk"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: tr.ID, InstanceID: id, DeviceIndex: 5}); err != nil {
			t.Fatal(err)
		}
		trunks = append(trunks, tr.ID)
	}
	const workers, opsEach = 32, 250
	var ops, failures, associations atomic.Int64
	stop := make(chan struct{})
	var checkErr error
	var checks int
	checkerDone := make(chan struct{})
	go func() {
		defer close(checkerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := r.CheckInvariants(); err != nil && checkErr == nil {
				checkErr = err
			}
			checks++
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			pick := func() (model.NetworkInterface, bool) {
				all := r.NetworkInterfaces()
				if len(all) == 0 {
					return model.NetworkInterface{}, false
				}
				return all[rng.IntN(len(all))], true
			}
			for i := 0; i < opsEach; i++ {
				var err error
				switch rng.IntN(9) {
				case 0:
					_, err = r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: sn.ID, SecondaryCount: rng.IntN(3)})
				case 1:
					if e, ok := pick(); ok {
						_, err = r.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: e.ID, InstanceID: insts[rng.IntN(len(insts))], DeviceIndex: 1 + rng.IntN(4)})
					}
				case 2:
					if e, ok := pick(); ok {
						if rng.IntN(2) == 0 {
							_, _, err = r.AssignPrivateIPs(model.AssignPrivateIPsInput{ENIID: e.ID, Count: 1 + rng.IntN(3)})
						} else {
							_, _, err = r.AssignPrivateIPs(model.AssignPrivateIPsInput{ENIID: e.ID, PrefixCount: 1})
						}
					}
				case 3:
					if e, ok := pick(); ok && (len(e.SecondaryIPs) > 0 || len(e.Prefixes) > 0) {
						var addrs []netip.Addr
						var pfx []netip.Prefix
						if len(e.SecondaryIPs) > 0 {
							addrs = e.SecondaryIPs[:1+rng.IntN(len(e.SecondaryIPs))]
						}
						if len(e.Prefixes) > 0 && rng.IntN(2) == 0 {
							pfx = e.Prefixes[:1]
						}
						err = r.UnassignPrivateIPs(e.ID, addrs, pfx)
					}
				case 4:
					if e, ok := pick(); ok && e.Attachment != nil && e.InterfaceType != "trunk" {
						err = r.DetachNetworkInterface(e.Attachment.ID, false)
					}
				case 5:
					if e, ok := pick(); ok && e.InterfaceType != "trunk" {
						err = r.DeleteNetworkInterface(e.ID)
					}
				case 6:
					if e, ok := pick(); ok {
						_, _, err = r.AssignPrivateIPs(model.AssignPrivateIPsInput{ENIID: e.ID, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(128))})}, AllowReassignment: rng.IntN(2) == 0})
					}
				case 7:
					e, ok := pick()
					for try := 0; ok && e.Attachment != nil && try < 5; try++ {
						e, ok = pick()
					}
					if ok {
						if _, err = r.AssociateTrunkInterface(model.AssociateTrunkInput{BranchID: e.ID, TrunkID: trunks[rng.IntN(len(trunks))], VlanID: 1 + rng.IntN(20)}); err == nil {
							associations.Add(1)
						}
					}
				case 8:
					if as := r.TrunkAssociations(); len(as) > 0 {
						err = r.DisassociateTrunkInterface(as[rng.IntN(len(as))].ID)
					}
				}
				ops.Add(1)
				if err != nil {
					if _, ok := model.AsAPIError(err); !ok {
						t.Errorf("non-EC2 error: %v", err)
					}
					failures.Add(1)
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	close(stop)
	<-checkerDone
	if checkErr != nil {
		t.Fatalf("invariant violated during churn: %v", checkErr)
	}
	if err := r.CheckInvariants(); err != nil {
		t.Fatalf("invariants after churn: %v", err)
	}
	t.Logf("%d operations (%d refused by EC2 rules, %d trunk associations), %d invariant checks", ops.Load(), failures.Load(), associations.Load(), checks)
	if ops.Load() != workers*opsEach || failures.Load() == ops.Load() || associations.Load() == 0 {
		t.Fatalf("churn did nothing useful: %d ops, %d failures", ops.Load(), failures.Load())
	}
}
