package avatars

import (
	"bytes"
	"errors"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodePNG decodes b, failing the test unless it is a PNG.
func decodePNG(t testing.TB, b []byte) image.Image {
	t.Helper()
	if _, format, err := image.DecodeConfig(bytes.NewReader(b)); err != nil || format != "png" {
		t.Fatalf("stored bytes are %q, err %v; want png", format, err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode stored png: %v", err)
	}
	return img
}

// wantKind fails the test unless err is an *Error of kind with the given retryability.
func wantKind(t testing.TB, err error, kind Kind, retryable bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want a %s error", kind)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *Error of kind %s", err, err, kind)
	}
	if e.Kind != kind || Retryable(err) != retryable {
		t.Errorf("err = %v: kind %s retryable %v, want kind %s retryable %v",
			err, e.Kind, Retryable(err), kind, retryable)
	}
}

// pngHeader returns the signature and IHDR chunk of a PNG declaring w×h RGBA pixels, followed
// by a tiny IDAT: a decompression bomb's shape, small on disk and huge once decoded.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte{
		byte(w >> 24), byte(w >> 16), byte(w >> 8), byte(w),
		byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h),
		8, 6, 0, 0, 0, // 8-bit RGBA, deflate, no filter, no interlace
	}
	writeChunk(&b, "IHDR", ihdr)
	writeChunk(&b, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	writeChunk(&b, "IEND", nil)
	return b.Bytes()
}

func writeChunk(w io.Writer, typ string, data []byte) {
	n := uint32(len(data))
	_, _ = w.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	crc := crc32.NewIEEE()
	_, _ = io.WriteString(crc, typ)
	_, _ = crc.Write(data)
	_, _ = io.WriteString(w, typ)
	_, _ = w.Write(data)
	sum := crc.Sum32()
	_, _ = w.Write([]byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)})
}

// anonymousGet fetches url as a browser would: no credentials, the usual Accept-Encoding.
// The transport is used directly so that nothing decodes a Content-Encoding on our behalf.
func anonymousGet(t testing.TB, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5")
	req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	return resp, body
}

// checkPublicAvatar fetches url anonymously and checks what a browser needs: 200, a PNG type,
// the immutable caching, no content coding it cannot undo, and a square of edge pixels.
func checkPublicAvatar(t testing.TB, url string, edge int) {
	t.Helper()
	resp, body := anonymousGet(t, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200; body %.200q", url, resp.StatusCode, body)
	}
	for name, want := range map[string]string{
		"Content-Type":     ContentType,
		"Cache-Control":    CacheControl,
		"Content-Encoding": "",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("GET %s: %s = %q, want %q", url, name, got, want)
		}
	}
	img := decodePNG(t, body)
	if b := img.Bounds(); b.Dx() != edge || b.Dy() != edge {
		t.Errorf("GET %s: image is %v, want %d×%d", url, b.Size(), edge, edge)
	}
}
