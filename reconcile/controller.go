package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// TriggerAdmin names passes an admin asked for; they run even with periodic passes off.
const TriggerAdmin = "admin"

// Controller runs the bridge's background work: the queue's workers, and full passes at
// start, on a timer, and whenever something asks for one (a new gateway session, a deleted
// role, an admin). Passes never overlap; requests that arrive during a pass are folded into
// one more pass after it.
type Controller struct {
	r        *Reconciler
	q        *Queue
	interval time.Duration
	log      *slog.Logger

	requests chan string
	// AfterPass, when set, runs after every pass that read everything, such as avatar
	// garbage collection, which may only run on complete knowledge.
	AfterPass func(ctx context.Context, rep *PassReport)

	mu        sync.Mutex
	lastEvent time.Time
	last      *PassReport
	lastErr   error
	running   bool
}

// NewController returns a controller; interval is the time between periodic full passes,
// and 0 runs passes only when asked for with RequestPass by an admin.
func NewController(r *Reconciler, q *Queue, interval time.Duration, log *slog.Logger) *Controller {
	return &Controller{r: r, q: q, interval: interval, log: log, requests: make(chan string, 1)}
}

// Queue returns the controller's work queue.
func (c *Controller) Queue() *Queue { return c.q }

// RequestPass asks for a full pass soon. Requests made while one is pending are merged. With
// periodic passes off, only an admin's request starts one.
func (c *Controller) RequestPass(trigger string) {
	if c.interval == 0 && trigger != TriggerAdmin {
		return
	}
	select {
	case c.requests <- trigger:
	default:
	}
}

// LastPass returns the report of the newest finished pass and its error, if any.
func (c *Controller) LastPass() (*PassReport, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.lastErr, c.running
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.q.Run(ctx)
	}()
	defer wg.Wait()

	if c.interval == 0 {
		c.log.Info("periodic full passes are off (BRIDGE_RESYNC_INTERVAL=0)")
		for {
			select {
			case <-ctx.Done():
				return
			case trigger := <-c.requests:
				_ = c.pass(ctx, trigger)
			}
		}
	}

	trigger := "start"
	retry := 30 * time.Second
	for {
		err := c.pass(ctx, trigger)
		wait := c.interval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !errors.Is(err, ErrRemovalGuard):
			// A pass that could not read everything is tried again soon, not an hour later.
			wait = min(retry, c.interval)
			retry = min(2*retry, c.interval)
		default:
			retry = 30 * time.Second
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case trigger = <-c.requests:
			timer.Stop()
		case <-timer.C:
			trigger = "timer"
		}
	}
}

func (c *Controller) pass(ctx context.Context, trigger string) error {
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	rep, err := c.r.FullPass(ctx, PassOptions{Trigger: "full_pass:" + trigger, Queue: c.q})
	if err != nil && !errors.Is(err, ErrRemovalGuard) && ctx.Err() == nil {
		c.log.Error("full pass failed", "trigger", trigger, "err", err)
	}
	c.mu.Lock()
	c.running = false
	c.last, c.lastErr = rep, err
	c.mu.Unlock()
	if err == nil && c.AfterPass != nil {
		c.AfterPass(ctx, rep)
	}
	return err
}

// HandleEvent turns a gateway event into work. It is called in the order Discord sent the
// events and only enqueues, so it never holds up the gateway.
func (c *Controller) HandleEvent(ev discord.Event) {
	switch ev.Kind {
	case discord.EventMemberAdd, discord.EventMemberUpdate:
		if ev.Member == nil || ev.Member.User == nil {
			c.q.Add(ev.UserID, "gateway", nil, nil)
			return
		}
		ms := guild.Membership{State: guild.StateMember, Member: ev.Member}
		if ev.Member.Pending {
			ms.State = guild.StatePending
		}
		c.q.Add(ev.UserID, "gateway:"+string(ev.Kind), &ms, nil)
	case discord.EventMemberRemove:
		c.q.Add(ev.UserID, "gateway:"+string(ev.Kind), &guild.Membership{State: guild.StateAbsent}, nil)
	case discord.EventRoleDelete:
		// Discord does not send an update for every member who had the role; a pass finds
		// them and empties the groups the role fed.
		c.RequestPass("role_deleted")
	case discord.EventReady:
		// A new session: events of the old one may be lost, and nothing is replayed.
		c.RequestPass("gateway_ready")
	}
	c.mu.Lock()
	c.lastEvent = ev.At
	c.mu.Unlock()
}

// LastEvent is when the newest gateway event arrived.
func (c *Controller) LastEvent() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastEvent
}
