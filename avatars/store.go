package avatars

import (
	"context"
	"regexp"
	"time"
)

// Headers every stored avatar is served with, by either store.
const (
	ContentType = "image/png"
	// CacheControl lets browsers and proxies keep an avatar for a year without asking again:
	// a key is the hash of its bytes, so the object behind a URL never changes.
	CacheControl = "public, max-age=31536000, immutable"
)

// Store keeps processed avatars under their Key and says where the public can fetch them.
// Implementations are safe for concurrent use.
type Store interface {
	// Put stores png under key, served as ContentType with CacheControl. Putting a key that
	// exists is harmless: the bytes are the same.
	Put(ctx context.Context, key string, png []byte) error
	// Exists reports whether key is stored.
	Exists(ctx context.Context, key string) (bool, error)
	// Delete removes key; a key that is not there is no error.
	Delete(ctx context.Context, key string) error
	// List returns every stored avatar, in no particular order.
	List(ctx context.Context) ([]Object, error)
	// URL is the public address of key, the value written into Authentik.
	URL(key string) string
	// Name is "local" or "s3", for status pages and logs.
	Name() string
}

// Object is one stored avatar.
type Object struct {
	Key      string
	Modified time.Time
}

var keyRE = regexp.MustCompile(`^[0-9a-f]{64}\.png$`)

// ValidKey reports whether key has the form Key produces. Stores refuse anything else, which
// also keeps paths and object names free of slashes and dots a caller could abuse.
func ValidKey(key string) bool { return keyRE.MatchString(key) }
