package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// Back-off of a failing user: 1 s, 2 s, 4 s … up to five minutes, then every five minutes
// until it succeeds. The item is never dropped while the failure may pass.
const (
	retryBase = time.Second
	retryMax  = 5 * time.Minute
	// syncTimeout bounds one sync, so a hung upstream frees its worker.
	syncTimeout = 2 * time.Minute
)

// Queue feeds syncs to the reconciler. However many triggers arrive for one Discord user, it
// holds one entry for them; a user is never synced by two workers at once; and a sync that
// fails for a passing reason is retried with capped exponential back-off. The queue itself is
// client-go's workqueue.
type Queue struct {
	r       *Reconciler
	log     *slog.Logger
	workers int
	q       workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	pending map[string]queued // what the newest trigger knew about each queued user

	processed, failed, retries atomic.Int64
	lastErr                    atomic.Pointer[string]
}

// queued is what a trigger knew when it asked for a sync.
type queued struct {
	trigger string
	known   *guild.Membership
	// knownAt is when known arrived. An event may wait in the queue while a full pass lists
	// the guild: compared with the pass's start, it tells whether the event is older than
	// what the pass reads (see Reconciler.Sync).
	knownAt time.Time
	userPKs []int32
}

// QueueStats describe the queue for the status page and metrics.
type QueueStats struct {
	Depth     int
	Processed int64 // syncs finished, successful or not
	Failed    int64 // syncs that ended in an error
	Retries   int64 // syncs put back for a later try
	LastError string
}

// NewQueue returns a queue that runs syncs on r with the given number of workers.
func NewQueue(r *Reconciler, workers int, log *slog.Logger) *Queue {
	if workers <= 0 {
		workers = 4
	}
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryMax)
	return &Queue{
		r:       r,
		log:     log,
		workers: workers,
		q: workqueue.NewTypedRateLimitingQueueWithConfig(limiter,
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sync"}),
		pending: map[string]queued{},
	}
}

// Add asks for a sync of discordID. known, when not nil, is the membership the trigger saw
// (a gateway event, a page of members): the newest one wins, so two quick updates of one
// member end in the state of the second. userPKs, when set, name the linked users.
func (q *Queue) Add(discordID, trigger string, known *guild.Membership, userPKs []int32) {
	q.mu.Lock()
	it := queued{trigger: trigger, known: known, userPKs: userPKs}
	if known != nil {
		it.knownAt = q.r.opts.Now()
	}
	q.pending[discordID] = it
	q.mu.Unlock()
	q.q.Add(discordID)
}

// Retry asks for a sync of discordID after the back-off its earlier failures earned, for a
// sync that failed outside the queue (the login hook).
func (q *Queue) Retry(discordID, trigger string, userPKs []int32) {
	q.mu.Lock()
	if _, ok := q.pending[discordID]; !ok {
		q.pending[discordID] = queued{trigger: trigger, userPKs: userPKs}
	}
	q.mu.Unlock()
	q.retries.Add(1)
	q.q.AddRateLimited(discordID)
}

// Run starts the workers and blocks until ctx ends. Items still queued then are dropped: the
// next full pass finds them again.
func (q *Queue) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range q.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	q.q.ShutDown()
	wg.Wait()
}

// Stats returns the queue's counters.
func (q *Queue) Stats() QueueStats {
	s := QueueStats{
		Depth:     q.q.Len(),
		Processed: q.processed.Load(),
		Failed:    q.failed.Load(),
		Retries:   q.retries.Load(),
	}
	if e := q.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

func (q *Queue) next(ctx context.Context) bool {
	id, shutdown := q.q.Get()
	if shutdown {
		return false
	}
	defer q.q.Done(id)

	q.mu.Lock()
	item, ok := q.pending[id]
	delete(q.pending, id)
	q.mu.Unlock()
	if ctx.Err() != nil {
		// The workqueue hands out what it holds even after ShutDown. A sync now could only
		// fail, and would leave that failure as the member's last sync.
		return true
	}
	if !ok {
		item = queued{trigger: "retry"}
	}

	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	_, err := q.r.Sync(sctx, Target{DiscordID: id, UserPKs: item.userPKs, Known: item.known,
		ObservedAt: item.knownAt}, item.trigger, false)
	cancel()
	q.processed.Add(1)
	if err == nil {
		q.q.Forget(id)
		return true
	}

	q.failed.Add(1)
	msg := id + ": " + err.Error()
	q.lastErr.Store(&msg)
	if ctx.Err() != nil {
		return true
	}
	if !Transient(err) {
		q.q.Forget(id)
		q.log.Error("sync failed; not retrying", "discord_id", id, "trigger", item.trigger, "err", err)
		return true
	}
	// A retry asks Discord afresh: what the trigger knew may be stale by then.
	q.mu.Lock()
	if _, newer := q.pending[id]; !newer {
		q.pending[id] = queued{trigger: item.trigger, userPKs: item.userPKs}
	}
	q.mu.Unlock()
	q.retries.Add(1)
	q.log.Warn("sync failed; will retry", "discord_id", id, "trigger", item.trigger,
		"attempt", q.q.NumRequeues(id)+1, "err", err)
	q.q.AddRateLimited(id)
	return true
}

// Transient reports whether a failed sync may succeed later, so that it is worth retrying.
func Transient(err error) bool {
	return discord.IsRetryable(err) || authentik.IsRetryable(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errStaleMapping)
}
