package authentik

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// readBackoff retries a read that failed for a passing reason twice, after about 250 ms and
// 750 ms. A full pass reads hundreds of pages; without it, one 500 on one page would throw the
// whole pass away.
var readBackoff = wait.Backoff{Duration: 250 * time.Millisecond, Factor: 3, Jitter: 0.2, Steps: 3}

// retryRead runs read until it succeeds, fails for good, runs out of tries or ctx ends. Only
// reads are retried: they are idempotent, and the queue retries whole syncs anyway.
func retryRead(ctx context.Context, read func() error) error {
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, readBackoff, func(context.Context) (bool, error) {
		last = read()
		switch {
		case last == nil:
			return true, nil
		case IsRetryable(last):
			return false, nil
		default:
			return false, last
		}
	})
	// Out of tries or out of time: the last failure says more than "interrupted".
	if wait.Interrupted(err) && last != nil {
		return last
	}
	return err
}
