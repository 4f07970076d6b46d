package avatars

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultS3Timeout bounds one S3 call when S3Options.Timeout is zero.
const DefaultS3Timeout = 15 * time.Second

// S3Options configure an S3Store. They mirror the BRIDGE_S3_* settings.
type S3Options struct {
	// Endpoint is host[:port] without a scheme; UseSSL picks https.
	Endpoint string
	UseSSL   bool
	Bucket   string
	Region   string
	// Prefix is put before every key, "prefix/key"; empty for none.
	Prefix    string
	AccessKey string
	SecretKey string
	// PublicURL is the base anyone can read the bucket's objects from, without a trailing
	// slash: an avatar's URL is PublicURL + "/" + prefix/key.
	PublicURL string
	// Timeout bounds each call; DefaultS3Timeout when zero.
	Timeout time.Duration
	// MaxRetries is how often minio-go tries one request, 2 when zero. The reconciler retries
	// failed syncs with back-off, so the store itself gives up quickly.
	MaxRetries int
	// Transport carries the requests; minio-go's default when nil.
	Transport http.RoundTripper
}

// S3Store keeps avatars in an S3 bucket through path-style requests, which every S3-compatible
// server understands. Reading them needs a bucket policy that lets anyone get objects.
type S3Store struct {
	client    *minio.Client
	bucket    string
	prefix    string
	publicURL string
	timeout   time.Duration
	endpoint  string
}

var _ Store = (*S3Store)(nil)

// NewS3Store returns a store for the bucket; it sends nothing until the first call.
func NewS3Store(o S3Options) (*S3Store, error) {
	var missing []string
	for _, f := range [][2]string{
		{"endpoint", o.Endpoint}, {"bucket", o.Bucket}, {"public url", o.PublicURL},
	} {
		if f[1] == "" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("s3 avatar store: missing %s", strings.Join(missing, ", "))
	}
	if strings.Contains(o.Endpoint, "://") || strings.Contains(o.Endpoint, "/") {
		return nil, fmt.Errorf("s3 avatar store: endpoint %q: want host[:port] without scheme",
			o.Endpoint)
	}
	if _, err := url.Parse(o.PublicURL); err != nil {
		return nil, fmt.Errorf("s3 avatar store: public url: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultS3Timeout
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 2
	}

	c, err := minio.New(o.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:       o.UseSSL,
		Region:       o.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   o.MaxRetries,
		Transport:    o.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 avatar store: %w", err)
	}
	return &S3Store{
		client:    c,
		bucket:    o.Bucket,
		prefix:    strings.Trim(o.Prefix, "/"),
		publicURL: strings.TrimRight(o.PublicURL, "/"),
		timeout:   o.Timeout,
		endpoint:  o.Endpoint,
	}, nil
}

// Name is "s3".
func (s *S3Store) Name() string { return "s3" }

// URL is the public address of key.
func (s *S3Store) URL(key string) string { return s.publicURL + "/" + s.object(key) }

func (s *S3Store) object(key string) string {
	if s.prefix == "" {
		return key
	}
	return s.prefix + "/" + key
}

// Put uploads png with the Content-Type and Cache-Control anonymous readers get back.
func (s *S3Store) Put(ctx context.Context, key string, png []byte) error {
	if !ValidKey(key) {
		return newError(KindStore, false, "put %q: not an avatar key", key)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	_, err := s.client.PutObject(ctx, s.bucket, s.object(key), bytes.NewReader(png),
		int64(len(png)), minio.PutObjectOptions{
			ContentType:  ContentType,
			CacheControl: CacheControl,
			// Over plain HTTP minio-go would sign the body as an aws-chunked stream, and some
			// servers (versitygw among them) then keep "Content-Encoding: aws-chunked" and
			// serve it to browsers, which cannot decode it. An unsigned payload whose MD5 is
			// in a signed header keeps the upload checked without that encoding.
			DisableContentSha256: true,
			SendContentMd5:       true,
		})
	if err != nil {
		return s.error(ctx, "put "+key, err)
	}
	return nil
}

// Exists reports whether key is in the bucket.
func (s *S3Store) Exists(ctx context.Context, key string) (bool, error) {
	if !ValidKey(key) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	_, err := s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	// A HEAD answer has no body, so minio-go names every 404 NoSuchKey; a missing bucket
	// shows up in Put and Check instead.
	r := minio.ToErrorResponse(err)
	if r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound {
		return false, nil
	}
	return false, s.error(ctx, "stat "+key, err)
}

// Delete removes key; S3 answers a missing key with success.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	if !ValidKey(key) {
		return newError(KindStore, false, "delete %q: not an avatar key", key)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	err := s.client.RemoveObject(ctx, s.bucket, s.object(key), minio.RemoveObjectOptions{})
	if err != nil {
		return s.error(ctx, "delete "+key, err)
	}
	return nil
}

// List returns the avatars under the prefix. Other objects in the bucket are left out.
func (s *S3Store) List(ctx context.Context) ([]Object, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	prefix := ""
	if s.prefix != "" {
		prefix = s.prefix + "/"
	}
	var out []Object
	for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    prefix,
		Recursive: true,
	}) {
		if info.Err != nil {
			return nil, s.error(ctx, "list", info.Err)
		}
		key := strings.TrimPrefix(info.Key, prefix)
		if ValidKey(key) {
			out = append(out, Object{Key: key, Modified: info.LastModified})
		}
	}
	return out, nil
}

// Check reports whether the bucket exists and the credentials may see it, for readiness.
func (s *S3Store) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.error(ctx, "check bucket", err)
	}
	if !ok {
		return newError(KindStore, false, "s3 store: bucket %q does not exist on %s",
			s.bucket, s.endpoint)
	}
	return nil
}

// error classifies an S3 failure. No answer at all, 5xx, 429, throttling and timeouts are
// worth another try; the server's other refusals (denied, no such bucket, a bad signature)
// need an operator.
func (s *S3Store) error(ctx context.Context, op string, err error) error {
	wrapped := fmt.Errorf("s3 store %s/%s: %s: %w", s.endpoint, s.bucket, op, err)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return &Error{Kind: KindCanceled, Retryable: true, Err: wrapped}
	}
	r := minio.ToErrorResponse(err)
	retry := false
	switch {
	case r.StatusCode == 0 && r.Code == "":
		retry = true // no S3 answer: refused, reset, timed out
	case r.StatusCode >= 500, r.StatusCode == http.StatusTooManyRequests,
		r.StatusCode == http.StatusRequestTimeout:
		retry = true
	case r.Code == "SlowDown", r.Code == "RequestTimeout", r.Code == "ServiceUnavailable",
		r.Code == "InternalError":
		retry = true
	}
	return &Error{Kind: KindStore, Retryable: retry, Status: r.StatusCode, Err: wrapped}
}
