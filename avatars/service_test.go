package avatars

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/discordstub"
	"github.com/discord-authentik-bridge/bridge/test/s3server"
)

const cdnRoute = "GET /cdn/{path...}"

// countingStore counts the calls that reach a store.
type countingStore struct {
	Store
	mu      sync.Mutex
	exists  map[string]int
	puts    map[string]int
	deletes map[string]int
}

func countCalls(s Store) *countingStore {
	return &countingStore{Store: s, exists: map[string]int{}, puts: map[string]int{},
		deletes: map[string]int{}}
}

func (c *countingStore) Exists(ctx context.Context, key string) (bool, error) {
	c.mu.Lock()
	c.exists[key]++
	c.mu.Unlock()
	return c.Store.Exists(ctx, key)
}

func (c *countingStore) Put(ctx context.Context, key string, png []byte) error {
	c.mu.Lock()
	c.puts[key]++
	c.mu.Unlock()
	return c.Store.Put(ctx, key, png)
}

func (c *countingStore) Delete(ctx context.Context, key string) error {
	c.mu.Lock()
	c.deletes[key]++
	c.mu.Unlock()
	return c.Store.Delete(ctx, key)
}

func (c *countingStore) calls(key string) (exists, puts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exists[key], c.puts[key]
}

func newStub(t *testing.T) *discordstub.Server {
	t.Helper()
	s, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: "stub-token"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func cdnRequests(s *discordstub.Server) int { return s.Counts().ByRoute[cdnRoute] }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newService(t *testing.T, store Store, o Options) *Service {
	t.Helper()
	svc, err := New(store, testLogger(t), o)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestService_Sync_noWorkWhenUnchanged(t *testing.T) {
	stub := newStub(t)
	stub.SetAvatar("avatars/"+userID+"/"+userHash+".png", "image/png",
		readTestdata(t, "go-turns-two-280x360.jpeg"))
	local, _ := newLocalStore(t)
	store := countCalls(local)
	svc := newService(t, store, Options{CDNBase: stub.CDNURL()})
	m := Member{UserID: userID, GuildID: guildID, Discriminator: "0", UserAvatar: userHash}

	first, err := svc.Sync(t.Context(), m, Current{})
	if err != nil {
		t.Fatalf("first Sync: %v", err)
	}
	if !first.Changed || first.SourceHash != userHash || !ValidKey(first.Key) ||
		first.URL != local.URL(first.Key) {
		t.Fatalf("first Sync = %+v, want a changed avatar of %s in the local store",
			first, userHash)
	}
	checkPublicAvatar(t, first.URL, 64)
	if n := cdnRequests(stub); n != 1 {
		t.Errorf("CDN requests after the first sync = %d, want 1", n)
	}

	cur := Current{SourceHash: first.SourceHash, URL: first.URL}
	for i := range 5 {
		got, err := svc.Sync(t.Context(), m, cur)
		if err != nil {
			t.Fatalf("sync %d: %v", i+2, err)
		}
		want := Result{SourceHash: userHash, URL: first.URL, Key: first.Key}
		if got != want {
			t.Errorf("sync %d = %+v, want %+v", i+2, got, want)
		}
	}
	if n := cdnRequests(stub); n != 1 {
		t.Errorf("CDN requests after six syncs = %d, want 1", n)
	}
	// Put taught the process that the key exists: no store call at all for the repeats.
	if exists, puts := store.calls(first.Key); exists != 1 || puts != 1 {
		t.Errorf("store calls = %d Exists, %d Put; want 1 and 1", exists, puts)
	}

	// A new process asks the store once, then trusts what it learned.
	again := newService(t, store, Options{CDNBase: stub.CDNURL()})
	for range 3 {
		if got, err := again.Sync(t.Context(), m, cur); err != nil || got.Changed {
			t.Fatalf("Sync in a new process = %+v, %v; want unchanged", got, err)
		}
	}
	if exists, puts := store.calls(first.Key); exists != 2 || puts != 1 {
		t.Errorf("store calls after a restart = %d Exists, %d Put; want 2 and 1", exists, puts)
	}
	if n := cdnRequests(stub); n != 1 {
		t.Errorf("CDN requests after the restart = %d, want 1", n)
	}

	st := svc.Stats()
	if st.Syncs != 6 || st.Unchanged != 5 || st.Downloads != 1 || st.Uploads != 1 ||
		st.StoreChecks != 1 || len(st.Failures) != 0 {
		t.Errorf("Stats = %+v, want 6 syncs, 5 unchanged, 1 download, 1 upload, 1 check", st)
	}
}

func TestService_Sync_changes(t *testing.T) {
	stub := newStub(t)
	const otherHash = "0123456789abcdef0123456789abcdef"
	const sameImageHash = "fedcba9876543210fedcba9876543210"
	stub.SetAvatar("avatars/"+userID+"/"+userHash+".png", "image/png",
		readTestdata(t, "video-001.png"))
	stub.SetAvatar("avatars/"+userID+"/"+otherHash+".png", "image/jpeg",
		readTestdata(t, "video-001.cmyk.jpeg"))
	stub.SetAvatar("avatars/"+userID+"/"+sameImageHash+".png", "image/png",
		readTestdata(t, "video-001.png"))
	stub.SetAvatar("avatars/"+userID+"/"+animHash+".png", "image/gif",
		readTestdata(t, "video-001.gif"))
	stub.SetAvatar("guilds/"+guildID+"/users/"+userID+"/avatars/"+guildHash+".png",
		"image/webp", readTestdata(t, "yellow_rose.lossy-with-alpha.webp"))
	stub.SetAvatar("embed/avatars/1.png", "image/png", readTestdata(t, "tux.png"))

	local, _ := newLocalStore(t)
	store := countCalls(local)
	svc := newService(t, store, Options{CDNBase: stub.CDNURL()})
	guildSvc := newService(t, store, Options{CDNBase: stub.CDNURL(), PreferGuild: true})
	ctx := t.Context()

	base, err := svc.Sync(ctx, Member{UserID: userID, UserAvatar: userHash}, Current{})
	if err != nil {
		t.Fatal(err)
	}
	cur := Current{SourceHash: base.SourceHash, URL: base.URL}
	withGuild := Member{UserID: userID, GuildID: guildID, UserAvatar: userHash,
		GuildAvatar: guildHash}
	wantKey := func(file string) string { _, k := processed(t, file); return k }

	tests := []struct {
		name     string
		svc      *Service
		m        Member
		cur      Current
		wantHash string
		wantKey  string
		uploaded bool
		// unchanged: the user already has this avatar, so nothing is fetched
		unchanged bool
	}{
		{
			name: "new avatar", svc: svc, m: Member{UserID: userID, UserAvatar: otherHash},
			cur: cur, wantHash: otherHash, wantKey: wantKey("video-001.cmyk.jpeg"), uploaded: true,
		},
		{
			name: "new hash, same picture", svc: svc,
			m: Member{UserID: userID, UserAvatar: sameImageHash}, cur: cur,
			wantHash: sameImageHash, wantKey: base.Key,
		},
		{
			name: "animated", svc: svc, m: Member{UserID: userID, UserAvatar: animHash},
			cur: cur, wantHash: animHash, wantKey: wantKey("video-001.gif"), uploaded: true,
		},
		{
			name: "guild avatar preferred", svc: guildSvc,
			m:   withGuild,
			cur: cur, wantHash: guildHash, wantKey: wantKey("yellow_rose.lossy-with-alpha.webp"),
			uploaded: true,
		},
		{
			name: "guild avatar not preferred", svc: svc,
			m:   withGuild,
			cur: cur, wantHash: userHash, wantKey: base.Key, unchanged: true,
		},
		{
			name: "default avatar of a migrated user", svc: svc,
			m:   Member{UserID: migratedID, Discriminator: "0"},
			cur: Current{}, wantHash: "default-1", wantKey: wantKey("tux.png"), uploaded: true,
		},
		{
			name: "same hash, URL of another store", svc: svc,
			m:        Member{UserID: userID, UserAvatar: userHash},
			cur:      Current{SourceHash: userHash, URL: "https://old.example/avatars/" + base.Key},
			wantHash: userHash, wantKey: base.Key,
		},
		{
			name: "same hash, data URI of the old mapping", svc: svc,
			m:        Member{UserID: userID, UserAvatar: userHash},
			cur:      Current{SourceHash: userHash, URL: "data:image/png;base64,iVBORw0KGgo="},
			wantHash: userHash, wantKey: base.Key,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cdnRequests(stub)
			_, putsBefore := store.calls(tt.wantKey)

			got, err := tt.svc.Sync(ctx, tt.m, tt.cur)
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			want := Result{SourceHash: tt.wantHash, URL: local.URL(tt.wantKey), Key: tt.wantKey,
				Changed: !tt.unchanged}
			if got != want {
				t.Errorf("Sync = %+v, want %+v", got, want)
			}
			wantRequests := 1
			if tt.unchanged {
				wantRequests = 0
			}
			if n := cdnRequests(stub) - before; n != wantRequests {
				t.Errorf("CDN requests = %d, want %d", n, wantRequests)
			}
			_, puts := store.calls(tt.wantKey)
			if uploaded := puts > putsBefore; uploaded != tt.uploaded {
				t.Errorf("uploaded = %v, want %v", uploaded, tt.uploaded)
			}
			checkPublicAvatar(t, got.URL, 64)
		})
	}
}

func TestService_Sync_objectGone(t *testing.T) {
	stub := newStub(t)
	stub.SetAvatar("avatars/"+userID+"/"+userHash+".png", "image/png", readTestdata(t, "tux.png"))
	local, _ := newLocalStore(t)
	m := Member{UserID: userID, UserAvatar: userHash}

	first, err := newService(t, local, Options{CDNBase: stub.CDNURL()}).Sync(t.Context(), m,
		Current{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(local.Dir(), first.Key)); err != nil {
		t.Fatal(err)
	}

	// A new process finds the object missing and stores it again under the same URL.
	svc := newService(t, local, Options{CDNBase: stub.CDNURL()})
	got, err := svc.Sync(t.Context(), m, Current{SourceHash: first.SourceHash, URL: first.URL})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != first.URL || got.Changed {
		t.Errorf("Sync = %+v, want the same URL, unchanged", got)
	}
	if st := svc.Stats(); st.Downloads != 1 || st.Uploads != 1 {
		t.Errorf("Stats = %+v, want one download and one upload", st)
	}
	checkPublicAvatar(t, got.URL, 64)
}

func TestService_Sync_realImagesFromStub(t *testing.T) {
	stub := newStub(t)
	local, _ := newLocalStore(t)
	svc := newService(t, local, Options{CDNBase: stub.CDNURL()})
	files := []string{
		"video-001.png", "video-001.jpeg", "video-001.cmyk.jpeg", "video-001.gif",
		"video-005.gray.png", "triangle-001.gif", "tux.png", "go-turns-two-280x360.jpeg",
		"blue-purple-pink.lossy.webp", "blue-purple-pink.lossless.webp",
		"yellow_rose.lossy-with-alpha.webp",
	}
	for i, file := range files {
		t.Run(file, func(t *testing.T) {
			hash := fmt.Sprintf("%032x", i+1)
			stub.SetAvatar("avatars/"+userID+"/"+hash+".png", "image/png", readTestdata(t, file))
			got, err := svc.Sync(t.Context(), Member{UserID: userID, UserAvatar: hash}, Current{})
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			checkPublicAvatar(t, got.URL, 64)
		})
	}
}

// badCDN serves, under avatars/{user}/{hash}.png, a different failure for each hash.
func badCDN(t *testing.T) (*httptest.Server, *httptest.Server) {
	t.Helper()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request to the other host: %s", r.URL)
	}))
	t.Cleanup(other.Close)

	good := readTestdata(t, "video-001.png")
	huge := make([]byte, 2<<20)
	copy(huge, "\x89PNG\r\n\x1a\n")
	cases := map[string]http.HandlerFunc{
		"good": imageHandler("image/png", good),
		"truncated": imageHandler("image/png",
			readTestdata(t, "video-001.cut-at-15000.png")),
		"garbage": imageHandler("image/png", []byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0}),
		"html": imageHandler("text/html",
			[]byte("<html><body><h1>502 Bad Gateway</h1></body></html>")),
		"huge": imageHandler("image/png", huge),
		"bomb": imageHandler("image/png", pngHeader(100000, 100000)),
		"missing": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "404: Not Found", http.StatusNotFound)
		},
		"badsize": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "400: Bad Request", http.StatusBadRequest)
		},
		"flaky": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "503: Service Unavailable", http.StatusServiceUnavailable)
		},
		"away": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/avatar.png", http.StatusFound)
		},
	}
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hash := strings.TrimSuffix(filepath.Base(r.URL.Path), ".png")
		if h, ok := cases[hash]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(cdn.Close)
	return cdn, other
}

func imageHandler(ct string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	}
}

func TestService_Sync_badInputKeepsTheOldAvatar(t *testing.T) {
	cdn, _ := badCDN(t)
	local, _ := newLocalStore(t)
	store := countCalls(local)
	svc := newService(t, store, Options{CDNBase: cdn.URL, MaxBytes: 1 << 20})
	ctx := t.Context()

	good, err := svc.Sync(ctx, Member{UserID: userID, UserAvatar: "good"}, Current{})
	if err != nil {
		t.Fatal(err)
	}
	cur := Current{SourceHash: good.SourceHash, URL: good.URL}

	tests := []struct {
		hash      string
		kind      Kind
		retryable bool
	}{
		{"truncated", KindDecode, false},
		{"garbage", KindNotImage, false},
		{"html", KindNotImage, false},
		{"huge", KindTooLarge, false},
		{"bomb", KindTooManyPixels, false},
		{"missing", KindStatus, false},
		{"badsize", KindStatus, false},
		{"flaky", KindStatus, true},
		{"away", KindHost, false},
	}
	for _, tt := range tests {
		t.Run(tt.hash, func(t *testing.T) {
			before := svc.Stats().Failures[tt.kind]
			got, err := svc.Sync(ctx, Member{UserID: userID, UserAvatar: tt.hash}, cur)
			wantKind(t, err, tt.kind, tt.retryable)
			if got != (Result{}) {
				t.Errorf("Sync = %+v with an error, want an empty Result", got)
			}
			if !strings.Contains(err.Error(), userID) {
				t.Errorf("err = %q, want it to name the user", err)
			}
			if n := svc.Stats().Failures[tt.kind] - before; n != 1 {
				t.Errorf("Failures[%s] grew by %d, want 1", tt.kind, n)
			}
		})
	}

	objs, err := local.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != good.Key {
		t.Errorf("store holds %+v, want only the working avatar %s", objs, good.Key)
	}
	checkPublicAvatar(t, good.URL, 64)
}

func TestService_Sync_s3(t *testing.T) {
	stub := newStub(t)
	const newHash = "0123456789abcdef0123456789abcdef"
	stub.SetAvatar("avatars/"+userID+"/"+userHash+".png", "image/webp",
		readTestdata(t, "blue-purple-pink.lossless.webp"))
	stub.SetAvatar("avatars/"+userID+"/"+newHash+".png", "image/png", readTestdata(t, "tux.png"))
	srv := s3server.Start(t)
	store := newS3Store(t, srv, "avatars")
	svc := newService(t, store, Options{CDNBase: stub.CDNURL()})
	ctx := t.Context()
	m := Member{UserID: userID, UserAvatar: userHash}

	first, err := svc.Sync(ctx, m, Current{})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkPublicAvatar(t, first.URL, 64)
	cur := Current{SourceHash: first.SourceHash, URL: first.URL}

	srv.Stop()

	// Known to exist: an unchanged avatar needs no store, so a down S3 costs nothing.
	if got, err := svc.Sync(ctx, m, cur); err != nil || got.Changed || got.URL != first.URL {
		t.Errorf("unchanged Sync with S3 down = %+v, %v; want unchanged, no error", got, err)
	}

	// A changed avatar cannot be stored: an error, and nothing that would replace cur.
	changed := Member{UserID: userID, UserAvatar: newHash}
	got, err := svc.Sync(ctx, changed, cur)
	wantKind(t, err, KindStore, true)
	if got != (Result{}) {
		t.Errorf("Sync with S3 down = %+v, want an empty Result", got)
	}

	// A new process cannot confirm the old object either; it says so rather than guessing.
	fresh := newService(t, store, Options{CDNBase: stub.CDNURL()})
	got, err = fresh.Sync(ctx, m, cur)
	wantKind(t, err, KindStore, true)
	if got != (Result{}) {
		t.Errorf("Sync in a new process with S3 down = %+v, want an empty Result", got)
	}

	srv.Restart()
	got, err = svc.Sync(ctx, changed, cur)
	if err != nil || !got.Changed || got.SourceHash != newHash {
		t.Fatalf("Sync after restart = %+v, %v; want the new avatar", got, err)
	}
	checkPublicAvatar(t, got.URL, 64)
	if st := svc.Stats(); st.Failures[KindStore] != 1 {
		t.Errorf("Failures = %v, want one store failure", st.Failures)
	}
}

func TestService_GC_local(t *testing.T) {
	local, _ := newLocalStore(t)
	ctx := t.Context()
	now := time.Now()
	keys := map[string]string{}
	for name, file := range map[string]string{
		"referenced": "tux.png", "old": "video-001.png", "young": "video-001.gif",
		"used": "triangle-001.gif", "within min age": "video-005.gray.png",
	} {
		png, key := processed(t, file)
		if err := local.Put(ctx, key, png); err != nil {
			t.Fatal(err)
		}
		keys[name] = key
	}
	age := map[string]time.Duration{
		"referenced": 48 * time.Hour, "old": 48 * time.Hour, "young": time.Hour,
		"used": 48 * time.Hour, "within min age": 5 * time.Minute,
	}
	for name, d := range age {
		if err := os.Chtimes(filepath.Join(local.Dir(), keys[name]), now.Add(-d),
			now.Add(-d)); err != nil {
			t.Fatal(err)
		}
	}

	svc := newService(t, local, Options{CDNBase: "https://cdn.discordapp.com"})
	// A sync of this process just confirmed "used"; its user's attribute may not say so yet.
	if ok, err := svc.exists(ctx, keys["used"]); !ok || err != nil {
		t.Fatal(ok, err)
	}
	referenced := func(key string) bool { return key == keys["referenced"] }

	deleted, err := svc.GC(ctx, referenced, 24*time.Hour)
	if err != nil || deleted != 1 {
		t.Fatalf("GC = %d, %v; want 1 deleted", deleted, err)
	}
	for name, key := range keys {
		ok, _ := local.Exists(ctx, key)
		if want := name != "old"; ok != want {
			t.Errorf("%s exists = %v, want %v", name, ok, want)
		}
	}

	// Asked for zero, GC still keeps what is younger than MinGCAge or was used within it:
	// only the hour-old object goes.
	deleted, err = svc.GC(ctx, referenced, 0)
	if err != nil || deleted != 1 {
		t.Fatalf("GC(0) = %d, %v; want 1 deleted", deleted, err)
	}
	for name, key := range keys {
		ok, _ := local.Exists(ctx, key)
		if want := name != "old" && name != "young"; ok != want {
			t.Errorf("after GC(0): %s exists = %v, want %v", name, ok, want)
		}
	}
	if st := svc.Stats(); st.Deleted != 2 {
		t.Errorf("Stats.Deleted = %d, want 2", st.Deleted)
	}
}

func TestService_GC_s3(t *testing.T) {
	srv := s3server.Start(t)
	store := countCalls(newS3Store(t, srv, "gc"))
	ctx := t.Context()
	var keep, drop string
	for i, file := range []string{"tux.png", "video-001.png"} {
		png, key := processed(t, file)
		if err := store.Put(ctx, key, png); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			keep = key
		} else {
			drop = key
		}
	}

	// Two days from now both objects are old; only the unreferenced one goes.
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	svc := newService(t, store, Options{CDNBase: "https://cdn.discordapp.com", Now: later})
	deleted, err := svc.GC(ctx, func(k string) bool { return k == keep }, 24*time.Hour)
	if err != nil || deleted != 1 {
		t.Fatalf("GC = %d, %v; want 1 deleted", deleted, err)
	}
	if ok, _ := store.Exists(ctx, keep); !ok {
		t.Error("the referenced object was deleted")
	}
	if ok, _ := store.Exists(ctx, drop); ok {
		t.Error("the unreferenced old object is still there")
	}

	// Today nothing is old enough.
	now := newService(t, store, Options{CDNBase: "https://cdn.discordapp.com"})
	if deleted, err := now.GC(ctx, func(string) bool { return false }, 24*time.Hour); err != nil ||
		deleted != 0 {
		t.Errorf("GC of young objects = %d, %v; want 0", deleted, err)
	}

	srv.Stop()
	deleted, err = svc.GC(ctx, func(string) bool { return false }, 24*time.Hour)
	if deleted != 0 || !Retryable(err) {
		t.Errorf("GC with S3 down = %d, %v; want 0 and a retryable error", deleted, err)
	}
}

func TestService_KeyOf(t *testing.T) {
	local, err := NewLocalStore(t.TempDir(), "https://bridge.example.org")
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(t, local, Options{CDNBase: "https://cdn.discordapp.com"})
	_, key := processed(t, "tux.png")
	tests := map[string]bool{
		"https://bridge.example.org/avatars/" + key:   true,
		"https://other.example.org/avatars/" + key:    false,
		"https://bridge.example.org/avatars/x/" + key: false,
		"https://bridge.example.org/avatars/abc.png":  false,
		"data:image/png;base64,AAAA":                  false,
		"":                                            false,
	}
	for url, want := range tests {
		got, ok := svc.KeyOf(url)
		if ok != want || (ok && got != key) {
			t.Errorf("KeyOf(%q) = %q, %v; want ok %v", url, got, ok, want)
		}
	}
}

func TestNew_invalid(t *testing.T) {
	local, err := NewLocalStore(t.TempDir(), "http://bridge")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		store Store
		o     Options
	}{
		{"no store", nil, Options{CDNBase: cdn}},
		{"no cdn", local, Options{}},
		{"huge edge", local, Options{CDNBase: cdn, Edge: 10000}},
		{"bad scheme", local, Options{CDNBase: "ftp://x"}},
	}
	for _, tt := range tests {
		if _, err := New(tt.store, nil, tt.o); err == nil {
			t.Errorf("%s: New succeeded, want an error", tt.name)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	if KindOf(errors.New("x")) != KindUnclassified || Retryable(errors.New("x")) {
		t.Error("a plain error should be unclassified and final")
	}
	wrapped := fmt.Errorf("sync: %w", statusError("u", 502))
	wantKind(t, wrapped, KindStatus, true)
	for status, retry := range map[int]bool{
		400: false, 401: false, 403: false, 404: false, 410: false, 408: true, 425: true,
		429: true, 500: true, 502: true, 503: true, 504: true,
	} {
		if got := statusError("u", status).Retryable; got != retry {
			t.Errorf("status %d retryable = %v, want %v", status, got, retry)
		}
	}
}
