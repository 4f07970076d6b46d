package s3server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
)

func TestPublicReadPolicy_isJSON(t *testing.T) {
	var p struct {
		Statement []struct {
			Effect    string
			Principal string
			Action    []string
			Resource  []string
		}
	}
	if err := json.Unmarshal([]byte(PublicReadPolicy("b")), &p); err != nil {
		t.Fatalf("policy is not JSON: %v", err)
	}
	if len(p.Statement) != 1 {
		t.Fatalf("statements = %d, want 1", len(p.Statement))
	}
	st := p.Statement[0]
	want := []string{"Allow", "*", "s3:GetObject", "arn:aws:s3:::b/*"}
	if len(st.Action) != 1 || len(st.Resource) != 1 {
		t.Fatalf("statement = %+v, want one action on one resource", st)
	}
	got := []string{st.Effect, st.Principal, st.Action[0], st.Resource[0]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statement (-want +got):\n%s", diff)
	}
}

func TestServer(t *testing.T) {
	s := Start(t)
	c := s.Client()
	body := []byte("\x89PNG\r\n\x1a\n not really a png")
	_, err := c.PutObject(t.Context(), s.Bucket, "dir/obj.png", bytes.NewReader(body),
		int64(len(body)), minio.PutObjectOptions{
			ContentType:  "image/png",
			CacheControl: "public, max-age=60",
			// Over plain HTTP minio-go signs the body in aws-chunked streaming form, and
			// versitygw then stores and serves "Content-Encoding: aws-chunked", which no
			// browser decodes. An unsigned payload with a signed Content-MD5 avoids it.
			DisableContentSha256: true,
			SendContentMd5:       true,
		})
	if err != nil {
		t.Fatalf("put: %v", err)
	}

	t.Run("anonymous read", func(t *testing.T) {
		resp := anonymousGet(t, s.PublicURL()+"/dir/obj.png")
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %q", resp.status, resp.body)
		}
		for name, want := range map[string]string{
			"Content-Type":     "image/png",
			"Cache-Control":    "public, max-age=60",
			"Content-Encoding": "",
		} {
			if got := resp.header.Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
		if !bytes.Equal(resp.body, body) {
			t.Errorf("body = %q, want %q", resp.body, body)
		}
	})

	t.Run("anonymous listing refused", func(t *testing.T) {
		if resp := anonymousGet(t, s.PublicURL()+"/"); resp.status != http.StatusForbidden {
			t.Errorf("status = %d, want 403", resp.status)
		}
	})

	t.Run("down and back", func(t *testing.T) {
		s.Stop()
		if s.Running() {
			t.Fatal("Running() = true after Stop")
		}
		if resp, err := http.Get(s.PublicURL() + "/dir/obj.png"); err == nil {
			_ = resp.Body.Close()
			t.Fatalf("GET while stopped answered %d, want a refused connection", resp.StatusCode)
		}

		s.Restart()
		if resp := anonymousGet(t, s.PublicURL()+"/dir/obj.png"); resp.status != http.StatusOK {
			t.Errorf("status after restart = %d, want 200 (data kept)", resp.status)
		}
	})
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// anonymousGet fetches url without credentials and with the Accept-Encoding a browser sends.
func anonymousGet(t *testing.T, url string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	req.Header.Set("Accept", "image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}
