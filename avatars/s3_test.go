package avatars

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/discord-authentik-bridge/bridge/test/s3server"
)

func newS3Store(t *testing.T, srv *s3server.Server, prefix string) *S3Store {
	t.Helper()
	s, err := NewS3Store(S3Options{
		Endpoint:  srv.Endpoint(),
		Bucket:    srv.Bucket,
		Region:    srv.Region,
		Prefix:    prefix,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		PublicURL: srv.PublicURL() + "/",
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3Store(t *testing.T) {
	srv := s3server.Start(t)
	for _, prefix := range []string{"", "/bridge/avatars/"} {
		t.Run("prefix "+prefix, func(t *testing.T) {
			s := newS3Store(t, srv, prefix)
			ctx := t.Context()
			png, key := processed(t, "yellow_rose.lossy-with-alpha.webp")

			if err := s.Check(ctx); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if ok, err := s.Exists(ctx, key); ok || err != nil {
				t.Fatalf("Exists before Put = %v, %v; want false, nil", ok, err)
			}
			if err := s.Put(ctx, key, png); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if ok, err := s.Exists(ctx, key); !ok || err != nil {
				t.Fatalf("Exists after Put = %v, %v; want true, nil", ok, err)
			}

			want := srv.PublicURL() + "/" + key
			if prefix != "" {
				want = srv.PublicURL() + "/bridge/avatars/" + key
			}
			if got := s.URL(key); got != want {
				t.Errorf("URL = %q, want %q", got, want)
			}
			checkPublicAvatar(t, s.URL(key), 64)

			objs, err := s.List(ctx)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(objs) != 1 || objs[0].Key != key || time.Since(objs[0].Modified) > time.Hour {
				t.Errorf("List = %+v, want just %s, written now", objs, key)
			}

			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if ok, err := s.Exists(ctx, key); ok || err != nil {
				t.Errorf("Exists after Delete = %v, %v; want false, nil", ok, err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Errorf("Delete of a missing key: %v", err)
			}
		})
	}
}

func TestS3Store_List_skipsOthers(t *testing.T) {
	srv := s3server.Start(t)
	s := newS3Store(t, srv, "av")
	ctx := t.Context()
	png, key := processed(t, "tux.png")
	if err := s.Put(ctx, key, png); err != nil {
		t.Fatal(err)
	}
	// Objects outside the prefix, or not named like avatars, belong to someone else.
	c := srv.Client()
	for _, name := range []string{key, "av/readme.txt", "other/" + key, "av/sub/" + key} {
		_, err := c.PutObject(ctx, srv.Bucket, name, bytes.NewReader([]byte("x")), 1,
			minio.PutObjectOptions{DisableContentSha256: true, SendContentMd5: true})
		if err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != key {
		t.Errorf("List = %+v, want just %s", objs, key)
	}
}

func TestS3Store_down(t *testing.T) {
	srv := s3server.Start(t)
	s := newS3Store(t, srv, "")
	png, key := processed(t, "tux.png")
	srv.Stop()

	ctx := t.Context()
	wantKind(t, s.Put(ctx, key, png), KindStore, true)
	_, err := s.Exists(ctx, key)
	wantKind(t, err, KindStore, true)
	_, err = s.List(ctx)
	wantKind(t, err, KindStore, true)
	wantKind(t, s.Check(ctx), KindStore, true)

	srv.Restart()
	if err := s.Put(ctx, key, png); err != nil {
		t.Errorf("Put after restart: %v", err)
	}
}

func TestS3Store_refusals(t *testing.T) {
	srv := s3server.Start(t)
	ctx := t.Context()
	png, key := processed(t, "tux.png")

	wrongSecret := newS3Store(t, srv, "")
	wrongSecret.client = mustMinio(t, srv, srv.AccessKey, "not-the-secret")
	wantKind(t, wrongSecret.Put(ctx, key, png), KindStore, false)

	noBucket := newS3Store(t, srv, "")
	noBucket.bucket = "no-such-bucket"
	wantKind(t, noBucket.Put(ctx, key, png), KindStore, false)
	wantKind(t, noBucket.Check(ctx), KindStore, false)

	// Nobody may write anonymously, whatever the read policy allows.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, srv.PublicURL()+"/"+key,
		bytes.NewReader(png))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous PUT answered %d, want 403", resp.StatusCode)
	}
}

func TestS3Store_errorKinds(t *testing.T) {
	s := &S3Store{endpoint: "s3", bucket: "b"}
	bg := context.Background()
	canceled, cancel := context.WithCancel(bg)
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		err       error
		kind      Kind
		retryable bool
	}{
		{"no answer", bg, errors.New("dial tcp: connection refused"), KindStore, true},
		{"503", bg, minio.ErrorResponse{StatusCode: 503, Code: "ServiceUnavailable"},
			KindStore, true},
		{"500", bg, minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, KindStore, true},
		{"slow down", bg, minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, KindStore, true},
		{"429", bg, minio.ErrorResponse{StatusCode: 429}, KindStore, true},
		{"denied", bg, minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"},
			KindStore, false},
		{"no bucket", bg, minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"},
			KindStore, false},
		{"canceled", canceled, context.Canceled, KindCanceled, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantKind(t, s.error(tt.ctx, "put", tt.err), tt.kind, tt.retryable)
		})
	}
}

func TestNewS3Store_missing(t *testing.T) {
	for _, o := range []S3Options{
		{},
		{Endpoint: "s3:9000", Bucket: "b"},
		{Endpoint: "http://s3:9000", Bucket: "b", PublicURL: "http://s3/b"},
		{Endpoint: "s3:9000/x", Bucket: "b", PublicURL: "http://s3/b"},
	} {
		if _, err := NewS3Store(o); err == nil {
			t.Errorf("NewS3Store(%+v) succeeded, want an error", o)
		}
	}
}

func mustMinio(t *testing.T, srv *s3server.Server, access, secret string) *minio.Client {
	t.Helper()
	s, err := NewS3Store(S3Options{
		Endpoint: srv.Endpoint(), Bucket: srv.Bucket, Region: srv.Region,
		AccessKey: access, SecretKey: secret, PublicURL: srv.PublicURL(), MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.client
}
