package reconcile

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/discord-authentik-bridge/bridge/groupmatch"
)

// mappingCache holds the role→group mapping read from Authentik's groups. Listing every group
// on every sync would double the reads of a login, so the mapping is kept for a short time and
// refreshed in the background once it is older than that; only the very first sync waits.
type mappingCache struct {
	ttl  time.Duration
	load func(context.Context) (*groupmatch.Mapping, error)
	log  *slog.Logger

	sf         singleflight.Group
	refreshing atomic.Bool
	mu         sync.RWMutex
	m          *groupmatch.Mapping
	fetched    time.Time
}

func newMappingCache(ttl time.Duration, load func(context.Context) (*groupmatch.Mapping, error),
	log *slog.Logger) *mappingCache {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	return &mappingCache{ttl: ttl, load: load, log: log}
}

func (c *mappingCache) get(ctx context.Context) (*groupmatch.Mapping, error) {
	c.mu.RLock()
	m, fetched := c.m, c.fetched
	c.mu.RUnlock()
	if m == nil {
		return c.refresh(ctx)
	}
	if time.Since(fetched) > c.ttl && c.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer c.refreshing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := c.refresh(ctx); err != nil {
				c.log.Warn("refresh group mapping", "err", err)
			}
		}()
	}
	return m, nil
}

// refresh loads the mapping now; concurrent callers share one load.
func (c *mappingCache) refresh(ctx context.Context) (*groupmatch.Mapping, error) {
	v, err, _ := c.sf.Do("mapping", func() (any, error) {
		m, err := c.load(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.m, c.fetched = m, time.Now()
		c.mu.Unlock()
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*groupmatch.Mapping), nil
}

// age reports how old the cached mapping is, and false when none was loaded yet.
func (c *mappingCache) age() (time.Duration, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.m == nil {
		return 0, false
	}
	return time.Since(c.fetched), true
}

// MappingAge reports how old the cached group mapping is, and false before the first load.
func (r *Reconciler) MappingAge() (time.Duration, bool) {
	return r.mapping.age()
}

// set replaces the cached mapping with one built elsewhere, such as by a full pass.
func (c *mappingCache) set(m *groupmatch.Mapping) {
	c.mu.Lock()
	c.m, c.fetched = m, time.Now()
	c.mu.Unlock()
}

// expire makes the next use refresh the mapping, for when it is known to be out of date.
func (c *mappingCache) expire() {
	c.mu.Lock()
	c.fetched = time.Time{}
	c.mu.Unlock()
}
