package e2e

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"

	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/reconcile/sqlitestore"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
	"github.com/discord-authentik-bridge/bridge/test/s3server"
)

// imageDir holds the real images of ../shared/images, copied into the avatars package.
const imageDir = "../../avatars/testdata"

// avatarEdge is the stored size the bridge uses by default (BRIDGE_AVATAR_SIZE).
const avatarEdge = 64

// cdnRoute is the discord stand-in's counter key for every CDN request.
const cdnRoute = "GET /cdn/{path...}"

var avatarStores = []string{"local", "s3"}

// goodImages are valid avatars the bad-input tests recover with, in turn, so that two
// consecutive ones never give the same stored object.
var goodImages = []string{"tux.png", "video-001.png", "video-001.jpeg"}

func readImage(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(imageDir, name))
	if err != nil {
		t.Fatalf("read test image: %v", err)
	}
	return b
}

// contentTypeOf is the type the stand-in CDN labels an image file with.
func contentTypeOf(name string) string {
	switch path.Ext(name) {
	case ".jpeg", ".jpg":
		return "image/jpeg"
	case ".gif":
		return "image/gif"
	case ".webp":
		return "image/webp"
	default:
		return "image/png"
	}
}

type avatarOptions struct {
	store   string // "local" or "s3"
	front   bool   // put a cdnFront between the bridge and the stand-in's CDN
	countS3 bool   // send the bridge's S3 requests through an s3Counter
}

// avatarEnv is a running bridge whose member nelly gets avatars the test chooses.
type avatarEnv struct {
	*env
	w       world
	s3      *s3server.Server // nil for the local store
	s3Count *s3Counter       // nil unless countS3
	front   *cdnFront        // nil unless front
	hashes  int
	status  *sqlitestore.Store
}

func newAvatarEnv(t *testing.T, o avatarOptions) *avatarEnv {
	t.Helper()
	a := &avatarEnv{env: newEnv(t)}
	a.w = seed(t, a.env)
	// A fixed public URL makes the local store's links predictable. The gateway plays no part
	// in avatars, and closing its session adds a second to every stop.
	a.vars = append(a.vars, "BRIDGE_PUBLIC_URL="+a.url, "BRIDGE_GATEWAY=false")

	if o.front {
		a.front = newCDNFront(t, a.dc.CDNURL())
		a.vars = append(a.vars, "BRIDGE_DISCORD_CDN_URL="+a.front.srv.URL+"/cdn")
	}
	if o.store == "s3" {
		a.s3 = s3server.Start(t)
		endpoint := a.s3.Endpoint()
		if o.countS3 {
			a.s3Count = newS3Counter(t, a.s3.URL())
			endpoint = strings.TrimPrefix(a.s3Count.srv.URL, "http://")
		}
		a.vars = append(a.vars,
			"BRIDGE_AVATAR_STORE=s3",
			"BRIDGE_S3_ENDPOINT="+endpoint,
			"BRIDGE_S3_BUCKET="+a.s3.Bucket,
			"BRIDGE_S3_REGION="+a.s3.Region,
			"BRIDGE_S3_ACCESS_KEY="+a.s3.AccessKey,
			"BRIDGE_S3_SECRET_KEY="+a.s3.SecretKey,
			"BRIDGE_S3_PUBLIC_URL="+a.s3.PublicURL(),
			"BRIDGE_S3_USE_SSL=false",
		)
	}
	a.start()
	return a
}

// newHash returns a Discord-shaped avatar hash (32 hex digits) not used before in a.
func (a *avatarEnv) newHash() string {
	a.hashes++
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s avatar %d", a.t.Name(), a.hashes)))
	return hex.EncodeToString(sum[:16])
}

// cdnPath is where the CDN serves nelly's avatar with hash, without a leading slash.
func cdnPath(hash string) string { return "avatars/" + nellyID + "/" + hash + ".png" }

// setMember makes nelly's Discord avatar the one with hash; the rest is as seed made her.
func (a *avatarEnv) setMember(t *testing.T, hash string) {
	t.Helper()
	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.User.GlobalName = nellyID, "nelly", discordstub.Ptr("Nelly N.")
	m.Roles = []string{roleMember, roleAdmin}
	m.User.Avatar = &hash
	mustSetMember(t, a.env, m)
}

// useImage serves the image file as a new avatar of nelly and returns its hash.
func (a *avatarEnv) useImage(t *testing.T, name string) string {
	t.Helper()
	hash := a.newHash()
	a.dc.SetAvatar(cdnPath(hash), contentTypeOf(name), readImage(t, name))
	a.setMember(t, hash)
	return hash
}

// syncNelly calls the sync hook for nelly and fails unless it answers 200.
func (a *avatarEnv) syncNelly(t *testing.T) map[string]any {
	t.Helper()
	status, body := a.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": a.w.nelly})
	if status != http.StatusOK {
		t.Fatalf("sync hook = %d %v, want 200", status, body)
	}
	return body
}

// hostedAvatar is what nelly's Authentik attributes say about her avatar.
type hostedAvatar struct {
	URL        string  // attributes.avatar
	DiscordURL string  // attributes.discord.avatar_url
	Hash       *string // attributes.discord.avatar
}

func (h hostedAvatar) String() string {
	hash := "<nil>"
	if h.Hash != nil {
		hash = *h.Hash
	}
	return fmt.Sprintf("avatar %q, discord.avatar_url %q, discord.avatar %s",
		h.URL, h.DiscordURL, hash)
}

func (a *avatarEnv) hosted(t *testing.T) hostedAvatar {
	t.Helper()
	var attrs struct {
		Avatar  string `json:"avatar"`
		Discord struct {
			Avatar    *string `json:"avatar"`
			AvatarURL string  `json:"avatar_url"`
		} `json:"discord"`
	}
	raw := a.ak.UserAttributes(a.w.nelly)
	if err := json.Unmarshal(raw, &attrs); err != nil {
		t.Fatalf("attributes %s: %v", raw, err)
	}
	return hostedAvatar{URL: attrs.Avatar, DiscordURL: attrs.Discord.AvatarURL,
		Hash: attrs.Discord.Avatar}
}

// wantHosted checks that nelly's attributes and the hook's answer point at one hosted
// avatar made from hash, served where the store serves, and returns its URL.
func (a *avatarEnv) wantHosted(t *testing.T, hash string, answer map[string]any) string {
	t.Helper()
	h := a.hosted(t)
	if h.Hash == nil || *h.Hash != hash {
		t.Errorf("attributes: %s; want discord.avatar %q", h, hash)
	}
	if h.URL == "" || h.DiscordURL != h.URL {
		t.Errorf("attributes: %s; want one URL in avatar and discord.avatar_url", h)
	}
	if !strings.HasPrefix(h.URL, a.storeBase()) {
		t.Errorf("avatar URL %q is not under the store's base %q", h.URL, a.storeBase())
	}
	if got := answer["avatar"]; got != h.URL {
		t.Errorf("sync hook answered avatar %v, want %q", got, h.URL)
	}
	return h.URL
}

// storeBase is what every avatar URL of the configured store starts with.
func (a *avatarEnv) storeBase() string {
	if a.s3 != nil {
		return a.s3.PublicURL() + "/"
	}
	return a.url + avatars.LocalPath
}

// wantServed fetches url anonymously as a browser would and checks what a browser needs:
// 200, a PNG type, no content coding, year-long caching, edge×edge pixels, and a name that
// is the SHA-256 of the bytes.
func wantServed(t *testing.T, url string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("avatar URL %q: %v", url, err)
	}
	req.Header.Set("Accept", "image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5")
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) e2e")
	// The transport itself, so that nothing undoes a Content-Encoding on the test's behalf.
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d, want 200; body %.200q", url, resp.StatusCode, body)
	}
	for name, want := range map[string]string{
		"Content-Type":     "image/png",
		"Content-Encoding": "",
		"Cache-Control":    avatars.CacheControl,
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("GET %s: %s = %q, want %q", url, name, got, want)
		}
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: body is no PNG: %v", url, err)
	}
	if b := img.Bounds(); b.Dx() != avatarEdge || b.Dy() != avatarEdge {
		t.Errorf("GET %s: image is %d×%d, want %d×%d", url, b.Dx(), b.Dy(),
			avatarEdge, avatarEdge)
	}
	sum := sha256.Sum256(body)
	if got, want := path.Base(url), hex.EncodeToString(sum[:])+".png"; got != want {
		t.Errorf("GET %s: object is named %s, want the SHA-256 of its bytes, %s", url, got, want)
	}
}

// objects lists what the avatar store holds, each with what changes when it is written again.
func (a *avatarEnv) objects(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	if a.s3 != nil {
		for obj := range a.s3.Client().ListObjects(t.Context(), a.s3.Bucket,
			minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err != nil {
				t.Fatalf("list bucket: %v", obj.Err)
			}
			out[obj.Key] = fmt.Sprintf("%d bytes, etag %s, modified %s", obj.Size, obj.ETag,
				obj.LastModified.Format(time.RFC3339Nano))
		}
		return out
	}
	dir := filepath.Join(a.dataDir, "avatars")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatalf("list local store: %v", err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatalf("list local store: %v", err)
		}
		out[e.Name()] = fmt.Sprintf("%d bytes, modified %s", info.Size(),
			info.ModTime().Format(time.RFC3339Nano))
	}
	return out
}

// lastSync waits for the sync status the bridge records in SQLite for a hook sync of nelly
// that started at or after since, and returns it. The file is read beside the running bridge,
// as the status page will read it; WAL lets a second reader in.
func (a *avatarEnv) lastSync(t *testing.T, since time.Time) reconcile.SyncRecord {
	t.Helper()
	if a.status == nil {
		st, err := sqlitestore.Open(t.Context(), filepath.Join(a.dataDir, "bridge.db"),
			slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("open the bridge's database: %v", err)
		}
		a.status = st
		a.t.Cleanup(func() { st.Close() })
	}
	since = since.Truncate(time.Millisecond) // the store keeps milliseconds
	var rec reconcile.SyncRecord
	waitFor(t, "the sync status of the hook's sync", func() bool {
		r, ok, err := a.status.LastSync(t.Context(), nellyID)
		if err != nil {
			t.Fatalf("read sync status: %v", err)
		}
		rec = r
		return ok && r.Trigger == "hook" && !r.At.Before(since)
	})
	return rec
}

// TestAvatar_HostedFromRealImages: for each store, a member whose Discord avatar is a real
// image gets a 64 px PNG that anyone can fetch, linked from attributes.avatar and
// attributes.discord.avatar_url, with the hash in attributes.discord.avatar.
func TestAvatar_HostedFromRealImages(t *testing.T) {
	images := []struct{ name, file string }{
		{"non-square JPEG", "go-turns-two-280x360.jpeg"},
		{"CMYK JPEG", "video-001.cmyk.jpeg"},
		{"WebP with alpha", "yellow_rose.lossy-with-alpha.webp"},
		{"GIF", "video-001.gif"},
		{"greyscale PNG", "video-005.gray.png"},
		{"PNG with transparency", "tux.png"},
	}
	for _, store := range avatarStores {
		t.Run(store, func(t *testing.T) {
			a := newAvatarEnv(t, avatarOptions{store: store})
			seen := map[string]string{} // URL → image
			for _, img := range images {
				t.Run(img.name, func(t *testing.T) {
					hash := a.useImage(t, img.file)
					body := a.syncNelly(t)
					if body["status"] != "changed" {
						t.Errorf("sync status = %v, want changed", body["status"])
					}
					url := a.wantHosted(t, hash, body)
					wantServed(t, url)
					if other, ok := seen[url]; ok {
						t.Errorf("%s and %s were stored as the same object %s",
							other, img.file, url)
					}
					seen[url] = img.file
				})
			}
		})
	}
}

// TestAvatar_NoWorkWhenUnchanged: a sync of a member whose avatar has not changed downloads
// nothing, uploads nothing and writes nothing to Authentik, in the process that stored the
// avatar and in a freshly started one.
func TestAvatar_NoWorkWhenUnchanged(t *testing.T) {
	for _, store := range avatarStores {
		t.Run(store, func(t *testing.T) {
			a := newAvatarEnv(t, avatarOptions{store: store, countS3: true})
			hash := a.useImage(t, "video-001.png")
			url := a.wantHosted(t, hash, a.syncNelly(t))

			for _, step := range []struct {
				name    string
				arrange func()
			}{
				{"same process", func() {}},
				{"after a restart", func() { a.stop(); a.start() }},
			} {
				t.Run(step.name, func(t *testing.T) {
					step.arrange()
					before := a.objects(t)
					a.dc.ResetCounts()
					a.ak.ResetCounts()
					if a.s3Count != nil {
						a.s3Count.reset()
					}

					body := a.syncNelly(t)
					if body["status"] != "unchanged" {
						t.Errorf("sync status = %v, want unchanged", body["status"])
					}
					if got := a.wantHosted(t, hash, body); got != url {
						t.Errorf("avatar URL = %q, want %q as before", got, url)
					}
					if n := a.dc.Counts().ByRoute[cdnRoute]; n != 0 {
						t.Errorf("made %d CDN requests, want none", n)
					}
					if c := a.ak.Counts(); c.Writes != 0 {
						t.Errorf("made %d Authentik writes, want none: %v", c.Writes, c.ByRoute)
					}
					if diff := cmp.Diff(before, a.objects(t)); diff != "" {
						t.Errorf("the store changed (-before +after):\n%s", diff)
					}
					if a.s3Count != nil {
						if got := a.s3Count.get(); got[http.MethodPut] != 0 ||
							got[http.MethodPost] != 0 {
							t.Errorf("S3 requests %v, want no upload", got)
						}
					}
				})
			}
		})
	}
}

// TestAvatar_NewHashNewObject: a new avatar hash gives a new object and a new URL; the old
// object stays until collection. A new hash whose picture is the same keeps the object.
func TestAvatar_NewHashNewObject(t *testing.T) {
	for _, store := range avatarStores {
		t.Run(store, func(t *testing.T) {
			a := newAvatarEnv(t, avatarOptions{store: store})
			oldURL := a.wantHosted(t, a.useImage(t, "video-001.png"), a.syncNelly(t))

			hash := a.useImage(t, "tux.png")
			body := a.syncNelly(t)
			if body["status"] != "changed" {
				t.Errorf("sync status = %v, want changed", body["status"])
			}
			newURL := a.wantHosted(t, hash, body)
			if newURL == oldURL {
				t.Fatalf("a new picture kept the URL %s", oldURL)
			}
			wantServed(t, newURL)
			wantServed(t, oldURL)
			want := []string{path.Base(newURL), path.Base(oldURL)}
			got := a.objects(t)
			for _, key := range want {
				if _, ok := got[key]; !ok {
					t.Errorf("store holds %v, want %s in it", keys(got), key)
				}
			}
			if len(got) != len(want) {
				t.Errorf("store holds %v, want exactly %v", keys(got), want)
			}

			// The same picture uploaded again under a new hash.
			before := a.objects(t)
			hash = a.useImage(t, "tux.png")
			if url := a.wantHosted(t, hash, a.syncNelly(t)); url != newURL {
				t.Errorf("the same picture under a new hash moved to %s, want %s", url, newURL)
			}
			if diff := cmp.Diff(before, a.objects(t)); diff != "" {
				t.Errorf("the store changed (-before +after):\n%s", diff)
			}
		})
	}
}

// badAvatar is an avatar the bridge must refuse without losing the one the user has.
type badAvatar struct {
	name string
	// serve makes the CDN answer for hash, or breaks something else (the store).
	serve func(t *testing.T, a *avatarEnv, hash string)
	// want are parts of the error the sync status must record.
	want []string
	// repair undoes what serve broke beyond the CDN; nil when nothing.
	repair func(t *testing.T, a *avatarEnv)
	// retry makes the recovery sync try the same avatar again instead of a new one.
	retry bool
	// check runs extra checks after the refused sync; nil when none.
	check func(t *testing.T, a *avatarEnv)
	s3    bool // only for the S3 store
}

// cdnFile serves body with contentType from the stand-in's CDN.
func cdnFile(contentType string, body []byte) func(*testing.T, *avatarEnv, string) {
	return func(_ *testing.T, a *avatarEnv, hash string) {
		a.dc.SetAvatar(cdnPath(hash), contentType, body)
	}
}

// padded is a valid PNG followed by zeros up to n bytes: an image if nothing stops reading.
func padded(t *testing.T, n int) []byte {
	t.Helper()
	b := readImage(t, "tux.png")
	return append(b, make([]byte, n-len(b))...)
}

// TestAvatar_BadInputKeepsPreviousAvatar: each bad avatar leaves the previous one in place
// (URL and hash), records a clear error in the sync status, does not stop the groups from
// being synced, and the next good avatar works.
func TestAvatar_BadInputKeepsPreviousAvatar(t *testing.T) {
	overLimit := int(avatars.DefaultMaxBytes) + 1
	rows := []badAvatar{
		{name: "truncated PNG",
			serve: func(t *testing.T, a *avatarEnv, hash string) {
				cdnFile("image/png", readImage(t, "video-001.cut-at-15000.png"))(t, a, hash)
			},
			want: []string{"decode png"}},
		{name: "text labelled image/png",
			serve: cdnFile("image/png", []byte("this is not an image at all\n")),
			want:  []string{"not an image"}},
		{name: "binary bytes labelled image/png",
			serve: cdnFile("image/png", bytes.Repeat([]byte{0x00, 0xff, 0x13, 0x37}, 512)),
			want:  []string{"not an image"}},
		{name: "HTML error page",
			serve: cdnFile("text/html; charset=utf-8", []byte("<!DOCTYPE html><html><head>"+
				"<title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"+
				"</body></html>\n")),
			want: []string{"not an image", "text/html"}},
		{name: "CDN 404",
			serve: func(*testing.T, *avatarEnv, string) {}, // the stand-in has no such file
			want:  []string{"404"}},
		{name: "CDN 400",
			serve: func(_ *testing.T, a *avatarEnv, hash string) {
				a.front.set(cdnPath(hash), func(w http.ResponseWriter, _ *http.Request) {
					http.Error(w, "400: Bad Request", http.StatusBadRequest)
				})
			},
			want: []string{"400"}},
		{name: "body over the byte limit",
			serve: func(t *testing.T, a *avatarEnv, hash string) {
				cdnFile("image/png", padded(t, overLimit))(t, a, hash)
			},
			want: []string{"limit"}},
		{name: "body over the byte limit without Content-Length",
			serve: func(t *testing.T, a *avatarEnv, hash string) {
				body := padded(t, overLimit)
				a.front.set(cdnPath(hash), func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "image/png")
					for b := body; len(b) > 0; {
						n := min(len(b), 64<<10)
						if _, err := w.Write(b[:n]); err != nil {
							return
						}
						b = b[n:]
					}
				})
			},
			want: []string{"limit"}},
		{name: "decompression bomb",
			serve: cdnFile("image/png", bombPNG(t, 100000)),
			want:  []string{"100000×100000", "limit"}},
		{name: "S3 down", s3: true, retry: true,
			serve: func(t *testing.T, a *avatarEnv, hash string) {
				// A picture this bridge has never stored, so the store must be asked.
				file := "blue-purple-pink.lossless.webp"
				cdnFile(contentTypeOf(file), readImage(t, file))(t, a, hash)
				a.s3.Stop()
			},
			repair: func(t *testing.T, a *avatarEnv) {
				a.s3.Restart()
				if !a.s3.Running() {
					t.Fatal("the S3 server did not come back")
				}
			},
			want: []string{"s3 store", "refused"}},
	}
	for _, store := range avatarStores {
		t.Run(store, func(t *testing.T) {
			a := newAvatarEnv(t, avatarOptions{store: store, front: true})
			var list []badAvatar
			for _, r := range rows {
				if !r.s3 || store == "s3" {
					list = append(list, r)
				}
			}
			runBadAvatars(t, a, list)
		})
	}
}

// runBadAvatars gives nelly a good avatar, then runs each row: the bad avatar, and after it
// the next good one.
func runBadAvatars(t *testing.T, a *avatarEnv, rows []badAvatar) {
	t.Helper()
	first := a.useImage(t, goodImages[0])
	wantServed(t, a.wantHosted(t, first, a.syncNelly(t)))
	admins := a.w.groups["makerspace-admins"]

	for i, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			before := a.hosted(t)
			if before.URL == "" || before.Hash == nil {
				t.Fatalf("no avatar to keep before the bad one: %s", before)
			}
			// A managed group to add shows whether the group sync went on.
			a.ak.RemoveMember(admins, a.w.nelly)
			hash := a.newHash()
			tc.serve(t, a, hash)
			a.setMember(t, hash)

			since := time.Now()
			body := a.syncNelly(t)
			if body["status"] != "changed" || !containsAny(body["added"], "makerspace-admins") {
				t.Errorf("sync answered %v, want status changed and makerspace-admins added",
					body)
			}
			if !contains(a.ak.UserGroupNames(a.w.nelly), "makerspace-admins") {
				t.Errorf("groups %v lack makerspace-admins", a.ak.UserGroupNames(a.w.nelly))
			}
			if diff := cmp.Diff(before, a.hosted(t)); diff != "" {
				t.Errorf("the avatar changed (-before +after):\n%s", diff)
			}
			if body["avatar"] != before.URL {
				t.Errorf("sync answered avatar %v, want the previous %q", body["avatar"],
					before.URL)
			}
			rec := a.lastSync(t, since)
			t.Logf("recorded avatar error: %s", rec.AvatarError)
			if !containsAll(rec.AvatarError, tc.want...) {
				t.Errorf("sync status records avatar error %q, want it to say %q",
					rec.AvatarError, tc.want)
			}
			if !tc.s3 && !strings.Contains(rec.AvatarError, cdnPath(hash)) {
				t.Errorf("avatar error %q does not name the CDN file %s", rec.AvatarError,
					cdnPath(hash))
			}
			if rec.Error != "" {
				t.Errorf("sync status records error %q, want none: the sync itself worked",
					rec.Error)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
			if tc.repair != nil {
				tc.repair(t, a)
			}
			wantServed(t, before.URL)

			// The next good avatar, or the same one once the store is back, works.
			if !tc.retry {
				hash = a.newHash()
				file := goodImages[(i+1)%len(goodImages)]
				a.dc.SetAvatar(cdnPath(hash), contentTypeOf(file), readImage(t, file))
				a.setMember(t, hash)
			}
			since = time.Now()
			body = a.syncNelly(t)
			url := a.wantHosted(t, hash, body)
			if url == before.URL {
				t.Errorf("the next avatar kept the URL %s", url)
			}
			wantServed(t, url)
			if rec := a.lastSync(t, since); rec.AvatarError != "" {
				t.Errorf("sync status still records avatar error %q after a good avatar",
					rec.AvatarError)
			}
		})
	}
}

// TestAvatar_RedirectToAnotherHostRefused: the CDN may redirect within its own host, but a
// redirect to another host is not followed: that host gets no request and the previous
// avatar stays.
func TestAvatar_RedirectToAnotherHostRefused(t *testing.T) {
	a := newAvatarEnv(t, avatarOptions{store: "local", front: true})
	other := newImageHost(t, readImage(t, "video-001.jpeg"))
	otherURL, err := url.Parse(other.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	redirect := func(target func(hash string) string) func(*testing.T, *avatarEnv, string) {
		return func(_ *testing.T, a *avatarEnv, hash string) {
			a.front.set(cdnPath(hash), func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target(hash), http.StatusFound)
			})
		}
	}
	noRequest := func(t *testing.T, _ *avatarEnv) {
		if n := other.count(); n != 0 {
			t.Errorf("the other host got %d requests, want none", n)
		}
	}

	t.Run("within the CDN host", func(t *testing.T) {
		hash, moved := a.newHash(), a.newHash()
		a.dc.SetAvatar(cdnPath(moved), "image/gif", readImage(t, "video-001.gif"))
		redirect(func(string) string { return a.front.srv.URL + "/cdn/" + cdnPath(moved) })(
			t, a, hash)
		a.setMember(t, hash)
		url := a.wantHosted(t, hash, a.syncNelly(t))
		wantServed(t, url)
	})

	runBadAvatars(t, a, []badAvatar{
		{name: "to another port",
			serve: redirect(func(hash string) string {
				return other.srv.URL + "/cdn/" + cdnPath(hash)
			}),
			want:  []string{"redirect", "refused"},
			check: noRequest},
		{name: "to another host name",
			serve: redirect(func(hash string) string {
				return "http://localhost:" + otherURL.Port() + "/cdn/" + cdnPath(hash)
			}),
			want:  []string{"redirect", "refused"},
			check: noRequest},
	})
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// containsAny reports whether v, a decoded JSON list, holds s.
func containsAny(v any, s string) bool {
	list, _ := v.([]any)
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bombPNG is a PNG of a few dozen bytes whose header declares side×side RGBA pixels: a
// decoder that trusts it allocates side²×4 bytes.
func bombPNG(t testing.TB, side uint32) []byte {
	t.Helper()
	var idat bytes.Buffer
	zw := zlib.NewWriter(&idat)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	be32 := func(v uint32) []byte {
		return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	chunk := func(b *bytes.Buffer, typ string, data []byte) {
		b.Write(be32(uint32(len(data))))
		b.WriteString(typ)
		b.Write(data)
		b.Write(be32(crc32.ChecksumIEEE(append([]byte(typ), data...))))
	}
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := append(append(be32(side), be32(side)...), 8, 6, 0, 0, 0) // 8-bit RGBA
	chunk(&b, "IHDR", ihdr)
	chunk(&b, "IDAT", idat.Bytes())
	chunk(&b, "IEND", nil)

	cfg, format, err := image.DecodeConfig(bytes.NewReader(b.Bytes()))
	if err != nil || format != "png" || cfg.Width != int(side) || cfg.Height != int(side) {
		t.Fatalf("bomb header decodes as %s %d×%d (%v), want png %d×%d",
			format, cfg.Width, cfg.Height, err, side, side)
	}
	return b.Bytes()
}

// cdnFront stands between the bridge and the stand-in's CDN. It passes requests on unchanged
// unless their path has an override, which gives the answers the stand-in cannot: a 400, a
// redirect, a body without Content-Length.
type cdnFront struct {
	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mu        sync.Mutex
	overrides map[string]http.HandlerFunc // by CDN path without /cdn/
}

func newCDNFront(t *testing.T, cdnURL string) *cdnFront {
	t.Helper()
	u, err := url.Parse(cdnURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &cdnFront{
		proxy:     httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host}),
		overrides: map[string]http.HandlerFunc{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		h := f.overrides[strings.TrimPrefix(r.URL.Path, "/cdn/")]
		f.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		f.proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *cdnFront) set(cdnPath string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.overrides[cdnPath] = h
}

// imageHost serves one image at every path and counts the requests it gets.
type imageHost struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   int
}

func newImageHost(t *testing.T, body []byte) *imageHost {
	t.Helper()
	h := &imageHost{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(body)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *imageHost) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// s3Counter passes the bridge's S3 requests on to the real server and counts them by method.
// The Host header is kept, so the signatures still hold.
type s3Counter struct {
	srv *httptest.Server

	mu       sync.Mutex
	byMethod map[string]int
}

func newS3Counter(t *testing.T, target string) *s3Counter {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &s3Counter{byMethod: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.byMethod[r.Method]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *s3Counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byMethod = map[string]int{}
}

func (c *s3Counter) get() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.byMethod))
	for k, v := range c.byMethod {
		out[k] = v
	}
	return out
}
