package avatars

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// MinGCAge is the least age GC deletes at. A sync stores the object before its caller writes
// the URL into Authentik, so a younger object may be about to be referenced.
const MinGCAge = 10 * time.Minute

// Options configure a Service.
type Options struct {
	// CDNBase is Discord's CDN base URL without a trailing slash (BRIDGE_DISCORD_CDN_URL).
	CDNBase string
	// PreferGuild uses a member's guild avatar when they have one (BRIDGE_AVATAR_PREFER_GUILD).
	PreferGuild bool
	// Edge is the stored width and height in pixels (BRIDGE_AVATAR_SIZE); DefaultEdge when 0.
	Edge int
	// Limits bound the images decoded; see Limits for the defaults.
	Limits Limits
	// FetchTimeout, MaxBytes and Transport configure downloads; see FetchOptions.
	FetchTimeout time.Duration
	MaxBytes     int64
	Transport    http.RoundTripper
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Current is what a user's Authentik attributes say now: the source hash of the avatar last
// stored (attributes.discord.avatar) and its URL (attributes.avatar). Both are empty for a
// user the bridge has not given an avatar yet.
type Current struct {
	SourceHash string
	URL        string
}

// Result is the avatar a user should have. When Changed is false the caller's attributes are
// already right and nothing needs writing.
type Result struct {
	SourceHash string
	URL        string
	Key        string
	Changed    bool
}

// Stats count what a Service did since it was made.
type Stats struct {
	Syncs       int64 // calls of Sync
	Unchanged   int64 // syncs that found the avatar current: no download, no upload
	Downloads   int64 // images fetched from the CDN
	Uploads     int64 // objects put into the store
	Reused      int64 // downloads whose result the store already had
	StoreChecks int64 // Exists calls that reached the store
	Deleted     int64 // objects GC removed
	// Failures counts failed syncs by the Kind of their error.
	Failures map[Kind]int64
}

// Service keeps users' hosted avatars in step with Discord. It is safe for concurrent use;
// the caller serializes syncs of one user.
type Service struct {
	store   Store
	fetcher *Fetcher
	log     *slog.Logger
	o       Options

	mu sync.Mutex
	// known holds the keys this process has seen in the store, with when a sync last used
	// each, so that an unchanged avatar costs one store check per process, not one per sync.
	known map[string]time.Time
	stats Stats
}

// New returns a Service that keeps avatars in store.
func New(store Store, log *slog.Logger, o Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("avatars: no store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Edge <= 0 {
		o.Edge = DefaultEdge
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.CDNBase = strings.TrimRight(o.CDNBase, "/")
	o.Limits = o.Limits.withDefaults()
	if o.Edge > o.Limits.MaxSide {
		return nil, fmt.Errorf("avatars: edge %d is over the side limit %d",
			o.Edge, o.Limits.MaxSide)
	}
	f, err := NewFetcher(FetchOptions{
		CDNBase:   o.CDNBase,
		Timeout:   o.FetchTimeout,
		MaxBytes:  o.MaxBytes,
		Transport: o.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("avatars: %w", err)
	}
	return &Service{
		store:   store,
		fetcher: f,
		log:     log.With("store", store.Name()),
		o:       o,
		known:   map[string]time.Time{},
		stats:   Stats{Failures: map[Kind]int64{}},
	}, nil
}

// Store is the store the Service writes to.
func (s *Service) Store() Store { return s.store }

// Source is the CDN image that shows m's avatar under the Service's options.
func (s *Service) Source(m Member) (Source, error) {
	return SourceFor(s.o.CDNBase, m, s.o.PreferGuild, s.o.Edge)
}

// KeyOf returns the key behind url when url is the address the Service's store gives that key,
// and false for any other URL: an avatar from another store, a hand-set picture, "".
func (s *Service) KeyOf(url string) (string, bool) {
	i := strings.LastIndexByte(url, '/')
	if i < 0 {
		return "", false
	}
	key := url[i+1:]
	if !ValidKey(key) || s.store.URL(key) != url {
		return "", false
	}
	return key, true
}

// Sync makes sure m's current avatar is stored and returns its URL. When the source hash is
// the one cur records and cur.URL names an object that exists, it downloads and uploads
// nothing. On any error the Result is empty and the caller keeps the avatar it has: a failed
// fetch never blanks or replaces a working picture. Errors are *Error; Retryable tells
// whether trying later may help.
//
// TODO: the stored edge plays no part in "nothing changed", so a new BRIDGE_AVATAR_SIZE only
// reaches avatars as they change. Recording the edge beside the source hash would let a
// change of size redo every avatar.
func (s *Service) Sync(ctx context.Context, m Member, cur Current) (Result, error) {
	s.count(func(st *Stats) { st.Syncs++ })
	res, err := s.sync(ctx, m, cur)
	if err != nil {
		kind := KindOf(err)
		s.count(func(st *Stats) { st.Failures[kind]++ })
		return Result{}, fmt.Errorf("avatar of %s: %w", m.UserID, err)
	}
	return res, nil
}

func (s *Service) sync(ctx context.Context, m Member, cur Current) (Result, error) {
	src, err := s.Source(m)
	if err != nil {
		return Result{}, err
	}

	if src.Hash == cur.SourceHash {
		if key, ok := s.KeyOf(cur.URL); ok {
			found, err := s.exists(ctx, key)
			if err != nil {
				return Result{}, err
			}
			if found {
				s.count(func(st *Stats) { st.Unchanged++ })
				return Result{SourceHash: src.Hash, URL: cur.URL, Key: key}, nil
			}
			s.log.Warn("stored avatar missing, storing it again", "user_id", m.UserID, "key", key)
		}
	}

	body, err := s.fetcher.Fetch(ctx, src.URL)
	if err != nil {
		return Result{}, err
	}
	s.count(func(st *Stats) { st.Downloads++ })

	png, err := Process(body, s.o.Edge, s.o.Limits)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", src.URL, err)
	}
	key := Key(png)

	found, err := s.exists(ctx, key)
	if err != nil {
		return Result{}, err
	}
	if found {
		s.count(func(st *Stats) { st.Reused++ })
	} else {
		if err := s.put(ctx, key, png); err != nil {
			return Result{}, err
		}
		s.count(func(st *Stats) { st.Uploads++ })
	}

	res := Result{SourceHash: src.Hash, URL: s.store.URL(key), Key: key}
	res.Changed = res.URL != cur.URL || res.SourceHash != cur.SourceHash
	if res.Changed {
		s.log.Info("avatar stored", "user_id", m.UserID, "source_hash", src.Hash, "key", key,
			"bytes", len(png), "uploaded", !found)
	}
	return res, nil
}

// exists answers from the known keys first and asks the store only about a key this process
// has not seen there yet.
func (s *Service) exists(ctx context.Context, key string) (bool, error) {
	now := s.o.Now()
	s.mu.Lock()
	if _, ok := s.known[key]; ok {
		s.known[key] = now
		s.mu.Unlock()
		return true, nil
	}
	s.stats.StoreChecks++
	s.mu.Unlock()

	found, err := s.store.Exists(ctx, key)
	if err != nil {
		return false, asStoreError(err)
	}
	if found {
		s.remember(key, now)
	}
	return found, nil
}

func (s *Service) put(ctx context.Context, key string, png []byte) error {
	if err := s.store.Put(ctx, key, png); err != nil {
		return asStoreError(err)
	}
	s.remember(key, s.o.Now())
	return nil
}

func (s *Service) remember(key string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.known[key] = at
}

// GC deletes the stored avatars that referenced does not claim and that are older than
// olderThan (at least MinGCAge), and returns how many it deleted. referenced must know every
// user's avatar: build it from a complete read, and skip GC when that read failed, or working
// avatars are deleted. A key a sync of this process used within olderThan is kept too.
func (s *Service) GC(ctx context.Context, referenced func(key string) bool,
	olderThan time.Duration) (int, error) {
	olderThan = max(olderThan, MinGCAge)
	objects, err := s.store.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("avatar gc: %w", asStoreError(err))
	}

	now := s.o.Now()
	deleted := 0
	var errs []error
	for _, obj := range objects {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		young := now.Sub(obj.Modified) < olderThan
		if young || referenced(obj.Key) || s.usedSince(obj.Key, now.Add(-olderThan)) {
			continue
		}
		if err := s.store.Delete(ctx, obj.Key); err != nil {
			err = asStoreError(err)
			errs = append(errs, err)
			if Retryable(err) {
				break // the store is likely down; the next pass tries again
			}
			continue
		}
		s.forget(obj.Key)
		deleted++
		s.log.Info("avatar deleted", "key", obj.Key, "modified", obj.Modified)
	}
	s.count(func(st *Stats) { st.Deleted += int64(deleted) })

	if len(errs) > 0 {
		return deleted, fmt.Errorf("avatar gc: %w", errors.Join(errs...))
	}
	return deleted, nil
}

func (s *Service) usedSince(key string, since time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.known[key]
	return ok && at.After(since)
}

func (s *Service) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.known, key)
}

// Stats returns a copy of the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Failures = make(map[Kind]int64, len(s.stats.Failures))
	for k, v := range s.stats.Failures {
		st.Failures[k] = v
	}
	return st
}

func (s *Service) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// asStoreError gives an error from a Store that is not an *Error (a store of the caller's
// own) the store kind, retryable since nothing says otherwise.
func asStoreError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Kind: KindStore, Retryable: true, Err: err}
}
