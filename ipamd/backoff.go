package ipamd

import (
	"fmt"
	"strings"
	"time"
)

// noteResult records the outcome of a pool action. Each error class backs
// off on its own, doubling, so a persistent failure never spins the pool:
// throttling from 1 s up to 1 min, other errors (InvalidParameterValue,
// a limit, an ENI that never showed up …) from 250 ms up to 2 min; capacity
// errors have their own pause (increase). Success resets both.
func (d *Daemon) noteResult(what string, err error) {
	if err != nil {
		d.reportIAM(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.backoff, d.errBackoff, d.backoffClass = 0, 0, ""
		return
	}
	d.lastPoolError = fmt.Sprintf("%s: %v", what, err)
	d.m.ipamdErr.WithLabelValues(strings.ReplaceAll(what, " ", "")).Inc()
	switch {
	case isThrottle(err):
		d.backoff = min(max(d.backoff*2, time.Second), time.Minute)
		d.backoffUntil, d.backoffClass = time.Now().Add(d.backoff), "throttling"
		d.log.Warn("EC2 throttled; backing off", "action", what, "backoff", d.backoff.String(), "err", err)
	case isCapacityError(err):
		d.log.Warn("pool action failed", "action", what, "err", err)
	default:
		d.errBackoff = min(max(d.errBackoff*2, 250*time.Millisecond), 2*time.Minute)
		d.backoffUntil, d.backoffClass = time.Now().Add(d.errBackoff), "error"
		d.log.Warn("pool action failed; backing off", "action", what, "backoff", d.errBackoff.String(), "err", err)
	}
}

// touched records a change the pool made in EC2 (reconciliation waits a
// full interval after it, since IMDS may lag).
func (d *Daemon) touched() {
	d.mu.Lock()
	d.lastPoolAction = time.Now()
	d.mu.Unlock()
}

func (d *Daemon) pauseScaleUp(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.insufficientUntil = time.Now().Add(d.c.InsufficientCIDRBackoff)
	d.log.Warn("subnet out of capacity; pausing scale-up", "for", d.c.InsufficientCIDRBackoff.String(), "err", err)
}
