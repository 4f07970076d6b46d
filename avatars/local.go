package avatars

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LocalPath is where the bridge serves the local store: an avatar's URL is the public base,
// LocalPath and its key. Mount Handler there without stripping the prefix.
const LocalPath = "/avatars/"

// tempPrefix marks files a Put is still writing; List and the handler never show them.
const tempPrefix = ".tmp-"

// LocalStore keeps avatars as files in one directory, served by the bridge itself through
// Handler. It suits a single bridge; several replicas need the S3 store.
type LocalStore struct {
	dir        string
	publicBase string
}

var _ Store = (*LocalStore)(nil)

// NewLocalStore returns a store in dir, creating it when missing. publicBase is the bridge's
// public URL (BRIDGE_PUBLIC_URL) without a trailing slash. Temporary files an earlier process
// left behind when it stopped mid-write are removed.
func NewLocalStore(dir, publicBase string) (*LocalStore, error) {
	// The directory is made by the first Put: a store that is only read, as by a dry run,
	// leaves no trace on disk.
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local avatar store: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &LocalStore{dir: dir, publicBase: strings.TrimRight(publicBase, "/")}, nil
}

// Name is "local".
func (s *LocalStore) Name() string { return "local" }

// Dir is the directory the avatars are in.
func (s *LocalStore) Dir() string { return s.dir }

// URL is publicBase + LocalPath + key.
func (s *LocalStore) URL(key string) string { return s.publicBase + LocalPath + key }

// Put writes png to a temporary file and renames it into place, so that a reader never sees
// half a picture and a crash leaves no broken avatar behind.
func (s *LocalStore) Put(_ context.Context, key string, png []byte) error {
	if !ValidKey(key) {
		return newError(KindStore, false, "put %q: not an avatar key", key)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return storeError("put "+key, err)
	}
	f, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return storeError("put "+key, err)
	}
	tmp := f.Name()
	_, err = f.Write(png)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// CreateTemp makes the file 0600; the avatar is public anyway, and an operator's web
		// server may serve the directory as another user.
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, key))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return storeError("put "+key, err)
	}
	return nil
}

// Exists reports whether the file for key is there.
func (s *LocalStore) Exists(_ context.Context, key string) (bool, error) {
	if !ValidKey(key) {
		return false, nil
	}
	_, err := os.Stat(filepath.Join(s.dir, key))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, storeError("stat "+key, err)
	}
}

// Delete removes the file for key.
func (s *LocalStore) Delete(_ context.Context, key string) error {
	if !ValidKey(key) {
		return newError(KindStore, false, "delete %q: not an avatar key", key)
	}
	err := os.Remove(filepath.Join(s.dir, key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return storeError("delete "+key, err)
	}
	return nil
}

// List returns the avatars in the directory, with the time each was written.
func (s *LocalStore) List(_ context.Context) ([]Object, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, storeError("list", err)
	}
	var out []Object
	for _, e := range entries {
		if !e.Type().IsRegular() || !ValidKey(e.Name()) {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return nil, storeError("list", err)
		}
		out = append(out, Object{Key: e.Name(), Modified: info.ModTime()})
	}
	return out, nil
}

// Handler serves GET and HEAD of LocalPath + key from the directory with the same headers the
// S3 store sets, an ETag (the key itself, as content never changes), 304 for a matching
// If-None-Match, and 404 for anything that is not a stored key: no listing, no other file.
func (s *LocalStore) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		key, ok := strings.CutPrefix(r.URL.Path, LocalPath)
		if !ok || !ValidKey(key) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(s.dir, key))
		if err != nil {
			// Missing or unreadable alike: the caller can do nothing about either.
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil || !info.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}

		h.Set("Content-Type", ContentType)
		h.Set("Cache-Control", CacheControl)
		h.Set("ETag", `"`+key+`"`)
		// Apps that isolate themselves (Cross-Origin-Embedder-Policy) may only embed
		// cross-origin images that allow it.
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		// ServeContent answers If-None-Match with 304 against the ETag above, and HEAD and
		// ranges as a file server would; the modification time is left out because the ETag
		// alone decides freshness.
		http.ServeContent(w, r, key, time.Time{}, f)
	})
}

// storeError wraps a file system error; the disk rarely heals by itself, but a full disk or a
// remount does, so it is worth another try later.
func storeError(op string, err error) error {
	return &Error{Kind: KindStore, Retryable: true, Err: fmt.Errorf("local store: %s: %w", op, err)}
}
